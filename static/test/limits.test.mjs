import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  DEFAULT_LIMITS, FRAME_OVERHEAD, resolveLimits, utf8Length, fitPush, sizeGuard, push, EditorState, ChangeSet,
  textGuard, sendableText, sendableChanges, EditorSelection,
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

test('the text guard replaces U+0000 and lone surrogates in local edits by U+FFFD, lengths and selection kept', () => {
  let state = EditorState.create({ doc: 'ab', extensions: textGuard() });
  // A paste with a NUL and both kinds of lone surrogate; a whole pair stays.
  const tr = state.update({ changes: { from: 1, insert: 'x\u0000y\ud83dz\ude00\ud83d\ude00\nw' },
    selection: EditorSelection.cursor(12), userEvent: 'input.paste', scrollIntoView: true });
  assert.equal(tr.newDoc.toString(), 'ax\ufffdy\ufffdz\ufffd\ud83d\ude00\nwb');
  assert.equal(tr.newSelection.main.head, 12);
  assert.ok(tr.isUserEvent('input.paste'));
  assert.ok(tr.scrollIntoView);
  state = tr.state;
  // What goes on the wire is valid: no NUL, no lone surrogate once JSON-encoded.
  assert.doesNotMatch(JSON.stringify(tr.changes.toJSON()), /\\u0000|\\ud8|\\udc|\\ude/);
  // Several changes in one transaction, a deletion among them; clean edits pass as they were made.
  const multi = state.update({ changes: [{ from: 0, to: 1, insert: '\u0000' }, { from: 3, insert: 'ok' }] });
  assert.equal(multi.newDoc.toString(), '\ufffdx\ufffdoky\ufffdz\ufffd\ud83d\ude00\nwb');
  const clean = state.update({ changes: { from: 0, insert: 'fine 😀' } });
  assert.equal(clean.newDoc.toString(), 'fine 😀' + state.doc.toString());
  // An insertion that completes a pair with the text beside it is still half a pair on the wire.
  const half = EditorState.create({ doc: '\ude00', extensions: textGuard() }).update({ changes: { from: 0, insert: '\ud83d' } });
  assert.equal(half.newDoc.toString(), '\ufffd\ude00');
});

test('sendableText and sendableChanges clean a stored record, keeping every length', () => {
  assert.equal(sendableText('plain'), 'plain');
  assert.equal(sendableText('\u0000\udfff\ud800'), '\ufffd\ufffd\ufffd');
  const json = [2, [0, 'a\u0000', 'b'], 1, [3], [1, '\ud83d']];
  const cleaned = sendableChanges(json);
  assert.deepEqual(cleaned, [2, [0, 'a\ufffd', 'b'], 1, [3], [1, '\ufffd']]);
  const a = ChangeSet.fromJSON(json);
  const b = ChangeSet.fromJSON(cleaned);
  assert.equal(b.length, a.length);
  assert.equal(b.newLength, a.newLength);
});
