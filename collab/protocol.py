"""Wire messages of protocol v1 (docs/protocol.md): parse, validate, build.

What lives here: turning an untrusted frame into a checked message object,
with a ProtocolError carrying the right code for anything else, and turning
server events into frame bytes. What never lives here: state, sockets.
Frames are built as bytes once and sent as-is to every connection.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import orjson

from .changes import ChangeSet
from .errors import CLOSE_PROTOCOL, ChangeError, ProtocolError, brief
from .rebase import Update
from .sequencer import Accepted

SUBPROTOCOL = "collab.v1"
DOC_NAME = re.compile(r"[A-Za-z0-9_-]{1,100}")
_COLOR = re.compile(r"#(?:[0-9A-Fa-f]{3}|[0-9A-Fa-f]{4}|[0-9A-Fa-f]{6}|[0-9A-Fa-f]{8})")
MAX_CLIENT_ID = 128
_PERSON = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_NAME = 100
MAX_OPENED = 2 ** 53 - 1  # hello.opened: what a JavaScript number holds exactly
MAX_DOC_ID = 64  # hello.docId: characters (ours are 16: doc_identity)
DEFAULT_USER = {"name": "Anonymous", "color": "#888888"}


@dataclass(frozen=True, slots=True)
class Hello:
    client_id: str
    version: int | None
    user: dict
    resume_key: str | None = None  # the key a previous welcome gave this clientID: proof it is the same client
    opened: int | None = None  # grows with each connection the client opens: of two, the larger is the newer
    doc_id: str | None = None  # the docId of the welcome `version` came from: which document of this name it is
    checkpoints: bool = False  # send this connection a `checkpoints` frame when a version is named or renamed


@dataclass(frozen=True, slots=True)
class Push:
    version: int
    updates: list[Update]


@dataclass(frozen=True, slots=True)
class Presence:
    version: int
    ranges: list[tuple[int, int]]


def valid_doc_name(name: str) -> bool:
    return bool(DOC_NAME.fullmatch(name))


def valid_person(person: str) -> bool:
    return bool(_PERSON.fullmatch(person))


def valid_color(color: str) -> bool:
    return bool(_COLOR.fullmatch(color))


def doc_name(name: str) -> str:
    """`name` if it is a document name, else bad-request (names are 1-100 of A-Z a-z 0-9 - _)."""
    if not valid_doc_name(name):
        raise ProtocolError("bad-request", "document names are 1-100 letters, digits, '-' or '_'")
    return name


def clean_name(raw: str, default: str) -> str:
    """A person's name as shown to others: NFC, no control or format characters, spaces collapsed.

    Format characters (Unicode category Cf) include bidirectional overrides
    and zero-width characters, which could make a name look like another or
    reverse the text around it; control characters (Cc) include line breaks.
    At most MAX_NAME characters come out, whatever went in: NFC can make a
    name longer (U+FB2C is three characters), so the result is cut there.
    """
    text = unicodedata.normalize("NFC", raw)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf"))
    return " ".join(text.split())[:MAX_NAME].rstrip() or default


def _is_count(value) -> bool:
    return type(value) is int and value >= 0


def parse(data: bytes | str, max_updates: int = 1000, max_ranges: int = 100, first: bool = False,
          may_push: bool = True) -> Hello | Push | Presence:
    """One client frame, checked; raises ProtocolError with the protocol's code.

    A frame that will be refused whatever it holds is not read further than it
    takes to say so (a push's changes may be a megabyte of sections, each
    made into Python objects on the event loop): `first`, a connection's first
    frame, must be a hello (a push or presence gets only its count checked,
    `too-large` over the limit, else `bad-message`); with `may_push` False (a
    view session) a push is `read-only` at once.
    """
    try:
        msg = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad-json", f"frame is not valid JSON: {exc}") from None
    if type(msg) is not dict:
        raise ProtocolError("bad-message", f"a frame must be a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if first and kind != "hello":
        if kind == "push" or kind == "presence":
            _version_and_list(msg, kind, *_LISTS[kind], max_updates if kind == "push" else max_ranges)
        raise ProtocolError("bad-message", "the first frame must be hello")
    if kind == "push":
        if not may_push:
            raise ProtocolError("read-only", "this session may only view the document")
        return _push(msg, max_updates)
    if kind == "presence":
        return _presence(msg, max_ranges)
    if kind == "hello":
        return _hello(msg)
    if type(kind) is not str:
        raise ProtocolError("bad-message", "a frame needs a string \"type\"")
    raise ProtocolError("bad-message", f"unknown frame type {brief(kind)}")


def _hello(msg: dict) -> Hello:
    client_id = msg.get("clientID")
    if type(client_id) is not str or not 0 < len(client_id) <= MAX_CLIENT_ID or "\x00" in client_id:
        raise ProtocolError("bad-message", f"hello.clientID must be a string of 1-{MAX_CLIENT_ID} characters "
                            "(no U+0000)", close=CLOSE_PROTOCOL)
    version = msg.get("version")
    if version is not None and not _is_count(version):
        raise ProtocolError("bad-message", f"hello.version must be null or a non-negative integer, got {brief(version)}",
                            close=CLOSE_PROTOCOL)
    user = msg.get("user")
    if user is None:  # as for every optional field: null is absent
        user = DEFAULT_USER
    elif type(user) is not dict:
        raise ProtocolError("bad-message", "hello.user must be an object {name, color}", close=CLOSE_PROTOCOL)
    name = user.get("name", DEFAULT_USER["name"])
    color = user.get("color", DEFAULT_USER["color"])
    if type(name) is not str or len(name) > MAX_NAME:
        raise ProtocolError("bad-message", f"hello.user.name must be a string of at most {MAX_NAME} characters",
                            close=CLOSE_PROTOCOL)
    if type(color) is not str or not _COLOR.fullmatch(color):
        raise ProtocolError("bad-message", "hello.user.color must be a hex colour like #3366ff",
                            close=CLOSE_PROTOCOL)
    person = msg.get("person")
    if person is not None and (type(person) is not str or not _PERSON.fullmatch(person)):
        raise ProtocolError("bad-message", "hello.person must be 1-64 letters, digits, '-' or '_'",
                            close=CLOSE_PROTOCOL)
    resume_key = msg.get("resumeKey")
    if resume_key is not None and (type(resume_key) is not str or not 0 < len(resume_key) <= MAX_CLIENT_ID):
        raise ProtocolError("bad-message", f"hello.resumeKey must be a string of 1-{MAX_CLIENT_ID} characters",
                            close=CLOSE_PROTOCOL)
    opened = msg.get("opened")
    if opened is not None and not (_is_count(opened) and opened <= MAX_OPENED):
        raise ProtocolError("bad-message", f"hello.opened must be an integer from 0 to {MAX_OPENED}, "
                            f"got {brief(opened)}", close=CLOSE_PROTOCOL)
    doc_id = msg.get("docId")
    if doc_id is not None and (type(doc_id) is not str or not 0 < len(doc_id) <= MAX_DOC_ID):
        raise ProtocolError("bad-message", f"hello.docId must be a string of 1-{MAX_DOC_ID} characters",
                            close=CLOSE_PROTOCOL)
    checkpoints = msg.get("checkpoints")
    if checkpoints is not None and type(checkpoints) is not bool:
        raise ProtocolError("bad-message", f"hello.checkpoints must be true or false, got {brief(checkpoints)}",
                            close=CLOSE_PROTOCOL)
    user = {"name": clean_name(name, DEFAULT_USER["name"]), "color": color}
    if person is not None:
        user["person"] = person  # one person in several tabs is one entry in everyone's list
    return Hello(client_id, version, user, resume_key, opened, doc_id, checkpoints is True)


def _version_and_list(msg: dict, kind: str, field: str, shape: str, limit: int) -> tuple[int, list]:
    """The `version` and the list in `field` that push and presence frames both carry, checked."""
    version = msg.get("version")
    if not _is_count(version):
        raise ProtocolError("bad-message", f"{kind}.version must be a non-negative integer, got {brief(version)}")
    raw = msg.get(field)
    if type(raw) is not list:
        raise ProtocolError("bad-message", f"{kind}.{field} must be a list of {shape}")
    if len(raw) > limit:
        raise ProtocolError("too-large", f"a {kind} may carry at most {limit} {field}, this one has {len(raw)}")
    return version, raw


_LISTS = {"push": ("updates", "{clientID, changes}"), "presence": ("ranges", "{anchor, head}")}  # kind: its list


def _push(msg: dict, max_updates: int) -> Push:
    version, raw = _version_and_list(msg, "push", *_LISTS["push"], max_updates)
    updates = []
    for k, item in enumerate(raw):
        if type(item) is not dict:
            raise ProtocolError("bad-message", f"push.updates[{k}] must be an object {{clientID, changes}}")
        client_id = item.get("clientID")
        if type(client_id) is not str:
            raise ProtocolError("bad-message", f"push.updates[{k}].clientID must be a string")
        if "changes" not in item:
            raise ProtocolError("bad-message", f"push.updates[{k}] has no changes")
        try:
            changes = ChangeSet.from_json(item["changes"]).normalized()
        except ChangeError as exc:
            raise ChangeError(f"push.updates[{k}].changes: {exc.message}") from None
        if any("\x00" in text for text in changes.inserted):
            # PostgreSQL's text cannot hold U+0000; refused here so both backends store the same.
            raise ChangeError(f"push.updates[{k}].changes: inserted text may not contain U+0000")
        updates.append(Update(client_id, changes))
    return Push(version, updates)


def _presence(msg: dict, max_ranges: int) -> Presence:
    version, raw = _version_and_list(msg, "presence", *_LISTS["presence"], max_ranges)
    ranges = []
    for k, r in enumerate(raw):
        if type(r) is not dict or not _is_count(r.get("anchor")) or not _is_count(r.get("head")):
            raise ProtocolError("bad-message", f"presence.ranges[{k}] must be {{anchor, head}} "
                                "with non-negative integers")
        ranges.append((r["anchor"], r["head"]))
    return Presence(version, ranges)


# --------------------------------------------------------------------- frames

def _update_json(update: Update, hide=None) -> dict:
    client_id = update.client_id if hide is None else hide(update.client_id)
    return {"clientID": client_id, "changes": update.changes.to_json()}


def doc_identity(created: float) -> str:
    """welcome.docId of the document made at `created` (its creation time as stored, seconds): which
    document of a name a client's versions are of. Made from the creation time, not the row's id,
    because a copy keeps it (`collab copy`, `collab backup`) where ids are given anew: a page with
    unsent edits resumes after an install moved as before. Two documents that had one name in turn
    were made at two different moments."""
    return hashlib.blake2b(repr(float(created)).encode(), digest_size=8).hexdigest()


def welcome(session: str, role: str, version: int, peers: list[dict], limits: dict, resume_key: str, *,
            doc_json: bytes | None = None, since: int | None = None, updates: list[Update] | None = None,
            hide=None, doc_id: str | None = None) -> bytes | tuple[bytes, bytes, bytes]:
    """The reply to hello: the full document, or the updates `since` a version (a resume).

    `doc_json` is the document already serialised as a JSON string (shared by
    every welcome of that version): the frame is then returned as three parts
    (head, document, tail) that the connection writes in place. `limits`
    ({maxFrame, maxDoc, maxUpdates, maxRanges}) tells the client what the
    server accepts; `resume_key` is the client's proof for its next hello;
    `hide` replaces the clientIDs of resumed updates (view sessions never see
    other people's clientIDs); `doc_id` (`doc_identity`; None: nobody made the
    document yet) tells which document of this name the versions are of
    (`docId`). A stock client ignores the extra fields.
    """
    frame = {"type": "welcome", "session": session, "role": role, "version": version, "peers": peers,
             "limits": limits, "resumeKey": resume_key}
    if doc_id is not None:
        frame["docId"] = doc_id
    if doc_json is not None:
        return orjson.dumps(frame)[:-1] + b',"doc":', doc_json, b"}"
    frame["from"] = since
    frame["updates"] = [_update_json(u, hide) for u in updates or ()]
    return orjson.dumps(frame)


def updates_frame(batch: list[Accepted], hide=None, doc_id: str | None = None) -> bytes:
    """The `updates` frame, assembled from each entry's already-serialised changes.

    With `hide`, every clientID is replaced by `hide(clientID)` (the frame view sessions get).
    An update made by a restore also says so: `"restore": {"version", "author"}` (an extension:
    everyone, view sessions included, can tell people what a restore did). The frame from version
    0, the one that made the document, says which document it made (`_born`).
    """
    parts = [b'{"clientID":%s,"changes":%s%s}' % (
        orjson.dumps(e.update.client_id if hide is None else hide(e.update.client_id)), e.changes_json,
        b"" if e.restored_from is None else
        b',"restore":%s' % orjson.dumps({"version": e.restored_from, "author": e.author}))
        for e in batch]
    start = batch[0].version - 1
    return b'{"type":"updates","from":%d,"updates":[%s]%s}' % (start, b",".join(parts), _born(start, doc_id))


def resumed_frame(start: int, updates: list[Update], hide=None, doc_id: str | None = None) -> bytes:
    """An `updates` frame from version `start` out of the log (a resume's frames after its welcome, or
    another process's commit); from version 0, it says which document it made (`_born`)."""
    return orjson.dumps({"type": "updates", "from": start, "updates": [_update_json(u, hide) for u in updates]})[:-1] \
        + _born(start, doc_id) + b"}"


def _born(start: int, doc_id: str | None) -> bytes:
    """`,"docId":...` for the frame from version 0 of the document `doc_id` (`doc_identity`): a client that
    joined before anybody made the document (its welcome had no docId) learns from it which document its
    versions are of."""
    return b',"docId":' + orjson.dumps(doc_id) if start == 0 and doc_id is not None else b""


def presence_object(session: str, user: dict, version: int, ranges: list[tuple[int, int]]) -> dict:
    return {"type": "presence", "session": session, "user": user, "version": version,
            "ranges": [{"anchor": a, "head": h} for a, h in ranges]}


def presences_frame(peers: list[dict]) -> bytes:
    """Every cursor that moved in one tick (presence objects), the same frame for every connection."""
    return orjson.dumps({"type": "presences", "peers": peers})


def leave_frame(session: str) -> bytes:
    return orjson.dumps({"type": "leave", "session": session})


def checkpoints_frame(version: int) -> bytes:
    """[extension] The named versions changed at `version` (named, renamed or unnamed): read them again."""
    return b'{"type":"checkpoints","version":%d}' % version


def error_frame(code: str, message: str, retry_after: float | None = None) -> bytes:
    frame = {"type": "error", "code": code, "message": message}
    if retry_after is not None:
        frame["retryAfter"] = round(retry_after, 3)
    return orjson.dumps(frame)


_ERROR_START = orjson.dumps({"type": "error"})[:-1]  # how every error_frame begins (orjson keeps the keys' order)


def is_error_frame(frame: bytes) -> bool:
    """Whether `frame` (serialised) is an `error_frame`."""
    return frame.startswith(_ERROR_START)


MAX_CLOSE_REASON = 123  # bytes: a close frame's payload is at most 125, two of them the code


def close_reason(message: str) -> bytes:
    """`message` as a close frame's reason: at most 123 bytes and still valid UTF-8.

    Cutting the encoded bytes blindly can split a character (an error message
    may quote a client's emoji); the client must then fail the connection as
    invalid UTF-8, and sees 1007 or 1006 instead of our close code.
    """
    return message.encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore").encode()
