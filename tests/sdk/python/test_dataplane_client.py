"""Client side with azure-messaging-webpubsubclient: connect (userId, roles, token groups),
joinGroup/leaveGroup with and without roles, sendToGroup text/json/binary with echo and
noEcho, and Duplicate acks for a repeated explicit ackId."""

import pytest
from azure.messaging.webpubsubclient.models import SendMessageError, WebPubSubDataType

from dataplane import uid
from harness import wait_for


def receives_group(dp, conn, group) -> bool:
    text = f"probe-{group}-{uid()}"
    dp.service.send_to_group(group, text, content_type="text/plain")
    dp.flush([conn])
    return conn.has(text)


def assert_ack_error(fn, name: str, what: str):
    with pytest.raises(SendMessageError) as exc:
        fn()
    detail = exc.value.error_detail
    assert detail is not None and detail.name == name, f"{what}: error_detail {detail!r} ({exc.value})"


@pytest.mark.parametrize("protocol", ["json", "reliable"])
def test_connect_user_roles_and_token_groups(dp, protocol):
    c = dp.connect(protocol, user_id="alice", roles=["webpubsub.joinLeaveGroup"], groups=["g1", "g2"])
    assert len(c.connected) == 1
    ev = c.connected[0]
    assert isinstance(ev.connection_id, str) and ev.connection_id
    assert ev.user_id == "alice"
    assert dp.service.connection_exists(ev.connection_id) is True
    assert dp.service.user_exists("alice") is True
    assert dp.service.group_exists("g1") is True

    dp.service.send_to_group("g1", "to-g1", content_type="text/plain")
    dp.service.send_to_group("g2", {"to": "g2"})
    dp.service.send_to_group("g3", "to-g3", content_type="text/plain")
    dp.flush([c])
    assert c.summary() == sorted(["group:g1:text:to-g1", 'group:g2:json:{"to":"g2"}'])
    for _, e in c.messages:
        if e.data_type != "text" or not str(e.data).startswith("~marker~"):
            assert e.from_user_id is None, f"REST group message without fromUserId: {vars(e)}"
            if protocol == "reliable":
                assert isinstance(e.sequence_id, int), f"reliable messages carry a sequenceId: {vars(e)}"


def test_join_leave_with_roles_and_forbidden_without(dp):
    c = dp.connect("reliable", user_id="joiner", roles=["webpubsub.joinLeaveGroup"])
    assert not receives_group(dp, c, "room")
    c.client.join_group("room")
    assert receives_group(dp, c, "room"), "in room after join_group"
    c.client.leave_group("room")
    assert not receives_group(dp, c, "room"), "not in room after leave_group"

    exact = dp.connect("json", roles=["webpubsub.joinLeaveGroup.g1"], label="exact role")
    exact.client.join_group("g1")
    assert receives_group(dp, exact, "g1")
    assert_ack_error(lambda: exact.client.join_group("g2"), "Forbidden", "join g2 with role for g1")

    wild = dp.connect("reliable", roles=["webpubsub.joinLeaveGroups.chat.*"], label="wildcard role")
    wild.client.join_group("chat.a")
    assert receives_group(dp, wild, "chat.a")
    assert_ack_error(lambda: wild.client.join_group("chat.a.b"), "Forbidden", "join chat.a.b with chat.*")

    none = dp.connect("json", user_id="nobody", label="no role")
    assert_ack_error(lambda: none.client.join_group("room"), "Forbidden", "join without role")
    assert not receives_group(dp, none, "room")


@pytest.mark.parametrize("protocol", ["json", "reliable"])
def test_send_to_group_types_echo_noecho(dp, protocol):
    sender = dp.connect(protocol, user_id="alice", roles=["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"], label="sender")
    receiver = dp.connect(protocol, user_id="bob", groups=["room"], label="receiver")
    outsider = dp.connect(protocol, user_id="carol", groups=["elsewhere"], label="outsider")
    sender.client.join_group("room")

    sender.client.send_to_group("room", "hello text", WebPubSubDataType.TEXT)
    sender.client.send_to_group("room", {"a": 1, "b": [True, None]}, WebPubSubDataType.JSON)
    sender.client.send_to_group("room", memoryview(bytes([0, 1, 2, 255])), WebPubSubDataType.BINARY)
    sender.client.send_to_group("room", "no echo", WebPubSubDataType.TEXT, no_echo=True)
    sender.client.send_to_group("room", "no ack", WebPubSubDataType.TEXT, ack=False)

    expected = sorted([
        "group:room:text:hello text",
        'group:room:json:{"a":1,"b":[true,null]}',
        "group:room:binary:AAEC/w==",
        "group:room:text:no echo",
        "group:room:text:no ack",
    ])
    wait_for(lambda: len(receiver.summary()) >= len(expected), timeout=5, what=f"receiver messages; got {receiver.summary()}")
    dp.flush([sender, receiver, outsider])
    assert receiver.summary() == expected
    assert sender.summary() == sorted(e for e in expected if not e.endswith(":no echo"))
    assert outsider.summary() == []
    for _, e in receiver.messages:
        if e.data_type != "text" or not str(e.data).startswith("~marker~"):
            assert e.from_user_id == "alice" and e.group == "room", vars(e)

    member = dp.connect(protocol, user_id="member", groups=["room"], label="member without role")
    assert_ack_error(lambda: member.client.send_to_group("room", "denied", WebPubSubDataType.TEXT), "Forbidden",
                     "send_to_group without role")
    dp.flush([receiver])
    assert not receiver.has("denied")


def test_duplicate_ack_id_is_delivered_once(dp):
    sender = dp.connect("reliable", user_id="dup", roles=["webpubsub.sendToGroup"])
    receiver = dp.connect("json", groups=["dg"])
    sender.client.send_to_group("dg", "once", WebPubSubDataType.TEXT, ack_id=1000)
    # A Duplicate ack counts as success for the SDK: no exception.
    sender.client.send_to_group("dg", "once", WebPubSubDataType.TEXT, ack_id=1000)
    sender.client.send_to_group("dg", "fresh", WebPubSubDataType.TEXT, ack_id=1001)
    dp.flush([receiver])
    assert receiver.summary() == ["group:dg:text:fresh", "group:dg:text:once"]


def test_send_event_without_handler_is_invocation_failed(dp):
    c = dp.connect("json", user_id="ev")
    assert_ack_error(lambda: c.client.send_event("myEvent", "text body", WebPubSubDataType.TEXT), "InvocationFailed",
                     "send_event without event handler")
    dp.service.send_to_connection(c.connection_id, "still connected", content_type="text/plain")
    c.wait_message("still connected")
    assert c.disconnected == []
