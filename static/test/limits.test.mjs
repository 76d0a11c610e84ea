import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_LIMITS, FRAME_OVERHEAD, resolveLimits, utf8Length, fitPush, sizeGuard, push, EditorState, ChangeSet,
} from '../src/core.js';

const bytes = (s) => Buffer.byteLength(s, 'utf8');

test('limits: the welcome\'s, else the page\'s, else the defaults, field by field', () => {
  assert.deepEqual(resolveLimits(), { maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 });
  assert.deepEqual(DEFAULT_LIMITS, resolveLimits(null, undefined));
  const page = { maxFrame: 65536, maxRanges: 7, maxDoc: undefined };
  const welcome = { maxRanges: 3, maxUpdates: 0, extra: 5 };
  assert.deepEqual(resolveLimits(welcome, page), { maxFrame: 65536, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 3 });
  assert.deepEqual(resolveLimits({ maxFrame: 1.5, maxDoc: -1, maxUpdates: '9' }), DEFAULT_LIMITS);
});

test('utf8Length counts UTF-8 bytes as the wire carries them', () => {
  for (const s of ['', 'abc', 'é', '中文', '😀', 'a😀b\né𝄞', JSON.stringify(['x\u0001"\\'])]) {
    assert.equal(utf8Length(s), bytes(s), JSON.stringify(s));
  }
});

/** `n` one-character insertions into an empty text, as sendable updates. */
function inserts(n, text = 'x') {
  const out = [];
  for (let i = 0; i < n; i++) out.push({ changes: ChangeSet.of([{ from: i * text.length, insert: text }], i * text.length) });
  return out;
}

test('a push carries at most maxUpdates updates', () => {
  const limits = resolveLimits({ maxUpdates: 4 });
  const got = fitPush(inserts(10), 'A', 3, limits);
  assert.equal(got.length, 4);
  assert.deepEqual(got[1], { clientID: 'A', changes: [1, [0, 'x']] });
  assert.equal(fitPush(inserts(10), 'A', 3, limits, 2).length, 2); // a lower cap wins
  assert.equal(fitPush(inserts(3), 'A', 3, limits).length, 3);
});

test('a push stays under maxFrame bytes of UTF-8, as JSON.stringify writes the frame', () => {
  for (const text of ['x', 'é', '😀😀😀', 'ab\ncd']) {
    for (const maxFrame of [200, 333, 1000, 4096]) {
      const limits = resolveLimits({ maxFrame });
      const all = inserts(300, text);
      let version = 0;
      let rest = all;
      while (rest.length) {
        const got = fitPush(rest, 'client-with-a-long-id', version, limits);
        assert.ok(got.length >= 1);
        const frame = JSON.stringify(push(version, got));
        assert.ok(bytes(frame) < maxFrame, `${bytes(frame)} bytes >= ${maxFrame}`);
        if (got.length < rest.length) {
          // one more update would not have fitted
          const more = JSON.stringify(push(version, [...got, { clientID: 'client-with-a-long-id', changes: rest[got.length].changes.toJSON() }]));
          assert.ok(bytes(more) >= maxFrame);
        }
        rest = rest.slice(got.length);
        version += got.length;
      }
    }
  }
});

test('an update too big for any frame goes alone (the size guard keeps such edits from being made)', () => {
  const big = { changes: ChangeSet.of([{ from: 0, insert: 'y'.repeat(500) }], 0) };
  const got = fitPush([big, ...inserts(3)], 'A', 0, resolveLimits({ maxFrame: 100 }));
  assert.equal(got.length, 1);
});

test('the size guard refuses an edit no frame could carry, and growth past maxDoc, in words', () => {
  const limits = { ...DEFAULT_LIMITS, maxFrame: 2048, maxDoc: 3000 };
  const said = [];
  let state = EditorState.create({ extensions: sizeGuard(() => limits, (t) => said.push(t)) });
  state = state.update({ changes: { from: 0, insert: 'a'.repeat(2048 - FRAME_OVERHEAD - 20) } }).state;
  assert.equal(state.doc.length, 2048 - FRAME_OVERHEAD - 20);
  const before = state.doc.length;
  state = state.update({ changes: { from: 0, insert: '😀'.repeat(300) } }).state; // 1,200 bytes
  assert.equal(state.doc.length, before);
  assert.match(said[0], /it is 2 KB, and this server takes at most 1 KB in one edit/);
  limits.maxFrame = 1 << 20; // read at each edit: a welcome's limits apply at once
  state = state.update({ changes: { from: 0, insert: 'b'.repeat(2000) } }).state;
  assert.equal(state.doc.length, before);
  assert.match(said[1], /grow to 3,004 characters.*at most 3,000/);
  // Restored edits and shrinking edits pass.
  state = state.update({ changes: { from: 0, insert: 'b'.repeat(2000) }, userEvent: 'input.restore' }).state;
  assert.equal(state.doc.length, before + 2000);
  state = state.update({ changes: { from: 0, to: 1, insert: '' } }).state;
  assert.equal(state.doc.length, before + 1999);
  assert.equal(said.length, 2);
});
