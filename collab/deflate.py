"""permessage-deflate (RFC 7692) for the WebSocket adapter: the negotiation and the (de)compression, no I/O.

Rules that always hold:
  * the extension is used only when the client offers it (and --ws-compress is
    on); the answer always carries server_no_context_takeover and
    client_no_context_takeover, and client_max_window_bits=CLIENT_WBITS (or the
    client's own smaller value) when the client offered that parameter. So
    every message, either way, is compressed on its own: neither side keeps a
    compression context between messages;
  * what we send is compressed a message at a time with a fresh zlib stream
    sized to the message (`message`, `chunk`), never with a window above what
    the client allows: no compressor lives per connection. A message may be
    the concatenation of chunks compressed apart (a shared document's JSON is
    compressed once for every welcome that carries it): each chunk ends with a
    sync flush, so the chunks join into one valid deflate stream, and only the
    message's last 00 00 ff ff is removed (RFC 7692 section 7.2.1);
  * what we receive is inflated a message at a time with a fresh zlib stream
    (`Inflater`): an idle connection holds no zlib state. A client that ignores
    client_no_context_takeover (refers back into an earlier message) fails to
    inflate, which ends its connection.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

EXTENSION = "permessage-deflate"
CLIENT_WBITS = 12  # the window we ask of clients that let us choose (4 KB: what a paste needs)
LEVEL = 6
_FLAGS = ("server_no_context_takeover", "client_no_context_takeover")


@dataclass(frozen=True, slots=True)
class Agreement:
    """What was agreed: the extension's response header, and the windows each side may use."""
    response: str
    server_wbits: int  # the most we may use when we compress
    client_wbits: int  # the most the client may use (our inflater's window)


def _offer(text: str) -> Agreement | None:
    """One offer ("permessage-deflate; param[=value]; ..."): our answer, or None to decline it."""
    name, *raw = (p.strip() for p in text.split(";"))
    if name.lower() != EXTENSION:
        return None
    params: dict[str, str | None] = {}
    for item in raw:
        key, eq, value = item.partition("=")
        key, value = key.strip().lower(), value.strip().strip('"') if eq else None
        if key in params:  # a parameter given twice: the offer is invalid (RFC 7692 section 7)
            return None
        params[key] = value
    server_wbits, client_wbits, answer = 15, 15, [EXTENSION, *_FLAGS]
    for key, value in params.items():
        if key in _FLAGS:
            if value is not None:
                return None
        elif key == "server_max_window_bits":
            # zlib cannot deflate with an 8-bit window (it uses 9): decline such an offer
            if value is None or not value.isdigit() or not 9 <= int(value) <= 15:
                return None
            server_wbits = int(value)
            answer.append(f"server_max_window_bits={server_wbits}")
        elif key == "client_max_window_bits":
            if value is not None and (not value.isdigit() or not 8 <= int(value) <= 15):
                return None
            client_wbits = min(CLIENT_WBITS, int(value) if value is not None else 15)
            answer.append(f"client_max_window_bits={client_wbits}")
        else:  # a parameter we do not know: decline this offer
            return None
    return Agreement("; ".join(answer), server_wbits, client_wbits)


def negotiate(header: str | None) -> Agreement | None:
    """The first acceptable permessage-deflate offer of a Sec-WebSocket-Extensions header, or None."""
    if not header or len(header) > 4096:
        return None
    for text in header.split(","):
        agreement = _offer(text)
        if agreement is not None:
            return agreement
    return None


def _compressor(size: int, wbits: int):
    """A raw deflate stream whose window and hash table fit a `size`-byte input (no larger than `wbits`)."""
    bits = max(9, min(wbits, size.bit_length()))
    return zlib.compressobj(LEVEL, zlib.DEFLATED, -bits, max(1, min(8, bits - 7)))


def chunk(data: bytes, wbits: int) -> bytes:
    """`data` deflated on its own, ending with a sync flush (00 00 ff ff): a piece of a message."""
    c = _compressor(len(data), wbits)
    return c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)


def message(parts: tuple[bytes, ...] | list[bytes], wbits: int) -> bytes:
    """A whole message's payload: `parts` joined and deflated, the trailing 00 00 ff ff removed."""
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return chunk(data, wbits)[:-4]


def last(data: bytes, wbits: int) -> bytes:
    """The final chunk of a message made of chunks: deflated, the trailing 00 00 ff ff removed."""
    return chunk(data, wbits)[:-4]


class Inflater:
    """Inflates one received message at a time (what aiohttp's reader calls `decompress_sync` on).

    A fresh zlib stream per message: client_no_context_takeover was agreed, so
    nothing is kept between messages. At most `max_length` bytes come out (ws._Inflater
    asks for one more than --max-frame, and refuses what reaches it).
    """

    __slots__ = ("wbits",)

    def __init__(self, wbits: int):
        self.wbits = max(9, wbits)  # a wider window reads any narrower stream (zlib itself deflates 8 as 9)

    def decompress_sync(self, data: bytes, max_length: int = 0) -> bytes:
        return zlib.decompressobj(-self.wbits).decompress(data, max_length)
