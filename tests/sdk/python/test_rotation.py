"""Zero-downtime key rotation: one key keeps serving while the other is regenerated."""

import base64
import threading
import time

import pytest
from azure.core.exceptions import HttpResponseError

from harness import KEY_FIELDS, KEY_RE, service_client, unique_hub, wait_for

WORKERS = 3
MIN_CALLS_EACH_SIDE = 10


class Serving:
    """`WORKERS` threads calling send_to_all with one connection string until stopped."""

    def __init__(self, connection_string: str):
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + 60
        hub = unique_hub("serve")
        self._threads = [
            threading.Thread(target=self._run, args=(service_client(connection_string, hub), w), daemon=True)
            for w in range(WORKERS)
        ]
        for t in self._threads:
            t.start()

    def _run(self, client, w):
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                client.send_to_all({"worker": w, "n": self.ok})
                with self._lock:
                    self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure is recorded and asserted on
                status = getattr(e, "status_code", "")
                with self._lock:
                    self.failures.append(f"{status} {type(e).__name__}: {e}")
                    if len(self.failures) > 20:
                        return

    def finish(self):
        self._stop.set()
        for t in self._threads:
            t.join(30)
        assert not any(t.is_alive() for t in self._threads), "serving threads did not stop"


def assert_rejected_401(connection_string: str, what: str) -> dict:
    with pytest.raises(HttpResponseError) as exc:
        service_client(connection_string, unique_hub("old")).send_to_all({"stale": True})
    assert exc.value.status_code == 401, f"{what}: {exc.value}"
    body = exc.value.response.json()
    assert isinstance(body.get("code"), str) and body["code"], f"{what}: body {body}"
    return body


def rotate(hubbub, rotated: str, serving: str):
    before = hubbub.key_show()
    serving_cs = before[f"{serving}ConnectionString"]
    old_cs = before[f"{rotated}ConnectionString"]
    service_client(old_cs, unique_hub("pre")).send_to_all({"pre": True})

    loop = Serving(serving_cs)
    try:
        wait_for(lambda: loop.ok >= MIN_CALLS_EACH_SIDE or loop.failures, timeout=20,
                 what=f"{MIN_CALLS_EACH_SIDE} calls with the {serving} key before rotating")
        ok_before = loop.ok
        after = hubbub.key_regenerate(rotated)
        ok_at_regenerate = loop.ok
        # The regeneration really happened while the serving key was in use.
        assert ok_at_regenerate > ok_before, f"calls completed while key regenerate ran ({ok_before} -> {ok_at_regenerate})"
        wait_for(lambda: loop.ok >= ok_at_regenerate + MIN_CALLS_EACH_SIDE or loop.failures, timeout=20,
                 what=f"{MIN_CALLS_EACH_SIDE} calls with the {serving} key after rotating")
    finally:
        loop.finish()
    assert loop.failures == [], f"every {serving}-key call must succeed during {rotated} rotation"
    assert loop.ok >= 2 * MIN_CALLS_EACH_SIDE

    assert sorted(after) == sorted(KEY_FIELDS)
    new_key = after[f"{rotated}Key"]
    assert KEY_RE.match(new_key)
    assert new_key != before[f"{rotated}Key"]
    assert new_key != before[f"{serving}Key"]
    assert after[f"{serving}Key"] == before[f"{serving}Key"]
    assert after[f"{serving}ConnectionString"] == serving_cs
    assert after[f"{rotated}ConnectionString"] == f"Endpoint={hubbub.endpoint};AccessKey={new_key};Version=1.0;"
    assert hubbub.key_show() == after

    assert_rejected_401(old_cs, f"old {rotated} key")
    service_client(after[f"{rotated}ConnectionString"], unique_hub("new")).send_to_all({"fresh": True})
    service_client(serving_cs, unique_hub("still")).send_to_all({"still": True})
    return before, after


def test_primary_rotation_with_secondary_serving(hubbub):
    rotate(hubbub, "primary", "secondary")


def test_secondary_rotation_with_primary_serving(hubbub):
    rotate(hubbub, "secondary", "primary")


def test_salt_regeneration_keeps_access_keys(hubbub):
    before = hubbub.key_show()
    assert hubbub.key_regenerate("salt") == before
    for slot in ("primary", "secondary"):
        service_client(before[f"{slot}ConnectionString"], unique_hub("s")).send_to_all({"slot": slot})


def test_unknown_key_is_rejected_while_both_real_keys_work(hubbub):
    keys = hubbub.key_show()
    bogus = base64.b64encode(bytes(range(32))).decode()
    assert_rejected_401(f"Endpoint={hubbub.endpoint};AccessKey={bogus};Version=1.0;", "unknown key")
    for slot in ("primary", "secondary"):
        service_client(keys[f"{slot}ConnectionString"], unique_hub("k")).send_to_all({"slot": slot})
