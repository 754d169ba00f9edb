"""Helpers for the data-plane tests (Python side).

- `DataplaneCtx`: keys, a unique hub name, the official service client, and factories for
  official WebPubSubClient connections (`PyConn`) and raw websocket-client sockets (`RawWs`),
  all closed again before the server stops (fixture `dataplane` in conftest.py).
- `upgrade()`: one WebSocket upgrade attempt, reporting the HTTP status.
- `rest()`: a data-plane REST call with a hand-signed bearer JWT.

Every wait is bounded by a deadline.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Optional

import websocket
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import CallbackType, WebPubSubProtocolType

from harness import service_client, unique_hub, wait_for

API = "api-version=2024-12-01"
JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"
PROTOCOLS = {"json": WebPubSubProtocolType.JSON, "reliable": WebPubSubProtocolType.JSON_RELIABLE}
MARKER_PREFIX = "~marker~"
# The client SDK waits for an ack (and for the socket to open) on a condition variable it starts
# waiting on only after the answer may already have arrived; a lost wake-up then costs the whole
# timeout (and the call still succeeds). Small timeouts keep such stalls short.
ACK_TIMEOUT_S = 1.5
START_TIMEOUT_S = 1.5


def uid(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# ---- hand-made JWTs (HS256, key used as UTF-8 bytes, exactly like the SDKs) -------------

def _b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode("ascii")


def sign_jwt(claims: dict, key: str) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(key.encode("utf-8"), f"{header}.{payload}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(sig)}"


def decode_jwt_payload(token: str) -> dict:
    p = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))


def client_token(hubbub, hub_name: str, key: str, *, user_id=None, roles=None, groups=None,
                 exp: Optional[int] = None, aud: Optional[str] = None, extra: Optional[dict] = None) -> str:
    now = int(time.time())
    claims = {"aud": aud or f"{hubbub.endpoint}/client/hubs/{hub_name}", "iat": now, "exp": exp or now + 3600}
    if user_id is not None:
        claims["sub"] = user_id
    if roles:
        claims["role"] = roles
    if groups:
        claims["webpubsub.group"] = groups
    claims.update(extra or {})
    return sign_jwt(claims, key)


def client_url(hubbub, hub_name: str, token: str, extra_query: str = "") -> str:
    return f"ws://{hubbub.public_addr}/client/hubs/{hub_name}?access_token={token}{extra_query}"


class RestResult:
    def __init__(self, status: int, body: bytes, headers):
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"{self.status} {self.text[:500]}"


def rest(hubbub, key: Optional[str], method: str, path_and_query: str, body: Optional[bytes] = None,
         content_type: Optional[str] = None, timeout: float = 10.0) -> RestResult:
    """A data-plane REST call; the bearer JWT's aud is the full request URL on the public endpoint."""
    headers = {}
    if key is not None:
        now = int(time.time())
        token = sign_jwt({"aud": f"{hubbub.endpoint}{path_and_query}", "iat": now, "exp": now + 300}, key)
        headers["Authorization"] = f"Bearer {token}"
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(f"{hubbub.public_url}{path_and_query}", data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return RestResult(resp.status, resp.read(), resp.headers)
    except urllib.error.HTTPError as e:
        return RestResult(e.code, e.read() or b"", e.headers)


def generate_token(hubbub, key: str, hub_name: str, *, user_id=None, roles=(), groups=(), minutes_to_expire=None) -> str:
    q = [API]
    if user_id is not None:
        q.append(f"userId={urllib.parse.quote(user_id, safe='')}")
    q += [f"role={urllib.parse.quote(r, safe='')}" for r in roles]
    if minutes_to_expire is not None:
        q.append(f"minutesToExpire={minutes_to_expire}")
    q += [f"group={urllib.parse.quote(g, safe='')}" for g in groups]
    r = rest(hubbub, key, "POST", f"/api/hubs/{hub_name}/:generateToken?{'&'.join(q)}")
    assert r.status == 200, f":generateToken answered {r!r}"
    token = r.json().get("token")
    assert isinstance(token, str) and token, f":generateToken body {r!r}"
    return token


# ---- raw WebSocket (websocket-client) -------------------------------------------------

class UpgradeRefused(Exception):
    def __init__(self, status, body: str):
        super().__init__(f"upgrade answered {status}: {body}")
        self.status = status
        self.body = body


class RawWs:
    """A websocket-client connection whose frames are collected by a reader thread."""

    def __init__(self, ws: websocket.WebSocket):
        self.ws = ws
        self.frames: list[tuple[bool, bytes]] = []  # (is_binary, payload)
        self.closed: Optional[tuple] = None  # (code, reason) or ("error", text)
        self.connection_id: Optional[str] = None
        self.user_id: Optional[str] = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        try:
            while True:
                opcode, data = self.ws.recv_data(control_frame=False)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    code = int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005
                    with self._lock:
                        self.closed = (code, data[2:].decode("utf-8", "replace"))
                    return
                with self._lock:
                    self.frames.append((opcode == websocket.ABNF.OPCODE_BINARY, bytes(data)))
        except Exception as e:  # noqa: BLE001 - connection end is recorded
            with self._lock:
                if self.closed is None:
                    self.closed = ("error", f"{type(e).__name__}: {e}")

    @property
    def json(self) -> list:
        out = []
        with self._lock:
            frames = list(self.frames)
        for is_binary, data in frames:
            if not is_binary:
                try:
                    out.append(json.loads(data.decode("utf-8")))
                except ValueError:
                    pass
        return out

    def texts(self) -> list:
        with self._lock:
            return [("b:" + d.hex()) if b else ("t:" + d.decode("utf-8", "replace")) for b, d in self.frames
                    if b or not d.decode("utf-8", "replace").startswith(MARKER_PREFIX)]

    def send(self, frame):
        if isinstance(frame, (bytes, bytearray)):
            self.ws.send_binary(bytes(frame))
        elif isinstance(frame, str):
            self.ws.send(frame)
        else:
            self.ws.send(json.dumps(frame))

    def wait_json(self, pred: Callable[[Any], bool], what: str, timeout: float = 5.0):
        return wait_for(lambda: next((j for j in self.json if isinstance(j, dict) and pred(j)), None),
                        timeout=timeout, what=f"{what}; frames {self.texts()[-10:]}; closed {self.closed}")

    def wait_ack(self, ack_id: int, timeout: float = 5.0) -> dict:
        return self.wait_json(lambda j: j.get("type") == "ack" and j.get("ackId") == ack_id, f"ack {ack_id}", timeout)

    def wait_closed(self, timeout: float = 5.0):
        return wait_for(lambda: self.closed, timeout=timeout, what=f"the server to close; frames {self.texts()[-10:]}")

    def close(self):
        try:
            self.ws.close(timeout=1)
        except Exception:  # noqa: BLE001 - already gone
            pass


def upgrade(url: str, subprotocols=None, header=None, timeout: float = 5.0):
    """One upgrade attempt: returns (101, RawWs) or (status, body)."""
    try:
        ws = websocket.create_connection(url, subprotocols=subprotocols, header=header, timeout=timeout,
                                         enable_multithread=True)
    except websocket.WebSocketBadStatusException as e:
        body = e.resp_body.decode("utf-8", "replace") if isinstance(e.resp_body, bytes) else str(e.resp_body or "")
        return e.status_code, body
    ws.settimeout(None)
    return 101, RawWs(ws)


# ---- official client connections --------------------------------------------------------

class PyConn:
    """An official azure-messaging-webpubsubclient connection that records every callback."""

    def __init__(self, client: WebPubSubClient, label: str, protocol: str):
        self.client = client
        self.label = label
        self.protocol = protocol
        self.connected: list = []
        self.disconnected: list = []
        self.stopped = 0
        self.messages: list = []  # ("group"|"server", args); callback threads may reorder
        self._lock = threading.Lock()
        client.subscribe(CallbackType.CONNECTED, lambda e: self._add(self.connected, e))
        client.subscribe(CallbackType.DISCONNECTED, lambda e: self._add(self.disconnected, e))
        client.subscribe(CallbackType.STOPPED, self._on_stopped)
        client.subscribe(CallbackType.GROUP_MESSAGE, lambda e: self._add(self.messages, ("group", e)))
        client.subscribe(CallbackType.SERVER_MESSAGE, lambda e: self._add(self.messages, ("server", e)))

    def _add(self, lst, item):
        with self._lock:
            lst.append(item)

    def _on_stopped(self, *args):
        with self._lock:
            self.stopped += 1

    @property
    def connection_id(self) -> Optional[str]:
        return self.connected[0].connection_id if self.connected else None

    def summary(self) -> list:
        """Data messages without markers as "from[:group]:dataType:payload" (sorted: arrival order is not kept)."""
        out = []
        with self._lock:
            msgs = list(self.messages)
        for kind, e in msgs:
            data = e.data
            if e.data_type in ("binary", "protobuf"):
                data = base64.b64encode(bytes(data)).decode()
            elif e.data_type == "json":
                data = json.dumps(data, separators=(",", ":"), sort_keys=True)
            if e.data_type == "text" and isinstance(data, str) and data.startswith(MARKER_PREFIX):
                continue
            prefix = f"group:{e.group}" if kind == "group" else "server"
            out.append(f"{prefix}:{e.data_type}:{data}")
        return sorted(out)

    def has(self, data) -> bool:
        with self._lock:
            return any(e.data == data for _, e in self.messages)

    def wait_message(self, data, timeout: float = 5.0):
        wait_for(lambda: self.has(data), timeout=timeout, what=f"{self.label}: message {data!r}; got {self.summary()}")

    def close(self):
        try:
            self.client.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


class DataplaneCtx:
    def __init__(self, hubbub):
        self.hubbub = hubbub
        self.keys = hubbub.key_show()
        self.hub_name = unique_hub("dp")
        self.service = service_client(self.keys["primaryConnectionString"], self.hub_name)
        self.conns: list[PyConn] = []
        self.raws: list[RawWs] = []

    def service_for(self, connection_string: str, hub_name: Optional[str] = None):
        return service_client(connection_string, hub_name or self.hub_name)

    def token_url(self, service=None, **token_kwargs) -> str:
        svc = service or self.service
        return svc.get_client_access_token(**token_kwargs)["url"]

    def connect(self, protocol: str = "reliable", user_id=None, roles=None, groups=None, url=None,
                label=None, wait_connected: bool = True) -> PyConn:
        if url is None:
            kwargs = {}
            if user_id is not None:
                kwargs["user_id"] = user_id
            if roles:
                kwargs["roles"] = roles
            if groups:
                kwargs["groups"] = groups
            url = self.token_url(**kwargs)
        client = WebPubSubClient(
            url,
            protocol_type=PROTOCOLS[protocol],
            ack_timeout=ACK_TIMEOUT_S,
            start_timeout=START_TIMEOUT_S,
            message_retry_total=0,
            reconnect_retry_total=0,
        )
        conn = PyConn(client, label or f"{protocol} client ({user_id})", protocol)
        self.conns.append(conn)
        client.open()
        if wait_connected:
            wait_for(lambda: conn.connected, timeout=5.0, what=f"{conn.label}: connected callback")
        return conn

    def raw(self, subprotocols=None, user_id=None, roles=None, groups=None, extra_query: str = "") -> RawWs:
        kwargs = {}
        if user_id is not None:
            kwargs["user_id"] = user_id
        if roles:
            kwargs["roles"] = roles
        if groups:
            kwargs["groups"] = groups
        token = self.service.get_client_access_token(**kwargs)["token"]
        status, r = upgrade(client_url(self.hubbub, self.hub_name, token, extra_query), subprotocols=subprotocols)
        assert status == 101, f"raw upgrade answered {status}: {r}"
        self.raws.append(r)
        r.user_id = user_id
        if subprotocols:
            connected = r.wait_json(lambda j: j.get("type") == "system" and j.get("event") == "connected", "connected")
            r.connection_id = connected["connectionId"]
        return r

    def flush(self, conns, timeout: float = 5.0):
        """Send a unique marker to each connection and wait for it (then everything sent before has arrived)."""
        for c in conns:
            marker = f"{MARKER_PREFIX}{uid()}"
            if isinstance(c, RawWs):
                if c.connection_id:
                    self.service.send_to_connection(c.connection_id, marker, content_type="text/plain")
                else:
                    self.service.send_to_user(c.user_id, marker, content_type="text/plain")
                wait_for(lambda: any((not b and (d.decode("utf-8", "replace") == marker or marker in d.decode("utf-8", "replace")))
                                     for b, d in list(c.frames)), timeout=timeout, what=f"marker {marker}")
            else:
                self.service.send_to_connection(c.connection_id, marker, content_type="text/plain")
                c.wait_message(marker, timeout)
        # Python client callbacks run on their own threads; let earlier ones finish.
        time.sleep(0.1)

    def cleanup(self):
        for r in self.raws:
            r.close()
        for c in self.conns:
            c.close()
