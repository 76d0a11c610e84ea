"""collab/protocol.py: one table of frames and what parsing them gives, h11-style.

Each row is a raw frame and either the message it parses to (as a small
tuple) or the error code (and close code) it is refused with. The builders
are checked by parsing what they build.
"""

from __future__ import annotations

import orjson
import pytest

from collab import protocol
from collab.errors import CLOSE_PROTOCOL, ProtocolError
from collab.sequencer import Accepted
from collab.rebase import Update
from collab.changes import ChangeSet

HELLO = {"type": "hello", "clientID": "c1", "version": None, "user": {"name": "Ann", "color": "#abc"}}


def shape(msg):
    if isinstance(msg, protocol.Hello):
        return ("hello", msg.client_id, msg.version, msg.user)
    if isinstance(msg, protocol.Push):
        return ("push", msg.version, [(u.client_id, u.changes.to_json()) for u in msg.updates])
    return ("presence", msg.version, msg.ranges)


def with_(base: dict, **changes) -> bytes:
    frame = {**base, **changes}
    return orjson.dumps({k: v for k, v in frame.items() if v is not DROP})


DROP = object()

CASES = [
    # hello
    (orjson.dumps(HELLO), ("hello", "c1", None, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, version=7), ("hello", "c1", 7, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, user=DROP), ("hello", "c1", None, protocol.DEFAULT_USER)),
    (with_(HELLO, user={"name": "  ", "color": "#112233"}), ("hello", "c1", None,
                                                             {"name": "Anonymous", "color": "#112233"})),
    (with_(HELLO, user={"name": "Ann\u202e\u200bevil\n", "color": "#abc"}),  # bidi override, zero width
     ("hello", "c1", None, {"name": "Annevil", "color": "#abc"})),
    (with_(HELLO, user={"name": "Cafe\u0301   au  lait", "color": "#abc"}),  # NFC, spaces collapsed
     ("hello", "c1", None, {"name": "Caf\u00e9 au lait", "color": "#abc"})),
    (with_(HELLO, resumeKey="k1"), ("hello", "c1", None, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, resumeKey=7), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, resumeKey=""), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, opened=1764121234567), ("hello", "c1", None, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, opened=0), ("hello", "c1", None, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, opened=-1), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, opened=2 ** 53), ("bad-message", CLOSE_PROTOCOL)),  # past what a JS number holds exactly
    (with_(HELLO, opened=1.5), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, opened="7"), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, opened=True), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, docId="17"), ("hello", "c1", None, {"name": "Ann", "color": "#abc"})),
    (with_(HELLO, docId=17), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, docId=""), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, docId="9" * 65), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, clientID=""), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, clientID="x" * 129), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, clientID=5), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, clientID="a\u0000b"), ("bad-message", CLOSE_PROTOCOL)),  # PostgreSQL text cannot hold it
    (with_(HELLO, version=-1), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, version=1.5), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, version=True), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, user=[]), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, user={"name": "x" * 101}), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, user={"color": "red"}), ("bad-message", CLOSE_PROTOCOL)),
    (with_(HELLO, user={"color": "#abcd\n"}), ("bad-message", CLOSE_PROTOCOL)),
    # push
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1","changes":[[0,"hi"]]}]}',
     ("push", 0, [("c1", [[0, "hi"]])])),
    (b'{"type":"push","version":3,"updates":[{"clientID":"c1","changes":[0,[0,"x"],3]}]}',
     ("push", 3, [("c1", [[0, "x"], 3])])),  # normalised: the empty keep is dropped
    (b'{"type":"push","version":0,"updates":[]}', ("push", 0, [])),
    (b'{"type":"push","version":-1,"updates":[]}', ("bad-message", None)),
    (b'{"type":"push","version":0}', ("bad-message", None)),
    (b'{"type":"push","version":0,"updates":[5]}', ("bad-message", None)),
    (b'{"type":"push","version":0,"updates":[{"changes":[]}]}', ("bad-message", None)),
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1"}]}', ("bad-message", None)),
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1","changes":[[0,"a\\nb"]]}]}', ("bad-changes", None)),
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1","changes":[-1]}]}', ("bad-changes", None)),
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1","changes":[[0,"a\\u0000b"]]}]}',
     ("bad-changes", None)),  # U+0000: PostgreSQL text cannot hold it, so neither backend takes it
    (b'{"type":"push","version":0,"updates":[{"clientID":"c1","changes":{}}]}', ("bad-changes", None)),
    (orjson.dumps({"type": "push", "version": 0, "updates": [{"clientID": "c", "changes": []}] * 3}),
     ("too-large", None)),  # max_updates is 2 in this table
    # presence
    (b'{"type":"presence","version":2,"ranges":[{"anchor":1,"head":3}]}', ("presence", 2, [(1, 3)])),
    (b'{"type":"presence","version":2,"ranges":[]}', ("presence", 2, [])),
    (b'{"type":"presence","version":2,"ranges":[{"anchor":1}]}', ("bad-message", None)),
    (b'{"type":"presence","version":2,"ranges":[{"anchor":-1,"head":0}]}', ("bad-message", None)),
    (b'{"type":"presence","version":2,"ranges":[{"anchor":0,"head":0},{"anchor":0,"head":0},'
     b'{"anchor":0,"head":0}]}', ("too-large", None)),
    # not a frame at all
    (b"", ("bad-json", None)),
    (b"{nope", ("bad-json", None)),
    (b"\xff\xfe{}", ("bad-json", None)),  # not UTF-8
    (b"[1,2]", ("bad-message", None)),
    (b'{"type":5}', ("bad-message", None)),
    (b'{"type":"dance"}', ("bad-message", None)),
    (b"[" * 1000 + b"]" * 1000, ("bad-message", None)),
]


@pytest.mark.parametrize("raw, expected", CASES, ids=[repr(c[0][:40]) for c in CASES])
def test_frames_parse_or_are_refused_with_their_code(raw, expected):
    if expected[0] in ("hello", "push", "presence"):
        assert shape(protocol.parse(raw, max_updates=2, max_ranges=2)) == expected
    else:
        with pytest.raises(ProtocolError) as err:
            protocol.parse(raw, max_updates=2, max_ranges=2)
        assert (err.value.code, err.value.close) == expected
        assert err.value.message and len(err.value.message) < 300


def test_hello_keeps_its_opened_and_resume_key():
    h = protocol.parse(with_(HELLO, opened=1764121234567, resumeKey="k1", docId="9" * 64))
    assert (h.opened, h.resume_key, h.doc_id) == (1764121234567, "k1", "9" * 64)
    assert protocol.parse(orjson.dumps(HELLO)).doc_id is None
    assert protocol.parse(orjson.dumps(HELLO)).opened is None


@pytest.mark.parametrize("name, ok", [
    ("notes", True), ("a" * 100, True), ("A-b_9", True),
    ("", False), ("a" * 101, False), ("notes\n", False), ("no te", False), ("über", False),
    ("a/b", False), ("..", False), ("x\u202e", False),
])
def test_document_names(name, ok):
    assert protocol.valid_doc_name(name) is ok
    if not ok:
        with pytest.raises(ProtocolError) as err:
            protocol.doc_name(name)
        assert err.value.code == "bad-request"


def test_built_frames_read_back():
    limits = {"maxFrame": 10, "maxDoc": 20, "maxUpdates": 3, "maxRanges": 4}
    parts = protocol.welcome("s1", "edit", 4, [], limits, "key1", doc_json=orjson.dumps("te\"xt"))
    assert type(parts) is tuple and parts[1] == b'"te\\"xt"'  # the document's JSON is a part of its own
    assert orjson.loads(b"".join(parts)) == {"type": "welcome", "session": "s1", "role": "edit", "version": 4,
                                             "peers": [], "limits": limits, "resumeKey": "key1", "doc": 'te"xt'}
    made = protocol.doc_identity(1764121234.567891)
    assert type(made) is str and 0 < len(made) <= protocol.MAX_DOC_ID
    assert made == protocol.doc_identity(1764121234.567891) != protocol.doc_identity(1764121234.567892)
    with_id = orjson.loads(b"".join(protocol.welcome("s1", "edit", 4, [], limits, "k", doc_json=b'""', doc_id=made)))
    assert (with_id["docId"], with_id["doc"]) == (made, "")
    one = Update("c1", ChangeSet.from_json([[0, "a", "b"]]))
    resume = orjson.loads(protocol.welcome("s2", "edit", 5, [], limits, "k", since=4, updates=[one], doc_id=made))
    assert resume["docId"] == made
    resume = orjson.loads(protocol.welcome("s2", "edit", 5, [], limits, "k", since=4, updates=[one]))
    assert "docId" not in resume  # nobody made the document yet
    assert (resume["from"], resume["updates"], "doc" in resume) == (4, [{"clientID": "c1",
                                                                          "changes": [[0, "a", "b"]]}], False)
    hidden = orjson.loads(protocol.welcome("s2", "view", 5, [], limits, "k", since=4, updates=[one],
                                           hide=lambda c: "h-" + c))
    assert hidden["updates"] == [{"clientID": "h-c1", "changes": [[0, "a", "b"]]}]
    batch = [Accepted(5, one, "Ann", 1.0), Accepted(6, Update("c\"2", ChangeSet.from_json([3, [0, "😀"]])), "B", 2.0)]
    assert orjson.loads(protocol.updates_frame(batch)) == {
        "type": "updates", "from": 4,
        "updates": [{"clientID": "c1", "changes": [[0, "a", "b"]]}, {"clientID": "c\"2", "changes": [3, [0, "😀"]]}]}
    assert [u["clientID"] for u in orjson.loads(protocol.updates_frame(batch, lambda c: "x" + c))["updates"]] == [
        "xc1", "xc\"2"]
    batch[1].restored_from = 2
    assert orjson.loads(protocol.updates_frame(batch))["updates"][1]["restore"] == {"version": 2, "author": "B"}
    peer = protocol.presence_object("s1", {"name": "A", "color": "#fff"}, 3, [(1, 2)])
    assert orjson.loads(protocol.presences_frame([peer])) == {"type": "presences", "peers": [{
        "type": "presence", "session": "s1", "user": {"name": "A", "color": "#fff"}, "version": 3,
        "ranges": [{"anchor": 1, "head": 2}]}]}
    assert orjson.loads(protocol.leave_frame("s1")) == {"type": "leave", "session": "s1"}
    assert orjson.loads(protocol.error_frame("read-only", "no")) == {"type": "error", "code": "read-only",
                                                                      "message": "no"}


def test_close_reasons_stay_valid_utf8_within_123_bytes():
    reason = protocol.close_reason("x" * 122 + "😀")
    assert len(reason) <= 123
    assert reason.decode("utf-8") == "x" * 122
