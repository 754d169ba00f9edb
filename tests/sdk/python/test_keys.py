"""Keys and connection strings as the official Python service SDK uses them
(azure-messaging-webpubsubservice 1.3.0)."""

import base64
import hashlib
import hmac
import json

import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError

from harness import KEY_FIELDS, KEY_RE, parse_connection_string, service_client, unique_hub


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_key_show_prints_the_four_fields_and_well_formed_connection_strings(hubbub):
    keys = hubbub.key_show()
    assert sorted(keys) == sorted(KEY_FIELDS)
    assert KEY_RE.match(keys["primaryKey"]), keys["primaryKey"]
    assert KEY_RE.match(keys["secondaryKey"]), keys["secondaryKey"]
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert hubbub.endpoint == f"http://localhost:{hubbub.public_port}"
    for slot in ("primary", "secondary"):
        cs = keys[f"{slot}ConnectionString"]
        assert cs == f"Endpoint={hubbub.endpoint};AccessKey={keys[slot + 'Key']};Version=1.0;"
        parsed = parse_connection_string(cs)
        assert parsed == {"endpoint": hubbub.endpoint, "accesskey": keys[slot + "Key"], "version": "1.0"}


@pytest.mark.parametrize("slot", ["primary", "secondary"])
def test_send_operations_work_with_both_connection_strings(hubbub, slot):
    keys = hubbub.key_show()
    client = service_client(keys[f"{slot}ConnectionString"], unique_hub("py"))
    # Each call raises unless the service answers 202.
    client.send_to_all({"hello": "world", "slot": slot})
    client.send_to_all("plain text", content_type="text/plain")
    client.send_to_all(b"\x01\x02\x03", content_type="application/octet-stream")
    client.send_to_group("group1", {"to": "group"})
    client.send_to_user("user1", {"to": "user"})
    client.send_to_connection("conn1", {"to": "connection"})


@pytest.mark.parametrize("slot", ["primary", "secondary"])
def test_client_access_url_points_at_this_server(hubbub, slot):
    keys = hubbub.key_show()
    client = service_client(keys[f"{slot}ConnectionString"], "Chat_Hub1")
    tok = client.get_client_access_token(user_id="user1", roles=["webpubsub.sendToGroup"])
    assert tok["baseUrl"] == f"ws://localhost:{hubbub.public_port}/client/hubs/Chat_Hub1"
    assert tok["url"] == f"{tok['baseUrl']}?access_token={tok['token']}"
    header, payload, sig = tok["token"].split(".")
    claims = json.loads(b64url_decode(payload))
    assert claims["aud"] == f"http://localhost:{hubbub.public_port}/client/hubs/Chat_Hub1"
    assert claims["sub"] == "user1"
    expected = hmac.new(keys[f"{slot}Key"].encode("utf-8"), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    assert b64url_decode(sig) == expected


def test_unknown_key_gets_401_with_code_and_no_token_echo(hubbub):
    keys = hubbub.key_show()
    bogus_key = base64.b64encode(bytes([7]) * 32).decode()
    client = service_client(f"Endpoint={hubbub.endpoint};AccessKey={bogus_key};Version=1.0;", unique_hub("bad"))
    with pytest.raises(HttpResponseError) as exc:
        client.send_to_all({"hello": "nobody"})
    err = exc.value
    assert isinstance(err, ClientAuthenticationError)
    assert err.status_code == 401
    body = err.response.json()
    assert body["code"] == "Unauthorized"
    assert isinstance(body["message"], str) and body["message"]
    assert err.response.headers.get("x-ms-error-code")
    sent = err.response.request.headers["Authorization"].split(" ", 1)[1]
    text = err.response.text()
    assert sent not in text
    assert sent.split(".")[2] not in text
    # The real keys still work.
    service_client(keys["primaryConnectionString"], unique_hub("ok")).send_to_all({"still": "fine"})
