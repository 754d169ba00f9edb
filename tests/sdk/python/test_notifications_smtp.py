"""Enforced rotation notices by email: a real SMTP server (aiosmtpd) receives the notice; with
the mail server down at first, the notice is retried and delivered exactly once."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

import requests
from aiosmtpd.controller import Controller

from harness import Hubbub, wait_for


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def admin_get(server: Hubbub, path: str):
    response = requests.get(server.admin_url + path, headers={"Authorization": f"Bearer {server.admin_token()}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def test_a_required_rotation_is_emailed_once_even_when_the_mail_server_was_down():
    root = Path(tempfile.mkdtemp(prefix="hubbub-smtp-"))
    port = free_port()
    config = root / "hubbub.toml"
    config.write_text(
        "maintenance_interval_ms = 200\n"
        "[notifications]\n"
        'email_to = ["ops@example.com", "security@example.com"]\n'
        'email_from = "hubbub@example.com"\n'
        'smtp_host = "127.0.0.1"\n'
        f"smtp_port = {port}\n"
        'smtp_security = "none"\n'
        "retry_base_secs = 1\n"
    )
    (root / "data").mkdir()
    (root / "logs").mkdir()
    server = Hubbub(root / "data", root / "logs", extra_args=["--config", str(config)])
    controller = None
    try:
        server.start()
        keys = server.key_show()
        result = server.cli(["key", "require-rotation", "--key-type", "primary", "--by", "7d", "--reason", "found in a build log",
                             "--admin-url", server.admin_url, "--data-dir", str(server.data_dir)])
        assert result.code == 0, result

        # The mail server is down: the notice waits, with its error recorded.
        notice = wait_for(
            lambda: next((n for n in admin_get(server, "/admin/notices") if n["attempts"] >= 1), None),
            timeout=15, what="a failed delivery attempt",
        )
        assert notice["status"] == "pending"
        assert notice["channel"] == "email"
        assert "mail server" in notice["lastError"]

        inbox = Inbox()
        controller = Controller(inbox, hostname="127.0.0.1", port=port)
        controller.start()
        wait_for(lambda: inbox.messages, timeout=30, what="the email")
        time.sleep(2.5)  # a second copy would arrive within a couple of housekeeping rounds
        assert len(inbox.messages) == 1, "delivered exactly once"
        message = inbox.messages[0]
        assert sorted(message.rcpt_tos) == ["ops@example.com", "security@example.com"]
        text = message.content.decode("utf-8", "replace")
        assert "Subject: [Hubbub] The primary key must be rotated by" in text
        assert "found in a build log" in text
        for secret in (keys["primaryKey"], keys["secondaryKey"], server.admin_token()):
            assert secret not in text, "no key material in notices"

        sent = admin_get(server, "/admin/notices")
        assert [(n["status"], n["kind"]) for n in sent] == [("sent", "rotation_required")]
        events = [e["event"] for e in admin_get(server, "/admin/audit")["value"]]
        assert events[-3:] == ["rotation_required", "notice_failed", "notice_sent"], events
    finally:
        if controller is not None:
            controller.stop()
        try:
            server.stop(signal.SIGTERM)
        finally:
            server._kill_quietly()
            shutil.rmtree(root, ignore_errors=True)
