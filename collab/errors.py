"""The one error type that crosses module boundaries.

Rules: every refusal of outside input is a `ProtocolError` carrying a protocol
code from `../shared/protocol.md` (`bad-json`, `bad-message`, `bad-changes`,
`bad-version`, `read-only`, `too-large`, `rate-limited`, and for HTTP
`not-found`, `bad-request`, `unauthorized`, `forbidden`) and, when the
connection must end, a WebSocket close code. The adapters (ws.py, api.py)
convert it to a frame or a JSON response in exactly one place each; a bare
KeyError or TypeError reaching a client is a bug.
"""

from __future__ import annotations

# WebSocket close codes of the protocol.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_PROTOCOL = 4000
CLOSE_REPLACED = 4001
CLOSE_RATE_LIMITED = 4429

# HTTP status for each code when it is answered over HTTP.
HTTP_STATUS = {
    "bad-json": 400,
    "bad-message": 400,
    "bad-request": 400,
    "bad-changes": 400,
    "bad-version": 400,
    "read-only": 403,
    "forbidden": 403,
    "unauthorized": 401,
    "not-found": 404,
    "too-large": 413,
    "rate-limited": 429,
    "internal": 500,
}


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


class ProtocolError(Exception):
    """The peer sent something we refuse; `code` is the protocol's error code.

    `close` is set when the refusal also ends the connection (for example 4000
    for a frame before `hello`); otherwise the connection stays open.
    """

    def __init__(self, code: str, message: str, close: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close = close

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, close={self.close!r})"


class ChangeError(ProtocolError):
    """Invalid ChangeSetJSON or a change that does not fit its document."""

    def __init__(self, message: str):
        super().__init__("bad-changes", message)
