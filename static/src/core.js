// The DOM-free client core: everything about the protocol (docs/protocol.md)
// that the browser editor (sync.js), the closed-tab flush (flush.js) and the
// Node test client (tests/js/client.mjs) share. No socket, no timers, no DOM,
// no storage, no `window` anywhere below this module.
//
//   core/codes.js    error and close codes: meaning, user-facing text, reconnect policy
//   core/limits.js   the server's limits, push splitting, the size guard
//   core/frames.js   frames we send (built) and frames the server sends (checked)
//   core/session.js  the session state machine over an EditorState with collab()
//
// The CodeMirror classes a client needs are re-exported from here, so that
// a program outside static/ (tests/js) gets them from the same copy of
// @codemirror/state as the core: two copies in one process break
// instanceof checks and facets.

export { ERROR_CODES, CLOSE_CODES, ACCESS_ENDS, errorText, closeEntry, accessEndText, renamedTo } from "./core/codes.js";
export { DEFAULT_LIMITS, FRAME_OVERHEAD, resolveLimits, utf8Length, fitPush, sizeGuard, textGuard, sendableText, sendableChanges } from "./core/limits.js";
export { SUBPROTOCOL, hello, push, presence, parseServerFrame, FrameError, brief, RESTORE_PREFIX, restoreOf, PERSON_RE, isPersonId } from "./core/frames.js";
export { Session, Step, textOf, insertedText } from "./core/session.js";

export { EditorState, EditorSelection, ChangeSet, Text, Transaction } from "@codemirror/state";
export { collab, receiveUpdates, sendableUpdates, getSyncedVersion, rebaseUpdates } from "@codemirror/collab";
