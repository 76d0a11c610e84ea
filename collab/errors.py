"""Every error and close code of collab, in one table, and the exceptions that carry them.

Rules that always hold:
  * a refusal is raised as an exception whose `code` is a key of `CODES`; the
    table gives its HTTP status, the WebSocket close code when the refusal
    ends a connection by itself, who was wrong, and what it means;
  * who was wrong decides the class: `ProtocolError` when the peer sent
    something we refuse (its fault: fix the request), `ServerError` when we
    cannot do it right now (storage failed, the document is reloading: try
    again). Both are `CollabError`;
  * each adapter converts them in exactly one place: ws.py `refuse` into an
    `error` frame (and a close when the error carries one), api.py's
    `error_answer` into `{"error": {"code", "message"}}` (or a short HTML
    page for a person following a link); `error_middleware` calls it for
    every request, and ws.handle for a WebSocket refused before its upgrade.
    A bare KeyError or TypeError reaching a client is a bug (answered as
    `internal`);
  * docs/protocol.md, the README and the browser's core (static/src/core.js)
    list exactly these codes; tests/test_error_table.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

# WebSocket close codes.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN = 1013
CLOSE_PROTOCOL = 4000
CLOSE_REPLACED = 4001
CLOSE_RATE_LIMITED = 4429

SHUTTING_DOWN = "server shutting down"  # the reason every connection is closed with (1001) when the server stops

CLOSE_CODES: dict[int, str] = {
    CLOSE_GOING_AWAY: "the server is shutting down or restarting: reconnect",
    CLOSE_POLICY: "the access token is missing, invalid or revoked: do not reconnect with it",
    CLOSE_TOO_BIG: "a frame was over the server's size limit",
    CLOSE_INTERNAL: "the server could not save or load the document: reconnect after a pause",
    CLOSE_TRY_AGAIN: "the connection fell too far behind reading: reconnect and resume",
    CLOSE_PROTOCOL: "protocol violation (for example a first frame that is not hello)",
    CLOSE_REPLACED: "replaced by a newer connection of the same client",
    CLOSE_RATE_LIMITED: "persistently over the rate limit: reconnect more slowly",
}


@dataclass(frozen=True, slots=True)
class Code:
    name: str
    http: int
    close: int | None  # closes the connection by itself (None: the connection stays open)
    peer: bool         # True: the peer was wrong; False: we were (try again later)
    meaning: str


CODES: dict[str, Code] = {c.name: c for c in (
    Code("bad-json", 400, None, True, "the frame or body is not JSON (or a text frame is not UTF-8)"),
    Code("bad-message", 400, None, True, "wrong or missing fields in a frame (close 4000 before hello)"),
    Code("bad-changes", 400, None, True, "invalid ChangeSetJSON, wrong length, a split surrogate pair "
                                         "or a line break inside a line"),
    Code("bad-version", 400, None, True, "the version is in the future, or too old to rebase"),
    Code("read-only", 403, None, True, "this session or token may only view the document"),
    Code("too-large", 413, None, True, "a frame, push or document over the server's limit"),
    Code("rate-limited", 429, None, True, "too many frames, requests or connections; slow down"),
    Code("bad-request", 400, None, True, "a bad HTTP parameter or body"),
    Code("unauthorized", 401, CLOSE_POLICY, True, "an access token is needed"),
    Code("forbidden", 403, CLOSE_POLICY, True, "the token does not give this access (or was revoked)"),
    Code("not-found", 404, None, True, "no such document, version or page"),
    Code("conflict", 409, None, True, "the name is taken"),
    Code("unavailable", 503, None, False, "the server cannot take this right now (storage failed or "
                                          "is nearly full, the document is reloading, the server is busy); "
                                          "try again later"),
    Code("internal", 500, CLOSE_INTERNAL, False, "a bug on the server's side"),
)}

HTTP_STATUS: dict[str, int] = {name: c.http for name, c in CODES.items()}


def brief(value, limit: int = 40) -> str:
    """A short, safe description of an untrusted value for an error message.

    Never `repr` what a client sent: a list nested a thousand deep makes repr
    raise RecursionError, and a megabyte string would be echoed back whole.
    """
    if value is None or type(value) in (bool, int, float):
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "…"
    if type(value) is str:
        return repr(value[:limit]) + ("…" if len(value) > limit else "")
    if type(value) in (list, dict):
        return f"a {'list' if type(value) is list else 'object'} of {len(value)}"
    return f"a {type(value).__name__}"


class CollabError(Exception):
    """A refusal with a code from `CODES`; `close` is set when it also ends the connection."""

    def __init__(self, code: str, message: str, close: int | None = None, retry_after: float | None = None):
        if code not in CODES:
            raise ValueError(f"unknown error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close
        self.retry_after = retry_after  # seconds before the same request can succeed (a budget refilling)

    @property
    def status(self) -> int:
        return CODES[self.code].http

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r}, close={self.close!r})"


class ProtocolError(CollabError):
    """The peer sent something we refuse (a bad frame, a bad request, a bad token)."""


class ServerError(CollabError):
    """We cannot do it right now: storage failed or is nearly full, the document is reloading (try again).

    `close` ends the WebSocket too (1011 when the document must be reloaded, so
    the client reconnects and resumes from what is durable); without it the
    connection stays open and the client retries the refused push later.
    """

    def __init__(self, message: str, code: str = "unavailable", close: int | None = None):
        super().__init__(code, message, close=CODES[code].close if close is None else close)


class ChangeError(ProtocolError):
    """Invalid ChangeSetJSON or a change that does not fit its document."""

    def __init__(self, message: str):
        super().__init__("bad-changes", message)
