// Pushers for bench/load.py `docs`: D documents x C lightweight clients, each pushing one
// single-character insertion and the next one right after its own update comes back
// (acknowledged = durable), as fast as the server acknowledges.
//
// Prints one JSON object: accepted updates in the measurement window (counted from each
// client's own acknowledgements), CPU of the server process and of a PostgreSQL server
// (the postmaster, its live children and its reaped children), read from /proc at the
// exact edges of the window, and the server's /metrics text at both edges (for the commit
// latency histogram).
//
//   node bench/pushers.mjs --url ws://127.0.0.1:PORT --docs 200 --per-doc 2
//        [--duration MS] [--warmup MS] [--server-pid PID] [--pg-pid POSTMASTER] [--clk-tck 100]
//
// The clients speak collab.v1 with raw frames and keep only (version, length); the `ws`
// package comes from tests/js/node_modules.

import { createRequire } from 'node:module';
import { readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
const WebSocket = require('ws');

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) out[argv[i].slice(2)] = argv[i + 1]?.startsWith('--') ? true : argv[++i];
    else out._.push(argv[i]);
  }
  return out;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function makeRng(seed) {  // mulberry32
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- CPU from /proc --------------------------------------------------------------

function statFields(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');  // fields[0] is field 3 (state)
  } catch {
    return null;
  }
}

function cpuMs(pid, clk, withReaped = false) {
  const f = statFields(pid);
  if (!f) return 0;
  // utime 14, stime 15, cutime 16, cstime 17 (1-based) -> indexes 11..14 here
  let ticks = Number(f[11]) + Number(f[12]);
  if (withReaped) ticks += Number(f[13]) + Number(f[14]);
  return (ticks * 1000) / clk;
}

function pgCpuMs(postmaster, clk) {
  // The postmaster with its reaped children (exited backends), plus every live child.
  if (!postmaster) return null;
  let total = cpuMs(postmaster, clk, true);
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(name);
    if (f && Number(f[1]) === postmaster) total += cpuMs(name, clk);
  }
  return total;
}

// ---- clients -----------------------------------------------------------------------

function lengthAfter(changes) {
  let len = 0;
  for (const part of changes) {
    if (typeof part === 'number') len += part;
    else for (let i = 1; i < part.length; i++) len += part[i].length + (i > 1 ? 1 : 0);
  }
  return len;
}

class Pusher {
  constructor(url, doc, clientID, rng) {
    Object.assign(this, { url, doc, clientID, rng });
    this.version = 0;
    this.length = 0;
    this.acked = 0;
    this.problems = [];
    this.running = false;
  }

  start() {
    return new Promise((resolve, reject) => {
      const ws = (this.ws = new WebSocket(`${this.url}/ws/${this.doc}`, 'collab.v1', { perMessageDeflate: false }));
      ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', clientID: this.clientID, version: null,
        user: { name: this.clientID, color: '#336699' } })));
      ws.on('error', reject);
      ws.on('close', (code) => { if (this.running) this.problems.push(`closed ${code}`); });
      ws.on('message', (data) => {
        const m = JSON.parse(data);
        if (m.type === 'welcome') {
          this.version = m.version;
          this.length = m.doc !== undefined ? m.doc.length : this.length;
          resolve();
        } else if (m.type === 'updates') {
          if (m.from !== this.version) this.problems.push(`updates from ${m.from} at ${this.version}`);
          let mine = false;
          for (const u of m.updates) {
            this.length = lengthAfter(u.changes);
            this.version++;
            if (u.clientID === this.clientID) mine = true;
          }
          if (mine) {
            this.acked++;
            if (this.running) this.push();
          }
        } else if (m.type === 'error') {
          this.problems.push(`${m.code}: ${m.message}`);
          if (this.running) setTimeout(() => this.push(), 50);
        }
      });
    });
  }

  push() {
    const pos = Math.floor(this.rng() * (this.length + 1));
    const changes = [];
    if (pos > 0) changes.push(pos);
    changes.push([0, 'x']);
    if (this.length - pos > 0) changes.push(this.length - pos);
    this.ws.send(JSON.stringify({ type: 'push', version: this.version,
      updates: [{ clientID: this.clientID, changes }] }));
  }

  close() {
    this.running = false;
    this.ws.close(1000);
  }
}

async function metrics(wsUrl) {
  const r = await fetch(`${wsUrl.replace(/^ws/, 'http')}/metrics`);
  return r.text();
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  const docs = Number(a.docs ?? 200), perDoc = Number(a['per-doc'] ?? 2);
  const durationMs = Number(a.duration ?? 10000), warmupMs = Number(a.warmup ?? 2000);
  const serverPid = Number(a['server-pid'] || 0), pgPid = Number(a['pg-pid'] || 0);
  const clk = Number(a['clk-tck'] || 100);
  const rng = makeRng(Number(a.seed ?? 7));
  const clients = [];
  for (let d = 0; d < docs; d++) {
    for (let c = 0; c < perDoc; c++) {
      clients.push(new Pusher(a.url, `bench-${d}`, `p${d}-${c}`, makeRng(Math.floor(rng() * 2 ** 32))));
    }
  }
  for (let k = 0; k < clients.length; k += 50) await Promise.all(clients.slice(k, k + 50).map((c) => c.start()));
  for (const c of clients) { c.running = true; c.push(); }
  await sleep(warmupMs);
  const m0 = await metrics(a.url);
  const acked0 = clients.reduce((s, c) => s + c.acked, 0);
  const t0 = performance.now(), s0 = cpuMs(serverPid, clk), p0 = pgCpuMs(pgPid, clk);
  const u0 = process.cpuUsage();
  await sleep(durationMs);
  const t1 = performance.now(), s1 = cpuMs(serverPid, clk), p1 = pgCpuMs(pgPid, clk);
  const u1 = process.cpuUsage(u0);
  const acked1 = clients.reduce((s, c) => s + c.acked, 0);
  const m1 = await metrics(a.url);
  for (const c of clients) c.running = false;
  await sleep(300);
  const windowMs = t1 - t0, accepted = acked1 - acked0;
  const result = {
    mode: 'docs', docs, perDoc, windowS: windowMs / 1000, accepted, acceptedPerS: accepted / (windowMs / 1000),
    serverCpuMs: serverPid ? s1 - s0 : null, pgCpuMs: pgPid ? p1 - p0 : null,
    clientCpuMs: (u1.user + u1.system) / 1000,
    metricsBefore: m0, metricsAfter: m1,
    problems: clients.flatMap((c) => c.problems).slice(0, 20),
  };
  for (const c of clients) c.close();
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(2);
});
