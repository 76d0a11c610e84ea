// Frames of protocol v1 (docs/protocol.md): the ones a client sends, built
// here, and the ones the server sends, checked here.
//
// What always holds here:
//  - builders return plain objects; the adapter serialises them with
//    JSON.stringify (the size rules in limits.js count that serialisation);
//  - parseServerFrame returns a frame only if every field the client relies
//    on has the type the protocol gives it, and throws FrameError otherwise
//    (with the frame's type when it had a known one). Whether the values
//    make sense together (versions, lengths) is the session's business.

export const SUBPROTOCOL = "collab.v1";

/** A person id as hello.person takes it: 1 to 64 letters, digits, "-" or "_". */
export const PERSON_RE = /^[A-Za-z0-9_-]{1,64}$/;

/** Whether `person` is a person id hello.person may carry. */
export const isPersonId = (person) => typeof person === "string" && PERSON_RE.test(person);

/**
 * `resumeKey` (from our last welcome) proves to the server that we are the
 * client that used `clientID` before. `docId` ([extension] hello.docId: the
 * welcome's, of the document `version` is of) goes only with a version: the
 * server then resumes only that document, never another made under its name
 * since. `person` is the person's stable id
 * ([extension] hello.person): sent only when it is one the protocol allows,
 * so a bad one from storage costs the attribution, never the connection.
 * `opened` ([extension] hello.opened) grows with every connection the client
 * opens: of two connections of one clientID the server keeps the one with
 * the larger, whichever hello it read first. `checkpoints` ([extension]
 * hello.checkpoints): ask for a `checkpoints` frame whenever a version is
 * named, renamed or unnamed.
 */
export const hello = (clientID, version, user, resumeKey = null, person = null, opened = null, docId = null,
  checkpoints = false) => {
  const frame = { type: "hello", clientID, version, user };
  if (typeof resumeKey === "string") frame.resumeKey = resumeKey;
  if (version !== null && typeof docId === "string" && docId.length > 0 && docId.length <= 64) frame.docId = docId;
  if (isPersonId(person)) frame.person = person;
  if (Number.isSafeInteger(opened) && opened >= 0) frame.opened = opened;
  if (checkpoints === true) frame.checkpoints = true;
  return frame;
};
export const push = (version, updates) => ({ type: "push", version, updates });
export const presence = (version, ranges) => ({ type: "presence", version, ranges });

/** A frame the protocol does not allow; `frameType` is its type when that was a known one. */
export class FrameError extends Error {
  constructor(message, frameType = null) {
    super(message);
    this.frameType = frameType;
  }
}

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** A short, safe description of an untrusted value for a message. */
export function brief(value, limit = 80) {
  let s;
  try {
    s = typeof value === "string" ? value : JSON.stringify(value);
  } catch (_) {
    s = String(value);
  }
  s = String(s);
  return s.length > limit ? `${s.slice(0, limit)}…` : s;
}

function need(ok, type, what) {
  if (!ok) throw new FrameError(`${type} frame: ${what}`, type.split(".")[0]);
}

function checkUpdates(list, type) {
  need(Array.isArray(list), type, "updates must be a list");
  list.forEach((u, i) => {
    need(isObject(u) && typeof u.clientID === "string" && Array.isArray(u.changes), type,
      `updates[${i}] must be {clientID: string, changes: list}, got ${brief(u)}`);
    if (u.restore !== undefined) {
      const r = u.restore;
      need(isObject(r) && (r.version === undefined || isCount(r.version))
        && (r.author === undefined || typeof r.author === "string"), type,
      `updates[${i}].restore must be {version, author}, got ${brief(r)}`);
    }
  });
}

/** The clientID prefix of the updates the server makes for a restore (POST /api/docs/{doc}/restore). */
export const RESTORE_PREFIX = "restore-";

/**
 * Whether an update (as received) was made by a restore, and what the frame
 * says of it: null for an ordinary update, else {restored, author} (the
 * version whose text it brought back and who restored; null when the frame
 * does not say). Known by the clientID the server gives restores, or by the
 * [extension] `restore` object (which view sessions, whose clientIDs are
 * hidden, need).
 */
export function restoreOf(update) {
  const r = update.restore;
  if (!isObject(r) && !update.clientID.startsWith(RESTORE_PREFIX)) return null;
  return {
    restored: isObject(r) && isCount(r.version) ? r.version : null,
    author: isObject(r) && typeof r.author === "string" ? r.author : null,
  };
}

function checkPresence(m, type = "presence") {
  need(typeof m.session === "string", type, "session must be a string");
  need(isObject(m.user), type, "user must be an object");
  need(isCount(m.version), type, `version must be a non-negative integer, got ${brief(m.version)}`);
  need(Array.isArray(m.ranges), type, "ranges must be a list");
  m.ranges.forEach((r, i) => {
    need(isObject(r) && isCount(r.anchor) && isCount(r.head), type,
      `ranges[${i}] must be {anchor, head} with non-negative integers, got ${brief(r)}`);
  });
}

const CHECKS = {
  welcome(m) {
    need(typeof m.session === "string", "welcome", "session must be a string");
    need(m.role === "edit" || m.role === "view", "welcome", `role must be "edit" or "view", got ${brief(m.role)}`);
    need(isCount(m.version), "welcome", `version must be a non-negative integer, got ${brief(m.version)}`);
    need(Array.isArray(m.peers), "welcome", "peers must be a list");
    m.peers.forEach((p, i) => {
      need(isObject(p), "welcome", `peers[${i}] must be a presence object`);
      checkPresence(p, "welcome.peers");
    });
    need(m.resumeKey === undefined || typeof m.resumeKey === "string", "welcome", "resumeKey must be a string");
    need(m.docId === undefined || typeof m.docId === "string", "welcome", "docId must be a string");
    if (m.limits !== undefined) {
      need(isObject(m.limits), "welcome", "limits must be an object");
      for (const [k, v] of Object.entries(m.limits)) {
        need(Number.isSafeInteger(v) && v > 0, "welcome", `limits.${k} must be a positive integer, got ${brief(v)}`);
      }
    }
    if (typeof m.doc !== "string") {
      need(isCount(m.from), "welcome", "needs either doc (a string) or from (a version) and updates");
      checkUpdates(m.updates, "welcome");
    }
  },
  updates(m) {
    need(isCount(m.from), "updates", `from must be a non-negative integer, got ${brief(m.from)}`);
    need(m.docId === undefined || typeof m.docId === "string", "updates", "docId must be a string");
    checkUpdates(m.updates, "updates");
  },
  presence: (m) => checkPresence(m),
  // [extension] the cursors that moved in one tick, one frame for every connection (ours included).
  presences(m) {
    need(Array.isArray(m.peers), "presences", "peers must be a list");
    m.peers.forEach((p, i) => {
      need(isObject(p), "presences", `peers[${i}] must be a presence object`);
      checkPresence(p, "presences.peers");
    });
  },
  leave(m) {
    need(typeof m.session === "string", "leave", "session must be a string");
  },
  // [extension] the named versions changed at `version` (sent only if our hello asked)
  checkpoints(m) {
    need(isCount(m.version), "checkpoints", `version must be a non-negative integer, got ${brief(m.version)}`);
  },
  error(m) {
    need(typeof m.code === "string", "error", `code must be a string, got ${brief(m.code)}`);
    need(m.message === undefined || typeof m.message === "string", "error", "message must be a string");
  },
};

/** One frame from the server (its text), checked; throws FrameError for anything the protocol does not allow. */
export function parseServerFrame(text) {
  if (typeof text !== "string") throw new FrameError("a binary frame (the protocol has text frames only)");
  let m;
  try {
    m = JSON.parse(text);
  } catch (_) {
    throw new FrameError(`a frame that is not JSON: ${brief(text)}`);
  }
  if (!isObject(m)) throw new FrameError(`a frame that is not a JSON object: ${brief(text)}`);
  const check = Object.prototype.hasOwnProperty.call(CHECKS, m.type) ? CHECKS[m.type] : null;
  if (!check) throw new FrameError(`unknown frame type ${brief(m.type)}`);
  check(m);
  return m;
}
