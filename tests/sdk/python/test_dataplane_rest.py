"""REST data plane with azure-messaging-webpubsubservice, observed by real clients
(azure-messaging-webpubsubclient): send routes with excluded/filter and content types,
group/user membership, existence checks, permissions, list_connections paging, closes."""

import time

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType

from dataplane import uid
from harness import wait_for


def four_clients(dp):
    c1 = dp.connect("json", user_id="u1", groups=["g1"], label="c1(u1,g1)")
    c2 = dp.connect("reliable", user_id="u1", label="c2(u1)")
    c3 = dp.connect("reliable", user_id="u2", groups=["g1", "g2"], label="c3(u2,g1,g2)")
    c4 = dp.connect("json", groups=["g2"], label="c4(anon,g2)")
    return c1, c2, c3, c4


def test_send_routes_reach_exactly_the_right_connections(dp):
    svc = dp.service
    c1, c2, c3, c4 = four_clients(dp)
    svc.send_to_all("all-text", content_type="text/plain", excluded=[c2.connection_id])
    svc.send_to_all({"n": 2}, filter="userId eq 'u1'")
    svc.send_to_all(b"\x01\x02\x03", content_type="application/octet-stream", filter="'g1' in groups")
    svc.send_to_group("g1", "g1-text", content_type="text/plain", excluded=[c1.connection_id])
    svc.send_to_group("g2", {"g2": True}, filter="userId eq 'u2'")
    svc.send_to_group("g2", b"\x09\x08", content_type="application/octet-stream")
    svc.send_to_user("u1", ["user", "json"])
    svc.send_to_user("u1", "u1-in-g1", content_type="text/plain", filter="'g1' in groups")
    svc.send_to_connection(c4.connection_id, b"\xff\x00", content_type="application/octet-stream")
    svc.send_to_all("quoted")  # application/json by default: a JSON string
    dp.flush([c1, c2, c3, c4])

    expected = {
        "c1": ["server:text:all-text", 'server:json:{"n":2}', "server:binary:AQID", 'server:json:["user","json"]',
               "server:text:u1-in-g1", 'server:json:"quoted"'],
        "c2": ['server:json:{"n":2}', 'server:json:["user","json"]', 'server:json:"quoted"'],
        "c3": ["server:text:all-text", "server:binary:AQID", "group:g1:text:g1-text", 'group:g2:json:{"g2":true}',
               "group:g2:binary:CQg=", 'server:json:"quoted"'],
        "c4": ["server:text:all-text", "group:g2:binary:CQg=", "server:binary:/wA=", 'server:json:"quoted"'],
    }
    for name, conn in {"c1": c1, "c2": c2, "c3": c3, "c4": c4}.items():
        assert conn.summary() == sorted(expected[name]), f"{name} ({conn.label})"
        for _, e in conn.messages:
            assert getattr(e, "from_user_id", None) is None, f"{name}: REST messages carry no fromUserId: {vars(e)}"


def test_group_and_user_membership(dp):
    svc = dp.service
    c1 = dp.connect("json", user_id="u1", label="c1(u1)")
    c2 = dp.connect("reliable", user_id="u1", label="c2(u1)")
    c3 = dp.connect("reliable", user_id="u2", label="c3(u2)")
    conns = [c1, c2, c3]

    def stage(groups):
        tag = uid("t")
        for g in groups:
            svc.send_to_group(g, f"{tag}@{g}", content_type="text/plain")
        dp.flush(conns)
        return [sorted(e.data.split("@")[1] for _, e in c.messages if isinstance(e.data, str) and e.data.startswith(f"{tag}@"))
                for c in conns]

    svc.add_connection_to_group("ga", c3.connection_id)
    assert stage(["ga"]) == [[], [], ["ga"]]
    svc.remove_connection_from_group("ga", c3.connection_id)
    assert stage(["ga"]) == [[], [], []]
    svc.add_user_to_group("gb", "u1")
    assert stage(["gb"]) == [["gb"], ["gb"], []]
    svc.remove_user_from_group("gb", "u1")
    assert stage(["gb"]) == [[], [], []]
    svc.add_user_to_group("gc", "u1")
    svc.add_connection_to_group("gc", c3.connection_id)
    svc.remove_user_from_all_groups("u1")
    assert stage(["gc"]) == [[], [], ["gc"]]
    svc.add_connection_to_group("gd", c3.connection_id)
    svc.remove_connection_from_all_groups(c3.connection_id)
    assert stage(["gc", "gd"]) == [[], [], []]

    with pytest.raises(ResourceNotFoundError) as exc:
        svc.add_connection_to_group("ga", "no-such-connection")
    assert exc.value.status_code == 404


def test_exists_checks(dp):
    svc = dp.service
    c = dp.connect("json", user_id="exists-user", groups=["exists-group"])
    assert svc.connection_exists(c.connection_id) is True
    assert svc.connection_exists("no-such-connection") is False
    assert svc.user_exists("exists-user") is True
    assert svc.user_exists("no-such-user") is False
    assert svc.group_exists("exists-group") is True
    assert svc.group_exists("no-such-group") is False
    c.close()
    wait_for(lambda: not svc.connection_exists(c.connection_id) and not svc.user_exists("exists-user")
             and not svc.group_exists("exists-group"), timeout=5, what="connection/user/group gone after close")


def test_permissions_grant_revoke_has(dp):
    svc = dp.service
    c = dp.connect("reliable", user_id="perm", groups=["pg"])
    watcher = dp.connect("json", groups=["pg", "other"])
    cid = c.connection_id
    assert svc.has_permission("sendToGroup", cid, target_name="pg") is False
    assert svc.has_permission("joinLeaveGroup", cid) is False
    with pytest.raises(SendMessageError) as exc:
        c.client.send_to_group("pg", "before grant", WebPubSubDataType.TEXT)
    assert exc.value.error_detail.name == "Forbidden"

    svc.grant_permission("sendToGroup", cid, target_name="pg")
    assert svc.has_permission("sendToGroup", cid, target_name="pg") is True
    assert svc.has_permission("sendToGroup", cid, target_name="other") is False
    c.client.send_to_group("pg", "after grant", WebPubSubDataType.TEXT)

    svc.grant_permission("joinLeaveGroup", cid)
    assert svc.has_permission("joinLeaveGroup", cid) is True
    c.client.join_group("any1")
    svc.revoke_permission("joinLeaveGroup", cid)
    assert svc.has_permission("joinLeaveGroup", cid) is False
    with pytest.raises(SendMessageError) as exc:
        c.client.join_group("any2")
    assert exc.value.error_detail.name == "Forbidden"

    svc.revoke_permission("sendToGroup", cid, target_name="pg")
    assert svc.has_permission("sendToGroup", cid, target_name="pg") is False
    with pytest.raises(SendMessageError) as exc:
        c.client.send_to_group("pg", "after revoke", WebPubSubDataType.TEXT)
    assert exc.value.error_detail.name == "Forbidden"
    dp.flush([watcher])
    assert watcher.summary() == ["group:pg:text:after grant"]


def test_list_connections_paging(dp):
    svc = dp.service
    members = [dp.connect("json" if i % 2 else "reliable", user_id=f"lu{i}", groups=["lg"]) for i in range(5)]
    dp.connect("json", user_id="not-member", groups=["other"])
    want = sorted((m.connection_id, f"lu{i}") for i, m in enumerate(members))

    pages = [list(p) for p in svc.list_connections(group="lg", maxpagesize=2).by_page()]
    assert all(len(p) <= 2 for p in pages), f"page sizes {[len(p) for p in pages]}"
    assert len(pages) >= 3, f"page sizes {[len(p) for p in pages]}"
    listed = sorted((m.connection_id, m.user_id) for p in pages for m in p)
    assert listed == want

    assert sorted((m.connection_id, m.user_id) for m in svc.list_connections(group="lg")) == want
    top = list(svc.list_connections(group="lg", top=3))
    assert len(top) == 3 and len({m.connection_id for m in top}) == 3
    assert list(svc.list_connections(group="empty-group")) == []


def wait_disconnected(conn, timeout=10.0):
    wait_for(lambda: conn.disconnected, timeout=timeout, what=f"{conn.label}: disconnected callback")
    return conn.disconnected[0]


def assert_alive(dp, conn):
    assert conn.disconnected == [], f"{conn.label}: {[vars(d) for d in conn.disconnected]}"
    assert dp.service.connection_exists(conn.connection_id) is True
    text = f"alive-{uid()}"
    dp.service.send_to_connection(conn.connection_id, text, content_type="text/plain")
    conn.wait_message(text)


def test_close_connection_with_reason_and_bulk_closes(dp):
    svc = dp.service
    victim = dp.connect("json", user_id="v", label="victim")
    svc.close_connection(victim.connection_id, reason="bye from python")
    ev = wait_disconnected(victim)
    assert ev.message == "bye from python", vars(ev)
    wait_for(lambda: not svc.connection_exists(victim.connection_id), timeout=5, what="victim gone")

    u1a = dp.connect("json", user_id="u1", label="u1a")
    u1keep = dp.connect("json", user_id="u1", label="u1keep")
    u2 = dp.connect("json", user_id="u2", groups=["cg"], label="u2(cg)")
    m1 = dp.connect("json", user_id="m1", groups=["cg"], label="m1(cg)")
    m2 = dp.connect("json", user_id="m2", groups=["cg"], label="m2(cg)")
    svc.close_user_connections("u1", excluded=[u1keep.connection_id], reason="user out")
    assert wait_disconnected(u1a).message == "user out"
    svc.close_group_connections("cg", excluded=[u2.connection_id], reason="group out")
    assert wait_disconnected(m1).message == "group out"
    wait_disconnected(m2)
    assert_alive(dp, u1keep)
    assert_alive(dp, u2)

    svc.close_all_connections(excluded=[u2.connection_id], reason="all out")
    wait_disconnected(u1keep)
    wait_for(lambda: not svc.connection_exists(u1keep.connection_id), timeout=5, what="u1keep gone")
    time.sleep(0.1)
    assert_alive(dp, u2)
