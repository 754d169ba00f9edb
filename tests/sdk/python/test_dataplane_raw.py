"""Raw WebSockets with websocket-client: simple clients get REST messages as raw frames;
upgrade errors are 401 (never 101); REST :generateToken tokens and salt regeneration;
bad input on the json protocol leaves other connections unaffected."""

import os
import time

from dataplane import (
    API, JSON_SUBPROTOCOL, RELIABLE_SUBPROTOCOL, client_token, client_url, decode_jwt_payload, generate_token, rest,
    uid, upgrade,
)
from harness import wait_for


def test_simple_client_gets_raw_frames(dp):
    svc = dp.service
    s = dp.raw(user_id="simple-u", groups=["sg"])
    assert s.ws.getsubprotocol() in (None, ""), "no subprotocol selected"
    svc.send_to_user("simple-u", "plain text", content_type="text/plain")
    svc.send_to_user("simple-u", {"a": 1})  # Python serialises with a space: {"a": 1}
    svc.send_to_user("simple-u", b"\x00\x01\xff", content_type="application/octet-stream")
    svc.send_to_group("sg", "group text", content_type="text/plain")
    r = rest(dp.hubbub, dp.keys["primaryKey"], "POST", f"/api/hubs/{dp.hub_name}/:send?{API}",
             body='[1,  "two" ]'.encode(), content_type="application/json")
    assert r.status == 202, repr(r)
    dp.flush([s])
    assert s.texts() == ["t:plain text", 't:{"a": 1}', "b:0001ff", "t:group text", 't:[1,  "two" ]']


def test_send_to_group_mode_publishes_frames(dp):
    sub = dp.connect("json", groups=["pubg"], label="subscriber")
    pub = dp.raw(user_id="pub", roles=["webpubsub.sendToGroup.pubg"], extra_query="&webpubsub_mode=sendToGroup&group=pubg")
    pub.send("py frame")
    pub.send(b"\x05\x06")
    wait_for(lambda: len(sub.summary()) >= 2, timeout=5, what=f"published frames; got {sub.summary()}")
    assert sub.summary() == sorted(["group:pubg:text:py frame", "group:pubg:binary:BQY="])
    for _, e in sub.messages:
        assert e.from_user_id == "pub", vars(e)


def test_upgrade_errors_are_401(dp):
    hb, hub, keys = dp.hubbub, dp.hub_name, dp.keys
    base = f"ws://{hb.public_addr}/client/hubs/{hub}"
    now = int(time.time())
    cases = {
        "no access_token": base,
        "not a JWT": f"{base}?access_token=garbage",
        "unknown key": f"{base}?access_token={client_token(hb, hub, 'x' * 44)}",
        "expired": f"{base}?access_token={client_token(hb, hub, keys['primaryKey'], exp=now - 3600, extra={'iat': now - 7200})}",
        "wrong hub": f"{base}?access_token={client_token(hb, hub, keys['primaryKey'], aud=f'{hb.endpoint}/client/hubs/other{uid()}')}",
    }
    for name, url in cases.items():
        status, body = upgrade(url, subprotocols=[RELIABLE_SUBPROTOCOL])
        if status == 101:
            body.close()
        assert status == 401, f"{name}: {status} {body}"
    for name, url in {
        "path form": f"{base}?access_token={client_token(hb, hub, keys['secondaryKey'], user_id='ok')}",
        "query form": f"ws://{hb.public_addr}/client?hub={hub}&access_token={client_token(hb, hub, keys['primaryKey'], user_id='ok')}",
    }.items():
        status, r = upgrade(url, subprotocols=[JSON_SUBPROTOCOL])
        assert status == 101, f"{name}: {status} {r}"
        dp.raws.append(r)
        connected = r.wait_json(lambda j: j.get("type") == "system" and j.get("event") == "connected", f"{name}: connected")
        assert connected["userId"] == "ok"


def test_generate_token_and_salt_rotation(dp):
    hb, hub, keys = dp.hubbub, dp.hub_name, dp.keys
    token = generate_token(hb, keys["primaryKey"], hub, user_id="gen-py", roles=["webpubsub.joinLeaveGroup"], groups=["tg"])
    assert decode_jwt_payload(token).get("sub") == "gen-py"
    c = dp.connect("json", url=client_url(hb, hub, token), label="generated-token client")
    assert c.connected[0].user_id == "gen-py"
    dp.service.send_to_group("tg", "hello tg", content_type="text/plain")
    c.wait_message("hello tg")
    c.client.join_group("joined-by-role")

    sdk_url = dp.token_url(user_id="sdk")
    hb.key_regenerate("salt")
    status, body = upgrade(client_url(hb, hub, token), subprotocols=[RELIABLE_SUBPROTOCOL])
    if status == 101:
        body.close()
    assert status == 401, f"generated token after salt regeneration: {status} {body}"
    status, r = upgrade(sdk_url, subprotocols=[RELIABLE_SUBPROTOCOL])
    assert status == 101, f"SDK token after salt regeneration: {status} {r}"
    r.close()
    # The live connection is unaffected.
    dp.service.send_to_connection(c.connection_id, "after salt", content_type="text/plain")
    c.wait_message("after salt")
    assert c.disconnected == []


def test_bad_frames_leave_other_connections_alone(dp):
    bystander = dp.connect("reliable", user_id="bystander", groups=["bg"], label="bystander")
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]

    victim = dp.raw(subprotocols=[JSON_SUBPROTOCOL], user_id="victim", roles=roles, groups=["bg"])
    victim.send("this is not json {")
    victim.wait_closed(5)
    assert victim.closed[0] != "error", f"closed with a close frame: {victim.closed}; frames {victim.texts()[-3:]}"
    assert any(j.get("type") == "system" and j.get("event") == "disconnected" for j in victim.json), victim.texts()

    victim2 = dp.raw(subprotocols=[JSON_SUBPROTOCOL], user_id="victim2", roles=roles, groups=["bg"])
    victim2.send({"type": "sendToGroup", "group": "bg", "dataType": "text", "data": os.urandom(600_000).hex(), "ackId": 5})
    victim2.wait_closed(10)
    # The server must end with a close frame (1009) that the client can read, not a TCP reset.
    assert victim2.closed[0] != "error", (
        f"a frame over 1 MB must be answered with a close frame, got {victim2.closed}; frames {victim2.texts()[-3:]}")

    probe = f"probe-{uid()}"
    dp.service.send_to_group("bg", probe, content_type="text/plain")
    bystander.wait_message(probe)
    dp.flush([bystander])
    assert bystander.summary() == [f"group:bg:text:{probe}"]
    assert bystander.disconnected == []
