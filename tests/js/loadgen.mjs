// Load generator for bench/load.py: headless clients against a running collab server.
//
// Modes (each prints one JSON object on stdout and exits by itself):
//   typing     N full @codemirror/collab clients typing R edits/s each into one doc;
//              edit-to-peer latency percentiles. Without presence frames unless
//              --presence on (the editor sends its caret after edits and acks).
//              --docs D spreads them over D documents (`<doc>-0` ... `<doc>-(D-1)`,
//              client i on document i mod D); acceptedInWindow then sums them all.
//   throughput N lightweight clients, each pushing one single-edit update and the next
//              right after its ack; accepted updates/s and server CPU per 1,000 updates.
//   idle       C connections over D documents that say hello and then sit idle;
//              server RSS per connection. --check: then prove every one is still
//              served: a WebSocket ping to each (its pong counted), and one edit
//              pushed into each document that must reach every connection of it.
//              --compress: the clients offer permessage-deflate and compress every frame
//              they send, hello included (as Chromium does), to measure what that costs.
//   trace      one full client replays an editing trace (josephg/editing-traces format),
//              batching its unconfirmed edits into each push while one is in flight.
//
// Server CPU and memory come from /proc/<--server-pid>/{stat,status}, read here at
// the exact start and end of each measurement window.
//
// Several servers (bench/cluster.py: collab processes behind nginx, PostgreSQL,
// Redis), for typing and throughput:
//   --urls A,B,...   instead of --url: typing puts client i on URL i mod n (an even
//                    split; latencies are reported apart for sender and receiver on
//                    the same URL and on different ones), throughput puts each client
//                    on a random one (no affinity)
//   --docs D         throughput only: the clients spread over D documents
//                    (`<doc>-0` ... `<doc>-(D-1)`, client i on document i mod D);
//                    accepted updates are then counted from each client's own acks
//   --cpu NAME:PID[+],...  CPU (utime + stime, ms and % of one core) of each named
//                    process over the window, summed per NAME; `+` adds its children
//                    (live ones, and those reaped during the window through its
//                    cutime/cstime): for postgres, nginx and collab's workers
//   --metrics URL,...  the /metrics of each server read at both edges of the window;
//                    the differences of the collab_* counters (and of histograms'
//                    _sum and _count), summed over servers
//
// Keeping the client cheap: one Node process, no per-frame logging, the
// throughput/idle clients keep only (version, length) instead of an EditorState.
// The typing and trace clients are client.mjs's, around the editor's protocol
// core (static/src/core.js); the lightweight ones build and check their
// frames with that core's frame module.

import { performance } from 'node:perf_hooks';
import { readFileSync, readdirSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import WebSocket from 'ws';
import { CollabClient, makeRng, parseArgs, sleep, fetchDoc, snapPos } from './client.mjs';
import { SUBPROTOCOL, hello, push, parseServerFrame } from '../../static/src/core.js';

// ---- server process probes ---------------------------------------------------

function procCpuMs(pid, clkTck) {
  if (!pid) return null;
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state); utime is field 14, stime field 15.
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clkTck;
}

function procMemKB(pid) {
  if (!pid) return null;
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const get = (k) => Number((status.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) || [])[1]);
  return { rssKB: get('VmRSS'), hwmKB: get('VmHWM') };
}

/** /proc/<pid>/stat fields from field 3 (state) on, or null once the process is gone. */
function statFields(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** utime + stime (ms) of `pid`; with `tree`, plus its reaped children's and every live child's. */
function cpuTreeMs(pid, clk, tree) {
  const f = statFields(pid);
  if (!f) return 0;
  let ticks = Number(f[11]) + Number(f[12]);
  if (tree) {
    ticks += Number(f[13]) + Number(f[14]); // cutime, cstime: children already reaped
    for (const name of readdirSync('/proc')) {
      if (!/^\d+$/.test(name)) continue;
      const c = statFields(name);
      if (c && Number(c[1]) === pid) ticks += Number(c[11]) + Number(c[12]);
    }
  }
  return (ticks * 1000) / clk;
}

/** --cpu "collab:12+,collab:13+,redis:14" -> [{name, pid, tree}] */
function parseCpu(spec) {
  if (!spec) return [];
  return String(spec).split(',').filter(Boolean).map((item) => {
    const [name, p] = item.split(':');
    return { name, pid: Number(p.replace('+', '')), tree: p.endsWith('+') };
  });
}

function cpuSnapshot(groups, clk) {
  const out = {};
  for (const g of groups) out[g.name] = (out[g.name] ?? 0) + cpuTreeMs(g.pid, clk, g.tree);
  return out;
}

function cpuReport(before, after, windowMs) {
  const out = {};
  for (const k of Object.keys(before)) {
    const ms = after[k] - before[k];
    out[k] = { ms: Math.round(ms), pct: Math.round((ms / windowMs) * 1000) / 10 };
  }
  return out;
}

/** The collab_* counters (samples ending in _total, and histograms' _sum and _count) of every server in `urls`, summed. */
async function countersOf(urls) {
  if (!urls || !urls.length) return null;
  const sum = {};
  await Promise.all(urls.map(async (u) => {
    const text = await (await fetch(u)).text();
    for (const line of text.split('\n')) {
      const m = /^(collab_\w+_(?:total|sum|count))(?:\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
      if (m) sum[m[1]] = (sum[m[1]] ?? 0) + Number(m[2]);
    }
  }));
  return sum;
}

function counterDeltas(before, after, windowMs) {
  if (!before || !after) return null;
  const out = {};
  for (const k of Object.keys(after)) {
    const d = after[k] - (before[k] ?? 0);
    out[k.replace(/^collab_/, '').replace(/_total$/, '')] = { count: d, perS: Math.round((d / windowMs) * 1e4) / 10 };
  }
  return out;
}

const listOf = (x) => (x ? String(x).split(',').filter(Boolean) : null);

function percentiles(samples) {
  const s = Float64Array.from(samples).sort();
  const at = (p) => (s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : null);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : null;
  const r3 = (x) => (x === null ? null : Math.round(x * 1000) / 1000);
  return { count: s.length, p50: r3(at(0.5)), p95: r3(at(0.95)), p99: r3(at(0.99)), max: r3(s.length ? s[s.length - 1] : null), mean: r3(mean) };
}

const clientProblems = (clients) => clients.flatMap((c) => [
  ...c.violations, ...c.errors.map((e) => `${c.clientID}: error ${JSON.stringify(e)}`),
  ...c.closes.map((e) => `${c.clientID}: closed ${JSON.stringify(e)}`)]);

// ---- typing: latency ------------------------------------------------------------

async function typing(a) {
  const n = Number(a.clients ?? 10);
  const rate = Number(a.rate ?? 5);
  const durationMs = Number(a.duration ?? 20000);
  const warmupMs = Number(a.warmup ?? 2000);
  const doc = a.doc ?? 'typing';
  const ndocs = Number(a.docs ?? 1);
  const docOf = (i) => (ndocs > 1 ? `${doc}-${i % ndocs}` : doc);
  const rng = makeRng(Number(a.seed ?? 7));
  const urls = listOf(a.urls);
  const byId = new Map();
  const latencies = [];
  const same = [];   // with --urls: sender and receiver on one server
  const cross = [];  // and on different ones
  let measuring = false;
  const onUpdates = (peer, from, updates, now) => {
    for (const u of updates) {
      if (u.clientID === peer.clientID) continue;
      const sender = byId.get(u.clientID);
      if (!sender) continue;
      const k = (peer.seenFrom.get(u.clientID) ?? 0);
      peer.seenFrom.set(u.clientID, k + 1);
      const t = sender.editTimes[k];
      if (measuring && t !== undefined && t >= sender.measureFrom) {
        latencies.push(now - t);
        if (urls) (sender.url === peer.url ? same : cross).push(now - t);
      }
    }
  };
  const clients = [];
  for (let i = 0; i < n; i++) {
    const c = new CollabClient({ url: urls ? urls[i % urls.length] : a.url, doc: docOf(i), clientID: `typist-${i}`, rng: makeRng(Math.floor(rng() * 2 ** 32)),
      record: false, autoReconnect: false, onUpdates, presence: a.presence === 'on' });
    c.editTimes = [];
    c.seenFrom = new Map();
    c.measureFrom = Infinity;
    c.cursor = 0;
    byId.set(c.clientID, c);
    clients.push(c);
  }
  for (const c of clients) await c.start();
  // A peer counts a sender's k-th update from the moment it joined; all joined at once, before any edit.
  const period = 1000 / rate;
  const timers = [];
  const type = (c) => {
    const doc = c.state.doc;
    c.cursor = snapPos(doc, Math.min(c.cursor, doc.length));
    let spec;
    if (c.rng() < 0.1 && c.cursor > 0) {
      spec = { from: snapPos(doc, c.cursor - 1), to: c.cursor };
      c.cursor = spec.from;
    } else {
      const ch = c.rng() < 0.15 ? (c.rng() < 0.3 ? '\n' : ' ') : String.fromCharCode(97 + Math.floor(c.rng() * 26));
      spec = { from: c.cursor, insert: ch };
      c.cursor += 1;
    }
    c.editTimes.push(performance.now());
    c.edit(spec);
  };
  for (const c of clients) {
    // Each typist starts at its own spot, so edits spread over the document.
    c.cursor = Math.floor(c.rng() * 50);
    timers.push(setTimeout(() => timers.push(setInterval(() => type(c), period)), c.rng() * period));
  }
  const pid = Number(a['server-pid'] || 0);
  const clk = Number(a['clk-tck'] || 100);
  const groups = parseCpu(a.cpu);
  const metricUrls = listOf(a.metrics);
  await sleep(warmupMs);
  const m0 = await countersOf(metricUrls);
  measuring = true;
  const t0 = performance.now();
  for (const c of clients) c.measureFrom = t0;
  const v0 = clients[0].version();
  // With --docs, one client per document tells that document's version.
  const heads = clients.slice(0, Math.min(ndocs, n));
  const hv0 = heads.map((c) => c.version());
  const cpu0 = procCpuMs(pid, clk);
  const g0 = cpuSnapshot(groups, clk);
  const ucpu0 = process.cpuUsage();
  await sleep(durationMs);
  const t1 = performance.now();
  const cpu1 = procCpuMs(pid, clk);
  const g1 = cpuSnapshot(groups, clk);
  const ucpu1 = process.cpuUsage(ucpu0);
  const m1 = await countersOf(metricUrls);
  const v1 = clients[0].version();
  const hv1 = heads.map((c) => c.version());
  for (const t of timers) { clearTimeout(t); clearInterval(t); }
  // Let the last edits arrive, then make sure everyone agrees.
  const deadline = performance.now() + 10000;
  let server = null;
  while (performance.now() < deadline) {
    await sleep(50);
    if (clients.some((c) => c.pending() || c.inFlight)) continue;
    server = await fetchDoc(a.url, docOf(0));
    if (clients.every((c, i) => i % ndocs || c.version() === server.version)) break;
  }
  const windowS = (t1 - t0) / 1000;
  const texts = new Set(clients.filter((_, i) => i % ndocs === 0).map((c) => c.text()));
  const result = {
    mode: 'typing', clients: n, ratePerClient: rate, windowS,
    edits: clients.reduce((s, c) => s + c.editTimes.length, 0),
    acceptedInWindow: v1 - v0, acceptedPerS: (v1 - v0) / windowS,
    latencyMs: percentiles(latencies),
    serverCpuMs: cpu1 !== null ? cpu1 - cpu0 : null,
    serverCpuPct: cpu1 !== null ? ((cpu1 - cpu0) / (t1 - t0)) * 100 : null,
    clientCpuPct: ((ucpu1.user + ucpu1.system) / 1000 / (t1 - t0)) * 100,
    serverMem: procMemKB(pid),
    converged: texts.size === 1 && server !== null && server.doc === clients[0].text(),
    finalVersion: server && server.version,
    problems: clientProblems(clients).slice(0, 20),
  };
  if (ndocs > 1) {
    // Every document: its clients agree with the server (the loop above waited for document 0).
    result.docs = ndocs;
    result.acceptedInWindow = hv1.reduce((x, v, k) => x + v - hv0[k], 0);
    result.acceptedPerS = result.acceptedInWindow / windowS;
    for (let k = 0; k < ndocs && k < n; k++) {
      const cs = clients.filter((_, i) => i % ndocs === k);
      let got = null;
      for (let tries = 0; tries < 100; tries++) {
        got = await fetchDoc(a.url, docOf(k));
        if (!cs.some((c) => c.pending() || c.inFlight) && cs.every((c) => c.version() === got.version)) break;
        await sleep(50);
      }
      if (!cs.every((c) => c.version() === got.version && c.text() === got.doc)) result.converged = false;
    }
  }
  if (urls) {
    Object.assign(result, { urls, latencyMsSameServer: percentiles(same), latencyMsCrossServer: percentiles(cross) });
    // Every server must serve what the clients converged on.
    const served = await Promise.all(urls.map((u) => fetchDoc(u, doc).catch((e) => ({ error: e.message }))));
    result.converged = result.converged && served.every((x) => x.version === server.version && x.doc === server.doc);
  }
  if (groups.length) result.cpu = cpuReport(g0, g1, t1 - t0);
  if (metricUrls) result.counters = counterDeltas(m0, m1, t1 - t0);
  for (const c of clients) c.close();
  return result;
}

// ---- lightweight client for throughput and idle ----------------------------------

/** Length of the document an update's ChangeSetJSON produces (cheaper than parsing it into a ChangeSet). */
function newLengthOf(changes) {
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

/** Speaks collab.v1 keeping only the synced version and the document length. */
class LiteClient {
  constructor(url, doc, clientID, rng) {
    this.url = url;
    this.doc = doc;
    this.clientID = clientID;
    this.rng = rng;
    this.version = null;
    this.length = 0;
    this.inFlight = false;
    this.pushing = false;
    this.onAck = null;
    this.onFrame = null;
    this.problems = [];
    this.compress = false; // offer permessage-deflate and compress every frame sent (threshold 0, as Chromium)
  }

  start() {
    return new Promise((resolve, reject) => {
      const perMessageDeflate = this.compress ? { threshold: 0 } : false;
      const ws = new WebSocket(`${this.url}/ws/${this.doc}`, SUBPROTOCOL, { perMessageDeflate, handshakeTimeout: 20000 });
      this.ws = ws;
      ws.on('open', () => ws.send(JSON.stringify(hello(this.clientID, null, { name: this.clientID, color: '#888888' }))));
      ws.on('error', (e) => { this.problems.push(`socket error ${e.message}`); reject(e); });
      ws.on('close', (code) => { if (!this.closing) this.problems.push(`closed ${code}`); });
      ws.on('message', (data) => {
        let m;
        try {
          m = parseServerFrame(data.toString());
        } catch (e) {
          this.problems.push(e.message);
          return;
        }
        if (m.type === 'welcome') {
          this.version = m.version;
          this.length = m.doc.length;
          resolve(m);
        } else if (m.type === 'updates') {
          if (m.from !== this.version) this.problems.push(`updates from ${m.from} at ${this.version}`);
          let own = 0;
          for (const u of m.updates) {
            this.length = newLengthOf(u.changes);
            if (u.clientID === this.clientID) own++;
          }
          this.version = m.from + m.updates.length;
          if (this.onFrame) this.onFrame(this, m);
          if (own && this.inFlight) {
            this.inFlight = false;
            if (this.onAck) this.onAck(this);
          }
        } else if (m.type === 'error') {
          this.problems.push(`error ${m.code}: ${m.message}`);
          if (this.inFlight) setTimeout(() => { this.inFlight = false; if (this.onAck) this.onAck(this, true); }, 50);
        }
      });
    });
  }

  /** One update with one single-character insertion at a random position of the synced document. */
  pushOne() {
    const p = Math.floor(this.rng() * (this.length + 1));
    const changes = [];
    if (p) changes.push(p);
    changes.push([0, 'x']);
    if (this.length - p) changes.push(this.length - p);
    this.inFlight = true;
    this.ws.send(JSON.stringify(push(this.version, [{ clientID: this.clientID, changes }])));
  }

  close() {
    this.closing = true;
    this.ws.close(1000);
  }
}

// ---- throughput ------------------------------------------------------------------

async function throughput(a) {
  const n = Number(a.clients ?? 4);
  const durationMs = Number(a.duration ?? 10000);
  const warmupMs = Number(a.warmup ?? 2000);
  const doc = a.doc ?? 'throughput';
  const ndocs = Number(a.docs ?? 1);
  const docOf = (i) => (ndocs > 1 ? `${doc}-${i % ndocs}` : doc);
  const urls = listOf(a.urls);
  const pid = Number(a['server-pid'] || 0);
  const clk = Number(a['clk-tck'] || 100);
  const groups = parseCpu(a.cpu);
  const metricUrls = listOf(a.metrics);
  const rng = makeRng(Number(a.seed ?? 11));
  const clients = [];
  for (let i = 0; i < n; i++) {
    const url = urls ? urls[Math.floor(rng() * urls.length)] : a.url;
    clients.push(new LiteClient(url, docOf(i), `pusher-${i}`, makeRng(Math.floor(rng() * 2 ** 32))));
  }
  // Connect a few at a time (hundreds of handshakes at once only measure the accept queue).
  for (let i = 0; i < clients.length; i += 20) await Promise.all(clients.slice(i, i + 20).map((c) => c.start()));
  let running = true;
  let measuring = false;
  const pushes = new Array(n).fill(0);
  const acked = new Array(n).fill(0);  // own acknowledgements inside the window
  // Acknowledgement latency (push sent -> own update back): client 0's, and every client's.
  const ackLat = [];
  const ackLatAll = [];
  clients.forEach((c, i) => {
    c.onAck = (_, refused = false) => {
      if (measuring && !refused) {
        acked[i]++;
        const lat = performance.now() - c.sentAt;
        ackLatAll.push(lat);
        if (i === 0) ackLat.push(lat);
      }
      if (running) { pushes[i]++; c.sentAt = performance.now(); c.pushOne(); }
    };
  });
  for (const c of clients) { c.sentAt = performance.now(); c.pushOne(); }
  await sleep(warmupMs);
  const m0 = await countersOf(metricUrls);
  measuring = true;
  const t0 = performance.now();
  const c0 = clients[0];
  const v0 = c0.version;
  const cpu0 = procCpuMs(pid, clk);
  const g0 = cpuSnapshot(groups, clk);
  const ucpu0 = process.cpuUsage();
  await sleep(durationMs);
  const t1 = performance.now();
  const v1 = c0.version;
  const cpu1 = procCpuMs(pid, clk);
  const g1 = cpuSnapshot(groups, clk);
  const ucpu1 = process.cpuUsage(ucpu0);
  measuring = false;
  running = false;
  const m1 = await countersOf(metricUrls);
  // Let the pushes in flight come back (bounded), then compare every document with its clients.
  const quiet = performance.now() + 10000;
  while (clients.some((c) => c.inFlight) && performance.now() < quiet) await sleep(20);
  await sleep(300);
  const byDoc = new Map();
  for (const c of clients) (byDoc.get(c.doc) ?? byDoc.set(c.doc, []).get(c.doc)).push(c);
  // Every update inserts one character: the length is the version. With several servers a
  // document's news may take a moment to reach the one answering, so disagreement is retried
  // for up to 5 s before it counts.
  let server = null;
  let names = [...byDoc.keys()];
  let disagree = [];
  const agreeBy = performance.now() + 5000;
  for (;;) {
    disagree = [];
    for (let i = 0; i < names.length; i += 20) {
      await Promise.all(names.slice(i, i + 20).map(async (name) => {
        const cs = byDoc.get(name);
        const got = await fetchDoc(cs[0].url, name);
        if (name === c0.doc) server = got;
        if (!(cs.every((c) => c.length === got.doc.length && c.version === got.version) && got.doc.length === got.version)) {
          disagree.push({ doc: name, server: [got.version, got.doc.length], clients: cs.map((c) => [c.version, c.length]) });
        }
      }));
    }
    if (!disagree.length || performance.now() > agreeBy) break;
    names = disagree.map((d) => d.doc);
    await sleep(250);
  }
  const lengthsAgree = !disagree.length;
  const disagreement = disagree.slice(0, 5).map((d) => `${d.doc}: served (version, length) ${d.server}, clients ${JSON.stringify(d.clients)}`);
  const accepted = ndocs > 1 ? acked.reduce((x, y) => x + y, 0) : v1 - v0;
  const windowS = (t1 - t0) / 1000;
  const result = {
    mode: 'throughput', clients: n, windowS,
    acceptedInWindow: accepted, acceptedPerS: accepted / windowS,
    serverCpuMs: cpu1 !== null ? cpu1 - cpu0 : null,
    serverCpuMsPer1000: cpu1 !== null ? ((cpu1 - cpu0) / accepted) * 1000 : null,
    serverCpuPct: cpu1 !== null ? ((cpu1 - cpu0) / (t1 - t0)) * 100 : null,
    clientCpuPct: ((ucpu1.user + ucpu1.system) / 1000 / (t1 - t0)) * 100,
    ackLatencyMs: percentiles(ackLat),
    serverMem: procMemKB(pid),
    finalVersion: server.version,
    lengthsAgree,
    problems: [...disagreement, ...clients.flatMap((c) => c.problems)].slice(0, 20),
  };
  if (ndocs > 1 || urls) {
    result.docs = ndocs;
    result.ackLatencyAllMs = percentiles(ackLatAll);
    result.finalVersions = names.length;
  }
  if (urls) result.urls = urls;
  if (groups.length) result.cpu = cpuReport(g0, g1, t1 - t0);
  if (metricUrls) result.counters = counterDeltas(m0, m1, t1 - t0);
  for (const c of clients) c.close();
  return result;
}

// ---- idle connections: memory per connection ----------------------------------

async function openMany(specs, concurrency) {
  const out = [];
  let next = 0;
  const problems = [];
  async function worker() {
    while (next < specs.length) {
      const [doc, id] = specs[next++];
      const c = new LiteClient(null, doc, id, null);
      c.url = specs.url;
      c.compress = Boolean(specs.compress);
      try {
        await c.start();
        out.push(c);
      } catch (e) {
        problems.push(`${id}: ${e.message}`);
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { clients: out, problems };
}

/**
 * Whether idle connections are all still served: a ping to every one (each pong
 * counted), then one edit pushed into each document by its first connection,
 * which must reach every connection of that document (its version moves on by one).
 */
async function stillServed(all, timeoutMs) {
  const t0 = performance.now();
  let pongs = 0;
  await Promise.all(all.map((c) => new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    c.ws.once('pong', () => { pongs++; clearTimeout(timer); resolve(); });
    c.ws.ping();
  })));
  const pingMs = performance.now() - t0;
  const byDoc = new Map();
  for (const c of all) (byDoc.get(c.doc) ?? byDoc.set(c.doc, []).get(c.doc)).push(c);
  const want = new Map(all.map((c) => [c, c.version + 1]));
  const t1 = performance.now();
  const editors = [...byDoc.values()].map((cs) => cs[0]);
  // A few documents at a time, as people would: 1,000 first edits at once only measure a queue.
  for (let i = 0; i < editors.length; i += 50) {
    for (const c of editors.slice(i, i + 50)) { c.rng ??= makeRng(i + 1); c.pushOne(); }
    while (editors.slice(i, i + 50).some((c) => c.version < want.get(c)) && performance.now() - t1 < timeoutMs) await sleep(5);
  }
  while (all.some((c) => c.version < want.get(c)) && performance.now() - t1 < timeoutMs) await sleep(20);
  const reached = all.filter((c) => c.version === want.get(c)).length;
  return { connections: all.length, pongs, pingMs: Math.round(pingMs), documents: byDoc.size, editReached: reached,
    editMs: Math.round(performance.now() - t1), all: pongs === all.length && reached === all.length };
}

async function idle(a) {
  const conns = Number(a.conns ?? 2000);
  const docs = Number(a.docs ?? 200);
  const settleMs = Number(a.settle ?? 2000);
  const pid = Number(a['server-pid'] || 0);
  const mem0 = procMemKB(pid);
  const first = [];
  const rest = [];
  for (let i = 0; i < conns; i++) (i < docs ? first : rest).push([`idle-${i % docs}`, `idler-${i}`]);
  first.url = a.url;
  rest.url = a.url;
  first.compress = rest.compress = Boolean(a.compress);
  const t0 = performance.now();
  const r1 = await openMany(first, 50);
  await sleep(settleMs);
  const mem1 = procMemKB(pid);
  const r2 = await openMany(rest, 50);
  const openMs = performance.now() - t0;
  await sleep(settleMs);
  const mem2 = procMemKB(pid);
  const all = [...r1.clients, ...r2.clients];
  const served = a.check ? await stillServed(all, Number(a['check-timeout'] ?? 60000)) : null;
  const problems = [...r1.problems, ...r2.problems, ...all.flatMap((c) => c.problems)];
  const result = {
    mode: 'idle', connections: all.length, expected: conns, docs, openMs: Math.round(openMs),
    compressed: all.filter((c) => c.ws.extensions && String(c.ws.extensions).includes('permessage-deflate')).length,
    memKB: { baseline: mem0, oneConnPerDoc: mem1, all: mem2 },
    perConnKB: mem2 && (mem2.rssKB - mem0.rssKB) / all.length,
    marginalPerConnKB: mem2 && (mem2.rssKB - mem1.rssKB) / r2.clients.length,
    problems: problems.slice(0, 20), problemCount: problems.length,
  };
  if (served) result.served = served;
  for (const c of all) c.close();
  await sleep(200);
  return result;
}

// ---- trace replay -------------------------------------------------------------------

async function trace(a) {
  const file = a.file;
  const doc = a.doc ?? 'trace';
  const chunk = Number(a.chunk ?? 100);
  const maxPush = Number(a['max-push'] ?? 250);
  const pid = Number(a['server-pid'] || 0);
  const clk = Number(a['clk-tck'] || 100);
  const data = JSON.parse(gunzipSync(readFileSync(file)).toString('utf8'));
  const patches = [];
  for (const t of data.txns) for (const p of t.patches) patches.push(p);
  const astral = /[\u{10000}-\u{10FFFF}]/u;
  let anyAstral = astral.test(data.startContent) || patches.some((p) => astral.test(p[2]));
  // Backpressure: a person never outruns the server, a replay loop does. Stop
  // applying edits while this many are unconfirmed (CodeMirror's unconfirmed
  // list is copied on every local edit, so it must stay short).
  const maxPending = Number(a['max-pending'] ?? 2 * maxPush);
  let wake = null;
  const c = new CollabClient({ url: a.url, doc, clientID: 'trace-replayer', record: false, autoReconnect: false, presence: false,
    maxPushUpdates: maxPush, onUpdates: () => { if (wake) { const w = wake; wake = null; w(); } } });
  await c.start();
  if (data.startContent) c.edit({ from: 0, insert: data.startContent });
  // Code point position -> UTF-16 offset. Only needed when astral characters occur.
  const toUtf16 = (doc, cp) => {
    if (!anyAstral) return cp;
    let units = 0;
    let points = 0;
    for (const ch of doc.toString()) {
      if (points === cp) break;
      units += ch.length;
      points++;
    }
    return units;
  };
  const cpu0 = procCpuMs(pid, clk);
  const ucpu0 = process.cpuUsage();
  const t0 = performance.now();
  let applied = 0;
  while (applied < patches.length) {
    while (c.pending() >= maxPending) await new Promise((r) => { wake = r; });
    const end = Math.min(patches.length, applied + chunk);
    for (; applied < end; applied++) {
      const [pos, del, ins] = patches[applied];
      const d = c.state.doc;
      const from = toUtf16(d, pos);
      const to = del ? (anyAstral ? from + [...d.sliceString(from, from + 2 * del)].slice(0, del).join('').length : from + del) : from;
      c.edit({ from, to, insert: ins });
    }
    await new Promise((r) => setImmediate(r));
  }
  const appliedMs = performance.now() - t0;
  while (c.pending() || c.inFlight) {
    await sleep(1);
    if (performance.now() - t0 > 600000) throw new Error('trace replay did not finish in 10 minutes');
  }
  const t1 = performance.now();
  const cpu1 = procCpuMs(pid, clk);
  const ucpu1 = process.cpuUsage(ucpu0);
  const server = await fetchDoc(a.url, doc);
  const result = {
    mode: 'trace', file, edits: patches.length, totalMs: t1 - t0, clientApplyMs: appliedMs,
    pushes: c.stats.pushes, updatesPerPush: c.stats.pushedUpdates / c.stats.pushes, maxPush, maxPending, chunk,
    acceptedPerS: server.version / ((t1 - t0) / 1000),
    finalVersion: server.version,
    clientTextMatches: c.text() === data.endContent,
    serverTextMatches: server.doc === data.endContent,
    serverCpuMs: cpu1 !== null ? cpu1 - cpu0 : null,
    clientCpuMs: (ucpu1.user + ucpu1.system) / 1000,
    serverMem: procMemKB(pid),
    problems: clientProblems([c]).slice(0, 20),
  };
  c.close();
  return result;
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const mode = a._[0];
  if (!a.url && a.urls) a.url = listOf(a.urls)[0];
  if (!a.url) throw new Error('need --url ws://127.0.0.1:PORT (or --urls A,B,...)');
  const run = { typing, throughput, idle, trace }[mode];
  if (!run) throw new Error(`unknown mode ${mode}: typing | throughput | idle | trace`);
  const result = await run(a);
  // Exit only once stdout is flushed: a pipe is written asynchronously.
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(2);
});
