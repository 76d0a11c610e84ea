"""Access: who may read or change what, decided from a signed token. Pure, no I/O.

Two modes. With no secret, the server is a personal instance (it refuses to
listen anywhere but loopback) and everyone may do everything. With a secret:
  * the admin token lists, creates and deletes documents, and edits any;
  * per document, an edit token and a view token, each an HMAC-SHA256 of
    (role, document, the document's salt) under the secret. Changing the salt
    ("reset links") invalidates every token of that document at once;
  * tokens are compared in constant time and never logged.
Token form: one letter for the role (a, e, v) and 32 characters of
URL-safe base64 of the MAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlsplit

from .errors import ProtocolError

ROLES = {"a": "admin", "e": "edit", "v": "view"}
RANK = {"view": 0, "edit": 1, "admin": 2}


def token_digest(token: str) -> str:
    """What is kept of a token to know it again (a clientID's owner, a write budget's key): a fixed-size
    digest, never the token itself (unchecked in open mode, it may be kilobytes)."""
    return hashlib.sha256(token.encode(errors="replace")).hexdigest()


class Access:
    def __init__(self, secret: bytes | None):
        self.secret = secret

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def _mac(self, *parts: str) -> str:
        digest = hmac.new(self.secret, "\0".join(parts).encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode()[:32]

    def fingerprint(self) -> str:
        """Which secret signs here (or "none"), without telling it: processes on one database compare it."""
        return "none" if self.secret is None else self._mac("which secret")[:16]

    def admin_token(self) -> str:
        return "a" + self._mac("admin")

    def doc_token(self, doc: str, role: str, salt: str) -> str:
        if role not in ("edit", "view"):
            raise ValueError(role)
        return role[0] + self._mac(role, doc, salt)

    def role(self, token: str | None, doc: str | None = None, salt: str | None = None) -> str:
        """The role `token` grants (on `doc`, signed with `salt`); raises unauthorized/forbidden.

        Open mode grants "admin". A missing token is `unauthorized` (401); a
        wrong one, or one for another document or an old salt, `forbidden` (403).
        """
        if not self.enabled:
            return "admin"
        if not token:
            raise ProtocolError("unauthorized", "this server needs an access token (?token=...)")
        # Tokens are ASCII; a header's undecodable bytes arrive as lone surrogates, which .encode() refuses.
        kind = ROLES.get(token[:1]) if token.isascii() else None
        if kind == "admin":
            if hmac.compare_digest(token.encode(), self.admin_token().encode()):
                return "admin"
        elif kind is not None and doc is not None and salt is not None:
            if hmac.compare_digest(token.encode(), self.doc_token(doc, kind, salt).encode()):
                return kind
        raise ProtocolError("forbidden", "this token does not give access here")

    def require(self, token: str | None, need: str, doc: str | None = None, salt: str | None = None) -> str:
        role = self.role(token, doc, salt)
        if role == "view" and need == "edit":  # the same code a view session's push gets
            raise ProtocolError("read-only", "this token may only view the document")
        if RANK[role] < RANK[need]:
            raise ProtocolError("forbidden", f"this needs {need} access; the token gives {role} access")
        return role


def origin_allowed(origin: str | None, own: str, extra: frozenset[str]) -> bool:
    """Whether a WebSocket from a page at `origin` may connect (cross-site WebSocket hijacking).

    No Origin header means no browser page is involved (a script or a tool):
    allowed, since such a client holds its token itself. One that is no URL (`http://[::1`, which
    urlsplit refuses) is no page of ours: refused, like any foreign one.
    """
    if origin is None:
        return True
    try:
        parts = urlsplit(origin.strip().lower())
    except ValueError:
        return False
    if not parts.scheme or not parts.netloc:
        return False
    normal = f"{parts.scheme}://{parts.netloc}"
    return normal == own.lower() or normal in extra
