"""Keys survive restarts on the same data dir, graceful (SIGTERM) or not (SIGKILL)."""

import signal

import pytest
from azure.core.exceptions import HttpResponseError

from harness import parse_connection_string, service_client, unique_hub


def both_work(keys: dict, label: str):
    for slot in ("primary", "secondary"):
        service_client(keys[f"{slot}ConnectionString"], unique_hub("r")).send_to_all({"label": label, "slot": slot})


def assert_same_keys(hubbub, after: dict, before: dict):
    assert after["primaryKey"] == before["primaryKey"]
    assert after["secondaryKey"] == before["secondaryKey"]
    for slot in ("primary", "secondary"):
        cs = parse_connection_string(after[f"{slot}ConnectionString"])
        assert cs["endpoint"] == hubbub.endpoint
        assert cs["accesskey"] == before[f"{slot}Key"]


def test_sigterm_restart_keeps_keys(hubbub):
    before = hubbub.key_show()
    both_work(before, "before restart")
    code = hubbub.stop(signal.SIGTERM)
    assert code == 0, f"SIGTERM shuts hubbub down cleanly with exit code 0 (got {code})"
    hubbub.start()
    after = hubbub.key_show()
    assert_same_keys(hubbub, after, before)
    both_work(after, "after restart")


def test_sigkill_restart_keeps_rotated_keys(hubbub):
    original = hubbub.key_show()
    rotated = hubbub.key_regenerate("primary")
    assert rotated["primaryKey"] != original["primaryKey"]
    code = hubbub.stop(signal.SIGKILL)
    assert code == -signal.SIGKILL
    hubbub.start()
    after = hubbub.key_show()
    assert_same_keys(hubbub, after, rotated)
    both_work(after, "after kill -9")
    stale = f"Endpoint={hubbub.endpoint};AccessKey={original['primaryKey']};Version=1.0;"
    with pytest.raises(HttpResponseError) as exc:
        service_client(stale, unique_hub("old")).send_to_all({})
    assert exc.value.status_code == 401
