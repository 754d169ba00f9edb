"""Identity-provider tokens with the official Python service SDK: `WebPubSubServiceClient` built
with a credential (no connection string) against a local OpenID Connect issuer, over HTTPS as the
SDK requires. Sends, management calls and `get_client_access_token` (its token opens a client
connection) with the Owner role; the Reader role and bad tokens are refused with what failed."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
import websocket
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from cryptography.hazmat.primitives.asymmetric import rsa

from harness import Hubbub

# Hubbub's certificate is self-signed here; the SDK sends bearer tokens over HTTPS only.
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

AUDIENCE = "https://webpubsub.azure.com"
OWNER = "Web PubSub Service Owner"
READER = "Web PubSub Service Reader"


def b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class Issuer:
    """Discovery and a JWKS on a loopback port, with one RSA signing key."""

    def __init__(self):
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "py-key-1"
        numbers = self.key.public_key().public_numbers()
        jwk = {"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
               "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/keys"}
                elif self.path == "/keys":
                    body = {"keys": [jwk]}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, roles, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": self.url, "aud": AUDIENCE, "sub": "py-app", "iat": now, "nbf": now,
                  "exp": now + 3600, "roles": roles, **overrides}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class Credential:
    """A TokenCredential as azure-core calls it; remembers the scopes asked for."""

    def __init__(self, mint):
        self.mint = mint
        self.scopes = []

    def get_token(self, *scopes, **kwargs):
        self.scopes.extend(scopes)
        return AccessToken(self.mint(), int(time.time()) + 3600)


def _identity_hubbub(extra_args):
    root = Path(tempfile.mkdtemp(prefix="hubbub-sdk-py-idp-"))
    (root / "data").mkdir()
    (root / "logs").mkdir()
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    issuer = Issuer()
    server = Hubbub(root / "data", root / "logs", extra_args=[
        "--tls-cert", str(cert), "--tls-key", str(key), "--oidc-issuer", issuer.url, *extra_args,
    ])
    try:
        server.start()
        yield server, issuer
    finally:
        try:
            server.stop(signal.SIGTERM)
        finally:
            server._kill_quietly()
            issuer.server.shutdown()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def identity_hubbub():
    yield from _identity_hubbub([])


@pytest.fixture
def keyless_hubbub():
    yield from _identity_hubbub(["--disable-local-auth"])


def service(server, hub, mint):
    credential = Credential(mint)
    client = WebPubSubServiceClient(
        endpoint=server.endpoint, hub=hub, credential=credential,
        connection_verify=False,  # Hubbub's certificate is self-signed here
    )
    return client, credential


@pytest.mark.timeout(60)
def test_owner_credential_sends_manages_and_mints_client_tokens(identity_hubbub):
    server, issuer = identity_hubbub
    assert server.endpoint.startswith("https://")
    client, credential = service(server, "pyidp", lambda: issuer.token([OWNER]))

    token = client.get_client_access_token(user_id="py-user")
    assert set(credential.scopes) == {f"{AUDIENCE}/.default"}
    ws = websocket.create_connection(
        token["url"], subprotocols=["json.webpubsub.azure.v1"],
        sslopt={"cert_reqs": ssl.CERT_NONE}, timeout=10,
    )
    try:
        connected = json.loads(ws.recv())
        assert connected["event"] == "connected" and connected["userId"] == "py-user"
        client.send_to_all("hello from an identity", content_type="text/plain")
        client.send_to_user("py-user", "to the user", content_type="text/plain")
        assert json.loads(ws.recv())["data"] == "hello from an identity"
        assert json.loads(ws.recv())["data"] == "to the user"
        connection_id = connected["connectionId"]
        assert client.connection_exists(connection_id)
        client.add_connection_to_group("room", connection_id)
        assert client.group_exists("room")
        client.close_connection(connection_id, reason="done")
    finally:
        ws.close()


@pytest.mark.timeout(60)
def test_reader_reads_and_bad_tokens_are_refused_with_the_reason(identity_hubbub):
    server, issuer = identity_hubbub
    reader, _ = service(server, "pyidp", lambda: issuer.token([READER]))
    assert reader.group_exists("nobody") is False
    with pytest.raises(HttpResponseError) as refused:
        reader.send_to_all("no", content_type="text/plain")
    assert refused.value.status_code == 403
    assert "owner role" in str(refused.value)

    now = int(time.time())
    for what, mint, text in [
        ("expired", lambda: issuer.token([OWNER], exp=now - 3600, iat=now - 7200, nbf=now - 7200), "expired"),
        ("wrong audience", lambda: issuer.token([OWNER], aud="https://management.azure.com"), "audience"),
        ("untrusted issuer", lambda: issuer.token([OWNER], iss="https://login.example.org/"), "trusted"),
    ]:
        client, _ = service(server, "pyidp", mint)
        with pytest.raises(HttpResponseError) as refused:
            client.send_to_all("no", content_type="text/plain")
        assert refused.value.status_code == 401, what
        assert text in str(refused.value), (what, str(refused.value))


@pytest.mark.timeout(60)
def test_with_local_auth_disabled_a_connection_string_fails_clearly_and_a_credential_works(keyless_hubbub):
    server, issuer = keyless_hubbub
    keys = server.key_show()
    with_key = WebPubSubServiceClient.from_connection_string(
        keys["primaryConnectionString"], hub="pyidp", connection_verify=False,
    )
    with pytest.raises(HttpResponseError) as refused:
        with_key.send_to_all("no", content_type="text/plain")
    assert refused.value.status_code == 401
    assert "local auth is disabled" in str(refused.value)

    client, _ = service(server, "pyidp", lambda: issuer.token([OWNER]))
    token = client.get_client_access_token(user_id="py-user")
    ws = websocket.create_connection(
        token["url"], subprotocols=["json.webpubsub.azure.v1"],
        sslopt={"cert_reqs": ssl.CERT_NONE}, timeout=10,
    )
    try:
        assert json.loads(ws.recv())["event"] == "connected"
        client.send_to_all("served without keys", content_type="text/plain")
        assert json.loads(ws.recv())["data"] == "served without keys"
    finally:
        ws.close()
