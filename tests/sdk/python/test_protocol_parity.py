"""The newest features with the Python SDKs: REST sends from azure-messaging-webpubsubservice
carrying X-WebPubSub-Metadata-* headers (azure-core's `headers=` keyword) reach a raw JSON client
as metadata; a message with metadata and a group stream written by a raw JSON client reach an
azure-messaging-webpubsubclient client as ordinary group messages, in order; group state between
two raw clients."""

import pytest
from azure.core.exceptions import HttpResponseError

from harness import wait_for

JSON = "json.webpubsub.azure.v1"


def test_rest_metadata_headers_from_the_python_service_sdk(dp):
    raw = dp.raw(subprotocols=[JSON], user_id="r", groups=["g"])
    svc = dp.service
    svc.send_to_all("to all", content_type="text/plain", headers={"X-WebPubSub-Metadata-Trace": "t-1"})
    svc.send_to_group("g", {"n": 1}, headers={"X-WebPubSub-Metadata-Kind": "json", "X-WebPubSub-Metadata-Trace": "t-2"})
    svc.send_to_connection(raw.connection_id, "to one", content_type="text/plain")
    messages = wait_for(lambda: [j for j in raw.json if j.get("type") == "message"] if
                        len([j for j in raw.json if j.get("type") == "message"]) >= 3 else None,
                        what="three messages")
    assert [(m["data"], m.get("metadata")) for m in messages] == [
        ("to all", {"trace": "t-1"}),
        ({"n": 1}, {"kind": "json", "trace": "t-2"}),
        ("to one", None),
    ]
    with pytest.raises(HttpResponseError) as refused:
        svc.send_to_all("bad", content_type="text/plain", headers={"X-WebPubSub-Metadata-Bad": "caf\u00e9"})
    assert refused.value.status_code == 400
    assert "InvalidMetadata" in str(refused.value)


def test_the_python_client_gets_metadata_messages_and_stream_fragments_as_group_messages(dp):
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    py = dp.connect("reliable", user_id="py", roles=roles, groups=["live"])
    pub = dp.raw(subprotocols=[JSON], user_id="pub", roles=roles, groups=["live"])
    pub.send({"type": "sendToGroup", "group": "live", "dataType": "text", "data": "meta", "metadata": {"k": "v"}, "ackId": 1})
    assert pub.wait_ack(1)["success"] is True
    pub.send({"type": "sendToGroup", "group": "live", "noEcho": True, "stream": {"streamId": "s"}})
    pub.wait_json(lambda j: j.get("type") == "streamAck" and j.get("expectedSequenceId") == 1, "stream opened")
    for i in range(1, 6):
        pub.send({"type": "streamData", "streamId": "s", "streamSequenceId": i, "dataType": "text", "data": f"part {i}"})
    pub.send({"type": "streamEnd", "streamId": "s"})
    pub.wait_json(lambda j: j.get("type") == "streamClosed" and j.get("streamId") == "s", "stream closed")
    wait_for(lambda: len(py.messages) >= 7, what=f"{py.label}: seven group messages; got {py.summary()}")
    # Callbacks run on threads that may reorder them: the reliable sequence ids give the order.
    ordered = sorted((m for _, m in py.messages), key=lambda m: m.sequence_id)
    datas = [m.data for m in ordered]
    assert datas == ["meta", "part 1", "part 2", "part 3", "part 4", "part 5", ""], datas
    assert [m.sequence_id for m in ordered] == list(range(1, 8))
    assert all(m.group == "live" and m.from_user_id == "pub" for _, m in py.messages)


def test_group_state_between_raw_clients(dp):
    a = dp.raw(subprotocols=[JSON], user_id="a", groups=["room"])
    b = dp.raw(subprotocols=[JSON], user_id="b", groups=["room"])
    a.send({"type": "setGroupState", "group": "room", "state": {"status": "here"}, "ackId": 1})
    assert a.wait_ack(1)["success"] is True
    b.send({"type": "subscribeGroupState", "group": "room", "ackId": 2})
    assert b.wait_ack(2)["success"] is True
    snapshot = b.wait_json(lambda j: j.get("type") == "groupStateSnapshot", "snapshot")
    assert [(i["connectionId"], i.get("userId"), i.get("state")) for i in snapshot["items"]] == [
        (a.connection_id, "a", {"status": "here"})]
    a.send({"type": "setGroupState", "group": "room", "ackId": 3})
    update = b.wait_json(lambda j: j.get("type") == "groupStateUpdate", "the clearing update")
    assert update["items"][0]["connectionId"] == a.connection_id and "state" not in update["items"][0]
