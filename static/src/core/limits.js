// The server's limits, as the client learns them, and what follows from them:
// how a backlog of updates is split into push frames, and which local edits
// are refused as they are made because no frame could ever carry them.
//
// What always holds here:
//  - a limit comes from the welcome frame's `limits` when the server sent it,
//    else from what the adapter passes (the editor page's <meta> tags), else
//    from DEFAULT_LIMITS (the protocol's defaults); field by field;
//  - a push frame built by fitPush carries at least one update, at most
//    maxUpdates, and (unless its first update alone is too big) is under
//    maxFrame bytes of UTF-8 exactly as JSON.stringify writes it;
//  - sizes of text on the wire are UTF-8 bytes; document lengths are UTF-16
//    units (as the server counts them);
//  - no local edit inserts U+0000 or half a surrogate pair (textGuard), which
//    the server refuses (bad-changes, bad-json) for good.

import { EditorState, Transaction } from "@codemirror/state";

/** The protocol's defaults: bytes per frame, UTF-16 units per document, updates per push, ranges per presence. */
export const DEFAULT_LIMITS = Object.freeze({ maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 });

/** Bytes of a push frame around its updates that the size guard keeps free (type, version, brackets). */
export const FRAME_OVERHEAD = 1024;

const isLimit = (v) => Number.isSafeInteger(v) && v > 0;

/** The limits in force: per field, the first source that has a positive integer for it. */
export function resolveLimits(...sources) {
  const out = {};
  for (const key of Object.keys(DEFAULT_LIMITS)) {
    const src = sources.find((s) => s && isLimit(s[key]));
    out[key] = src ? src[key] : DEFAULT_LIMITS[key];
  }
  return out;
}

/** Bytes of `s` in UTF-8 (a surrogate pair is 4, each half counted 2). */
export function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x80) n += c < 0x800 || (c >= 0xd800 && c < 0xe000) ? 1 : 2;
  }
  return n;
}

/**
 * The first updates of `updates` (CodeMirror's sendable updates, oldest
 * first) that fit one push frame at `version`, as the frame's JSON objects.
 * `cap` lowers maxUpdates further (a benchmark's choice).
 */
export function fitPush(updates, clientID, version, limits, cap = Infinity) {
  const most = Math.min(limits.maxUpdates, cap);
  const out = [];
  let size = utf8Length(JSON.stringify({ type: "push", version, updates: [] }));
  for (const u of updates) {
    if (out.length >= most) break;
    const json = { clientID, changes: u.changes.toJSON() };
    const add = utf8Length(JSON.stringify(json)) + (out.length ? 1 : 0); // the update and its comma
    if (out.length && size + add >= limits.maxFrame) break;
    size += add;
    out.push(json);
  }
  return out;
}

function sizeText(bytes) {
  return bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.ceil(bytes / 1024)} KB`;
}

/**
 * Refuse, as it is made, a local edit the server could never take: one
 * whose update alone would not fit in a push frame, or one that grows the
 * document past the server's limit. Sent anyway, it would be refused (or
 * the connection closed with 1009), pushed again on reconnect, and hold
 * back every later edit for ever. Remote updates are not filtered
 * (receiveUpdates dispatches with filter: false), nor are edits restored
 * from storage (already made). `getLimits()` is read at each edit, so
 * limits learnt from a welcome apply at once; `refuse(text)` tells the person.
 */
export function sizeGuard(getLimits, refuse) {
  return EditorState.transactionFilter.of((tr) => {
    if (!tr.docChanged || tr.isUserEvent("input.restore")) return tr;
    const limits = getLimits();
    if (tr.newDoc.length > limits.maxDoc && tr.newDoc.length > tr.startState.doc.length) {
      refuse(`That edit was not made: the document would grow to ${tr.newDoc.length.toLocaleString()} ` +
        `characters, and this server keeps documents of at most ${limits.maxDoc.toLocaleString()}.`);
      return [];
    }
    const budget = limits.maxFrame - FRAME_OVERHEAD; // an update that big is pushed alone
    const bytes = utf8Length(JSON.stringify(tr.changes.toJSON()));
    if (bytes > budget) {
      refuse(`That edit was not made: it is ${sizeText(bytes)}, and this server takes at most ` +
        `${sizeText(budget)} in one edit. Paste it in smaller parts.`);
      return [];
    }
    return tr;
  });
}

// U+0000, or one half of a surrogate pair without the other (JavaScript strings can hold either).
const UNSENDABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const UNSENDABLE_ALL = new RegExp(UNSENDABLE.source, "g");

/** `text` with every unsendable unit replaced by U+FFFD (one UTF-16 unit for one: lengths stay). */
export function sendableText(text) {
  return UNSENDABLE.test(text) ? text.replace(UNSENDABLE_ALL, "\ufffd") : text;
}

/** ChangeSetJSON with `sendableText` applied to every inserted line (a record kept before textGuard). */
export function sendableChanges(json) {
  return Array.isArray(json)
    ? json.map((part) => (Array.isArray(part) ? [part[0], ...part.slice(1).map((l) => (typeof l === "string" ? sendableText(l) : l))] : part))
    : json;
}

/**
 * Replace, as it is made, what the server would refuse in inserted text:
 * U+0000 (PostgreSQL's text cannot hold it) and a lone surrogate (not
 * Unicode), each by U+FFFD. A pasted NUL refused by the server would be
 * pushed again on every reconnect and hold back every later edit for ever;
 * the replacement has the same length, so the selection and effects stay as
 * they were. Edits restored from storage are cleaned as they are read
 * (`sendableChanges`, session.js); remote updates are not filtered (filter: false).
 */
export function textGuard() {
  return EditorState.transactionFilter.of((tr) => {
    if (!tr.docChanged) return tr;
    let bad = false;
    tr.changes.iterChanges((_fa, _ta, _fb, _tb, inserted) => {
      if (!bad && inserted.length && UNSENDABLE.test(inserted.toString())) bad = true;
    });
    if (!bad) return tr;
    const changes = [];
    tr.changes.iterChanges((from, to, _fb, _tb, inserted) => {
      changes.push({ from, to, insert: sendableText(inserted.toString()) });
    });
    const userEvent = tr.annotation(Transaction.userEvent);
    return {
      changes, selection: tr.selection, effects: tr.effects, scrollIntoView: tr.scrollIntoView,
      annotations: [
        ...(userEvent === undefined ? [] : [Transaction.userEvent.of(userEvent)]),
        ...(tr.annotation(Transaction.addToHistory) === false ? [Transaction.addToHistory.of(false)] : []),
      ],
    };
  });
}
