// Headless @codemirror/collab client speaking the collab.v1 wire protocol
// (/work/shared/protocol.md), plus a CLI that runs several of them at once.
//
// What always holds here:
// - The document state is a real EditorState with the real collab() extension;
//   updates from the server go through receiveUpdates(), local edits through
//   state.update(), pushes carry getSyncedVersion()/sendableUpdates(). This is
//   what the browser editor does, minus the view.
// - At most one push is in flight per client. The next push goes out once all
//   updates of the previous one came back in `updates` frames (their
//   acknowledgement), or right after a (re)connect's welcome.
// - Everything the server says is checked against the protocol; anything off
//   is recorded in `violations` (never thrown), so a test can print it.
// - Network faults are simulated in-process: optional random delays on frames
//   in both directions (order preserved, like TCP), forced reconnects.
//
// Debugging a divergence: COLLAB_CLIENT_DEBUG=1 keeps the synced text beside the
// state and flags own pushes that cut a surrogate pair (the usual first sign
// that a client's view drifted from the server's); with COLLAB_CLIENT_DEBUG_DIR
// set it also logs every push to DIR/pushes-<clientID>.jsonl and dumps the first
// receive after which the unconfirmed edits no longer fit (DIR/split-<clientID>.json).
//
// CLI (prints one JSON object on stdout):
//   node client.mjs fuzz --url ws://127.0.0.1:PORT --doc NAME [--clients 5]
//        [--duration 4000] [--seed 1] [--delay 30] [--reconnects 1]
//        [--interval 5,40] [--offline MS] [--edits mixed|inserts] [--settle 20000]
//        [--record-out FILE]
//   node client.mjs show --url ws://127.0.0.1:PORT --doc NAME [--version V]

import { performance } from 'node:perf_hooks';
import { writeFileSync, appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { EditorState, ChangeSet, Text } from '@codemirror/state';
import { collab, receiveUpdates, sendableUpdates, getSyncedVersion } from '@codemirror/collab';

export const SUBPROTOCOL = 'collab.v1';

/** Small seeded PRNG (mulberry32): returns floats in [0, 1). */
export function makeRng(seed) {
  let a = (seed >>> 0) || 0x9e3779b9;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const randInt = (rng, lo, hi) => lo + Math.floor(rng() * (hi - lo + 1)); // inclusive

/** Delivers items after a random delay in [0, maxDelay) ms, never reordering them. */
class DelayLine {
  constructor(rng, maxDelay, deliver) {
    this.rng = rng;
    this.maxDelay = maxDelay;
    this.deliver = deliver;
    this.queue = [];
    this.last = 0;
    this.timer = null;
  }

  push(item) {
    if (!this.maxDelay) return this.deliver(item);
    const now = performance.now();
    const at = Math.max(this.last, now + this.rng() * this.maxDelay);
    this.last = at;
    this.queue.push([at, item]);
    this._arm();
  }

  _arm() {
    if (this.timer || !this.queue.length) return;
    const wait = Math.max(0, this.queue[0][0] - performance.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      const now = performance.now() + 1;
      while (this.queue.length && this.queue[0][0] <= now) this.deliver(this.queue.shift()[1]);
      this._arm();
    }, wait);
  }

  clear() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue = [];
  }
}

const isHighSurrogate = (c) => c >= 0xd800 && c <= 0xdbff;

/** Moves `pos` back one unit if it would split a surrogate pair in `doc`. */
export function snapPos(doc, pos) {
  if (pos <= 0 || pos >= doc.length) return pos;
  return isHighSurrogate(doc.sliceString(pos - 1, pos).charCodeAt(0)) ? pos - 1 : pos;
}

const PIECES = ['a', 'b', 'c', 'x', 'y', ' ', ' ', 'word', '\n', '\n', 'é', 'ß', '中文',
  '😀', '𝄞', '👍🏽', 'a\nb', '\n\n', '🙂z'];

/**
 * A random change spec valid for `state.doc`, never splitting a surrogate pair.
 * `edits`: "mixed" (inserts, deletes, replaces) or "inserts" (insertions only).
 *
 * Why "inserts" exists: with deletions, CodeMirror's mapping depends on how the
 * mapped-over changes are grouped (x.map(a.compose(b)) differs from
 * x.map(a).map(b) when a deletion collapses a range at which another insert
 * lands). A client maps its unconfirmed edits frame by frame while
 * rebaseUpdates maps a push over everything since its version in one piece, so
 * with deletions a stock client and a plain rebaseUpdates authority can
 * diverge. Insertions alone map the same under any grouping.
 */
export function randomChange(state, rng, edits = 'mixed') {
  const doc = state.doc;
  const len = doc.length;
  const randomText = () => {
    let s = '';
    const n = randInt(rng, 1, 4);
    for (let i = 0; i < n; i++) s += PIECES[Math.floor(rng() * PIECES.length)];
    return s;
  };
  const one = (lo, hi) => {
    const from = snapPos(doc, randInt(rng, lo, hi));
    const r = edits === 'inserts' ? 0 : rng();
    if (r < 0.6 || from >= hi) return { from, insert: randomText() };
    const to = snapPos(doc, Math.min(hi, from + randInt(rng, 1, 12)));
    if (to <= from) return { from, insert: randomText() };
    return r < 0.85 ? { from, to } : { from, to, insert: randomText() };
  };
  if (len > 20 && rng() < 0.15) {
    // Two non-overlapping changes in one transaction: a multi-part ChangeSet.
    const mid = snapPos(doc, randInt(rng, 1, len - 1));
    return [one(0, mid), one(mid, len)];
  }
  return one(0, len);
}

/** Length of the document an update's ChangeSetJSON produces, given the length it applies to. */
export function newLengthOf(changes) {
  let len = 0;
  for (const part of changes) {
    if (typeof part === 'number') len += part;
    else {
      for (let i = 1; i < part.length; i++) len += part[i].length;
      if (part.length > 2) len += part.length - 2;
    }
  }
  return len;
}

export class CollabClient {
  /**
   * @param {object} o
   * @param {string} o.url       ws://host:port (no path)
   * @param {string} o.doc       document name
   * @param {string} o.clientID
   * @param {object} [o.user]    {name, color}
   * @param {function} [o.rng]
   * @param {number} [o.inDelay]  max random delay (ms) before handling a received frame
   * @param {number} [o.outDelay] max random delay (ms) before sending a frame
   * @param {boolean} [o.record]  keep every update seen (version -> update) in `acked`
   * @param {boolean} [o.autoReconnect] reconnect (with backoff) when the socket drops
   * @param {number} [o.maxPushUpdates] cap on updates per push frame (default 500)
   * @param {function} [o.onUpdates] (client, from, updates, nowMs) after updates are applied
   */
  constructor(o) {
    this.url = o.url;
    this.doc = o.doc;
    this.clientID = o.clientID;
    this.user = o.user ?? { name: o.clientID, color: '#3366cc' };
    this.rng = o.rng ?? Math.random;
    this.record = o.record ?? true;
    this.autoReconnect = o.autoReconnect ?? true;
    // The server refuses pushes over its --max-updates (default 1000) with too-large;
    // after a long offline spell a stock client would push them all at once.
    this.maxPushUpdates = o.maxPushUpdates ?? 500;
    this.onUpdates = o.onUpdates ?? null;
    // Debug aid (COLLAB_CLIENT_DEBUG=1): keep the synced text and check our own pushes against it.
    this.debug = o.debug ?? Boolean(process.env.COLLAB_CLIENT_DEBUG);
    this.syncedDoc = null;
    this.lastPush = null;
    this.state = null;
    this.ws = null;
    this.gen = 0;             // connection generation; frames of older sockets are ignored
    this.connected = false;   // welcome received on the current socket
    this.closed = false;      // close() called: no more reconnects
    this.inFlight = 0;        // updates of the current push not yet seen back
    this.session = null;
    this.role = null;
    this.helloVersion = null;
    this.backoff = 20;
    this.reconnectTimer = null;
    this.retryTimer = null;
    this.acked = new Map();   // version -> {clientID, changes}: every update seen from the server
    this.lengthAt = new Map(); // synced version -> synced doc length (recent ones), for presence checks
    this.violations = [];
    this.errors = [];
    this.closes = [];
    this.resets = [];
    this.welcomeWaiters = [];
    this.stats = {
      connects: 0, welcomesDoc: 0, welcomesResume: 0, resumedUpdates: 0, pushes: 0,
      pushedUpdates: 0, ownAcked: 0, receivedUpdates: 0, localEdits: 0,
      presenceSent: 0, presenceReceived: 0, leaves: 0,
    };
    this.inLine = new DelayLine(this.rng, o.inDelay ?? 0, ([gen, text]) => this._handle(gen, text));
    this.outLine = new DelayLine(this.rng, o.outDelay ?? 0, ([gen, text]) => {
      if (gen === this.gen && this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
    });
  }

  // ---- public API -------------------------------------------------------

  /** Opens the connection; resolves at the first welcome. */
  start() {
    const p = this.nextWelcome();
    this._open();
    return p;
  }

  /** Resolves at the next welcome (rejects if the client is closed first). */
  nextWelcome() {
    return new Promise((resolve, reject) => this.welcomeWaiters.push({ resolve, reject }));
  }

  text() { return this.state ? this.state.doc.toString() : null; }
  version() { return this.state ? getSyncedVersion(this.state) : null; }
  pending() { return this.state ? sendableUpdates(this.state).length : 0; }

  /** Applies a local edit (a ChangeSpec), then pushes if nothing is in flight. */
  edit(spec) {
    if (!this.state) throw new Error('edit before the first welcome');
    this.state = this.state.update({ changes: spec }).state;
    this.stats.localEdits++;
    this._maybePush();
  }

  /** Sends a random presence; only when nothing is unconfirmed, so positions are as of the synced version. */
  randomPresence() {
    if (!this.connected || this.pending()) return false;
    const doc = this.state.doc;
    const ranges = [];
    const n = randInt(this.rng, 0, 2);
    for (let i = 0; i < n; i++) {
      ranges.push({ anchor: snapPos(doc, randInt(this.rng, 0, doc.length)),
        head: snapPos(doc, randInt(this.rng, 0, doc.length)) });
    }
    this._send({ type: 'presence', version: this.version(), ranges });
    this.stats.presenceSent++;
    return true;
  }

  /**
   * Drops the socket and connects again with hello.version = synced version;
   * unconfirmed updates are re-pushed after the welcome. With `waitClose` the
   * new socket opens only after the old one finished closing.
   */
  async forceReconnect({ waitClose = true, offlineMs = 0 } = {}) {
    const old = this.ws;
    this.gen++;
    this.connected = false;
    this.inFlight = 0;
    this.inLine.clear();
    this.outLine.clear();
    if (old && old.readyState !== WebSocket.CLOSED) {
      const closed = new Promise((resolve) => { old.once('close', resolve); setTimeout(resolve, 1000); });
      old.close(1000, 'reconnect');
      if (waitClose) await closed;
    }
    if (offlineMs) {
      // Stay offline for a while (edits pile up unconfirmed), like a laptop losing its network.
      const gen = this.gen;
      await sleep(offlineMs);
      if (gen !== this.gen) return;
    }
    if (this.closed) return;
    const p = this.nextWelcome();
    this._open();
    return p;
  }

  /** Stops for good: closes the socket, cancels timers. */
  close() {
    this.closed = true;
    this.gen++;
    this.connected = false;
    this.inLine.clear();
    this.outLine.clear();
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.retryTimer);
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) this.ws.close(1000, 'bye');
    for (const w of this.welcomeWaiters.splice(0)) w.reject(new Error('client closed'));
  }

  summary() {
    return {
      clientID: this.clientID, version: this.version(), pending: this.pending(),
      connected: this.connected, stats: this.stats, violations: this.violations,
      errors: this.errors, closes: this.closes, resets: this.resets,
    };
  }

  // ---- connection ------------------------------------------------------

  _violation(msg) {
    this.violations.push(`${this.clientID}: ${msg}`);
  }

  _open() {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    const gen = ++this.gen;
    this.connected = false;
    this.inFlight = 0;
    this.stats.connects++;
    const ws = new WebSocket(`${this.url}/ws/${encodeURIComponent(this.doc)}`, SUBPROTOCOL,
      { perMessageDeflate: false, handshakeTimeout: 5000 });
    this.ws = ws;
    ws.on('open', () => {
      if (gen !== this.gen) return;
      if (ws.protocol !== SUBPROTOCOL) this._violation(`server selected subprotocol ${JSON.stringify(ws.protocol)}`);
      this.helloVersion = this.state ? getSyncedVersion(this.state) : null;
      ws.send(JSON.stringify({ type: 'hello', clientID: this.clientID, version: this.helloVersion, user: this.user }));
    });
    ws.on('message', (data, isBinary) => {
      if (gen !== this.gen) return;
      if (isBinary) this._violation('binary frame from server');
      this.inLine.push([gen, data.toString()]);
    });
    ws.on('error', (err) => { this.lastSocketError = err.message; });
    ws.on('close', (code, reason) => {
      if (gen !== this.gen) return;
      this.closes.push({ code, reason: reason.toString(), t: Math.round(performance.now()) });
      if (code === 4001) this._violation('closed with 4001 although no other connection used this clientID');
      this.connected = false;
      this.inFlight = 0;
      this.inLine.clear();
      this.outLine.clear();
      if (!this.closed && this.autoReconnect) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => this._open(), this.backoff);
        this.backoff = Math.min(500, this.backoff * 2);
      }
    });
  }

  _send(frame) {
    this.outLine.push([this.gen, JSON.stringify(frame)]);
  }

  _maybePush() {
    if (!this.connected || this.inFlight || !this.state || this.role === 'view') return;
    const ups = sendableUpdates(this.state);
    if (!ups.length) return;
    const n = Math.min(ups.length, this.maxPushUpdates);
    const updates = new Array(n);
    for (let i = 0; i < n; i++) updates[i] = { clientID: this.clientID, changes: ups[i].changes.toJSON() };
    this.inFlight = n;
    this.stats.pushes++;
    this.stats.pushedUpdates += n;
    const frame = { type: 'push', version: getSyncedVersion(this.state), updates };
    if (this.debug) this._checkOwnPush(frame, ups.slice(0, n));
    this._send(frame);
  }

  _splitsPair() {
    let doc = this.syncedDoc;
    let bad = false;
    for (const u of sendableUpdates(this.state)) {
      u.changes.iterChanges((fromA, toA) => {
        for (const p of [fromA, toA]) {
          if (p > 0 && p < doc.length && isHighSurrogate(doc.sliceString(p - 1, p).charCodeAt(0))) bad = true;
        }
      });
      doc = u.changes.apply(doc);
    }
    return bad;
  }

  _checkOwnPush(frame, ups) {
    this.lastPush = frame;
    if (process.env.COLLAB_CLIENT_DEBUG_DIR) {
      appendFileSync(`${process.env.COLLAB_CLIENT_DEBUG_DIR}/pushes-${this.clientID}.jsonl`, JSON.stringify({ t: performance.now(), ...frame }) + '\n');
    }
    let doc = this.syncedDoc;
    for (const u of ups) {
      u.changes.iterChanges((fromA, toA) => {
        for (const p of [fromA, toA]) {
          if (p > 0 && p < doc.length && isHighSurrogate(doc.sliceString(p - 1, p).charCodeAt(0))) {
            this._violation(`own push at version ${frame.version} cuts a surrogate pair at ${p}: ${JSON.stringify(u.changes.toJSON()).slice(0, 300)}`);
          }
        }
      });
      doc = u.changes.apply(doc);
    }
  }

  // ---- frames from the server --------------------------------------------

  _handle(gen, text) {
    if (gen !== this.gen) return;
    let m;
    try { m = JSON.parse(text); } catch { return this._violation(`non-JSON frame ${text.slice(0, 100)}`); }
    if (!m || typeof m !== 'object') return this._violation(`frame is not an object: ${text.slice(0, 100)}`);
    switch (m.type) {
      case 'welcome': return this._onWelcome(m);
      case 'updates': return this._onUpdates(m);
      case 'presence': return this._onPresence(m);
      case 'leave': this.stats.leaves++; return;
      case 'error': return this._onError(m);
      default: return this._violation(`unknown frame type ${JSON.stringify(m.type)}`);
    }
  }

  _makeState(doc, version) {
    return EditorState.create({ doc, extensions: [collab({ startVersion: version, clientID: this.clientID })] });
  }

  _onWelcome(m) {
    if (this.connected) return this._violation('second welcome on one connection');
    if (!Number.isInteger(m.version) || m.version < 0) return this._violation(`welcome.version ${m.version}`);
    if (m.role !== 'edit' && m.role !== 'view') this._violation(`welcome.role ${JSON.stringify(m.role)}`);
    if (!Array.isArray(m.peers)) this._violation('welcome.peers is not a list');
    if (typeof m.doc === 'string') {
      this.stats.welcomesDoc++;
      if (this.debug) this.syncedDoc = Text.of(m.doc.split('\n'));
      if (this.state === null) {
        this.state = this._makeState(m.doc, m.version);
      } else {
        // Full text on a resume: allowed when the server no longer holds the updates.
        const synced = getSyncedVersion(this.state);
        const pending = this.pending();
        if (!(m.version === synced && pending === 0 && m.doc === this.text())) {
          this.resets.push({ synced, version: m.version, droppedUnconfirmed: pending });
          this.state = this._makeState(m.doc, m.version);
        }
      }
    } else if (Number.isInteger(m.from) && Array.isArray(m.updates)) {
      this.stats.welcomesResume++;
      this.stats.resumedUpdates += m.updates.length;
      if (this.state === null) return this._violation('welcome with from+updates after hello version null');
      if (m.from !== this.helloVersion) this._violation(`welcome.from ${m.from} != hello.version ${this.helloVersion}`);
      if (m.version !== m.from + m.updates.length) this._violation(`welcome.version ${m.version} != from ${m.from} + ${m.updates.length} updates`);
      if (!this._applyUpdates(m.from, m.updates)) return;
    } else {
      return this._violation(`welcome has neither doc nor from+updates: ${JSON.stringify(m).slice(0, 200)}`);
    }
    if (getSyncedVersion(this.state) !== m.version) {
      this._violation(`after welcome synced version ${getSyncedVersion(this.state)} != welcome.version ${m.version}`);
    }
    this._noteLength();
    this.session = m.session;
    this.role = m.role;
    this.connected = true;
    this.backoff = 20;
    for (const w of this.welcomeWaiters.splice(0)) w.resolve(m);
    this._maybePush();
  }

  _onUpdates(m) {
    if (!this.connected) return this._violation('updates before welcome');
    if (!Number.isInteger(m.from) || !Array.isArray(m.updates)) return this._violation(`bad updates frame ${JSON.stringify(m).slice(0, 200)}`);
    if (!m.updates.length) this._violation(`empty updates frame from ${m.from}`);
    this._applyUpdates(m.from, m.updates);
  }

  /** Applies server updates starting at version `from`; returns false if the client had to give up on this socket. */
  _applyUpdates(from, updates) {
    const synced = getSyncedVersion(this.state);
    if (from > synced) {
      this._violation(`gap: updates from ${from} but synced version is ${synced}`);
      this.forceReconnect({ waitClose: false });
      return false;
    }
    if (from < synced) this._violation(`overlap: updates from ${from} but synced version is ${synced}`);
    for (let i = 0; i < updates.length; i++) {
      const u = updates[i];
      if (!u || typeof u.clientID !== 'string' || !Array.isArray(u.changes)) {
        this._violation(`malformed update at version ${from + i + 1}: ${JSON.stringify(u).slice(0, 200)}`);
        this.forceReconnect({ waitClose: false });
        return false;
      }
      if (this.record) {
        const v = from + i + 1;
        const seen = this.acked.get(v);
        if (seen) {
          if (seen.clientID !== u.clientID || JSON.stringify(seen.changes) !== JSON.stringify(u.changes)) {
            this._violation(`version ${v} seen twice with different content: ${JSON.stringify(seen)} vs ${JSON.stringify(u)}`);
          }
        } else {
          this.acked.set(v, { clientID: u.clientID, changes: u.changes });
        }
      }
    }
    const fresh = from < synced ? updates.slice(synced - from) : updates;
    if (!fresh.length) return true;
    const before = sendableUpdates(this.state).length;
    try {
      const parsed = fresh.map((u) => ({ clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes) }));
      const dbgBefore = this.debug && !this.dumped ? { synced: this.syncedDoc.toString(), syncedVersion: synced,
        unconfirmed: sendableUpdates(this.state).map((u) => u.changes.toJSON()), received: fresh,
        local: this.state.doc.toString() } : null;
      this.state = receiveUpdates(this.state, parsed).state;
      if (this.debug) {
        for (const u of parsed) this.syncedDoc = u.changes.apply(this.syncedDoc);
        if (dbgBefore && this._splitsPair()) {
          this.dumped = true;
          writeFileSync(`${process.env.COLLAB_CLIENT_DEBUG_DIR || '/tmp'}/split-${this.clientID}.json`, JSON.stringify({ clientID: this.clientID, ...dbgBefore,
            after: sendableUpdates(this.state).map((u) => u.changes.toJSON()) }));
        }
      }
    } catch (e) {
      this._violation(`cannot apply updates from ${synced}: ${e.message}`);
      this.forceReconnect({ waitClose: false });
      return false;
    }
    this.stats.receivedUpdates += fresh.length;
    const own = before - sendableUpdates(this.state).length;
    if (own > 0) {
      this.stats.ownAcked += own;
      this.inFlight = Math.max(0, this.inFlight - own);
    }
    this._noteLength();
    if (this.onUpdates) this.onUpdates(this, synced, fresh, performance.now());
    if (!this.inFlight) this._maybePush();
    return true;
  }

  _noteLength() {
    let len = this.state.doc.length;
    for (const u of sendableUpdates(this.state)) len -= u.changes.newLength - u.changes.length;
    const v = getSyncedVersion(this.state);
    this.lengthAt.set(v, len);
    this.lengthAt.delete(v - 2000);
  }

  _onPresence(m) {
    this.stats.presenceReceived++;
    if (!this.connected) return this._violation('presence before welcome');
    const synced = getSyncedVersion(this.state);
    if (!Number.isInteger(m.version) || m.version > synced) {
      return this._violation(`presence at version ${m.version} but only ${synced} updates were sent`);
    }
    if (m.session === this.session) this._violation('received own presence');
    if (!Array.isArray(m.ranges)) return this._violation('presence.ranges is not a list');
    const len = this.lengthAt.get(m.version);
    if (len === undefined) return;
    for (const r of m.ranges) {
      if (!(Number.isInteger(r.anchor) && Number.isInteger(r.head) && r.anchor >= 0 && r.head >= 0 &&
            r.anchor <= len && r.head <= len)) {
        this._violation(`presence range ${JSON.stringify(r)} outside doc of length ${len} at version ${m.version}`);
      }
    }
  }

  _onError(m) {
    this.errors.push({ code: m.code, message: m.message, t: Math.round(performance.now()),
      ...(this.debug ? { lastPush: JSON.stringify(this.lastPush).slice(0, 2000) } : {}) });
    // We cannot tell which frame was refused; if it was the push, nothing will
    // come back for it, so allow a retry (duplicates are deduplicated by clientID).
    if (this.inFlight) {
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (this.inFlight) { this.inFlight = 0; this._maybePush(); }
      }, m.code === 'rate-limited' ? 500 : 100);
    }
  }
}

// ---- CLI -----------------------------------------------------------------

export function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const key = a.slice(2);
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) out[key] = true;
      else { out[key] = next; i++; }
    } else out._.push(a);
  }
  return out;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function httpBase(wsUrl) {
  return wsUrl.replace(/^ws/, 'http');
}

export async function fetchDoc(wsUrl, doc) {
  const r = await fetch(`${httpBase(wsUrl)}/api/docs/${encodeURIComponent(doc)}`);
  if (!r.ok) throw new Error(`GET /api/docs/${doc}: ${r.status}`);
  return r.json();
}

/** Waits until every client is connected with nothing unconfirmed and all sit at the server's version. */
export async function settle(clients, url, doc, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  let last = null;
  while (performance.now() < deadline) {
    if (clients.every((c) => c.connected && c.pending() === 0 && c.inFlight === 0)) {
      try {
        last = await fetchDoc(url, doc);
        if (clients.every((c) => c.version() === last.version)) return { ok: true, server: last };
      } catch (e) {
        last = { error: e.message };
      }
    }
    await sleep(50);
  }
  return { ok: false, server: last };
}

/**
 * Several clients editing one document at random, each with random frame
 * delays and `reconnects` forced reconnects; then they stop and settle.
 */
export async function runFuzz(opts) {
  const { url, doc, clients: n = 5, duration = 4000, seed = 1, delay = 30, reconnects = 1,
    interval = [5, 40], settleMs = 20000, offline = 0, edits = 'mixed' } = opts;
  const master = makeRng(seed);
  const clients = [];
  for (let i = 0; i < n; i++) {
    clients.push(new CollabClient({
      url, doc, clientID: `c${seed}-${i}-${Math.floor(master() * 1e9).toString(36)}`,
      user: { name: `fuzz ${i}`, color: '#' + Math.floor(master() * 0xffffff).toString(16).padStart(6, '0') },
      rng: makeRng(Math.floor(master() * 2 ** 32)), inDelay: delay, outDelay: delay,
    }));
  }
  const t0 = performance.now();
  await clients[0].start();
  await Promise.all(clients.slice(1).map((c) => c.start()));
  const stopAt = performance.now() + duration;
  const loops = clients.map(async (c) => {
    const rng = c.rng;
    const reconnectAt = Array.from({ length: reconnects }, () => performance.now() + (0.15 + 0.7 * rng()) * duration).sort((a, b) => a - b);
    while (performance.now() < stopAt) {
      await sleep(randInt(rng, interval[0], interval[1]));
      if (reconnectAt.length && performance.now() >= reconnectAt[0]) {
        reconnectAt.shift();
        c.forceReconnect({ waitClose: rng() < 0.5, offlineMs: rng() < 0.5 ? randInt(rng, 0, offline) : 0 }).catch(() => {});
        continue;
      }
      if (rng() < 0.1) c.randomPresence();
      else if (c.state) c.edit(randomChange(c.state, rng, edits));
    }
  });
  await Promise.all(loops);
  const editedMs = performance.now() - t0;
  const settled = await settle(clients, url, doc, settleMs);
  const texts = clients.map((c) => c.text());
  // Every version must have meant the same update to every client that saw it.
  const merged = new Map();
  const conflicts = [];
  for (const c of clients) {
    for (const [v, u] of c.acked) {
      const s = JSON.stringify(u);
      const prev = merged.get(v);
      if (prev === undefined) merged.set(v, s);
      else if (prev !== s) conflicts.push({ version: v, a: prev, b: s });
    }
  }
  const result = {
    ok: settled.ok, editedMs: Math.round(editedMs), server: settled.server,
    versions: clients.map((c) => c.version()), texts,
    clients: clients.map((c) => c.summary()), conflicts,
    totalLocalEdits: clients.reduce((a, c) => a + c.stats.localEdits, 0),
  };
  if (opts.recordOut) {
    const rec = {};
    for (const [v, s] of [...merged].sort((a, b) => a[0] - b[0])) rec[v] = JSON.parse(s);
    writeFileSync(opts.recordOut, JSON.stringify(rec));
  }
  for (const c of clients) c.close();
  return result;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const cmd = args._[0];
  if (!args.url || !args.doc) throw new Error('need --url ws://127.0.0.1:PORT and --doc NAME');
  let result;
  if (cmd === 'fuzz') {
    result = await runFuzz({
      url: args.url, doc: args.doc,
      clients: Number(args.clients ?? 5), duration: Number(args.duration ?? 4000),
      seed: Number(args.seed ?? 1), delay: Number(args.delay ?? 30),
      reconnects: Number(args.reconnects ?? 1),
      interval: String(args.interval ?? '5,40').split(',').map(Number),
      settleMs: Number(args.settle ?? 20000), recordOut: args['record-out'],
      offline: Number(args.offline ?? 0), edits: args.edits ?? 'mixed',
    });
  } else if (cmd === 'show') {
    const c = new CollabClient({ url: args.url, doc: args.doc, clientID: `show-${process.pid}`, autoReconnect: false });
    await c.start();
    result = { version: c.version(), text: c.text(), summary: c.summary() };
    c.close();
  } else {
    throw new Error(`unknown command ${cmd}: use fuzz or show`);
  }
  // Exit only once stdout is flushed: a pipe is written asynchronously.
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((e) => {
    process.stderr.write(`${e.stack || e}\n`);
    process.exit(2);
  });
}
