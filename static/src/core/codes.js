// Every error and close code of docs/protocol.md, with what it means to the
// person at the editor and what the client does about it.
//
// What always holds here:
//  - the keys are exactly the server's table (collab/errors.py CODES and
//    CLOSE_CODES); tests/test_js_core.py compares them;
//  - `text` is user-facing: a sentence for the page, never a debug string;
//  - a 1008 close ends access: its sentence says why (ACCESS_ENDS, from the
//    error frame before it) and that a new link is needed, or, for a
//    document deleted (DELETED_REASON), just that, never "retry";
//  - a close code's `then` is the whole reconnect policy: "reconnect" (at
//    once the first time, then with backoff), "backoff", "slow" (backoff as
//    if several attempts had failed already) or "stop" (wait for the person).
//    A code not in the table (1000, 1006: the connection just went away) is
//    "backoff" and not worth a message.

/** Error codes of `error` frames (and HTTP error bodies): the sentence the page shows. */
export const ERROR_CODES = {
  "bad-json": "The server could not read a message from this page.",
  "bad-message": "The server refused a malformed message.",
  "bad-changes": "The server refused an edit as invalid.",
  "bad-version": "The server does not know the document version this page is based on.",
  "read-only": "This document is read-only for you; your edits were not saved.",
  "too-large": "The edit or the document is larger than the server allows.",
  "rate-limited": "Too many edits too quickly; the server asked to slow down.",
  "bad-request": "The server refused a request from this page as invalid.",
  "unauthorized": "An access token is needed to open this document.",
  "forbidden": "The access token does not allow this, or it was revoked.",
  "not-found": "The server has no such document or version.",
  "conflict": "That name is already taken.",
  "unavailable": "The server cannot save or load the document right now; trying again.",
  "internal": "Something failed on the server.",
};

/** WebSocket close codes: the sentence for the page, whether to show it, and what to do next. */
export const CLOSE_CODES = {
  1001: { text: "The server is restarting.", notify: false, then: "reconnect" },
  1008: { text: "This link no longer opens this document: its share links were reset, or the document was deleted. Ask the person who shared it for a new link.",
    notify: true, then: "stop" },
  1009: { text: "The server closed the connection: a message was too large.", notify: true, then: "backoff" },
  1011: { text: "The server could not save or load the document; reconnecting after a pause.",
    notify: false, then: "backoff" },
  1013: { text: "This page fell too far behind the server; catching up.", notify: false, then: "reconnect" },
  4000: { text: "The server closed the connection after a protocol error.", notify: true, then: "backoff" },
  4001: { text: "This document was opened with the same identity in another tab, so this tab stopped syncing.",
    notify: true, then: "stop" },
  4429: { text: "The server closed the connection: too many edits too quickly. Retrying more slowly.",
    notify: true, then: "slow" },
};

const has = (table, key) => Object.prototype.hasOwnProperty.call(table, key);

const UNKNOWN_CLOSE = { text: "The connection to the server was lost.", notify: false, then: "backoff" };

// The reason the server closes the sessions of a deleted document with (1008; collab/room.py DELETED).
export const DELETED_REASON = "this document was deleted";
// Under the title "This document was deleted.": not that again, but what it means here.
const DELETED_TEXT = "Nobody can open or change it any more. Its text stays on this page until you leave or reload it.";

/** The headline of a notice that access ended (`code`, `reason` as for accessEndText). */
export function accessEndTitle(code, reason) {
  if (reason === DELETED_REASON) return "This document was deleted.";
  if (code === "unauthorized") return "This document needs a link.";
  if (code === "forbidden") return "This link does not open this document.";
  return "This link no longer works.";
}

/**
 * Why access ended, from the `error` frame that came before a 1008 close
 * (a refused `hello`): the sentence says what happened and what to do next.
 * A 1008 without one (links reset or the document deleted during the
 * session) takes the close table's sentence.
 */
export const ACCESS_ENDS = {
  unauthorized: "This document needs a link with an access token. Ask the person who shared it for an edit or view link.",
  forbidden: "This link does not open this document: it was revoked (the document's share links were reset), or it belongs to another document. Ask the person who shared it for a new link.",
};

/**
 * The reason of the 1008 close that ends every session of a renamed
 * document (collab/room.py, Rooms.rename): the document lives on under the
 * new name, so a client goes there instead of stopping.
 */
export const RENAMED_REASON = /^this document was renamed to ([A-Za-z0-9_-]{1,100})$/;

/** The new name a close announces (1008 with RENAMED_REASON), or null. */
export function renamedTo(code, reason) {
  const m = code === 1008 ? RENAMED_REASON.exec(reason || "") : null;
  return m ? m[1] : null;
}

/** The sentence for the end of access: after error `code` (or none), closed with the server's `reason`. */
export function accessEndText(code, reason) {
  if (reason === DELETED_REASON) return DELETED_TEXT; // nothing about links: an instance may have none
  const text = has(ACCESS_ENDS, code) ? ACCESS_ENDS[code] : CLOSE_CODES[1008].text;
  return reason ? `${text} (The server said: ${reason}.)` : text;
}

/** The page's sentence for an `error` frame: the meaning, then the server's own words and code. */
export function errorText(code, message) {
  const text = has(ERROR_CODES, code) ? ERROR_CODES[code] : "The server reported an error.";
  return message ? `${text} (${code}: ${message})` : `${text} (${code})`;
}

/** The table's entry for a close code (an unknown code reconnects with backoff, quietly). */
export function closeEntry(code) {
  return has(CLOSE_CODES, code) ? CLOSE_CODES[code] : UNKNOWN_CLOSE;
}
