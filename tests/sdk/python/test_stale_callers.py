"""Stale callers with the official Python SDKs: an app still on a regenerated key gets a 401
naming the key and its version (azure-messaging-webpubsubservice), a client connection with a
token that key signed is refused (azure-messaging-webpubsubclient), and both are listed by
`hubbub key stale-callers`."""

import json
import re

import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubclient import WebPubSubClient

from harness import service_client, unique_hub, wait_for


def stale_callers(hubbub) -> list:
    r = hubbub.cli(["key", "stale-callers", "--json", "--admin-url", hubbub.admin_url,
                    "--data-dir", str(hubbub.data_dir)])
    assert r.code == 0, f"key stale-callers failed: {r!r}"
    return json.loads(r.stdout)["value"]


def test_an_app_on_a_regenerated_key_is_told_which_and_listed(hubbub):
    before = hubbub.key_show()
    hub = unique_hub("stalepy")
    old = service_client(before["secondaryConnectionString"], hub)
    old.send_to_all("works before", content_type="text/plain")
    url = old.get_client_access_token(user_id="stale-user")["url"]
    hubbub.key_regenerate("secondary")

    with pytest.raises(HttpResponseError) as exc:
        old.send_to_all("after", content_type="text/plain")
    assert exc.value.status_code == 401
    text = str(exc.value)
    assert re.search(r"secondary key version 1, which was regenerated at \d{4}-\d\d-\d\dT", text), text
    assert before["secondaryKey"] not in text

    client = WebPubSubClient(url, start_timeout=5, reconnect_retry_total=0)
    with pytest.raises(Exception):
        client.open()
    client.close()

    # The primary key was not regenerated.
    service_client(before["primaryConnectionString"], hub).send_to_all("primary works", content_type="text/plain")

    callers = wait_for(lambda: (lambda l: l if len(l) >= 2 else None)(stale_callers(hubbub)),
                       what="two stale callers")
    kinds = {c["kind"]: c for c in callers}
    assert set(kinds) == {"rest", "connection"}, callers
    for caller in callers:
        assert caller["keyType"] == "secondary"
        assert caller["version"] == 1
        assert caller["hub"].lower() == hub.lower()
        assert caller["sourceAddress"] == "127.0.0.1"
        assert caller["count"] >= 1
    assert "azsdk-python" in kinds["rest"]["userAgent"].lower(), kinds["rest"]
