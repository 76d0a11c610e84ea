// Headless collab client for the tests and benchmarks: the editor page's own
// protocol core (static/src/core.js) driven from Node over the `ws` package,
// plus fault simulation, random edits and a CLI that runs several at once.
// The wire contract is docs/protocol.md in this repository.
//
// What always holds here:
// - Every protocol decision (hello and resume, what to push and when, one
//   receiveUpdates per frame, acknowledgements, presence mapping, error and
//   close codes, backoff) is the core Session's: the code the browser runs.
//   This module owns the socket, the clock, the faults and the record of
//   what was seen; it has no EditorView (the core's state is the editor).
// - Every CodeMirror class used here comes through core.js, so the process
//   holds one copy of @codemirror/state (static/node_modules'); two copies
//   break instanceof checks and facets. (oracle.mjs, a separate process,
//   uses tests/js's own copy.)
// - Everything the server says that the protocol does not allow is recorded
//   in `violations` (never thrown), so a test can print it.
// - Network faults are simulated in-process: optional random delays on frames
//   in both directions (order preserved, like TCP), forced reconnects.
//
// Several servers (collab processes sharing one database): give `urls`
// instead of `url`. The first connection goes to a random one of them and
// every reconnect to another one (random among the rest), as a browser behind
// a load balancer without affinity would. Each connection is recorded (url,
// session, open/welcome/close times in epoch ms, close code), and the adapter
// checks on its own that every connection's `updates` continue exactly where
// its welcome or previous frame ended (besides the core's checks). The
// sessions whose cursors are shown are mirrored (`shown`), so a test can see
// another process's sessions appear and `leave`.
//
// Debugging a divergence: COLLAB_CLIENT_DEBUG=1 flags own pushes that cut a
// surrogate pair of the synced text (the usual first sign that a client's
// view drifted from the server's); with COLLAB_CLIENT_DEBUG_DIR set it also
// logs every push to DIR/pushes-<clientID>.jsonl and dumps the first receive
// after which the unconfirmed edits no longer fit (DIR/split-<clientID>.json).
//
// CLI (prints one JSON object on stdout):
//   node client.mjs fuzz --url ws://127.0.0.1:PORT --doc NAME [--clients 5]
//        [--duration 4000] [--seed 1] [--delay 30] [--reconnects 1]
//        [--interval 5,40] [--offline MS] [--edits mixed|inserts] [--settle 20000]
//        [--record-out FILE]
//        [--urls ws://A,ws://B,...] [--events FILE] [--linger MS]
//   node client.mjs show --url ws://127.0.0.1:PORT --doc NAME
//
// --urls: the clients connect to these servers (each connection a random one,
//   every reconnect another); the settle waits until every one of them serves
//   the clients' version and text (`servers` in the output). --url, if also
//   given, is only where the final text is read (default: the first of --urls).
// --events FILE: JSON lines as things happen (flushed every 100 ms): every
//   connection (`open`, `welcome` with its session, `close`), every
//   acknowledgement of an own update (`ack`: version and changes), and the
//   shown cursors (`show`, `hide` on leave, `clear` when a welcome replaces
//   them). Each line has `t` (epoch ms) and `client`.
// --linger MS: after the settle, stay connected (no edits) for up to MS, or
//   until a line arrives on stdin, before reporting: for cursors that must
//   `leave` later, e.g. when another server died.

import { performance } from 'node:perf_hooks';
import { writeFileSync, appendFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { Session, SUBPROTOCOL, EditorState, EditorSelection, ChangeSet } from '../../static/src/core.js';

export { SUBPROTOCOL };

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

/** Positions in `doc` (synced text) where `changes` (ChangeSets applied in turn) cut a surrogate pair. */
function splitPairs(doc, changes) {
  const cuts = [];
  for (const ch of changes) {
    ch.iterChanges((fromA, toA) => {
      for (const p of [fromA, toA]) {
        if (p > 0 && p < doc.length && isHighSurrogate(doc.sliceString(p - 1, p).charCodeAt(0))) cuts.push(p);
      }
    });
    doc = ch.apply(doc);
  }
  return cuts;
}

export class CollabClient {
  /**
   * @param {object} o
   * @param {string} o.url       ws://host:port (no path)
   * @param {string[]} [o.urls]  several servers instead: each connection picks one, every reconnect another
   * @param {function} [o.urlRng] the random source for those picks (default: rng)
   * @param {function} [o.onLog] (entry) for each connection, acknowledgement and shown-cursor change
   * @param {string} o.doc       document name
   * @param {string} o.clientID
   * @param {object} [o.user]    {name, color}
   * @param {function} [o.rng]   also the core's backoff jitter
   * @param {number} [o.inDelay]  max random delay (ms) before handling a received frame
   * @param {number} [o.outDelay] max random delay (ms) before sending a frame
   * @param {boolean} [o.record]  keep every update seen (version -> update) in `acked`
   * @param {boolean} [o.autoReconnect] reconnect (as the core says) when the server or network closes the socket
   * @param {number} [o.maxPushUpdates] cap on updates per push frame, below the server's maxUpdates
   * @param {function} [o.onUpdates] (client, from, updates, nowMs) after updates are applied
   * @param {boolean} [o.presence] send our selection as the browser does (default true)
   */
  constructor(o) {
    this.urls = o.urls && o.urls.length ? [...o.urls] : null;
    this.url = o.url ?? (this.urls ? this.urls[0] : undefined);
    this.doc = o.doc;
    this.clientID = o.clientID;
    this.user = o.user ?? { name: o.clientID, color: '#3366cc' };
    this.rng = o.rng ?? Math.random;
    this.record = o.record ?? true;
    this.autoReconnect = o.autoReconnect ?? true;
    this.onUpdates = o.onUpdates ?? null;
    this.urlRng = o.urlRng ?? this.rng;
    this.onLog = o.onLog ?? null;
    this.debug = o.debug ?? Boolean(process.env.COLLAB_CLIENT_DEBUG);
    this.core = new Session({
      clientID: o.clientID, user: this.user, random: this.rng, maxPushUpdates: o.maxPushUpdates,
      presence: o.presence ?? true,
      extensions: [EditorState.allowMultipleSelections.of(true)],
      // A test wants a quick comeback; the browser waits longer (the core's defaults).
      backoff: { base: 20, max: 500, soon: 10, soonJitter: 20 },
      // Presence at most 10 times a second (the browser: 20): these clients
      // type far faster than a person, and their pushes already come close
      // to the server's frame rate limit.
      presenceInterval: 100,
      pushRetry: { base: 100, max: 1000 },
    });
    this.ws = null;
    this.gen = 0;             // socket generation; frames and events of older sockets are ignored
    this.closed = false;      // close() called: no more reconnects
    this.reconnectTimer = null;
    this.wakeTimer = null;
    this.wakeAt = null;
    this.lastPush = null;
    this.dumped = false;
    this.acked = new Map();   // version -> {clientID, changes}: every update seen from the server
    this.violations = [];
    this.errors = [];
    this.closes = [];
    this.resets = [];
    this.welcomeWaiters = [];
    this.counts = { connects: 0, localEdits: 0 };
    this.connections = [];    // one record per socket: {url, opened, session, welcomed, version, closed, code}
    this.conn = null;         // the current socket's record
    this.shown = new Set();   // sessions whose cursor is shown (mirrors the core's peers)
    this.inLine = new DelayLine(this.rng, o.inDelay ?? 0, ([gen, data]) => this._deliver(gen, data));
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

  get state() { return this.core.state; }
  get connected() { return this.core.welcomed; }
  get inFlight() { return this.core.inflight; }
  get stats() { return { ...this.counts, ...this.core.stats }; }

  text() { return this.core.state ? this.core.state.doc.toString() : null; }
  version() { return this.core.version; }
  pending() { return this.core.pending; }

  /** Applies a local edit (a ChangeSpec); the core pushes it when nothing is in flight. */
  edit(spec) {
    if (!this.core.state) throw new Error('edit before the first welcome');
    this.counts.localEdits++;
    this._changed(this.core.state.update({ changes: spec }).state);
  }

  /** Selects 1-3 random ranges; the core sends them as presence (mapped back to the synced version). */
  randomPresence() {
    const state = this.core.state;
    if (!state) return false;
    const doc = state.doc;
    const ranges = [];
    const n = randInt(this.rng, 1, 3);
    for (let i = 0; i < n; i++) {
      ranges.push(EditorSelection.range(snapPos(doc, randInt(this.rng, 0, doc.length)),
        snapPos(doc, randInt(this.rng, 0, doc.length))));
    }
    this._changed(state.update({ selection: EditorSelection.create(ranges) }).state);
    return true;
  }

  /**
   * Drops the socket and connects again: the core says hello at its synced
   * version and pushes what is unconfirmed after the welcome. With
   * `waitClose` the new socket opens only after the old one finished closing.
   */
  async forceReconnect({ waitClose = true, offlineMs = 0 } = {}) {
    clearTimeout(this.reconnectTimer);
    const old = this._dropSocket('reconnect');
    // Whatever opened or dropped a socket while we wait (another forced reconnect, the core's own
    // reconnect) wins: this one then gives up, so one socket is ever open and each gets a hello.
    const gen = this.gen;
    if (old && waitClose) {
      await new Promise((resolve) => { old.once('close', resolve); setTimeout(resolve, 1000); });
      if (gen !== this.gen) return;
    }
    if (offlineMs) {
      // Stay offline for a while (edits pile up unconfirmed), like a laptop losing its network.
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
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.wakeTimer);
    this.wakeTimer = null;
    this._dropSocket('bye');
    for (const w of this.welcomeWaiters.splice(0)) w.reject(new Error('client closed'));
  }

  summary() {
    return {
      clientID: this.clientID, version: this.version(), pending: this.pending(),
      connected: this.connected, stats: this.stats, violations: this.violations,
      errors: this.errors, closes: this.closes, resets: this.resets,
      url: this.url, connections: this.connections.map(({ version, ...c }) => c), shown: [...this.shown],
    };
  }

  // ---- the socket ------------------------------------------------------

  _violation(msg) {
    let where = this.inFrame ? ` (in a ${this.inFrame} frame from ${this.url})` : '';
    if (this.inFrame === 'updates' && this.inData) {
      // The frame that did not fit, for the post-mortem (the client recorded nothing of it).
      where += ` frame ${this.inData.slice(0, 600)}; synced text length ${this.core.syncedDoc?.length}`;
    }
    this.violations.push(`${this.clientID}: ${msg}${where}`);
  }

  /** The server for a new connection: any of `urls` the first time, then one other than the last. */
  _pickUrl() {
    if (!this.urls || this.urls.length === 1) return this.url;
    if (!this.connections.length) return this.urls[Math.floor(this.urlRng() * this.urls.length)];
    const others = this.urls.filter((u) => u !== this.url);
    return others[Math.floor(this.urlRng() * others.length)];
  }

  _log(entry) {
    if (this.onLog) this.onLog({ t: Date.now(), client: this.clientID, ...entry });
  }

  /** Marks the current socket's record closed (once). */
  _endConn(code) {
    const c = this.conn;
    if (!c || c.closed) return;
    c.closed = Date.now();
    c.code = code;
    this._log({ type: 'close', url: c.url, session: c.session, code });
  }

  _open() {
    if (this.closed) return;
    clearTimeout(this.reconnectTimer);
    if (this.ws) this._dropSocket('replaced'); // never two sockets: the core would not say hello on the second
    const gen = ++this.gen;
    this.counts.connects++;
    this.url = this._pickUrl();
    this.conn = { url: this.url, opened: Date.now(), session: null, welcomed: null, version: null, closed: null, code: null };
    this.connections.push(this.conn);
    this._log({ type: 'open', url: this.url });
    const ws = new WebSocket(`${this.url}/ws/${encodeURIComponent(this.doc)}`, SUBPROTOCOL,
      { perMessageDeflate: false, handshakeTimeout: 5000 });
    this.ws = ws;
    ws.on('open', () => {
      if (gen !== this.gen) return;
      if (ws.protocol !== SUBPROTOCOL) this._violation(`server selected subprotocol ${JSON.stringify(ws.protocol)}`);
      this._run(this.core.opened(performance.now()));
    });
    ws.on('message', (data, isBinary) => {
      if (gen !== this.gen) return;
      this.inLine.push([gen, isBinary ? data : data.toString()]); // the core refuses a binary frame
    });
    ws.on('error', (err) => { this.lastSocketError = err.message; });
    ws.on('close', (code, reason) => {
      if (gen !== this.gen) return;
      this.closes.push({ code, reason: reason.toString(), t: Math.round(performance.now()) });
      this._endConn(code);
      if (code === 4001) this._violation('closed with 4001 although no other connection used this clientID');
      this.ws = null;
      this.inLine.clear();
      this.outLine.clear();
      const step = this.core.closed(code, reason.toString(), performance.now());
      if (!this.autoReconnect) step.reconnect = null;
      this._run(step);
    });
  }

  /** Forgets the current socket (its frames and events are ignored from now on) and closes it; returns it. */
  _dropSocket(why) {
    const ws = this.ws;
    if (ws) this._endConn(why);
    this.gen++;
    this.ws = null;
    this.inLine.clear();
    this.outLine.clear();
    this._run(this.core.disconnected());
    if (ws && ws.readyState !== WebSocket.CLOSED) ws.close(1000, why);
    return ws;
  }

  _deliver(gen, data) {
    if (gen !== this.gen) return;
    const before = this.debug && !this.dumped && this.core.state ? {
      synced: this.core.syncedDoc.toString(), syncedVersion: this.core.version,
      unconfirmed: this.core.unconfirmed.map((u) => u.changes.toJSON()), local: this.text(), received: String(data),
    } : null;
    this.inFrame = typeof data === 'string' ? (/"type"\s*:\s*"(\w+)"/.exec(data.slice(0, 60)) || [])[1] ?? '?' : 'binary';
    this.inData = typeof data === 'string' ? data : null;
    this._run(this.core.receive(data, performance.now()));
    this.inFrame = this.inData = null;
    if (before && this.core.state && splitPairs(this.core.syncedDoc, this.core.unconfirmed.map((u) => u.changes)).length) {
      this.dumped = true;
      writeFileSync(`${process.env.COLLAB_CLIENT_DEBUG_DIR || '/tmp'}/split-${this.clientID}.json`, JSON.stringify({
        clientID: this.clientID, ...before, after: this.core.unconfirmed.map((u) => u.changes.toJSON()) }));
    }
  }

  _changed(state) {
    this._run(this.core.changed(state, performance.now()));
  }

  /** Carries out what the core decided. */
  _run(step) {
    for (const frame of step.send) {
      if (this.debug && frame.type === 'push') this._checkOwnPush(frame);
      this.outLine.push([this.gen, JSON.stringify(frame)]);
    }
    // step.transaction needs nothing here: the core's state already includes it (no view to update).
    for (const e of step.events) this._onEvent(e);
    if (step.stop !== null) {
      this._dropSocket('stop');
    } else if (step.reconnect) {
      this._dropSocket('resync');
      if (!this.closed) {
        clearTimeout(this.reconnectTimer);
        this.reconnectTimer = setTimeout(() => this._open(), step.reconnect.delay);
      }
    }
    if (step.wakeAt !== null) this._wake(step.wakeAt);
  }

  _wake(at) {
    if (this.closed || (this.wakeTimer && this.wakeAt <= at)) return;
    clearTimeout(this.wakeTimer);
    this.wakeAt = at;
    this.wakeTimer = setTimeout(() => {
      this.wakeTimer = null;
      this._run(this.core.tick(performance.now()));
    }, Math.max(0, at - performance.now()));
  }

  _onEvent(e) {
    switch (e.type) {
      case 'welcome':
        if (this.conn) {
          Object.assign(this.conn, { session: e.frame.session, welcomed: Date.now(), version: e.frame.version });
          this._log({ type: 'welcome', url: this.conn.url, session: e.frame.session, version: e.frame.version,
            from: e.frame.from ?? null });
        }
        for (const w of this.welcomeWaiters.splice(0)) w.resolve(e.frame);
        break;
      case 'updates':
        this._checkContiguous(e.from, e.updates.length);
        if (this.record) this._record(e.from, e.updates);
        if (e.own && this.onLog) {
          const start = e.from + e.updates.length - e.fresh.length;
          e.fresh.forEach((u, i) => {
            if (u.clientID === this.clientID) this._log({ type: 'ack', version: start + i + 1, changes: u.changes });
          });
        }
        if (this.onUpdates && e.fresh.length) {
          this.onUpdates(this, e.from + e.updates.length - e.fresh.length, e.fresh, performance.now());
        }
        break;
      case 'error':
        this.errors.push({ code: e.code, message: e.message, t: Math.round(performance.now()),
          ...(this.debug ? { lastPush: JSON.stringify(this.lastPush).slice(0, 2000) } : {}) });
        break;
      case 'problem':
        this._violation(e.text);
        break;
      case 'reset':
        this.resets.push({ synced: e.synced, version: e.version, droppedUnconfirmed: e.dropped });
        break;
      case 'peer':
        if (!this.shown.has(e.session)) {
          this.shown.add(e.session);
          this._log({ type: 'show', session: e.session });
        }
        break;
      case 'leave':
        if (this.shown.delete(e.session)) this._log({ type: 'hide', session: e.session });
        break;
      case 'peers-cleared':
        if (this.shown.size) this._log({ type: 'clear', sessions: [...this.shown] });
        this.shown.clear();
        break;
      default:
        break; // notice, rescue, role: nothing to keep
    }
  }

  /**
   * The adapter's own check that this connection's versions are contiguous:
   * after the welcome, each frame starts where the previous one ended. (The
   * resumed updates of a welcome come before its event and are the core's to check.)
   */
  _checkContiguous(from, n) {
    const c = this.conn;
    if (!c || c.welcomed === null) return;
    if (from !== c.version) {
      this._violation(`connection to ${c.url} (session ${c.session}): updates from ${from} after version ${c.version}`);
    }
    c.version = Math.max(c.version, from + n);
  }

  /** Every version must mean the same update each time it is seen. */
  _record(from, updates) {
    updates.forEach((u, i) => {
      const v = from + i + 1;
      const seen = this.acked.get(v);
      if (!seen) {
        this.acked.set(v, { clientID: u.clientID, changes: u.changes });
      } else if (seen.clientID !== u.clientID || JSON.stringify(seen.changes) !== JSON.stringify(u.changes)) {
        this._violation(`version ${v} seen twice with different content: ${JSON.stringify(seen)} vs ${JSON.stringify(u)}`);
      }
    });
  }

  _checkOwnPush(frame) {
    this.lastPush = frame;
    if (process.env.COLLAB_CLIENT_DEBUG_DIR) {
      appendFileSync(`${process.env.COLLAB_CLIENT_DEBUG_DIR}/pushes-${this.clientID}.jsonl`,
        JSON.stringify({ t: performance.now(), ...frame }) + '\n');
    }
    const cuts = splitPairs(this.core.syncedDoc, frame.updates.map((u) => ChangeSet.fromJSON(u.changes)));
    if (cuts.length) this._violation(`own push at version ${frame.version} cuts a surrogate pair at ${cuts[0]}`);
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

/**
 * Waits until every client is connected with nothing unconfirmed and all sit at the server's version.
 * With `urls` (several servers), every one of them that answers must serve that version and the
 * same text (`servers`: what each served last, or its error: a server may have been killed), and
 * `server` is the first that answers.
 */
export async function settle(clients, url, doc, timeoutMs, urls = null) {
  const deadline = performance.now() + timeoutMs;
  let last = null;
  let servers = null;
  while (performance.now() < deadline) {
    if (clients.every((c) => c.connected && c.pending() === 0 && c.inFlight === 0)) {
      try {
        let agree = true;
        if (urls) {
          servers = await Promise.all(urls.map((u) => fetchDoc(u, doc).catch((e) => ({ error: e.message }))));
          const answering = servers.filter((s) => !s.error);
          last = answering[0] ?? { error: 'no server answers' };
          agree = answering.length > 0 && answering.every((s) => s.version === last.version && s.doc === last.doc);
        } else {
          last = await fetchDoc(url, doc);
        }
        if (agree && clients.every((c) => c.version() === last.version)) {
          return { ok: true, server: last, ...(servers ? { servers } : {}) };
        }
      } catch (e) {
        last = { error: e.message };
      }
    }
    await sleep(50);
  }
  return { ok: false, server: last, ...(servers ? { servers } : {}) };
}

/** JSON lines appended to `file`, written out every 100 ms (and by flush()). */
export class EventLog {
  constructor(file) {
    this.file = file;
    this.buf = [];
    writeFileSync(file, '');
    this.timer = setInterval(() => this.flush(), 100);
  }

  add(entry) { this.buf.push(JSON.stringify(entry)); }

  flush() {
    if (!this.buf.length) return;
    appendFileSync(this.file, this.buf.join('\n') + '\n');
    this.buf = [];
  }

  close() {
    clearInterval(this.timer);
    this.flush();
  }
}

/** Resolves after `ms`, or earlier when a line arrives on stdin. */
function lingerFor(ms) {
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); process.stdin.off('data', done); process.stdin.pause(); resolve(); };
    const timer = setTimeout(done, ms);
    process.stdin.on('data', done);
    process.stdin.resume();
  });
}

/**
 * Several clients editing one document at random, each with random frame
 * delays and `reconnects` forced reconnects; then they stop and settle.
 */
export async function runFuzz(opts) {
  const { doc, clients: n = 5, duration = 4000, seed = 1, delay = 30, reconnects = 1,
    interval = [5, 40], settleMs = 20000, offline = 0, edits = 'mixed', urls = null, lingerMs = 0 } = opts;
  const url = opts.url ?? (urls ? urls[0] : undefined);
  const log = opts.eventsOut ? new EventLog(opts.eventsOut) : null;
  const master = makeRng(seed);
  const clients = [];
  for (let i = 0; i < n; i++) {
    clients.push(new CollabClient({
      url, doc, clientID: `c${seed}-${i}-${Math.floor(master() * 1e9).toString(36)}`,
      user: { name: `fuzz ${i}`, color: '#' + Math.floor(master() * 0xffffff).toString(16).padStart(6, '0') },
      rng: makeRng(Math.floor(master() * 2 ** 32)), inDelay: delay, outDelay: delay,
      ...(urls ? { urls, urlRng: makeRng(Math.floor(master() * 2 ** 32)) } : {}),
      ...(log ? { onLog: (entry) => log.add(entry) } : {}),
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
  const settled = await settle(clients, url, doc, settleMs, urls);
  if (lingerMs) await lingerFor(lingerMs);
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
    ...(settled.servers ? { servers: settled.servers } : {}),
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
  if (log) log.close();
  return result;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const cmd = args._[0];
  const urls = args.urls ? String(args.urls).split(',').filter(Boolean) : null;
  if (!(args.url || urls) || !args.doc) throw new Error('need --url ws://127.0.0.1:PORT (or --urls A,B,...) and --doc NAME');
  let result;
  if (cmd === 'fuzz') {
    result = await runFuzz({
      url: args.url, urls, doc: args.doc,
      eventsOut: args.events, lingerMs: Number(args.linger ?? 0),
      clients: Number(args.clients ?? 5), duration: Number(args.duration ?? 4000),
      seed: Number(args.seed ?? 1), delay: Number(args.delay ?? 30),
      reconnects: Number(args.reconnects ?? 1),
      interval: String(args.interval ?? '5,40').split(',').map(Number),
      settleMs: Number(args.settle ?? 20000), recordOut: args['record-out'],
      offline: Number(args.offline ?? 0), edits: args.edits ?? 'mixed',
    });
  } else if (cmd === 'show') {
    const c = new CollabClient({ url: args.url ?? urls[0], doc: args.doc, clientID: `show-${process.pid}`, autoReconnect: false });
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
