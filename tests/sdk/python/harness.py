"""Shared helpers for the Hubbub SDK compatibility tests (Python side).

A real `hubbub serve` process is started on free loopback ports with its own
temporary data directory; the `hubbub key ...` CLI is run against it. Every
wait is bounded by a deadline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

from azure.messaging.webpubsubservice import WebPubSubServiceClient

REPO_ROOT = Path(__file__).resolve().parents[3]
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
CLI_TIMEOUT_S = 15.0

KEY_FIELDS = ["primaryConnectionString", "primaryKey", "secondaryConnectionString", "secondaryKey"]
KEY_RE = re.compile(r"^[A-Za-z0-9+/]{43}=$")


def hubbub_bin() -> str:
    path = os.environ.get("HUBBUB_BIN") or str(REPO_ROOT / "target" / "debug" / "hubbub")
    if not os.path.exists(path):
        raise RuntimeError(f"hubbub binary not found at {path} (set HUBBUB_BIN or build it first)")
    return path


def child_env() -> dict:
    env = dict(os.environ)
    env.pop("HUBBUB_ADMIN_TOKEN", None)  # never let an outer admin token leak in
    return env


def _tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


class CliResult:
    def __init__(self, code, stdout: str, stderr: str):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}"


def run_cli(args: list[str], timeout: float = CLI_TIMEOUT_S) -> CliResult:
    try:
        p = subprocess.run(
            [hubbub_bin(), *args], env=child_env(), capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        return CliResult(f"timeout after {timeout}s", e.stdout or "", e.stderr or "")
    return CliResult(p.returncode, p.stdout, p.stderr)


class Hubbub:
    """A `hubbub serve` process on a data dir; can be stopped and started again."""

    def __init__(self, data_dir: Path, log_dir: Path, extra_args: Optional[list[str]] = None):
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.extra_args = list(extra_args or [])
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0
        self.public_addr = self.admin_addr = self.endpoint = None
        self._stdout_lines: list[str] = []

    # ---- addresses -------------------------------------------------------------------
    @property
    def public_url(self) -> str:
        return f"http://{self.public_addr}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_addr}"

    @property
    def public_port(self) -> int:
        return int(self.public_addr.rsplit(":", 1)[1])

    @property
    def admin_port(self) -> int:
        return int(self.admin_addr.rsplit(":", 1)[1])

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> "Hubbub":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("hubbub is already running")
        self.runs += 1
        self.public_addr = self.admin_addr = self.endpoint = None
        self._stdout_lines = []
        self._stderr_path = self.log_dir / f"stderr-{self.runs}.log"
        stderr = open(self._stderr_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [hubbub_bin(), "serve", "--data-dir", str(self.data_dir),
                 "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", *self.extra_args],
                env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            )
        finally:
            stderr.close()
        ready = threading.Event()

        def read_stdout(proc=self.proc, lines=self._stdout_lines):
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                s = line.strip()
                m = re.match(r"^public listener:\s*(\S+)", s)
                if m:
                    self.public_addr = m.group(1)
                m = re.match(r"^admin listener:\s*(\S+)", s)
                if m:
                    self.admin_addr = m.group(1)
                m = re.match(r"^public endpoint:\s*(\S+)", s)
                if m:
                    self.endpoint = m.group(1)
                if s == "Hubbub is ready.":
                    ready.set()
            ready.set()  # EOF: process gone

        threading.Thread(target=read_stdout, daemon=True).start()
        ok = ready.wait(READY_TIMEOUT_S)
        if not ok or self.proc.poll() is not None or not (self.public_addr and self.admin_addr and self.endpoint):
            why = ("did not print 'Hubbub is ready.' within %ss" % READY_TIMEOUT_S if not ok
                   else "exited before it was ready" if self.proc.poll() is not None
                   else "was ready but did not print all of its addresses")
            self._kill_quietly()
            raise RuntimeError(f"hubbub {why}\n{self.logs()}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> Optional[int]:
        """Send `sig` and wait for exit; returns the exit code (negative = killed by signal)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_quietly()
            raise AssertionError(f"hubbub did not exit within {timeout}s after signal {sig}\n{self.logs()}")

    def restart(self, sig: int = signal.SIGTERM) -> Optional[int]:
        code = self.stop(sig)
        self.start()
        return code

    def _kill_quietly(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def logs(self) -> str:
        out = [f"hubbub stdout (run {self.runs}):", _tail("\n".join(self._stdout_lines))]
        for i in range(1, self.runs + 1):
            p = self.log_dir / f"stderr-{i}.log"
            if p.exists():
                out += [f"hubbub stderr (run {i}):", _tail(p.read_text("utf-8", "replace"))]
        return "\n".join(out)

    # ---- admin -----------------------------------------------------------------------
    def admin_token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def cli(self, args: list[str]) -> CliResult:
        return run_cli(args)

    def _cli_json(self, args: list[str], what: str) -> dict:
        r = self.cli(args)
        assert r.code == 0, f"hubbub {what} failed: {r!r}"
        try:
            return json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError(f"hubbub {what} did not print JSON ({e}): {r.stdout!r}")

    def key_show(self) -> dict:
        return self._cli_json(
            ["key", "show", "--admin-url", self.admin_url, "--data-dir", str(self.data_dir)], "key show")

    def key_regenerate(self, key_type: str) -> dict:
        return self._cli_json(
            ["key", "regenerate", "--key-type", key_type, "--admin-url", self.admin_url,
             "--data-dir", str(self.data_dir)],
            f"key regenerate --key-type {key_type}")


# ---- helpers used by the tests --------------------------------------------------------

def service_client(connection_string: str, hub: str) -> WebPubSubServiceClient:
    """The official Python service client; SDK retries off so every request must succeed on its own."""
    return WebPubSubServiceClient.from_connection_string(connection_string, hub=hub, retry_total=0)


def unique_hub(prefix: str = "hub") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def parse_connection_string(cs: str) -> dict:
    out = {}
    for seg in cs.split(";"):
        if not seg:
            continue
        k, sep, v = seg.partition("=")
        assert sep, f"malformed connection string segment {seg!r}"
        out[k.lower()] = v
    return out


def wait_for(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
