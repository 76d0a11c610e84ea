import { test } from 'node:test';
import assert from 'node:assert/strict';

// pending.js runs in pages; here a Map stands for the origin's localStorage (shared by every "tab"), and
// the browser has no Web Locks (plain http on another address than localhost: not a secure context).
// With `lag`, a write lands after that many ms, as one tab's writes reach another's a moment later.
const items = new Map();
let lag = 0;
globalThis.localStorage = {
  getItem: (k) => (items.has(k) ? items.get(k) : null),
  setItem: (k, v) => { if (lag) setTimeout(() => items.set(k, String(v)), lag); else items.set(k, String(v)); },
  removeItem: (k) => { items.delete(k); },
  key: (i) => [...items.keys()][i] ?? null,
  get length() { return items.size; },
};
Object.defineProperty(globalThis, 'navigator', { value: {}, configurable: true });
const { PendingStore } = await import('../src/pending.js');

test('without Web Locks, two pages taking one ID at the same moment: only one keeps it', async () => {
  items.clear();
  const a = new PendingStore('doc');
  const b = new PendingStore('doc');
  lag = 20;
  const [gotA, gotB] = await Promise.all([a.acquire('c1'), b.acquire('c1')]); // both see it free first
  lag = 0;
  await new Promise((resolve) => setTimeout(resolve, 50)); // the writes still on their way land
  assert.equal([gotA, gotB].filter(Boolean).length, 1, `both kept it: ${gotA}, ${gotB}`);
  const winner = gotA ? a : b;
  const loser = gotA ? b : a;
  assert.equal(await loser.acquire('c1'), false, 'held by a live page');
  winner.release();
  assert.equal(await loser.acquire('c1'), true, 'free once its page went');
});

test('a page\'s own mark does not make the ID look taken to itself, and release leaves another page\'s mark', async () => {
  items.clear();
  const a = new PendingStore('doc');
  const b = new PendingStore('doc');
  assert.equal(await a.acquire('c2'), true);
  assert.equal(a.aliveElsewhere('c2'), false);
  assert.equal(b.aliveElsewhere('c2'), true);
  b.held.add('c2'); // b believes it holds c2 too (it lost a race it did not see): its release leaves a's mark
  b.release();
  assert.equal(b.aliveElsewhere('c2'), true);
});

test('a record keeps the docId its version is of, and a closed tab\'s record gives it to the page that adopts it', async () => {
  items.clear();
  const a = new PendingStore('doc');
  assert.equal(await a.acquire('c3'), true);
  a.clientID = 'c3'; // as claim() makes it, without its heartbeat timer
  const changes = { changes: { toJSON: () => [1, [0, 'x']] } };
  a.save(1, [changes], () => 'a', 'k3', 5, '42');
  a.release();
  const b = new PendingStore('doc');
  const [rec] = await b.orphans();
  assert.deepEqual([rec.clientID, rec.version, rec.docId, rec.base], ['c3', 1, '42', 'a']);
  a.save(1, [changes], () => 'a'); // none known: no field
  assert.equal('docId' in JSON.parse(items.get('collab:pending:doc:c3')), false);
});
