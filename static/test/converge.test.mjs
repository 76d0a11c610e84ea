// Several sessions against one in-memory authority over a network this test
// controls (which frame moves next, dropped connections), then everyone must
// agree. The authority is the protocol's (docs/protocol.md): it rebases a
// push over the frames that connection was sent since the push's version,
// frame by frame (as the client's receiveUpdates saw them), with
// @codemirror/collab's rebaseUpdates; a resume goes out in the groups the
// updates were broadcast in (the welcome with the first, then updates frames).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, ChangeSet, Text, rebaseUpdates } from '../src/core.js';

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Authority {
  constructor() {
    this.doc = Text.empty;
    this.accepted = []; // {clientID, changes: ChangeSet}
    this.batches = []; // {from, updates}: each broadcast frame
    this.conns = new Map(); // id -> {out: [frame text], frames: [{from, updates}], welcomeVersion}
  }

  hello(id, m) {
    const version = this.accepted.length;
    const conn = { out: [], frames: [], welcomeVersion: m.version ?? version };
    this.conns.set(id, conn);
    const json = (u) => ({ clientID: u.clientID, changes: u.changes.toJSON() });
    if (m.version === null) {
      conn.out.push(JSON.stringify({ type: 'welcome', session: id, role: 'edit', version, peers: [], doc: this.doc.toString() }));
    } else {
      const groups = this.batches.filter((b) => b.from >= m.version);
      assert.equal(groups.reduce((n, b) => n + b.updates.length, 0), version - m.version, 'resumes start at a frame boundary');
      const first = groups.length ? groups[0] : { from: m.version, updates: [] };
      conn.frames.push(first);
      conn.out.push(JSON.stringify({ type: 'welcome', session: id, role: 'edit', version: first.from + first.updates.length, peers: [],
        from: m.version, updates: first.updates.map(json) }));
      for (const b of groups.slice(1)) {
        conn.frames.push(b);
        conn.out.push(JSON.stringify({ type: 'updates', from: b.from, updates: b.updates.map(json) }));
      }
    }
  }

  push(id, m) {
    const conn = this.conns.get(id);
    let updates = m.updates.map((u) => ({ clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes) }));
    assert.ok(m.version >= conn.welcomeVersion && m.version <= this.accepted.length);
    for (const f of conn.frames) if (f.from >= m.version) updates = rebaseUpdates(updates, f.updates);
    if (!updates.length) return;
    const from = this.accepted.length;
    for (const u of updates) {
      this.doc = u.changes.apply(this.doc);
      this.accepted.push(u);
    }
    this.batches.push({ from, updates });
    const text = JSON.stringify({ type: 'updates', from, updates: updates.map((u) => ({ clientID: u.clientID, changes: u.changes.toJSON() })) });
    for (const c of this.conns.values()) {
      c.frames.push({ from, updates });
      c.out.push(text);
    }
  }
}

function run(seed, { peers = 3, steps = 400, drops = true } = {}) {
  const r = rng(seed);
  const server = new Authority();
  const clients = [];
  let now = 0;
  for (let i = 0; i < peers; i++) {
    const id = `p${i}`;
    const s = new Session({ clientID: id, random: r });
    clients.push({ id, s, up: [], connected: false });
  }
  const problems = [];
  const apply = (c, step) => {
    for (const f of step.send) c.up.push(f);
    for (const e of step.events) if (e.type === 'problem') problems.push(`${c.id}: ${e.text}`);
    assert.equal(step.reconnect, null, `${c.id}: no reconnect asked for`);
  };
  const connect = (c) => {
    c.connected = true;
    c.up = [];
    apply(c, c.s.opened(now));
  };
  const drop = (c) => {
    c.connected = false;
    c.up = [];
    server.conns.delete(c.id);
    c.s.disconnected();
  };
  const toServer = (c) => {
    const m = c.up.shift();
    if (m.type === 'hello') server.hello(c.id, m);
    else if (m.type === 'push') server.push(c.id, m);
  };
  const toClient = (c) => apply(c, c.s.receive(server.conns.get(c.id).out.shift(), now));
  for (const c of clients) connect(c);

  for (let k = 0; k < steps; k++) {
    now += 10;
    const c = clients[Math.floor(r() * peers)];
    const x = r();
    if (x < 0.35 && c.s.state) {
      const doc = c.s.state.doc;
      const from = Math.floor(r() * (doc.length + 1));
      const to = r() < 0.4 ? Math.min(doc.length, from + Math.floor(r() * 4)) : from;
      apply(c, c.s.changed(c.s.state.update({ changes: { from, to, insert: r() < 0.8 ? 'abc'[k % 3] + k : '' } }).state, now));
    } else if (x < 0.65 && c.connected && c.up.length) {
      toServer(c);
    } else if (x < 0.95 && c.connected && server.conns.get(c.id)?.out.length) {
      toClient(c);
    } else if (drops && x >= 0.98) {
      drop(c);
      connect(c);
    } else {
      apply(c, c.s.tick(now));
    }
  }
  // Quiet: deliver everything until nothing moves.
  for (let moved = true; moved;) {
    moved = false;
    for (const c of clients) {
      now += 10;
      apply(c, c.s.tick(now));
      while (c.up.length) { toServer(c); moved = true; }
      const conn = server.conns.get(c.id);
      while (conn && conn.out.length) { toClient(c); moved = true; }
    }
  }
  return { server, clients, problems };
}

for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
  test(`peers converge with the authority through random interleavings and dropped connections (seed ${seed})`, () => {
    const { server, clients, problems } = run(seed);
    assert.deepEqual(problems, []);
    assert.ok(server.accepted.length > 30, `only ${server.accepted.length} updates`);
    for (const c of clients) {
      assert.equal(c.s.pending, 0, c.id);
      assert.equal(c.s.version, server.accepted.length, c.id);
      assert.equal(c.s.state.doc.toString(), server.doc.toString(), c.id);
      assert.equal(c.s.syncedDoc.toString(), server.doc.toString(), c.id);
    }
  });
}

test('peers converge over 200 more seeds', () => {
  for (let seed = 9; seed < 209; seed++) {
    const { server, clients, problems } = run(seed, { peers: 2 + (seed % 3), steps: 300 });
    assert.deepEqual(problems, [], `seed ${seed}`);
    for (const c of clients) assert.equal(c.s.state.doc.toString(), server.doc.toString(), `seed ${seed}, ${c.id}`);
  }
});
