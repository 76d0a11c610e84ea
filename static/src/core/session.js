// The client side of docs/protocol.md as a plain object, h11-style: one
// Session per editor (or headless client), over an EditorState with
// @codemirror/collab's collab(). Inputs are method calls (a connection
// opened, a frame arrived, the connection closed, the editor moved to a new
// state, a moment came); each returns a Step: the frames to send, the
// transaction to dispatch, events for the page, and what to do with the
// connection. No socket, no timers, no DOM, no storage here: the time comes
// in as an argument, randomness (backoff jitter) as an option.
//
// What always holds here:
//  - `state` is the editor's state. The adapter dispatches a Step's
//    `transaction` (built from `state` and already applied here) before its
//    next call, installs `state` when a Step says `replaced`, and reports
//    every other change of its editor through `changed(state)` at once.
//  - `syncedDoc` is the text at getSyncedVersion(state): the server's text as
//    far as this session has heard; `state` shows it plus the unconfirmed
//    local updates (sendableUpdates), which are based on that version.
//  - The updates of one frame go through one receiveUpdates call, as with a
//    stock @codemirror/collab client: the server rebases a push over what the
//    connection received frame by frame, and mapping depends on grouping.
//  - Every hello carries the resumeKey of the last welcome (when the server
//    gave one): the proof that this clientID is ours; with a version, the
//    docId of the welcome that version came from, or of the updates frame
//    that made the document (a kept record's, for its version), so that the
//    server never resumes it in another document made
//    under the name since (it sends the whole text: our unsent edits are
//    rescued, not pushed there); the person id, when
//    the session has a valid one (never an invalid one: the server would
//    refuse the hello); and `opened`, larger than any earlier hello's of
//    this session: the wall clock in whole milliseconds (epoch + now), or
//    one more than the last when the clock did not move on. Of two
//    connections of one clientID the server keeps the one opened last.
//  - At most one push is in flight, split to the server's limits (limits.js).
//    It is acknowledged when that many of our own updates came back; a
//    closed connection drops it, and after the next welcome everything still
//    unconfirmed is pushed again (the server skips updates of one clientID
//    that it already accepted). An error frame while a push is in flight is
//    taken as its refusal: pushed again after a growing pause, unless it
//    refuses the edits themselves (EDITS_REFUSED: the document at its size
//    limit, an invalid edit), which the server would refuse every time: then
//    every unconfirmed edit goes to a rescue at once, saying why, and the
//    whole text is asked for (the edits are never pushed again).
//  - Positions on the wire are as of the synced version; positions in
//    `state` are local. Presence is converted here only: ours is mapped back
//    through the unconfirmed updates, a peer's forward through what we
//    received since its version and then through the unconfirmed updates.
//  - Every update a restore made is an event of its own (`restore`), with
//    the text it removed, to every session that receives it: a restore
//    replaces everyone's text, so nobody may lose words without being told.
//  - A 1008 close ends access for good (no reconnect, no "retry"): one
//    `access` event says why, from the error frame before it, if any; or,
//    when its reason says the document was renamed, a `renamed` event.
//  - Anything the server sends that the protocol does not allow is a
//    `problem` event, never an exception. When it leaves the document in
//    doubt the Step asks for a reconnect: a resume when a frame went missing,
//    the whole text when our state may be wrong.

import { EditorState, ChangeSet, Text } from "@codemirror/state";
import { collab, receiveUpdates, sendableUpdates, getSyncedVersion } from "@codemirror/collab";
import { hello, push, presence, parseServerFrame, FrameError, restoreOf, isPersonId } from "./frames.js";
import { resolveLimits, fitPush, sendableChanges } from "./limits.js";
import { errorText, closeEntry, accessEndText, accessEndTitle, renamedTo } from "./codes.js";

// Error codes that refuse a push for what its edits are (docs/protocol.md: the document would grow past
// maxDoc, an edit is invalid, the frame is malformed): pushing them again gets the same answer.
const EDITS_REFUSED = new Set(["too-large", "bad-changes", "bad-message"]);

const LOG_LIMIT = 5000; // recent accepted changes kept to map late presence
const PRESENCE_INTERVAL_MS = 50; // at most 20 presence frames a second
const BACKOFF = { base: 500, max: 10000, soon: 50, soonJitter: 200 };
const PUSH_RETRY = { base: 1000, max: 10000 };

/** A CodeMirror Text from a string. */
export function textOf(s) {
  return Text.of(String(s).split("\n"));
}

/** The text inserted by `changes` (ChangeSets), piece by piece: what can be rescued of edits without their base. */
export function insertedText(changes) {
  const pieces = [];
  for (const ch of changes) ch.iterChanges((_a, _b, _c, _d, ins) => { if (ins.length) pieces.push(ins.toString()); });
  return pieces.join("\n");
}

/** The `restore` event of an update made by a restore: `changes` applied to `doc` made `version`. */
function restoreEvent(restore, changes, doc, version, mine) {
  const pieces = [];
  let removedLength = 0, inserted = 0;
  changes.iterChanges((fromA, toA, _fromB, _toB, ins) => {
    if (toA > fromA) pieces.push(doc.sliceString(fromA, toA));
    removedLength += toA - fromA;
    inserted += ins.length;
  });
  return { type: "restore", version, restored: restore.restored, author: restore.author,
    removed: pieces.join("\n…\n"), removedLength, inserted, mine };
}

/**
 * What one input produced. The adapter sends `send` in order, dispatches
 * `transaction`, installs Session.state when `replaced`, hands `events` to
 * the page, and then: with `reconnect` closes the socket (if still open) and
 * connects again after `reconnect.delay` ms; with `stop` closes it and waits
 * for the person; with `wakeAt` calls tick() at that time.
 *
 * Events: {type: "welcome", frame} | {type: "updates", from, updates, fresh,
 * own} (every updates list received, raw; `fresh` the ones applied) |
 * {type: "error", code, message, text, quiet} (an error frame; `quiet` when
 * recovered from without the person) | {type: "notice", text} (a close worth
 * telling) | {type: "problem", text} (the server broke the protocol) |
 * {type: "rescue", text, count, fragments, older, refused, message, gone} (unconfirmed edits the server
 * could not take back: show them; `refused`: the error code with which the
 * server refused them, and its message; `older`: no edits, but the server's text
 * went back to an older one, or another one at our version, and this was ours;
 * `gone`: "deleted" or "replaced" (deleted and made again) when the document our
 * versions were of is not there any more) | {type: "reset", synced, version,
 * dropped} (a whole text replaced our state) | {type: "role", role} |
 * {type: "peer", session, user, ranges} (ranges in local positions) |
 * {type: "leave", session} | {type: "peers-cleared"} | {type: "restore",
 * version, restored, author, removed, removedLength, inserted, mine} (an
 * update made by a restore: the version it made, the version it brought
 * back and who restored when the frame says so (else null), the text it
 * removed (pieces joined by "\n…\n"), and whether this session had
 * unconfirmed edits then) | {type: "access", code, reason, text, title} (a 1008
 * close: access ended; `code` the error frame's before it, or null) |
 * {type: "checkpoints", version} (a version was named, renamed or unnamed;
 * only with the `checkpoints` option, which asks for it in every hello) |
 * {type: "renamed", to, text} (a 1008 close saying the document was renamed:
 * open it under `to`).
 */
export class Step {
  constructor() {
    this.send = [];
    this.transaction = null;
    this.replaced = false;
    this.events = [];
    this.reconnect = null;
    this.stop = null;
    this.wakeAt = null;
  }

  wake(at) {
    if (this.wakeAt === null || at < this.wakeAt) this.wakeAt = at;
  }
}

export class Session {
  /**
   * clientID; user {name, color}; limits (the adapter's, e.g. the page's
   * meta tags; the welcome's win); extensions (array, or a function called
   * whenever a state is made) besides collab(); restore {version, updates:
   * [ChangeSetJSON], base: text or null}: unconfirmed edits kept from an
   * earlier page; blindRestore: without a base, rebase and push them anyway
   * (only lengths matter for that) instead of asking for the whole text;
   * presence (default true): send our selection; presenceInterval (ms);
   * backoff {base, max, soon, soonJitter} and pushRetry {base, max} (ms);
   * maxPushUpdates (a cap below the server's); random () => [0, 1);
   * resumeKey: the key of an earlier welcome for this clientID (a restored
   * record's, else this one), sent with every hello; person: the person's
   * stable id (hello.person: one person in several tabs, and their edits
   * across renames, are one person to the others and in the history);
   * epoch: the wall-clock time in ms when `now` was 0 (default
   * performance.timeOrigin; without one, no hello.opened is sent), so that
   * hello.opened orders this session's connections after those of an
   * earlier page with the same clientID; checkpoints: ask the server
   * (hello.checkpoints) to say when a version is named, renamed or unnamed.
   */
  constructor(o) {
    this.clientID = String(o.clientID);
    this.user = o.user ?? { name: this.clientID, color: "#888888" };
    this.person = isPersonId(o.person) ? o.person : null;
    this.pageLimits = o.limits ?? null;
    this.limits = resolveLimits(this.pageLimits);
    this.extensions = o.extensions ?? [];
    this.presenceOn = o.presence ?? true;
    this.presenceInterval = o.presenceInterval ?? PRESENCE_INTERVAL_MS;
    this.backoff = { ...BACKOFF, ...o.backoff };
    this.pushRetry = { ...PUSH_RETRY, ...o.pushRetry };
    this.maxPushUpdates = o.maxPushUpdates ?? Infinity;
    this.random = o.random ?? Math.random;
    this.logLimit = o.logLimit ?? LOG_LIMIT;
    this.checkpointNews = o.checkpoints === true; // hello.checkpoints: named versions are told as they change

    this.state = null;
    this.syncedDoc = null;
    this.log = []; // ChangeSets accepted since version logStart, to map late presence
    this.logStart = 0;
    this.phase = "closed"; // "closed" | "hello" (sent, no welcome yet) | "open" (welcomed)
    this.helloVersion = null;
    this.sessionId = null; // ours, from the welcome
    this.resumeKey = o.resumeKey ?? (o.restore && o.restore.resumeKey) ?? null; // proof that clientID is ours
    // Which document our versions are of (the last welcome's docId; a kept record's), null: not known.
    this.docId = o.restore && typeof o.restore.docId === "string" ? o.restore.docId : null;
    this.role = null;
    this.inflight = 0;
    this.pushFailures = 0;
    this.pushNotBefore = 0;
    this.attempt = 0; // reconnects since the last welcome with nothing waiting, or our last acknowledgement
    this.epoch = o.epoch ?? globalThis.performance?.timeOrigin ?? null; // null: no hello.opened
    this.lastOpened = -1; // hello.opened of our last hello (-1: none sent yet)
    this.everWelcomed = false;
    this.needFullDoc = false;
    this.stopped = null; // the reason, while we will not reconnect by ourselves
    this.orphans = null; // restored edits without their base text (rescued when the text comes)
    this.rescuedDoc = null; // the text whose unconfirmed edits were rescued when the server refused them
    this.baseUnknown = false; // a blind restore: the text of `state` is a stand-in
    this.presenceDue = false;
    this.lastPresence = null;
    this.lastPresenceAt = -Infinity;
    this.peers = new Map(); // session -> user
    this.lastErrorCode = null; // of the last error frame on this connection (a 1008 close says why with it)
    this.stats = {
      welcomesDoc: 0, welcomesResume: 0, resumedUpdates: 0, pushes: 0, pushedUpdates: 0, ownAcked: 0,
      receivedUpdates: 0, presenceSent: 0, presenceReceived: 0, leaves: 0,
    };
    if (o.restore) this.restore(o.restore, Boolean(o.blindRestore));
  }

  // ---- what the adapter reads ----------------------------------------------

  /** The synced version (null before the first text). */
  get version() { return this.state ? getSyncedVersion(this.state) : null; }
  /** Local updates the server has not confirmed yet, oldest first. */
  get unconfirmed() { return this.state ? sendableUpdates(this.state) : []; }
  /** How many edits are not confirmed (restored ones without a text included). */
  get pending() { return this.state ? sendableUpdates(this.state).length : (this.orphans ? this.orphans.length : 0); }
  /** A welcome was received on the current connection. */
  get welcomed() { return this.phase === "open"; }

  // ---- inputs ------------------------------------------------------------------

  /** The connection is open: say hello (resuming from the synced version when we have a text we trust). */
  opened(now) {
    const step = new Step();
    this.phase = "hello";
    this.inflight = 0;
    this.helloVersion = this.needFullDoc || !this.state ? null : this.version;
    const clock = this.epoch === null ? NaN : Math.floor(this.epoch + now);
    if (Number.isFinite(clock)) this.lastOpened = Math.max(this.lastOpened + 1, clock);
    else if (this.lastOpened >= 0) this.lastOpened += 1; // no clock now: still after the last one
    const opened = this.lastOpened >= 0 ? this.lastOpened : null; // never a clock: the server uses its own
    step.send.push(hello(this.clientID, this.helloVersion, this.user, this.resumeKey, this.person, opened, this.docId,
      this.checkpointNews));
    return step;
  }

  /** A text frame from the server. */
  receive(text, now) {
    const step = new Step();
    if (this.phase === "closed") return step; // a frame of a connection we already gave up
    let m;
    try {
      m = parseServerFrame(text);
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      this.problem(step, e.message);
      if (e.frameType === "welcome" || e.frameType === "updates") this.resync(step, false);
      return step;
    }
    switch (m.type) {
      case "welcome":
        this.onWelcome(m, step, now);
        break;
      case "updates":
        if (this.phase !== "open") {
          this.problem(step, "an updates frame before the welcome");
          break;
        }
        if (!m.updates.length) this.problem(step, `an empty updates frame from version ${m.from}`);
        if (this.applyUpdates(m.from, m.updates, step)) {
          // The frame that made the document (from 0) says which: our welcome did not (nobody had made it).
          if (m.from === 0 && typeof m.docId === "string") this.docId = m.docId;
          this.flush(step, now);
        }
        break;
      case "presence":
        this.stats.presenceReceived++;
        if (this.phase !== "open") this.problem(step, "a presence frame before the welcome");
        else this.onPresence(m, step);
        break;
      case "presences": // one frame for every connection: our own cursor may be in it
        this.stats.presenceReceived += m.peers.length;
        if (this.phase !== "open") this.problem(step, "a presences frame before the welcome");
        else for (const p of m.peers) if (p.session !== this.sessionId) this.onPresence(p, step);
        break;
      case "leave":
        this.stats.leaves++;
        if (this.peers.delete(m.session)) step.events.push({ type: "leave", session: m.session });
        break;
      case "error":
        this.onError(m, step, now);
        break;
      case "checkpoints":
        step.events.push({ type: "checkpoints", version: m.version });
        break;
    }
    return step;
  }

  /** The server (or the network) closed the connection with `code`: reconnect, or stop. */
  closed(code, reason, _now) {
    const step = new Step();
    const lastError = this.lastErrorCode;
    this.endConnection(step);
    const entry = closeEntry(code);
    const to = renamedTo(code, reason);
    if (to !== null) { // the document lives on under another name: the adapter goes there
      const text = `This document was renamed to “${to}”.`;
      this.stopped = text;
      step.stop = text;
      step.events.push({ type: "renamed", to, text });
      return step;
    }
    if (code === 1008) { // access ended: say why, and that only a new link helps
      const text = accessEndText(lastError, reason);
      this.stopped = text;
      step.stop = text;
      step.events.push({ type: "access", code: lastError, reason: reason || "", text,
        title: accessEndTitle(lastError, reason) });
      return step;
    }
    if (entry.then === "stop") {
      this.stopped = entry.text;
      step.stop = entry.text;
      step.events.push({ type: "notice", text: entry.text });
      return step;
    }
    if (entry.notify) step.events.push({ type: "notice", text: reason ? `${entry.text} (${reason})` : entry.text });
    if (entry.then === "slow") this.attempt = Math.max(this.attempt, 4);
    step.reconnect = { delay: this.nextDelay(entry.then === "reconnect") };
    return step;
  }

  /** The adapter dropped the connection itself (offline, a new identity, a forced reconnect). */
  disconnected() {
    const step = new Step();
    this.endConnection(step);
    return step;
  }

  /** The editor moved to `state` (an edit, a selection, an effect): push and send presence as due. */
  changed(state, now) {
    const step = new Step();
    const prev = this.state;
    this.state = state;
    if (prev && state !== prev && (state.doc !== prev.doc || !state.selection.eq(prev.selection))) {
      this.presenceDue = true;
    }
    this.flush(step, now);
    return step;
  }

  /** A Step's wakeAt came: a refused push may go again, a throttled presence may go. */
  tick(now) {
    const step = new Step();
    this.flush(step, now);
    return step;
  }

  /** The adapter could not carry out a Step (a bug, or its editor and `state` parted): start over from the whole text. */
  lostTrack() {
    const step = new Step();
    this.resync(step, true);
    return step;
  }

  /** The person asked to reconnect now: forget a stop and the backoff. */
  restart() {
    this.stopped = null;
    this.attempt = 0;
  }

  /** Backoff for the next connection attempt, in ms (counts as an attempt). */
  nextDelay(soon = false) {
    const b = this.backoff;
    const delay = soon && this.attempt === 0
      ? b.soon + this.random() * b.soonJitter
      : Math.min(b.max, b.base * 2 ** this.attempt) * (0.5 + 0.5 * this.random());
    this.attempt++;
    return delay;
  }

  // ---- frames from the server -------------------------------------------------------

  onWelcome(m, step, now) {
    if (this.phase === "open") {
      this.problem(step, "a second welcome on one connection");
      return;
    }
    this.limits = resolveLimits(m.limits, this.pageLimits);
    this.sessionId = m.session;
    if (typeof m.resumeKey === "string") this.resumeKey = m.resumeKey;
    // Our versions were of a document that is not there any more: deleted (no document has the name
    // now), or deleted and made again (another docId). Said in the rescue of what we had, if any.
    const gone = this.docId === null || m.docId === this.docId ? null
      : typeof m.docId === "string" ? "replaced" : "deleted";
    this.docId = typeof m.docId === "string" ? m.docId : null; // none: nobody made the document yet
    if (m.role !== this.role) {
      this.role = m.role; // before a new state is made: its extensions may depend on it
      step.events.push({ type: "role", role: m.role });
    }
    if (typeof m.doc === "string") {
      this.stats.welcomesDoc++;
      this.wholeText(m.doc, m.version, step, gone);
    } else {
      this.stats.welcomesResume++;
      this.stats.resumedUpdates += m.updates.length;
      if (this.helloVersion === null || !this.state) {
        this.problem(step, "a welcome with from + updates, but hello asked for the whole text");
        this.resync(step, true);
        return;
      }
      if (m.from !== this.helloVersion) this.problem(step, `welcome.from ${m.from} is not hello.version ${this.helloVersion}`);
      if (m.version !== m.from + m.updates.length) {
        this.problem(step, `welcome.version ${m.version} is not from ${m.from} + ${m.updates.length} updates`);
      }
      if (!this.applyUpdates(m.from, m.updates, step)) return;
    }
    if (this.version !== m.version) {
      this.problem(step, `after the welcome the synced version is ${this.version}, not welcome.version ${m.version}`);
    }
    this.phase = "open";
    this.everWelcomed = true;
    // A welcome resets the backoff only with nothing of ours waiting: with edits waiting it does
    // not show the server can take them (a commit failing each time closes with 1011 right after
    // the welcome, and reconnecting at once then loops); their acknowledgement resets it.
    if (this.pending === 0) this.attempt = 0;
    this.pushFailures = 0;
    this.pushNotBefore = 0;
    this.needFullDoc = false;
    this.clearPeers(step);
    for (const p of m.peers) this.onPresence(p, step);
    step.events.push({ type: "welcome", frame: m });
    this.lastPresence = null;
    this.presenceDue = true;
    this.flush(step, now);
  }

  /** What a rescue of the unconfirmed updates `mine` shows: the text as we had it (its pieces when the
   * text they were based on is not known). */
  rescueOf(mine) {
    return this.baseUnknown
      ? { text: insertedText(mine.map((u) => u.changes)), count: mine.length, fragments: true }
      : { text: this.state.doc.toString(), count: mine.length, fragments: false };
  }

  /** The server sent the whole text: start over from it; unconfirmed edits go to a rescue. `gone`:
   * "deleted" or "replaced" when the document our versions were of is not there any more. */
  wholeText(text, version, step, gone = null) {
    const st = this.state;
    const mine = this.unconfirmed;
    if (st && !mine.length && this.version === version && st.doc.length === text.length && st.doc.toString() === text) {
      return; // nothing changed: keep the state (and its undo history)
    }
    let rescue = null;
    if (mine.length) {
      // Already rescued when the server refused them, unless typed on since.
      rescue = st.doc === this.rescuedDoc ? null : this.rescueOf(mine);
    } else if (this.orphans && this.orphans.length) {
      rescue = { text: insertedText(this.orphans), count: this.orphans.length, fragments: true };
    } else if (st && !this.baseUnknown && st.doc.length && (version <= this.version || gone)) {
      // The server's text is older than what we had confirmed (restored from a backup; deleted and
      // made again), or another text at our version, or the text of another document: what we
      // showed as saved is not there any more.
      rescue = { text: st.doc.toString(), count: 0, fragments: false, older: true };
    }
    if (rescue && gone) rescue.gone = gone;
    if (st) step.events.push({ type: "reset", synced: this.version, version, dropped: mine.length });
    this.orphans = null;
    this.rescuedDoc = null;
    this.baseUnknown = false;
    this.createState(text, version);
    step.replaced = true;
    if (rescue) step.events.push({ type: "rescue", ...rescue });
  }

  /** Applies the updates of one frame, from version `from`; false when the connection had to be given up. */
  applyUpdates(from, updates, step) {
    const synced = this.version;
    if (from > synced) {
      this.problem(step, `missed updates: a frame from version ${from}, but the synced version is ${synced}`);
      this.resync(step, false);
      return false;
    }
    if (from < synced) this.problem(step, `a frame from version ${from} overlaps the synced version ${synced}`);
    const fresh = updates.slice(synced - from);
    let own = 0;
    const restores = [];
    if (fresh.length) {
      const before = sendableUpdates(this.state).length;
      let doc = this.syncedDoc;
      let parsed;
      let tr;
      try {
        parsed = fresh.map((u) => ({ clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes) }));
        parsed.forEach((u, i) => {
          const restore = restoreOf(fresh[i]);
          if (restore) restores.push(restoreEvent(restore, u.changes, doc, synced + i + 1, before > 0));
          doc = u.changes.apply(doc);
        });
        tr = receiveUpdates(this.state, parsed);
        this.state = tr.state;
      } catch (e) {
        this.problem(step, `cannot apply the updates from version ${synced}: ${e.message}`);
        this.resync(step, true);
        return false;
      }
      this.syncedDoc = doc;
      for (const u of parsed) this.log.push(u.changes);
      if (this.log.length > 2 * this.logLimit) {
        const cut = this.log.length - this.logLimit;
        this.log = this.log.slice(cut);
        this.logStart += cut;
      }
      step.transaction = tr;
      this.stats.receivedUpdates += fresh.length;
      own = before - sendableUpdates(this.state).length;
      if (own > 0) {
        this.stats.ownAcked += own;
        this.inflight = Math.max(0, this.inflight - own);
        this.pushFailures = 0;
        this.attempt = 0;
        this.presenceDue = true; // our caret, mapped back through them before, is exact now
      }
    }
    step.events.push({ type: "updates", from, updates, fresh, own });
    step.events.push(...restores);
    return true;
  }

  onPresence(m, step) {
    if (m.session === this.sessionId) {
      this.problem(step, "received our own presence");
      return;
    }
    const synced = this.version;
    if (m.version > synced) {
      this.problem(step, `presence at version ${m.version}, but only ${synced} updates were received`);
      return;
    }
    const max = this.limits.maxRanges;
    if (m.ranges.length > max) this.problem(step, `presence with ${m.ranges.length} ranges, more than ${max}`);
    const ranges = m.ranges.slice(0, max);
    const len = this.lengthAt(m.version);
    for (const r of ranges) {
      if (len !== null && (r.anchor > len || r.head > len)) {
        this.problem(step, `presence range ${JSON.stringify(r)} outside the text of length ${len} at version ${m.version}`);
      }
    }
    const local = ranges.map((r) => ({ anchor: this.toLocal(r.anchor, m.version), head: this.toLocal(r.head, m.version) }));
    this.peers.set(m.session, m.user);
    step.events.push({ type: "peer", session: m.session, user: m.user, ranges: local });
  }

  onError(m, step, now) {
    const badVersion = m.code === "bad-version";
    this.lastErrorCode = m.code;
    // unauthorized and forbidden always close 1008, whose `access` event says it in full.
    const closing = m.code === "unauthorized" || m.code === "forbidden";
    const refused = this.inflight > 0 && EDITS_REFUSED.has(m.code) && this.role !== "view";
    step.events.push({ type: "error", code: m.code, message: m.message ?? "", text: errorText(m.code, m.message),
      quiet: badVersion || closing || refused });
    if (refused) {
      // The server will refuse these edits however often they come: they go to the rescue now, saying
      // why, and the whole text replaces them (a resume would push them again).
      const mine = this.unconfirmed;
      this.inflight = 0;
      step.events.push({ type: "rescue", ...this.rescueOf(mine), refused: m.code, message: m.message ?? "" });
      this.rescuedDoc = this.state.doc;
      this.resync(step, true);
      return;
    }
    if (badVersion && this.phase !== "open") {
      // The server cannot resume from our version (its data was reset?):
      // ask for the whole text; unconfirmed edits go to the rescue.
      this.resync(step, true);
      return;
    }
    if (badVersion && this.inflight) {
      // Our push was based on a version the server can no longer rebase
      // from: resume with a new hello, which brings the missing updates
      // (then we push again) or the whole text (then the edits are rescued).
      this.resync(step, false);
      return;
    }
    if (this.inflight) {
      this.inflight = 0;
      this.pushFailures++;
      const pause = Math.min(this.pushRetry.max, this.pushRetry.base * 2 ** (this.pushFailures - 1));
      // A budget refilling says when the push fits again (retryAfter, seconds): not before then.
      const told = typeof m.retryAfter === "number" && m.retryAfter > 0 ? Math.min(m.retryAfter, 3600) * 1000 : 0;
      this.pushNotBefore = now + Math.max(told, pause * (0.5 + 0.5 * this.random()));
      step.wake(this.pushNotBefore);
    }
  }

  // ---- sending ------------------------------------------------------------------------------

  flush(step, now) {
    this.pushIfDue(step, now);
    this.presenceIfDue(step, now);
  }

  pushIfDue(step, now) {
    if (this.phase !== "open" || this.inflight || this.role === "view") return;
    const all = sendableUpdates(this.state);
    if (!all.length) return;
    if (now < this.pushNotBefore) {
      step.wake(this.pushNotBefore);
      return;
    }
    const version = this.version;
    const updates = fitPush(all, this.clientID, version, this.limits, this.maxPushUpdates);
    step.send.push(push(version, updates));
    this.inflight = updates.length;
    this.stats.pushes++;
    this.stats.pushedUpdates += updates.length;
  }

  presenceIfDue(step, now) {
    if (!this.presenceOn || this.phase !== "open" || !this.presenceDue) return;
    const at = this.lastPresenceAt + this.presenceInterval;
    if (now < at) {
      step.wake(at);
      return;
    }
    this.presenceDue = false;
    const frame = this.presenceFrame();
    const key = JSON.stringify(frame);
    if (key === this.lastPresence) return;
    step.send.push(frame);
    this.lastPresence = key;
    this.lastPresenceAt = now;
    this.stats.presenceSent++;
  }

  /** Our selection as a presence frame: at most maxRanges ranges (the main one first when cut), mapped back to the synced version. */
  presenceFrame() {
    const st = this.state;
    const back = sendableUpdates(st).map((u) => u.changes.invertedDesc).reverse();
    const toSynced = (pos) => back.reduce((p, d) => d.mapPos(p, -1), pos);
    const sel = st.selection;
    let ranges = sel.ranges;
    const max = this.limits.maxRanges;
    if (ranges.length > max) ranges = [sel.main, ...ranges.filter((_, i) => i !== sel.mainIndex)].slice(0, max);
    return presence(this.version, ranges.map((r) => ({ anchor: toSynced(r.anchor), head: toSynced(r.head) })));
  }

  // ---- helpers ------------------------------------------------------------------------------------

  restore(rec, blind) {
    // Cleaned of what the server refuses for good (a record kept before textGuard): lengths stay.
    const changes = (rec.updates || []).map((json) => ChangeSet.fromJSON(sendableChanges(json)));
    if (typeof rec.base === "string" || (blind && changes.length)) {
      this.baseUnknown = typeof rec.base !== "string";
      this.createState(this.baseUnknown ? " ".repeat(changes[0].length) : rec.base, rec.version);
      for (const c of changes) this.state = this.state.update({ changes: c, userEvent: "input.restore" }).state;
    } else if (changes.length) {
      this.orphans = changes;
      this.needFullDoc = true;
    }
  }

  createState(text, version) {
    const old = this.state && this.state.selection.main;
    const doc = textOf(text);
    const clamp = (n) => Math.min(n, doc.length);
    const extensions = typeof this.extensions === "function" ? this.extensions() : this.extensions;
    this.state = EditorState.create({
      doc,
      selection: old ? { anchor: clamp(old.anchor), head: clamp(old.head) } : undefined,
      extensions: [extensions, collab({ startVersion: version, clientID: this.clientID })],
    });
    this.syncedDoc = doc;
    this.logStart = version;
    this.log = [];
  }

  /** Length of the synced text at `version`, when still known. */
  lengthAt(version) {
    const synced = this.version;
    if (version === synced) return this.syncedDoc.length;
    const i = version - this.logStart;
    return i >= 0 && i < this.log.length ? this.log[i].length : null;
  }

  /** A peer's position at `version` (<= ours), mapped through what we received since and our own edits. */
  toLocal(pos, version) {
    let p = pos;
    const start = version - this.logStart;
    if (start >= 0) for (let i = start; i < this.log.length; i++) p = this.log[i].mapPos(Math.min(p, this.log[i].length));
    p = Math.min(p, this.syncedDoc.length);
    for (const u of sendableUpdates(this.state)) p = u.changes.mapPos(p);
    return Math.min(p, this.state.doc.length);
  }

  clearPeers(step) {
    if (!this.peers.size) return;
    this.peers.clear();
    step.events.push({ type: "peers-cleared" });
  }

  endConnection(step) {
    this.phase = "closed";
    this.lastErrorCode = null;
    this.inflight = 0;
    this.clearPeers(step);
  }

  resync(step, fullDoc) {
    if (fullDoc) this.needFullDoc = true;
    this.endConnection(step);
    step.reconnect = { delay: this.nextDelay(true) };
  }

  problem(step, text) {
    step.events.push({ type: "problem", text });
  }
}
