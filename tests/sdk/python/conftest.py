"""pytest fixtures for the Hubbub SDK compatibility tests; the helpers live in harness.py."""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from harness import Hubbub


@pytest.fixture
def hubbub(request):
    """A freshly started Hubbub with a new temporary data dir; stopped and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="hubbub-sdk-py-"))
    data_dir = root / "data"
    log_dir = root / "logs"
    data_dir.mkdir()
    log_dir.mkdir()
    server = Hubbub(data_dir, log_dir)
    try:
        server.start()
        yield server
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(server.logs())  # shown by pytest in the failure report
        try:
            server.stop(signal.SIGTERM)
        except AssertionError as e:
            print(e)
        finally:
            server._kill_quietly()
            shutil.rmtree(root, ignore_errors=True)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def dp(hubbub):
    """A DataplaneCtx (keys, hub name, service client, client factories) on a fresh Hubbub.

    Every client opened through it is closed before the server stops.
    """
    from dataplane import DataplaneCtx

    ctx = DataplaneCtx(hubbub)
    try:
        yield ctx
    finally:
        ctx.cleanup()
