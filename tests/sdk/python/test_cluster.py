"""Cluster mode with the official Python SDKs: three Hubbub nodes on a real nats-server (JetStream).

- messages sent through node A with azure-messaging-webpubsubservice reach
  azure-messaging-webpubsubclient clients on nodes B and C (all, group, user), and node A
  answers existence checks and closes a connection held by node C;
- primary regenerations started on two nodes at once both take effect and leave one key on
  every node; the replaced key is refused everywhere, the new one accepted everywhere;
- nats-server restarted on the same store: the nodes keep serving, no key is lost, and key
  changes work again once NATS is back.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import WebPubSubProtocolType

from dataplane import ACK_TIMEOUT_S, START_TIMEOUT_S, PyConn, uid
from harness import Hubbub, service_client, unique_hub, wait_for


def nats_binary() -> str:
    for d in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/usr/bin"]:
        candidate = Path(d) / "nats-server"
        if d and candidate.exists():
            return str(candidate)
    raise RuntimeError("nats-server is not installed (the test command installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nats:
    """A JetStream nats-server on a loopback port; can be stopped and started on the same store."""

    def __init__(self, root: Path):
        self.port = free_port()
        self.store = root / "jetstream"
        self.log = root / "nats.log"
        self.proc = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"), stdin=subprocess.DEVNULL)

        def ready():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(ready, timeout=10, what="nats-server listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)


@pytest.fixture
def cluster():
    root = Path(tempfile.mkdtemp(prefix="hubbub-cluster-py-"))
    nats = Nats(root)
    nats.start()
    # The secret the nodes share, kept outside NATS.
    secret = root / "cluster.secret"
    secret.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    secret.chmod(0o600)
    nodes = []
    try:
        for node_id in ("a", "b", "c"):
            data, logs = root / node_id / "data", root / node_id / "logs"
            data.mkdir(parents=True)
            logs.mkdir(parents=True)
            node = Hubbub(data, logs, extra_args=["--cluster", nats.url, "--cluster-secret-file", str(secret),
                                                       "--node-id", node_id])
            node.start()
            nodes.append(node)
        yield nats, nodes
    finally:
        for node in nodes:
            node._kill_quietly()
        nats.stop()
        shutil.rmtree(root, ignore_errors=True)


def primary(node: Hubbub) -> str:
    return node.key_show()["primaryConnectionString"]


def client_on(node: Hubbub, hub: str, user: str, groups: list[str]) -> PyConn:
    url = service_client(primary(node), hub).get_client_access_token(user_id=user, groups=groups)["url"]
    client = WebPubSubClient(
        url,
        protocol_type=WebPubSubProtocolType.JSON,
        ack_timeout=ACK_TIMEOUT_S,
        start_timeout=START_TIMEOUT_S,
        message_retry_total=0,
        reconnect_retry_total=0,
    )
    conn = PyConn(client, f"{user}@{node.public_addr}", "json")
    client.open()
    wait_for(lambda: conn.connection_id, timeout=10, what=f"{user} connected")
    return conn


def test_sends_through_node_a_reach_sdk_clients_on_nodes_b_and_c_and_a_answers_for_them(cluster):
    _, (a, b, c) = cluster
    hub = unique_hub("cl")
    group, user_b, user_c = uid("g"), uid("ub"), uid("uc")
    on_b = client_on(b, hub, user_b, [group])
    on_c = client_on(c, hub, user_c, [])
    try:
        assert on_b.connection_id.startswith("b-") and on_c.connection_id.startswith("c-")
        service = service_client(primary(a), hub)
        # The group and user subscriptions of nodes B and C may take a moment to spread.
        wait_for(lambda: service.group_exists(group) and service.user_exists(user_c), timeout=5,
                 what="the group and the user seen from node A")
        service.send_to_all("to everyone", content_type="text/plain")
        on_b.wait_message("to everyone")
        on_c.wait_message("to everyone")
        service.send_to_group(group, "to the group", content_type="text/plain")
        on_b.wait_message("to the group")
        service.send_to_user(user_c, "to the user", content_type="text/plain")
        on_c.wait_message("to the user")
        time.sleep(0.3)
        assert not on_c.has("to the group") and not on_b.has("to the user")

        assert service.connection_exists(on_b.connection_id)
        assert service.connection_exists(on_c.connection_id)
        assert not service.user_exists(uid("nobody"))
        assert not service.group_exists(uid("empty"))

        service.close_connection(on_c.connection_id, reason="closed from node A")
        wait_for(lambda: on_c.disconnected, timeout=5, what="node C's client disconnected")
        wait_for(lambda: not service.connection_exists(on_c.connection_id), timeout=5,
                 what="the closed connection gone")
        assert service.connection_exists(on_b.connection_id)
    finally:
        on_b.close()
        on_c.close()


def test_primary_regenerations_on_two_nodes_at_once_leave_one_key_everywhere(cluster):
    _, (a, b, c) = cluster
    hub = unique_hub("cl")
    old = a.key_show()["primaryKey"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda n: n.key_regenerate("primary"), (a, b)))
    assert all(r["primaryKey"] != old for r in results)
    # Each node's connection strings name its own endpoint; the keys are the cluster's.
    new = wait_for(lambda: (lambda ks: ks[0] if len(set(ks)) == 1 and ks[0] != old else None)(
        [n.key_show()["primaryKey"] for n in (a, b, c)]), timeout=5, what="one primary on every node")
    assert new in [r["primaryKey"] for r in results], "the last of the two regenerations won"
    for node in (a, b, c):
        old_here = f"Endpoint={node.endpoint};AccessKey={old};Version=1.0;"
        new_here = f"Endpoint={node.endpoint};AccessKey={new};Version=1.0;"
        with pytest.raises(HttpResponseError) as refused:
            service_client(old_here, hub).send_to_all("old key", content_type="text/plain")
        assert refused.value.status_code == 401
        service_client(new_here, hub).send_to_all("new key", content_type="text/plain")


def test_a_nats_restart_loses_no_key_and_key_changes_resume(cluster):
    nats, (a, b, c) = cluster
    hub = unique_hub("cl")
    def keys(node):
        shown = node.key_show()
        return shown["primaryKey"], shown["secondaryKey"]

    before = [keys(n) for n in (a, b, c)]
    assert all(k == before[0] for k in before)
    nats.stop()
    # Nodes keep serving REST calls with the keys they have.
    service_client(primary(a), hub).send_to_all("while NATS is down", content_type="text/plain")
    refused = c.cli(["key", "regenerate", "--key-type", "secondary", "--admin-url", c.admin_url,
                     "--data-dir", str(c.data_dir)])
    assert refused.code != 0 and "NATS" in refused.stderr, refused
    nats.start()
    wait_for(lambda: c.cli(["key", "regenerate", "--key-type", "secondary", "--admin-url",
                            c.admin_url, "--data-dir", str(c.data_dir)]).code == 0,
             timeout=15, interval=0.5, what="a key change accepted once NATS is back")
    after = wait_for(lambda: (lambda ks: ks if all(k == ks[0] for k in ks) and ks[0] != before[0] else None)(
        [keys(n) for n in (a, b, c)]), timeout=5, what="the new secondary on every node")
    assert after[0][0] == before[0][0], "the primary survived the restart"
