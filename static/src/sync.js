// The client half of protocol.md: one WebSocket per editor page, driving
// @codemirror/collab.  What always holds here:
//  - `syncedDoc` is the text at getSyncedVersion(state): the server's text as
//    far as this page has heard; the editor shows it plus the unconfirmed
//    local updates (sendableUpdates), which are based on that version.
//  - At most one push is in flight; it is acknowledged when our own updates
//    come back in an `updates` frame (or dropped by a reconnect, after which
//    everything still unconfirmed is pushed again: the server de-duplicates
//    updates of one clientID that it already accepted).
//  - Positions on the wire are as of the synced version; positions in the
//    editor are local.  Presence is converted at this boundary only.
//  - Unconfirmed updates are mirrored to localStorage (PendingStore) on every
//    change, so a reload or a closed tab loses nothing.

import { EditorState, ChangeSet, Text, Compartment } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import { collab, receiveUpdates, sendableUpdates, getSyncedVersion } from "@codemirror/collab";
import { presence, setPeer, removePeer, clearPeers, peersField } from "./presence.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PRESENCE_INTERVAL_MS = 50; // at most 20 presence frames a second
const LOG_LIMIT = 5000; // recent accepted changes kept to map late presence
const PUSH_MAX_UPDATES = 500; // one push frame carries at most this many updates
const PUSH_MAX_BYTES = 512 * 1024; // and at most this much of their JSON (UTF-8), below the server's limit
const FRAME_OVERHEAD = 1024; // bytes of a push frame around its changes (type, version, clientIDs)
const BASE_WRITE_INTERVAL_MS = 1000;
const RECORD_LINGER_MS = 2000;

const CLOSE_REASONS = {
  1008: "The server refused the connection: the access token is missing or invalid.",
  1009: "The server closed the connection: a message was too large.",
  4000: "The server closed the connection after a protocol error.",
  4001: "This document was opened with the same identity in another tab, so this tab stopped syncing.",
  4429: "The server closed the connection: too many edits too quickly. Retrying more slowly.",
};

export const ERROR_TEXT = {
  "bad-json": "The server could not read a message from this page.",
  "bad-message": "The server refused a malformed message.",
  "bad-changes": "The server refused an edit as invalid.",
  "bad-version": "The server does not know the document version this page is based on.",
  "read-only": "This document is read-only for you; your edits were not saved.",
  "too-large": "The edit or the document is larger than the server allows.",
  "rate-limited": "Too many edits too quickly; the server asked to slow down.",
};

/** The server's limits, from the editor page's <meta> tags (defaults: the server's own). */
export function pageLimits() {
  const read = (name, fallback) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    const n = el ? Number(el.content) : NaN;
    return Number.isFinite(n) && n > 0 ? n : fallback;
  };
  return { maxFrame: read("collab-max-frame", 1 << 20), maxDoc: read("collab-max-doc", 10 << 20) };
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
 * from storage (already made).
 */
export function sizeGuard(limits, refuse) {
  const budget = limits.maxFrame - FRAME_OVERHEAD; // an update that big is pushed alone
  return EditorState.transactionFilter.of((tr) => {
    if (!tr.docChanged || tr.isUserEvent("input.restore")) return tr;
    if (tr.newDoc.length > limits.maxDoc && tr.newDoc.length > tr.startState.doc.length) {
      refuse(`That edit was not made: the document would grow to ${tr.newDoc.length.toLocaleString()} ` +
        `characters, and this server keeps documents of at most ${limits.maxDoc.toLocaleString()}.`);
      return [];
    }
    const bytes = utf8Length(JSON.stringify(tr.changes.toJSON()));
    if (bytes > budget) {
      refuse(`That edit was not made: it is ${sizeText(bytes)}, and this server takes at most ` +
        `${sizeText(budget)} in one edit. Paste it in smaller parts.`);
      return [];
    }
    return tr;
  });
}

function toUpdates(list) {
  return list.map((u) => ({ clientID: String(u.clientID), changes: ChangeSet.fromJSON(u.changes) }));
}

function textOf(s) {
  return Text.of(String(s).split("\n"));
}

export class CollabSession {
  /**
   * docName, wsUrl, parent (DOM node), extensions (editor setup), user
   * {name, color}, store (PendingStore, already claimed for clientID),
   * clientID, restore (an adopted pending record or null), limits ({maxFrame,
   * maxDoc}; default: the page's), and callbacks in
   * `on`: status(info), error(text), rescue({text, count, reason}),
   * peers(list), role(role).
   */
  constructor(opts) {
    Object.assign(this, {
      docName: opts.docName, wsUrl: opts.wsUrl, parent: opts.parent,
      extensions: opts.extensions, user: opts.user, store: opts.store,
      clientID: opts.clientID, on: opts.on,
    });
    this.limits = opts.limits || pageLimits();
    this.view = null;
    this.ws = null;
    this.welcomed = false;
    this.session = null;
    this.role = "edit";
    this.inflight = 0;
    this.attempt = 0;
    this.retryTimer = null;
    this.pushTimer = null;
    this.pushFailures = 0;
    this.retryAt = null;
    this.needFullDoc = false;
    this.stopped = null; // reason text when we will not reconnect by ourselves
    this.syncedDoc = null;
    this.logStart = 0;
    this.log = [];
    this.people = new Map(); // session -> user
    this.presenceTimer = null;
    this.lastPresence = null;
    this.lastPresenceAt = 0;
    this.orphanUpdates = null; // restored edits we could not rebuild the text for
    this.roleConf = new Compartment();
    this.statusLog = [];
    this.lastStatus = null;
    this.saveTimer = null;
    this.lastBaseWrite = 0;

    const r = opts.restore;
    if (r && typeof r.base === "string") {
      this.createState(r.base, r.version);
      for (const json of r.updates) {
        const changes = ChangeSet.fromJSON(json);
        this.view.dispatch({ changes, userEvent: "input.restore", addToHistory: false });
      }
    } else if (r) {
      // No base text (storage was full): keep the raw edits for the rescue dialog.
      this.orphanUpdates = r.updates.map((j) => ChangeSet.fromJSON(j));
      this.needFullDoc = true;
    }

    this.onOnline = () => { if (!this.ws && !this.stopped) this.reconnectNow(); else this.emitStatus(); };
    // A dropped network often leaves the socket half-open for minutes: when
    // the browser says it went offline, close it and keep retrying (a
    // server on this very machine is still reachable and reconnects at once).
    this.onOffline = () => {
      if (this.ws && !this.stopped) {
        this.dropSocket();
        this.scheduleReconnect();
      }
      this.emitStatus();
    };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.connect();
  }

  // ---- editor state -------------------------------------------------------

  get state() { return this.view && this.view.state; }

  pendingCount() {
    if (this.view) return sendableUpdates(this.view.state).length;
    return this.orphanUpdates ? this.orphanUpdates.length : 0;
  }

  createState(text, version) {
    const old = this.view && this.view.state.selection.main;
    const doc = textOf(text);
    const clamp = (n) => Math.min(n, doc.length);
    const state = EditorState.create({
      doc,
      selection: old ? { anchor: clamp(old.anchor), head: clamp(old.head) } : undefined,
      extensions: [
        this.extensions,
        collab({ startVersion: version, clientID: this.clientID }),
        sizeGuard(this.limits, (text) => this.on.error(text)),
        presence(),
        this.roleConf.of(this.roleExtension()),
        EditorView.updateListener.of((u) => this.afterUpdate(u)),
      ],
    });
    this.syncedDoc = doc;
    this.logStart = version;
    this.log = [];
    if (this.view) this.view.setState(state);
    else this.view = new EditorView({ state, parent: this.parent });
    this.savePending();
  }

  roleExtension() {
    const ro = this.role === "view";
    return [EditorState.readOnly.of(ro), EditorView.editable.of(!ro)];
  }

  afterUpdate(u) {
    const before = sendableUpdates(u.startState);
    const after = sendableUpdates(u.state);
    if (before !== after || getSyncedVersion(u.startState) !== getSyncedVersion(u.state)) {
      this.savePending();
      this.emitStatus();
    }
    if (after.length > before.length) this.schedulePush(0);
    if (u.selectionSet || u.docChanged) this.schedulePresence();
  }

  /**
   * Mirror the unconfirmed updates to localStorage.  Cheap while the synced
   * version stands still (offline typing writes only the small update
   * list).  When it moves while edits are unconfirmed, the whole base text
   * must be rewritten: that happens at most once a second, and the record
   * of a moment ago stays consistent meanwhile (re-pushing updates that were
   * confirmed since is harmless: the server skips them by client ID).  An
   * emptied record is removed after a short pause, so that steady typing
   * does not rewrite the base on every keystroke.  `force` (pagehide) writes
   * at once.
   */
  savePending(force = false) {
    if (!this.view) return;
    const st = this.view.state;
    const version = getSyncedVersion(st);
    const updates = sendableUpdates(st);
    clearTimeout(this.saveTimer);
    this.saveTimer = null;
    const later = (ms, then) => { this.saveTimer = setTimeout(() => { this.saveTimer = null; this.savePending(then); }, ms); };
    if (!updates.length) {
      if (force || !this.store.hasRecord()) this.store.save(version, updates, null);
      else later(RECORD_LINGER_MS, true);
      return;
    }
    const rewritesBase = this.store.baseVersion !== version;
    if (rewritesBase && !force && this.store.hasRecord()) {
      const wait = this.lastBaseWrite + BASE_WRITE_INTERVAL_MS - Date.now();
      if (wait > 0) return later(wait, true);
    }
    this.store.save(version, updates, () => this.syncedDoc.toString());
    if (rewritesBase) this.lastBaseWrite = Date.now();
  }

  // ---- connection -----------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    if (this.ws || this.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.wsUrl, "collab.v1");
    } catch (e) {
      this.on.error(`Cannot open a connection to ${this.wsUrl}: ${e.message}`);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.welcomed = false;
    this.inflight = 0;
    this.emitStatus();
    ws.onopen = () => {
      if (ws !== this.ws) return;
      const version = this.needFullDoc || !this.view ? null : getSyncedVersion(this.view.state);
      this.send({ type: "hello", clientID: this.clientID, version, user: this.user });
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (_) {
        this.on.error("The server sent a message this page cannot read.");
        return;
      }
      try {
        this.onFrame(msg);
      } catch (e) {
        console.error("collab: failed to handle", msg, e);
        this.on.error(`Lost track of the document (${e.message}); loading it again.`);
        this.needFullDoc = true;
        this.dropSocket();
        this.scheduleReconnect(true);
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.onClosed(ev);
    };
    ws.onerror = () => { /* a close event follows */ };
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  }

  dropSocket() {
    const ws = this.ws;
    this.ws = null;
    this.welcomed = false;
    this.inflight = 0;
    if (ws) {
      try { ws.close(1000); } catch (_) { /* already closing */ }
    }
    this.forgetPeers();
  }

  onClosed(ev) {
    this.welcomed = false;
    this.inflight = 0;
    this.forgetPeers();
    const reason = CLOSE_REASONS[ev.code];
    if (ev.code === 4001 || ev.code === 1008) {
      this.stopped = reason;
      this.on.error(reason);
      this.emitStatus();
      return;
    }
    if (reason) this.on.error(ev.reason ? `${reason} (${ev.reason})` : reason);
    if (ev.code === 4429) this.attempt = Math.max(this.attempt, 4);
    this.scheduleReconnect(ev.code === 1001 && this.attempt === 0);
  }

  /** Exponential backoff with jitter: 0.5-1 times min(max, base * 2^attempt). */
  scheduleReconnect(soon = false) {
    clearTimeout(this.retryTimer);
    const full = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = soon ? 50 + Math.random() * 200 : full * (0.5 + Math.random() * 0.5);
    this.attempt++;
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.emitStatus();
  }

  reconnectNow() {
    this.stopped = null;
    this.attempt = 0;
    this.dropSocket();
    this.connect();
  }

  /** A new name or colour: the server learns it from a new hello. */
  setUser(user) {
    this.user = user;
    if (this.ws && !this.stopped) this.reconnectNow();
  }

  // ---- frames from the server --------------------------------------------------

  onFrame(msg) {
    switch (msg.type) {
      case "welcome": return this.onWelcome(msg);
      case "updates": return this.onUpdates(msg.from, msg.updates);
      case "presence": return this.onPresence(msg);
      case "leave": return this.onLeave(msg.session);
      case "error": return this.onError(msg);
      default: console.warn("collab: unknown frame", msg);
    }
  }

  onWelcome(msg) {
    this.welcomed = true;
    this.everWelcomed = true;
    this.attempt = 0;
    this.pushFailures = 0;
    this.session = msg.session;
    if (msg.role && msg.role !== this.role) {
      this.role = msg.role;
      if (this.view) this.view.dispatch({ effects: this.roleConf.reconfigure(this.roleExtension()) });
      this.on.role(this.role);
    }
    if (typeof msg.doc === "string") {
      this.onFullDoc(msg.doc, msg.version);
    } else {
      this.onUpdates(msg.from, msg.updates || []);
    }
    this.needFullDoc = false;
    this.forgetPeers();
    for (const p of msg.peers || []) this.onPresence(p);
    this.emitStatus();
    this.schedulePush(0);
    this.lastPresence = null;
    this.schedulePresence();
  }

  /** The server sent the whole text: start over from it, rescuing unconfirmed edits. */
  onFullDoc(text, version) {
    let rescue = null;
    if (this.view && sendableUpdates(this.view.state).length) {
      rescue = { text: this.view.state.doc.toString(), count: sendableUpdates(this.view.state).length };
    } else if (this.orphanUpdates && this.orphanUpdates.length) {
      const pieces = [];
      for (const ch of this.orphanUpdates) ch.iterChanges((_a, _b, _c, _d, ins) => { if (ins.length) pieces.push(ins.toString()); });
      rescue = { text: pieces.join("\n"), count: this.orphanUpdates.length, fragments: true };
    }
    this.orphanUpdates = null;
    this.createState(text, version); // also clears the stored record
    if (rescue) this.on.rescue(rescue);
  }

  onUpdates(from, list) {
    if (!this.view) throw new Error("updates before the document");
    const state = this.view.state;
    const synced = getSyncedVersion(state);
    if (from > synced) throw new Error(`missed updates ${synced}..${from}`);
    const fresh = toUpdates(list.slice(synced - from));
    if (!fresh.length) return;
    let doc = this.syncedDoc;
    for (const u of fresh) {
      doc = u.changes.apply(doc);
      this.log.push(u.changes);
    }
    this.syncedDoc = doc;
    if (this.log.length > LOG_LIMIT) {
      const cut = this.log.length - LOG_LIMIT;
      this.log = this.log.slice(cut);
      this.logStart += cut;
    }
    const own = fresh.filter((u) => u.clientID === this.clientID).length;
    this.view.dispatch(receiveUpdates(state, fresh));
    if (own) {
      this.inflight = Math.max(0, this.inflight - own);
      this.pushFailures = 0;
      this.lastPresence = null; // our caret is now exact for the others
      this.schedulePresence();
    }
    if (!this.inflight) this.schedulePush(0);
  }

  onError(msg) {
    const text = ERROR_TEXT[msg.code] || "The server reported an error.";
    const words = msg.message ? `${text} (${msg.code}: ${msg.message})` : `${text} (${msg.code})`;
    // bad-version is recovered from below by resuming; everything else is shown.
    if (msg.code === "bad-version") console.warn("collab:", words);
    else this.on.error(words);
    if (!this.welcomed && msg.code === "bad-version") {
      // The server does not have the version we resume from (its data was
      // reset?): ask for the whole document; unconfirmed edits go to rescue.
      this.needFullDoc = true;
      this.dropSocket();
      this.scheduleReconnect(true);
      return;
    }
    if (msg.code === "bad-version" && this.inflight) {
      // Our push was based on a version the server can no longer rebase
      // from (or it was too busy): resume with a fresh hello, which either
      // brings the missing updates (then we push again) or the whole text
      // (then the unconfirmed edits go to the rescue dialog).
      this.dropSocket();
      this.scheduleReconnect(true);
      return;
    }
    if (this.inflight) {
      // The push was refused (or something else was; re-pushing is harmless
      // because the server skips updates it already has from this client).
      this.inflight = 0;
      this.pushFailures++;
      const delay = Math.min(BACKOFF_MAX_MS, 1000 * 2 ** (this.pushFailures - 1));
      this.schedulePush(delay * (0.5 + Math.random() * 0.5));
    }
    this.emitStatus();
  }

  // ---- pushing ---------------------------------------------------------------------

  schedulePush(delay) {
    if (this.pushTimer) {
      if (delay > 0) return;
      clearTimeout(this.pushTimer);
    }
    this.pushTimer = setTimeout(() => { this.pushTimer = null; this.push(); }, delay);
  }

  push() {
    if (!this.view || !this.welcomed || this.inflight || this.role === "view") return;
    const all = sendableUpdates(this.view.state);
    if (!all.length) return;
    const updates = [];
    let size = 0;
    const budget = Math.min(PUSH_MAX_BYTES, this.limits.maxFrame - FRAME_OVERHEAD);
    for (const u of all) {
      const json = { clientID: u.clientID, changes: u.changes.toJSON() };
      size += utf8Length(JSON.stringify(json)) + 1; // the update as it goes on the wire, and its comma
      if (updates.length && (updates.length >= PUSH_MAX_UPDATES || size > budget)) break;
      updates.push(json);
    }
    if (this.send({ type: "push", version: getSyncedVersion(this.view.state), updates })) {
      this.inflight = updates.length;
      this.emitStatus();
    }
  }

  // ---- presence ----------------------------------------------------------------------

  schedulePresence() {
    if (this.presenceTimer) return;
    const wait = Math.max(0, this.lastPresenceAt + PRESENCE_INTERVAL_MS - Date.now());
    this.presenceTimer = setTimeout(() => {
      this.presenceTimer = null;
      this.sendPresence();
    }, wait);
  }

  /** Our selection, mapped back through our unconfirmed changes to the synced version. */
  sendPresence() {
    if (!this.view || !this.welcomed) return;
    const st = this.view.state;
    const back = sendableUpdates(st).map((u) => u.changes.invertedDesc).reverse();
    const toSynced = (pos) => back.reduce((p, d) => d.mapPos(p, -1), pos);
    const version = getSyncedVersion(st);
    const ranges = st.selection.ranges.map((r) => ({ anchor: toSynced(r.anchor), head: toSynced(r.head) }));
    const key = JSON.stringify([version, ranges]);
    if (key === this.lastPresence) return;
    if (this.send({ type: "presence", version, ranges })) {
      this.lastPresence = key;
      this.lastPresenceAt = Date.now();
    }
  }

  /** A peer's selection at `version` (<= ours): map through what we have seen since and our own edits. */
  toLocal(pos, version) {
    const st = this.view.state;
    let p = Math.max(0, Math.min(pos | 0, 1e12));
    const start = version - this.logStart;
    if (start >= 0) for (let i = start; i < this.log.length; i++) p = this.log[i].mapPos(Math.min(p, this.log[i].length));
    p = Math.min(p, this.syncedDoc.length);
    for (const u of sendableUpdates(st)) p = u.changes.mapPos(p);
    return Math.min(p, st.doc.length);
  }

  onPresence(msg) {
    if (!this.view || msg.session === this.session) return;
    const version = typeof msg.version === "number" ? msg.version : getSyncedVersion(this.view.state);
    const ranges = (Array.isArray(msg.ranges) ? msg.ranges : []).slice(0, 100).map((r) => ({
      anchor: this.toLocal(r.anchor, version), head: this.toLocal(r.head, version),
    }));
    this.people.set(msg.session, msg.user || {});
    this.view.dispatch({ effects: setPeer.of({ session: msg.session, user: msg.user || {}, ranges }) });
    this.on.peers(this.peerList());
  }

  onLeave(session) {
    this.people.delete(session);
    if (this.view) this.view.dispatch({ effects: removePeer.of(session) });
    this.on.peers(this.peerList());
  }

  forgetPeers() {
    if (!this.people.size) return;
    this.people.clear();
    if (this.view) this.view.dispatch({ effects: clearPeers.of(null) });
    this.on.peers(this.peerList());
  }

  peerList() {
    const peers = this.view ? this.view.state.field(peersField) : new Map();
    return [...peers.values()].map((p) => ({ session: p.session, name: p.user.name, color: p.user.color, ranges: p.ranges }));
  }

  // ---- status ---------------------------------------------------------------------------

  statusInfo() {
    let state;
    if (this.stopped) state = "stopped";
    else if (this.ws && this.welcomed) state = "connected";
    else if (!navigator.onLine) state = "offline";
    else if (!this.everWelcomed && this.attempt === 0) state = "connecting";
    else state = "reconnecting";
    return { state, pending: this.pendingCount(), retryAt: this.retryAt, stopped: this.stopped, role: this.role };
  }

  emitStatus() {
    const info = this.statusInfo();
    const key = `${info.state}/${info.pending}/${info.retryAt}`;
    if (key === this.lastStatus) return;
    this.lastStatus = key;
    if (!this.statusLog.length || this.statusLog[this.statusLog.length - 1] !== info.state) this.statusLog.push(info.state);
    this.on.status(info);
  }
}
