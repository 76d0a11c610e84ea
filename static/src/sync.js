// The browser's adapter of the client core (core.js): one WebSocket per
// editor page, its reconnect timers, the EditorView, the unconfirmed edits
// mirrored to localStorage (pending.js), other people's carets (presence.js)
// and the status line. Every protocol decision is the core Session's: this
// module tells it what happened and carries out the Step it returns.
//
// What always holds here:
//  - The core's `state` is the view's: the view's update listener reports
//    every change to the core at once, the core's transactions are
//    dispatched on the view as soon as a Step brings them, and a state the
//    core made (a whole text) is installed with setState.
//  - Unconfirmed updates are mirrored to localStorage (PendingStore) on every
//    change, so a reload or a closed tab loses nothing.
//  - Only `this.ws` speaks: events of an older socket are ignored.

import { Compartment, EditorState } from "@codemirror/state";
import { EditorView } from "@codemirror/view";
import { Session, SUBPROTOCOL, sizeGuard, textGuard, sendableUpdates, getSyncedVersion } from "./core.js";
import { presence, setPeer, removePeer, clearPeers, peersField } from "./presence.js";
import { heardAt } from "./pending.js";

const BASE_WRITE_INTERVAL_MS = 1000;
const RECORD_LINGER_MS = 2000;

const now = () => performance.now();

/** The server's limits as the editor page states them in <meta> tags (missing ones: the core's defaults). */
export function pageLimits() {
  const read = (name) => {
    const el = document.querySelector(`meta[name="${name}"]`);
    const n = el ? Number(el.content) : NaN;
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  };
  return {
    maxFrame: read("collab-max-frame"), maxDoc: read("collab-max-doc"),
    maxUpdates: read("collab-max-updates"), maxRanges: read("collab-max-ranges"),
  };
}

export class CollabSession {
  /**
   * docName, wsUrl, parent (DOM node), extensions (editor setup), user
   * {name, color}, person (the stable person id, sent in every hello), store (PendingStore, already claimed for clientID),
   * clientID, restore (an adopted pending record or null), limits (default:
   * the page's), and callbacks in `on`: status(info), error(text),
   * rescue({text, count, fragments, older, refused, gone}), peers(list), role(role),
   * restore(event) (an update made by a restore: the core's `restore`
   * event), access(text) (access ended for good: the link was revoked or
   * the document deleted; the editor is read-only from then on),
   * renamed(to, text) (the document now has the name `to`), checkpoints(version)
   * (a version was named, renamed or unnamed; given, the hello asks for it).
   */
  constructor(opts) {
    Object.assign(this, {
      docName: opts.docName, wsUrl: opts.wsUrl, parent: opts.parent,
      extensions: opts.extensions, store: opts.store, on: opts.on,
    });
    this.view = null;
    this.ws = null;
    this.retryTimer = null;
    this.retryAt = null;
    this.wakeTimer = null;
    this.wakeAt = null;
    this.roleConf = new Compartment();
    this.accessEnded = null;
    this.statusLog = [];
    this.lastStatus = null;
    this.storageFull = false; // the store could not keep our unsent edits at its last save
    this.saveTimer = null;
    this.lastBaseWrite = 0;
    // When the server last said something to this page (Date.now()): kept with the pending edits, so
    // that after a rename the next page knows they were made for the document as it was then
    // (PendingStore.adoptFrom). An adopted record's own time until this page hears from it.
    this.lastHeard = opts.restore ? heardAt(opts.restore) : null;
    this.core = new Session({
      clientID: opts.clientID, user: opts.user, person: opts.person, limits: opts.limits || pageLimits(), restore: opts.restore,
      checkpoints: Boolean(opts.on && opts.on.checkpoints),
      extensions: () => this.stateExtensions(),
    });
    if (this.core.state) this.mount(); // restored edits are shown at once

    this.onOnline = () => { if (!this.ws && !this.core.stopped) this.reconnectNow(); else this.emitStatus(); };
    // A dropped network often leaves the socket half-open for minutes: when
    // the browser says it went offline, close it and keep retrying (a
    // server on this very machine is still reachable and reconnects at once).
    this.onOffline = () => {
      if (this.ws && !this.core.stopped) {
        this.dropSocket();
        this.scheduleReconnect(this.core.nextDelay());
      }
      this.emitStatus();
    };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.connect();
  }

  // ---- what the page reads ---------------------------------------------------

  get clientID() { return this.core.clientID; }
  get user() { return this.core.user; }
  get role() { return (this.core && this.core.role) || "edit"; }
  get state() { return this.view && this.view.state; }
  get stopped() { return this.core.stopped; }

  pendingCount() { return this.core.pending; }

  peerList() {
    const peers = this.view ? this.view.state.field(peersField) : new Map();
    return [...peers.values()].map((p) => ({
      session: p.session, name: p.user.name, color: p.user.color, person: p.user.person, ranges: p.ranges,
      stamp: p.stamp,
    }));
  }

  // ---- the editor ---------------------------------------------------------------

  /** Extensions of every state the core makes, besides collab(). */
  stateExtensions() {
    return [
      this.extensions,
      sizeGuard(() => this.core.limits, (text) => this.on.error(text)),
      textGuard(),
      presence(),
      this.roleConf.of(this.roleExtension()),
      EditorView.updateListener.of((u) => this.afterUpdate(u)),
    ];
  }

  roleExtension() {
    const ro = this.role === "view" || this.accessEnded !== null;
    return [EditorState.readOnly.of(ro), EditorView.editable.of(!ro)];
  }

  /** Show the core's state: a new view, or the existing one moved to a state the core made. */
  mount() {
    if (this.view) this.view.setState(this.core.state);
    else this.view = new EditorView({ state: this.core.state, parent: this.parent });
    this.savePending();
  }

  afterUpdate(u) {
    this.run(this.core.changed(u.state, now()));
    if (sendableUpdates(u.startState) !== sendableUpdates(u.state)
        || getSyncedVersion(u.startState) !== getSyncedVersion(u.state)) {
      this.savePending();
    }
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
    const version = this.core.version;
    const updates = this.core.unconfirmed;
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
    this.store.save(version, updates, () => this.core.syncedDoc.toString(), this.core.resumeKey, this.lastHeard,
      this.core.docId);
    if (rewritesBase) this.lastBaseWrite = Date.now();
    this.storageChecked();
  }

  /** Say once when the browser's storage refuses our unsent edits (and again after it took them once more). */
  storageChecked() {
    const full = this.store.lastError != null;
    if (full === this.storageFull) return;
    this.storageFull = full;
    if (full) {
      this.on.error("This browser's storage is full, so edits not yet saved are not kept in it: they are sent " +
        "while this tab stays open, but would be lost if it closed. Free some space for this site to keep them.");
    }
    this.emitStatus();
  }

  // ---- carrying out the core's steps ------------------------------------------------

  run(step) {
    for (const frame of step.send) this.send(frame);
    if (step.replaced) this.mount();
    else if (step.transaction) this.view.dispatch(step.transaction);
    for (const e of step.events) this.onEvent(e);
    if (step.stop !== null) {
      this.dropSocket();
    } else if (step.reconnect) {
      this.dropSocket();
      this.scheduleReconnect(step.reconnect.delay);
    }
    if (step.wakeAt !== null) this.wake(step.wakeAt);
    this.emitStatus();
  }

  onEvent(e) {
    switch (e.type) {
      case "error":
        // bad-version is recovered from by resuming; everything else is shown.
        if (e.quiet) console.warn("collab:", e.text);
        else this.on.error(e.text);
        break;
      case "notice": this.on.error(e.text); break;
      case "problem": console.warn("collab: the server broke the protocol:", e.text); break;
      case "rescue": this.on.rescue({ text: e.text, count: e.count, fragments: e.fragments, older: Boolean(e.older),
        refused: e.refused ?? null, gone: e.gone ?? null }); break;
      case "restore": if (this.on.restore) this.on.restore(e); break;
      case "checkpoints": if (this.on.checkpoints) this.on.checkpoints(e.version); break;
      case "renamed": if (this.on.renamed) this.on.renamed(e.to, e.text); else this.on.error(e.text); break;
      case "access":
        this.accessEnded = e.text;
        if (this.view) this.view.dispatch({ effects: this.roleConf.reconfigure(this.roleExtension()) });
        if (this.on.access) this.on.access(e.text, e.title);
        else this.on.error(e.text);
        break;
      case "role":
        if (this.view) this.view.dispatch({ effects: this.roleConf.reconfigure(this.roleExtension()) });
        this.on.role(e.role);
        break;
      case "peer":
        if (this.view) this.view.dispatch({ effects: setPeer.of({ session: e.session, user: e.user, ranges: e.ranges }) });
        this.on.peers(this.peerList());
        break;
      case "leave":
        if (this.view) this.view.dispatch({ effects: removePeer.of(e.session) });
        this.on.peers(this.peerList());
        break;
      case "peers-cleared":
        if (this.view) this.view.dispatch({ effects: clearPeers.of(null) });
        this.on.peers(this.peerList());
        break;
      default: break; // welcome, updates, reset: nothing to show
    }
  }

  /** Call the core's tick() at `at` (one timer, for the earliest time asked). */
  wake(at) {
    if (this.wakeTimer && this.wakeAt <= at) return;
    clearTimeout(this.wakeTimer);
    this.wakeAt = at;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this.wakeAt = null;
      this.run(this.core.tick(now()));
    }, Math.max(0, at - now()));
  }

  // ---- the connection -------------------------------------------------------------------

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryAt = null;
    if (this.ws || this.core.stopped) return;
    let ws;
    try {
      ws = new WebSocket(this.wsUrl, SUBPROTOCOL);
    } catch (e) {
      this.on.error(`Cannot open a connection to ${this.wsUrl}: ${e.message}`);
      this.scheduleReconnect(this.core.nextDelay());
      return;
    }
    this.ws = ws;
    this.emitStatus();
    ws.onopen = () => {
      if (ws === this.ws) this.run(this.core.opened(now()));
    };
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      try {
        this.run(this.core.receive(ev.data, now()));
      } catch (e) {
        console.error("collab: failed to handle a frame", ev.data, e);
        this.on.error(`Lost track of the document (${e.message}); loading it again.`);
        this.run(this.core.lostTrack());
      }
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.run(this.core.closed(ev.code, ev.reason, now()));
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
    if (ws) {
      try { ws.close(1000); } catch (_) { /* already closing */ }
    }
    this.run(this.core.disconnected());
  }

  scheduleReconnect(delay) {
    clearTimeout(this.retryTimer);
    this.retryAt = Date.now() + delay;
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.emitStatus();
  }

  reconnectNow() {
    if (this.accessEnded !== null) return; // this page's link no longer opens the document: nothing to retry
    this.core.restart();
    this.dropSocket();
    this.connect();
  }

  /** A new name or colour: the server learns it from a new hello. */
  setUser(user) {
    this.core.user = user;
    if (this.ws && !this.core.stopped) this.reconnectNow();
  }

  // ---- status -------------------------------------------------------------------------------

  statusInfo() {
    const core = this.core;
    let state;
    if (core.stopped) state = "stopped";
    else if (this.ws && core.welcomed) state = "connected";
    else if (!navigator.onLine) state = "offline";
    else if (!core.everWelcomed && core.attempt === 0) state = "connecting";
    else state = "reconnecting";
    return { state, pending: this.pendingCount(), retryAt: this.retryAt, stopped: core.stopped, role: this.role,
      accessEnded: this.accessEnded, storageFull: Boolean(this.storageFull) };
  }

  emitStatus() {
    const info = this.statusInfo();
    const key = `${info.state}/${info.pending}/${info.retryAt}/${info.role}/${info.accessEnded !== null}/${info.storageFull}`;
    if (key === this.lastStatus) return;
    this.lastStatus = key;
    if (!this.statusLog.length || this.statusLog[this.statusLog.length - 1] !== info.state) this.statusLog.push(info.state);
    this.on.status(info);
  }
}
