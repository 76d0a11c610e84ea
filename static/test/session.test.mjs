import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session, EditorSelection, EditorState, ChangeSet } from '../src/core.js';
import {
  welcome, resumeWelcome, updates, upd, error, presenceFrame, welcomed, edit, sent, events,
} from './helpers.mjs';

test('hello asks for the whole text first, then resumes from the synced version', () => {
  const s = new Session({ clientID: 'A', user: { name: 'Ann', color: '#123456' }, epoch: 1000 });
  assert.deepEqual(s.opened(0).send, [{ type: 'hello', clientID: 'A', version: null, user: { name: 'Ann', color: '#123456' }, opened: 1000 }]);
  const step = s.receive(welcome({ doc: 'hello', version: 7 }), 0);
  assert.equal(step.replaced, true);
  assert.equal(s.state.doc.toString(), 'hello');
  assert.equal(s.version, 7);
  assert.ok(s.welcomed);
  assert.deepEqual(events(step, 'role'), [{ type: 'role', role: 'edit' }]);
  s.closed(1006, '', 10);
  assert.equal(s.welcomed, false);
  assert.equal(s.opened(20).send[0].version, 7);
});

test('the checkpoints option asks for named-version news in every hello, and the news is an event', () => {
  const s = new Session({ clientID: 'A', user: { name: 'Ann', color: '#123456' }, checkpoints: true });
  assert.equal(s.opened(0).send[0].checkpoints, true);
  s.receive(welcome({ doc: 'hello', version: 7 }), 0);
  const step = s.receive(JSON.stringify({ type: 'checkpoints', version: 3 }), 5);
  assert.deepEqual(events(step, 'checkpoints'), [{ type: 'checkpoints', version: 3 }]);
  assert.deepEqual(events(step, 'problem'), []);
  s.closed(1006, '', 10);
  assert.equal(s.opened(20).send[0].checkpoints, true);
  const stock = new Session({ clientID: 'B', user: { name: 'Bo', color: '#123456' } });
  assert.equal('checkpoints' in stock.opened(0).send[0], false);
});

test('welcome -> push; one push in flight; the ack lets the rest go, rebased on the new version', () => {
  const [s] = welcomed({ doc: 'ab', version: 3 });
  const first = edit(s, { from: 2, insert: 'c' });
  assert.deepEqual(sent(first, 'push'), [{ type: 'push', version: 3, updates: [upd('A', [2, [0, 'c']])] }]);
  assert.equal(s.inflight, 1);
  assert.deepEqual(sent(edit(s, { from: 0, insert: '>' }), 'push'), [], 'nothing while a push is in flight');
  assert.deepEqual(sent(edit(s, { from: 4, insert: '!' }), 'push'), []);
  assert.equal(s.pending, 3);
  const ack = s.receive(updates(3, [upd('A', [2, [0, 'c']])]), 1100);
  assert.ok(ack.transaction, 'the frame is one transaction to dispatch');
  assert.equal(ack.transaction.state, s.state);
  assert.equal(s.version, 4);
  assert.deepEqual(sent(ack, 'push'), [{ type: 'push', version: 4, updates: [upd('A', [[0, '>'], 3]), upd('A', [4, [0, '!']])] }]);
  assert.equal(s.inflight, 2);
  assert.deepEqual(events(ack, 'updates')[0].own, 1);
  s.receive(updates(4, [upd('A', [[0, '>'], 3]), upd('A', [4, [0, '!']])]), 1200);
  assert.equal(s.inflight, 0);
  assert.equal(s.pending, 0);
  assert.equal(s.syncedDoc.toString(), '>abc!');
  assert.deepEqual(s.stats.ownAcked, 3);
});

test('updates of one frame are received in one receiveUpdates call and rebase what is unconfirmed', () => {
  const [s] = welcomed({ doc: 'abc', version: 0 });
  edit(s, { from: 3, insert: 'X' }); // in flight
  edit(s, { from: 0, insert: 'Y' }); // waiting
  // Two peers' updates in one frame: our updates move over both.
  const step = s.receive(updates(0, [upd('B', [1, [0, '1'], 2]), upd('C', [[1], 3])]), 1100);
  assert.equal(s.syncedDoc.toString(), '1bc');
  assert.equal(s.state.doc.toString(), 'Y1bcX');
  assert.equal(step.transaction.changes.toJSON().length > 0, true);
  assert.deepEqual(s.unconfirmed.map((u) => u.changes.toJSON()), [[3, [0, 'X']], [[0, 'Y'], 4]]);
  assert.deepEqual(sent(step, 'push'), [], 'the first push is still in flight');
  // The server rebased our push the same way and acknowledges it.
  const ack = s.receive(updates(2, [upd('A', [3, [0, 'X']])]), 1200);
  assert.deepEqual(sent(ack, 'push')[0], { type: 'push', version: 3, updates: [upd('A', [[0, 'Y'], 4])] });
});

test('a reconnect drops the push in flight; the resume skips what the server already has and pushes the rest', () => {
  const [s] = welcomed({ doc: '', version: 0 });
  edit(s, { from: 0, insert: 'a' });
  edit(s, { from: 1, insert: 'b' });
  const closed = s.closed(1006, '', 2000);
  assert.ok(closed.reconnect && closed.reconnect.delay > 0);
  assert.equal(s.inflight, 0);
  assert.deepEqual(s.opened(2100).send[0].version, 0);
  // The first push got in before the connection dropped; someone else typed too.
  const step = s.receive(resumeWelcome(0, [upd('A', [[0, 'a']]), upd('B', [1, [0, 'Z']])]), 2200);
  assert.equal(s.version, 2);
  // Ours goes after the other insertion at the same place (receiveUpdates maps ours second).
  assert.deepEqual(sent(step, 'push'), [{ type: 'push', version: 2, updates: [upd('A', [2, [0, 'b']])] }]);
  assert.equal(s.state.doc.toString(), 'aZb');
  assert.equal(s.stats.welcomesResume, 1);
});

test('a whole text while edits are unconfirmed: state replaced, the edits rescued', () => {
  const [s] = welcomed({ doc: 'base', version: 5 });
  edit(s, { from: 4, insert: ' mine' });
  s.closed(1001, 'server shutting down', 3000);
  s.opened(3100);
  const step = s.receive(welcome({ doc: 'fresh', version: 1 }), 3200);
  assert.equal(step.replaced, true);
  assert.deepEqual(events(step, 'rescue'), [{ type: 'rescue', text: 'base mine', count: 1, fragments: false }]);
  assert.deepEqual(events(step, 'reset'), [{ type: 'reset', synced: 5, version: 1, dropped: 1 }]);
  assert.equal(s.state.doc.toString(), 'fresh');
  assert.equal(s.pending, 0);
});

test('a whole text equal to ours keeps the state', () => {
  const [s] = welcomed({ doc: 'same', version: 2 });
  const before = s.state;
  s.closed(1013, '', 0);
  s.opened(0);
  const step = s.receive(welcome({ doc: 'same', version: 2 }), 0);
  assert.equal(step.replaced, false);
  assert.equal(s.state, before);
  assert.deepEqual(events(step, 'reset'), []);
});

test('our presence is mapped back to the synced version, capped at maxRanges with the main range first', () => {
  const [s] = welcomed({ doc: '0123456789', version: 4, limits: { maxRanges: 2 } });
  edit(s, { from: 0, insert: 'abc' }); // unconfirmed: the server does not know it yet
  const sel = EditorSelection.create([
    EditorSelection.range(1, 2), EditorSelection.range(5, 6), EditorSelection.cursor(9),
  ], 2);
  const state = s.state.update({ selection: sel }).state;
  assert.equal(state.selection.ranges.length, 1, 'no multiple selections without the facet');
  const [m] = welcomed({ doc: '0123456789', version: 4, limits: { maxRanges: 2 } },
    { extensions: [EditorState.allowMultipleSelections.of(true)] });
  edit(m, { from: 0, insert: 'abc' });
  const step = m.changed(m.state.update({ selection: sel }).state, 5000);
  assert.deepEqual(sent(step, 'presence'), [{ type: 'presence', version: 4, ranges: [{ anchor: 6, head: 6 }, { anchor: 0, head: 0 }] }]);
  // Not sent again while nothing changed; sent again at most every 50 ms.
  assert.deepEqual(sent(m.tick(5100), 'presence'), []);
  const moved = m.changed(m.state.update({ selection: EditorSelection.cursor(12) }).state, 5010);
  assert.deepEqual(sent(moved, 'presence'), []);
  assert.equal(moved.wakeAt, 5050);
  assert.deepEqual(sent(m.tick(5050), 'presence'), [{ type: 'presence', version: 4, ranges: [{ anchor: 9, head: 9 }] }]);
});

test('presence limit: the page\'s meta tag when the welcome has none, else the default 100', () => {
  const ext = { extensions: [EditorState.allowMultipleSelections.of(true)] };
  const many = EditorSelection.create(Array.from({ length: 150 }, (_, i) => EditorSelection.cursor(i)));
  const [a] = welcomed({ doc: 'x'.repeat(200) }, { ...ext, limits: { maxRanges: 5 } });
  assert.equal(sent(a.changed(a.state.update({ selection: many }).state, 9000), 'presence')[0].ranges.length, 5);
  const [b] = welcomed({ doc: 'x'.repeat(200) }, ext);
  assert.equal(sent(b.changed(b.state.update({ selection: many }).state, 9000), 'presence')[0].ranges.length, 100);
  const [c] = welcomed({ doc: 'x'.repeat(200), limits: { maxRanges: 120 } }, { ...ext, limits: { maxRanges: 5 } });
  assert.equal(sent(c.changed(c.state.update({ selection: many }).state, 9000), 'presence')[0].ranges.length, 120);
});

test('a peer\'s presence is mapped forward through what we received since and our own edits', () => {
  const [s] = welcomed({ doc: 'abcdef', version: 0 });
  s.receive(updates(0, [upd('B', [[0, 'XY'], 6])]), 100); // synced: XYabcdef
  edit(s, { from: 0, insert: '123' }); // local: 123XYabcdef
  const step = s.receive(presenceFrame('p', 0, [{ anchor: 3, head: 6 }]), 200);
  assert.deepEqual(events(step, 'peer'), [{
    type: 'peer', session: 'p', user: { name: 'P', color: '#123456' }, ranges: [{ anchor: 8, head: 11 }],
  }]);
  const now = s.receive(presenceFrame('p', 1, [{ anchor: 0, head: 8 }]), 210);
  // At the place of our own unconfirmed insertion a peer's position stays before it.
  assert.deepEqual(events(now, 'peer')[0].ranges, [{ anchor: 0, head: 11 }]);
  assert.deepEqual(events(s.receive(JSON.stringify({ type: 'leave', session: 'p' }), 220), 'leave'), [{ type: 'leave', session: 'p' }]);
});

test('presence the protocol does not allow is a problem, not an exception', () => {
  const [s] = welcomed({ doc: 'abc', version: 2, session: 'me' });
  assert.match(events(s.receive(presenceFrame('p', 3, []), 0), 'problem')[0].text, /version 3/);
  assert.match(events(s.receive(presenceFrame('me', 2, []), 0), 'problem')[0].text, /own presence/);
  const out = s.receive(presenceFrame('p', 2, [{ anchor: 9, head: 1 }]), 0);
  assert.match(events(out, 'problem')[0].text, /outside the text of length 3/);
  assert.deepEqual(events(out, 'peer')[0].ranges, [{ anchor: 3, head: 1 }], 'clamped');
});

test('close codes: reconnect at once, back off, slow down, or stop and say why', () => {
  const s = new Session({ clientID: 'A', random: () => 0, backoff: { base: 100, max: 10000, soon: 5, soonJitter: 10 } });
  const delay = (code) => {
    s.opened(0);
    const step = s.closed(code, 'why', 0);
    return step.stop !== null ? 'stop' : step.reconnect.delay;
  };
  assert.equal(delay(1001), 5, 'first retry after a restart: at once');
  assert.equal(delay(1001), 100, 'then backoff (base * 2^1, jitter 0.5)');
  assert.equal(delay(1006), 200);
  assert.equal(delay(1011), 400);
  s.opened(0);
  s.receive(welcome(), 0); // a welcome resets the backoff
  assert.equal(delay(1013), 5);
  assert.equal(delay(4429), 800, 'rate-limited: backoff as if four attempts had failed');
  const stop = (() => { s.opened(0); return s.closed(4001, '', 0); })();
  assert.equal(stop.reconnect, null);
  assert.match(stop.stop, /another tab/);
  assert.equal(s.stopped, stop.stop);
  assert.deepEqual(events(stop, 'notice').map((e) => e.text), [stop.stop]);
  s.restart();
  assert.equal(s.stopped, null);
  s.opened(0);
  const revoked = s.closed(1008, 'the share links of this document were reset', 0);
  assert.match(revoked.stop, /links were reset.*Ask the person who shared it for a new link/);
  assert.match(revoked.stop, /The server said: the share links of this document were reset\.\)$/);
  assert.equal(revoked.reconnect, null, 'a revoked link is never retried');
  assert.deepEqual(events(revoked, 'access').map((e) => [e.code, e.reason]), [[null, 'the share links of this document were reset']]);
  assert.deepEqual(events(revoked, 'notice'), [], 'one message, not two');
  s.restart();
  s.opened(0);
  const tooBig = s.closed(1009, 'frame over the limit', 0);
  assert.deepEqual(events(tooBig, 'notice').map((e) => e.text), ['The server closed the connection: a message was too large. (frame over the limit)']);
  assert.ok(tooBig.reconnect);
});

test('a server that welcomes but cannot save our edits (1011 each time) is retried with growing pauses', () => {
  const s = new Session({ clientID: 'A', random: () => 0, backoff: { base: 100, max: 1600, soon: 5, soonJitter: 10 } });
  s.opened(0);
  s.receive(welcome({ doc: 'ab', version: 1 }), 0);
  assert.equal(sent(edit(s, { from: 2, insert: '!' }, 0), 'push').length, 1);
  const delays = [s.closed(1011, 'the document could not be saved', 0).reconnect.delay];
  for (let i = 0; i < 5; i++) {
    s.opened(0);
    const pushes = sent(s.receive(resumeWelcome(1, []), 0), 'push');
    assert.equal(pushes.length, 1, 'the edit is pushed after each welcome');
    delays.push(s.closed(1011, 'the document could not be saved', 0).reconnect.delay);
  }
  assert.deepEqual(delays, [50, 100, 200, 400, 800, 800], 'not back to the first pause after every welcome');
  // Once the server takes the edit, the backoff starts over.
  s.opened(0);
  const step = s.receive(resumeWelcome(1, [upd('A', [2, [0, '!']])]), 0);
  assert.equal(s.pending, 0);
  assert.deepEqual(sent(step, 'push'), []);
  assert.equal(s.closed(1011, '', 0).reconnect.delay, 50);
});

test('an error frame while a push is in flight: pushed again after a pause', () => {
  const [s] = welcomed({ doc: '', version: 0 }, { pushRetry: { base: 1000, max: 8000 }, random: () => 1 });
  edit(s, { from: 0, insert: 'a' }, 0);
  const refused = s.receive(error('rate-limited', 'slow down'), 100);
  assert.deepEqual(events(refused, 'error'), [{
    type: 'error', code: 'rate-limited', message: 'slow down', quiet: false,
    text: 'Too many edits too quickly; the server asked to slow down. (rate-limited: slow down)',
  }]);
  assert.equal(s.inflight, 0);
  assert.equal(refused.wakeAt, 1100);
  assert.deepEqual(sent(s.tick(500), 'push'), []);
  assert.deepEqual(sent(edit(s, { from: 1, insert: 'b' }, 600), 'push'), [], 'still pausing');
  const again = s.tick(1100);
  assert.deepEqual(sent(again, 'push')[0].updates.length, 2);
  assert.equal(s.receive(error('unavailable'), 1200).wakeAt, 3200, 'the pause doubles');
});

test('a push refused for what its edits are (too-large, bad-changes) is rescued at once, not pushed again', () => {
  for (const code of ['too-large', 'bad-changes']) {
    const [s] = welcomed({ doc: 'full', version: 3 });
    edit(s, { from: 4, insert: '!' }, 0);
    const refused = s.receive(error(code, 'the document would pass --max-doc'), 100);
    assert.equal(events(refused, 'error')[0].quiet, true, 'the rescue says it');
    assert.deepEqual(events(refused, 'rescue'), [{ type: 'rescue', text: 'full!', count: 1, fragments: false,
      refused: code, message: 'the document would pass --max-doc' }], `${code}: was: pushed again after a pause, for ever`);
    assert.ok(refused.reconnect, 'the whole text is asked for');
    assert.equal(s.inflight, 0);
    assert.equal(s.opened(200).send[0].version, null, 'a hello for the whole text: a resume would push them again');
    const back = s.receive(welcome({ doc: 'full', version: 3 }), 300);
    assert.deepEqual(events(back, 'rescue'), [], 'rescued once');
    assert.equal(s.state.doc.toString(), 'full');
    assert.equal(s.pending, 0);
    assert.deepEqual(sent(back, 'push'), []);
  }
  // Typed on before the whole text came: that is rescued too (nothing typed is dropped unseen).
  const [s] = welcomed({ doc: 'full', version: 3 });
  edit(s, { from: 4, insert: '!' }, 0);
  s.receive(error('too-large', 'no'), 100);
  edit(s, { from: 5, insert: '?' }, 150);
  s.opened(200);
  assert.deepEqual(events(s.receive(welcome({ doc: 'full', version: 3 }), 300), 'rescue').map((e) => e.text), ['full!?']);
  // With no push in flight an error refuses no edit (a presence, say): nothing is rescued.
  const [v] = welcomed({ doc: 'x', version: 1 });
  const other = v.receive(error('too-large', 'presence'), 0);
  assert.deepEqual(events(other, 'rescue'), []);
  assert.equal(other.reconnect, null);
});

test('a refusal saying when the push fits again (retryAfter) is not pushed again before then', () => {
  const [s] = welcomed({ doc: '', version: 0 }, { pushRetry: { base: 1000, max: 8000 }, random: () => 1 });
  const refusal = (retryAfter) => JSON.stringify({ type: 'error', code: 'rate-limited', message: 'wait', retryAfter });
  edit(s, { from: 0, insert: 'a' }, 0);
  assert.equal(s.receive(refusal(7.3), 100).wakeAt, 7400, 'the server\'s 7.3 s, not the first pause of 1 s');
  assert.deepEqual(sent(s.tick(5000), 'push'), []);
  assert.equal(sent(s.tick(7400), 'push').length, 1);
  assert.equal(s.receive(refusal(0.2), 7500).wakeAt, 9500, 'a pause longer than the hint stays (the second: 2 s)');
  assert.equal(sent(s.tick(9500), 'push').length, 1);
  assert.equal(s.receive(refusal('soon'), 9600).wakeAt, 13600, 'a hint that is not a number is no hint (4 s)');
});

test('bad-version before the welcome asks for the whole text; with a push in flight it resumes', () => {
  const s = new Session({ clientID: 'A', random: () => 0 });
  s.opened(0);
  s.receive(welcome({ doc: 'x', version: 4 }), 0);
  s.closed(1006, '', 0);
  s.opened(0);
  const before = s.receive(error('bad-version', 'future'), 0);
  assert.equal(events(before, 'error')[0].quiet, true);
  assert.ok(before.reconnect);
  assert.equal(s.opened(0).send[0].version, null);
  s.receive(welcome({ doc: 'x', version: 4 }), 0);
  edit(s, { from: 1, insert: 'y' });
  const during = s.receive(error('bad-version', 'too old'), 0);
  assert.ok(during.reconnect);
  assert.equal(s.opened(0).send[0].version, 4, 'a resume, not the whole text');
});

test('a missed frame asks for a resume; updates that do not apply ask for the whole text', () => {
  const [s] = welcomed({ doc: 'abc', version: 2 });
  const gap = s.receive(updates(3, [upd('B', [[0, 'x'], 3])]), 0);
  assert.match(events(gap, 'problem')[0].text, /missed updates/);
  assert.ok(gap.reconnect);
  assert.equal(s.receive(updates(2, [upd('B', [[0, 'x'], 3])]), 0).transaction, null, 'frames of a dropped connection are ignored');
  assert.equal(s.opened(0).send[0].version, 2);
  s.receive(resumeWelcome(2, []), 0);
  const bad = s.receive(updates(2, [upd('B', [[0, 'x'], 30])]), 0);
  assert.match(events(bad, 'problem')[0].text, /cannot apply/);
  assert.ok(bad.reconnect);
  assert.equal(s.state.doc.toString(), 'abc', 'nothing applied');
  assert.equal(s.opened(0).send[0].version, null);
});

test('a malformed updates frame is a problem and a resync; a malformed presence is only a problem', () => {
  const [s] = welcomed({ doc: '', version: 0 });
  const p = s.receive(JSON.stringify({ type: 'presence', session: 'x' }), 0);
  assert.equal(events(p, 'problem').length, 1);
  assert.equal(p.reconnect, null);
  const u = s.receive(JSON.stringify({ type: 'updates', from: 'zero', updates: [] }), 0);
  assert.equal(events(u, 'problem').length, 1);
  assert.ok(u.reconnect);
});

test('a view-only session never pushes', () => {
  const [s] = welcomed({ doc: '', version: 0, role: 'view' });
  assert.equal(s.role, 'view');
  assert.deepEqual(sent(edit(s, { from: 0, insert: 'a' }), 'push'), []);
});

test('the welcome\'s limits split a backlog into pushes', () => {
  const limits = { maxUpdates: 2, maxFrame: 1 << 20, maxDoc: 100, maxRanges: 1 };
  const [s] = welcomed({ doc: '', version: 0, limits }, { limits: { maxUpdates: 50 } });
  assert.deepEqual(s.limits, { maxFrame: 1 << 20, maxDoc: 100, maxUpdates: 2, maxRanges: 1 });
  s.closed(1006, '', 0);
  for (let i = 0; i < 5; i++) edit(s, { from: i, insert: String(i) });
  s.opened(0);
  let step = s.receive(resumeWelcome(0, [], { limits }), 0);
  const sizes = [];
  for (let v = 0; sent(step, 'push').length; ) {
    const [p] = sent(step, 'push');
    sizes.push(p.updates.length);
    step = s.receive(updates(v, p.updates), 0);
    v += p.updates.length;
  }
  assert.deepEqual(sizes, [2, 2, 1]);
  assert.equal(s.syncedDoc.toString(), '01234');
  // A welcome without limits: the page's again.
  s.closed(1006, '', 0);
  s.opened(0);
  s.receive(resumeWelcome(5, []), 0);
  assert.equal(s.limits.maxUpdates, 50);
});

test('restored edits with their base text are shown at once and pushed after a resume', () => {
  const rec = { version: 3, base: 'abc', updates: [[3, [0, 'd']], [[0, '>'], 4]] };
  const s = new Session({ clientID: 'A', restore: rec });
  assert.equal(s.state.doc.toString(), '>abcd');
  assert.equal(s.pending, 2);
  assert.equal(s.opened(0).send[0].version, 3);
  const step = s.receive(resumeWelcome(3, [upd('A', [3, [0, 'd']])]), 0);
  assert.deepEqual(sent(step, 'push'), [{ type: 'push', version: 4, updates: [upd('A', [[0, '>'], 4])] }]);
});

test('a restored record holding U+0000 (kept before the text guard) is pushed with U+FFFD instead', () => {
  const rec = { version: 3, base: 'abc', updates: [[3, [0, 'd\u0000']], [[0, '\ud83d'], 5]] };
  const s = new Session({ clientID: 'A', restore: rec });
  assert.equal(s.state.doc.toString(), '\ufffdabcd\ufffd');
  s.opened(0);
  const step = s.receive(resumeWelcome(3, []), 0);
  assert.deepEqual(sent(step, 'push'), [{ type: 'push', version: 3,
    updates: [upd('A', [3, [0, 'd\ufffd']]), upd('A', [[0, '\ufffd'], 5])] }]);
});

test('a whole text older than ours (a server restored from a backup, a document made again) rescues ours', () => {
  const [s] = welcomed({ doc: 'hello world', version: 5 });
  const back = (doc, version) => {
    s.closed(1001, '', 0);
    s.opened(0);
    return s.receive(welcome({ doc, version }), 0);
  };
  let step = back('hello', 3);
  assert.equal(s.state.doc.toString(), 'hello');
  assert.deepEqual(events(step, 'rescue'), [{ type: 'rescue', text: 'hello world', count: 0, fragments: false, older: true }]);
  step = back('other', 3); // another text at our version
  assert.deepEqual(events(step, 'rescue').map((e) => [e.text, e.older]), [['hello', true]]);
  step = back('other', 3); // the same text at our version: nothing lost
  assert.deepEqual(events(step, 'rescue'), []);
  step = back('other and more', 9); // newer (our history was compacted away): ours is part of it
  assert.deepEqual(events(step, 'rescue'), []);
  step = back('', 0); // deleted while we were away, and made again by this hello
  assert.deepEqual(events(step, 'rescue').map((e) => e.text), ['other and more']);
});

test('a document deleted (or deleted and made again) while away: the rescue says so', () => {
  const away = (s, m) => { s.closed(1001, '', 0); s.opened(0); return events(s.receive(welcome(m), 0), 'rescue'); };
  // Unsent edits, and no document of the name any more.
  let [s] = welcomed({ doc: 'hello', version: 5, docId: '7' });
  edit(s, { from: 5, insert: '!' }, 0); // pushed, not confirmed before the connection went
  assert.deepEqual(away(s, { doc: '', version: 0 }).map((e) => [e.text, e.count, e.gone]), [['hello!', 1, 'deleted']]);
  // Nothing unsent, and another document of the name now, further on than ours: still rescued.
  [s] = welcomed({ doc: 'hello', version: 5, docId: '7' });
  assert.deepEqual(away(s, { doc: 'other text', version: 9, docId: '8' }).map((e) => [e.text, e.count, e.older, e.gone]),
    [['hello', 0, true, 'replaced']]);
  // The same document (the docId ours): a whole text further on is not a loss, and says nothing of gone.
  [s] = welcomed({ doc: 'hello', version: 5, docId: '7' });
  assert.deepEqual(away(s, { doc: 'hello there', version: 9, docId: '7' }), []);
  assert.deepEqual(away(s, { doc: 'hell', version: 3, docId: '7' }).map((e) => [e.older, e.gone]), [[true, undefined]]);
  // Deleted while away, but what we had was empty: nothing to offer back, so no empty dialog.
  [s] = welcomed({ doc: '', version: 5, docId: '7' }); // everything in it had been deleted
  assert.deepEqual(away(s, { doc: '', version: 0 }), []);
  // No docId known (a page before the document was made): nothing can be said of it.
  [s] = welcomed({ doc: '', version: 0 });
  assert.deepEqual(away(s, { doc: 'new', version: 2, docId: '4' }), []);
});

test('restored edits without a base: the whole text, then the typed pieces rescued', () => {
  const s = new Session({ clientID: 'A', restore: { version: 3, base: null, updates: [[3, [0, 'd', 'e']]] } });
  assert.equal(s.state, null);
  assert.equal(s.pending, 1);
  assert.equal(s.opened(0).send[0].version, null);
  const step = s.receive(welcome({ doc: 'zzz', version: 9 }), 0);
  assert.deepEqual(events(step, 'rescue'), [{ type: 'rescue', text: 'd\ne', count: 1, fragments: true }]);
  assert.equal(s.pending, 0);
});

test('a blind restore (closed-tab flush) rebases and pushes edits whose base text is unknown', () => {
  const s = new Session({ clientID: 'T', presence: false, restore: { version: 1, base: null, updates: [[2, [0, '!']]] }, blindRestore: true });
  assert.equal(s.opened(0).send[0].version, 1);
  const step = s.receive(resumeWelcome(1, [upd('B', [[0, 'xy'], 2])]), 0);
  assert.deepEqual(step.send, [{ type: 'push', version: 2, updates: [upd('T', [4, [0, '!']])] }], 'no presence');
  s.receive(updates(2, [upd('T', [4, [0, '!']])]), 0);
  assert.equal(s.pending, 0);
  // If the server cannot resume, only the typed text can be rescued.
  const t = new Session({ clientID: 'T', restore: { version: 1, base: null, updates: [[2, [0, '!']]] }, blindRestore: true });
  t.opened(0);
  assert.deepEqual(events(t.receive(welcome({ doc: 'other', version: 0 }), 0), 'rescue'),
    [{ type: 'rescue', text: '!', count: 1, fragments: true }]);
});

test('welcome checks: from must be hello.version, version must add up, one welcome per connection', () => {
  const [s] = welcomed({ doc: 'a', version: 1 });
  s.closed(1006, '', 0);
  s.opened(0);
  const step = s.receive(resumeWelcome(0, [upd('B', [[0, 'x'], 0])], { version: 5 }), 0);
  const problems = events(step, 'problem').map((e) => e.text).join(' | ');
  assert.match(problems, /welcome.from 0 is not hello.version 1/);
  assert.match(problems, /welcome.version 5/);
  assert.match(events(s.receive(welcome({ doc: 'a' }), 0), 'problem')[0].text, /second welcome/);
});

test('peers come with the welcome and are cleared when the connection ends', () => {
  const peer = { type: 'presence', session: 'p', user: { name: 'P', color: '#000' }, version: 2, ranges: [{ anchor: 1, head: 1 }] };
  const [s, step] = welcomed({ doc: 'ab', version: 2, peers: [peer] });
  assert.deepEqual(events(step, 'peer')[0].ranges, [{ anchor: 1, head: 1 }]);
  assert.deepEqual(events(s.closed(1006, '', 0), 'peers-cleared'), [{ type: 'peers-cleared' }]);
  assert.deepEqual(events(s.disconnected(), 'peers-cleared'), []);
});

test('unknown and non-JSON frames are problems', () => {
  const [s] = welcomed();
  assert.equal(events(s.receive('nope', 0), 'problem').length, 1);
  assert.equal(events(s.receive('{"type":"surprise"}', 0), 'problem').length, 1);
  assert.equal(events(s.receive(Buffer.from('{}'), 0), 'problem').length, 1);
  assert.ok(s.welcomed);
});

test('ChangeSets stay one class: what the core returns is what core.js exports', () => {
  const [s] = welcomed({ doc: 'a', version: 0 });
  edit(s, { from: 1, insert: 'b' });
  assert.ok(s.unconfirmed[0].changes instanceof ChangeSet);
});

test('every hello carries the resumeKey of the last welcome (or of a restored record)', () => {
  const [s] = welcomed({ doc: 'a', version: 1, resumeKey: 'k1' });
  s.closed(1006, '', 0);
  assert.equal(s.opened(0).send[0].resumeKey, 'k1');
  s.receive(resumeWelcome(1, [], { resumeKey: 'k2' }), 0);
  s.closed(1001, '', 0);
  assert.equal(s.opened(0).send[0].resumeKey, 'k2');
  const fresh = new Session({ clientID: 'B' });
  assert.equal('resumeKey' in fresh.opened(0).send[0], false, 'no key: no field');
  const restored = new Session({ clientID: 'T', restore: { version: 0, base: '', updates: [[[0, 'x']]], resumeKey: 'kt' } });
  assert.equal(restored.opened(0).send[0].resumeKey, 'kt');
  assert.match(events(restored.receive(welcome({ resumeKey: 5 }), 0), 'problem')[0].text, /resumeKey/);
});

test('a resuming hello carries the docId its version is of (the last welcome\'s, or a restored record\'s)', () => {
  const [s] = welcomed({ doc: 'a', version: 1, docId: '7' });
  s.closed(1006, '', 0);
  assert.equal(s.opened(0).send[0].docId, '7');
  s.receive(resumeWelcome(1, [], { docId: '9' }), 0); // the server says which: its word is taken
  s.closed(1006, '', 0);
  assert.equal(s.opened(0).send[0].docId, '9');
  s.receive(resumeWelcome(1, []), 0); // no docId: nobody made the document (or not a collab server)
  s.closed(1006, '', 0);
  assert.equal('docId' in s.opened(0).send[0], false);
  const [born] = welcomed({ doc: '', version: 0 }); // nobody made it yet: no docId
  born.receive(updates(0, [upd('Z', [[0, 'z']])], { docId: '11' }), 0); // the frame that made it says which
  born.receive(updates(1, [upd('Z', [1, [0, 'y']])], { docId: '12' }), 0); // only that one may
  born.closed(1006, '', 0);
  assert.equal(born.opened(0).send[0].docId, '11');
  const fresh = new Session({ clientID: 'B', restore: { version: 0, base: null, updates: [], docId: '7' } });
  assert.equal('docId' in fresh.opened(0).send[0], false, 'no version: no docId');
  const restored = new Session({ clientID: 'T', restore: { version: 2, base: 'ab', updates: [[2, [0, 'x']]], docId: '7' } });
  assert.deepEqual([restored.opened(0).send[0].version, restored.opened(0).send[0].docId], [2, '7']);
  assert.match(events(restored.receive(welcome({ docId: 5 }), 0), 'problem')[0].text, /docId/);
});

test('every hello carries opened: the wall clock in ms, always more than the last hello of this session', () => {
  const s = new Session({ clientID: 'A', epoch: 1_764_000_000_000.7 });
  const openedAt = (now) => { s.closed(1006, '', now); return s.opened(now).send[0].opened; };
  assert.equal(s.opened(5.5).send[0].opened, 1_764_000_000_006);
  assert.equal(openedAt(5.9), 1_764_000_000_007, 'the clock did not move on a whole ms: one more');
  assert.equal(openedAt(2), 1_764_000_000_008, 'the clock went back: still one more');
  assert.equal(openedAt(3000), 1_764_000_003_000);
  assert.equal(openedAt(NaN), 1_764_000_003_001, 'no time from the adapter: still one more');
  const noClock = new Session({ clientID: 'C', epoch: 1_764_000_000_000 });
  assert.equal('opened' in noClock.opened(NaN).send[0], false, 'no time at all yet: no opened');
  noClock.closed(1006, '', 0);
  assert.equal(noClock.opened(7).send[0].opened, 1_764_000_000_007);
  const later = new Session({ clientID: 'A', epoch: 1_764_000_004_000 }); // a later page with the same clientID
  assert.ok(later.opened(0).send[0].opened > 1_764_000_003_000);
  const defaulted = new Session({ clientID: 'B' }); // performance.timeOrigin: a wall-clock time
  const stamp = defaulted.opened(performance.now()).send[0].opened;
  assert.ok(Number.isSafeInteger(stamp) && Math.abs(stamp - Date.now()) < 60_000, String(stamp));
});

test('every hello carries the person id (hello.person) when it is a valid one, and never a bad one', () => {
  const s = new Session({ clientID: 'A', user: { name: 'Ann', color: '#123456' }, person: 'p_Ann-01', epoch: 0 });
  assert.deepEqual(s.opened(0).send, [{
    type: 'hello', clientID: 'A', version: null, user: { name: 'Ann', color: '#123456' }, person: 'p_Ann-01',
    opened: 0,
  }]);
  s.receive(welcome({ doc: 'x', version: 1 }), 0);
  s.closed(1006, '', 0);
  s.user = { name: 'Annie', color: '#654321' }; // a rename: a new name, the same person
  const again = s.opened(0).send[0];
  assert.equal(again.person, 'p_Ann-01');
  assert.equal(again.user.name, 'Annie');
  for (const bad of ['', 'has space', 'x'.repeat(65), 'é', 42, null, undefined]) {
    const t = new Session({ clientID: 'B', person: bad });
    assert.equal('person' in t.opened(0).send[0], false, JSON.stringify(bad));
  }
  assert.equal(new Session({ clientID: 'C', person: 'x'.repeat(64) }).opened(0).send[0].person, 'x'.repeat(64));
});

test('a peer\'s person id reaches the page with its presence', () => {
  const [s] = welcomed({ doc: 'abc', version: 0, session: 'me' });
  const step = s.receive(presenceFrame('p', 0, [{ anchor: 1, head: 1 }], { name: 'P', color: '#123456', person: 'pp' }), 0);
  assert.deepEqual(events(step, 'peer')[0].user, { name: 'P', color: '#123456', person: 'pp' });
});

test('a presences frame (one per tick, for everyone) moves each peer and skips our own cursor', () => {
  const [s] = welcomed({ doc: 'abcdef', version: 0, session: 'me' });
  const peer = (session, anchor) => ({ type: 'presence', session, user: { name: session, color: '#000' }, version: 0, ranges: [{ anchor, head: anchor }] });
  const step = s.receive(JSON.stringify({ type: 'presences', peers: [peer('p', 1), peer('me', 2), peer('q', 3)] }), 0);
  assert.deepEqual(events(step, 'peer').map((e) => [e.session, e.ranges[0].anchor]), [['p', 1], ['q', 3]]);
  assert.deepEqual(events(step, 'problem'), []);
  assert.equal(events(s.receive(JSON.stringify({ type: 'presences', peers: [{}] }), 0), 'problem').length, 1);
});

test('a refused hello (forbidden, then 1008) is one access event that says the link was revoked', () => {
  const s = new Session({ clientID: 'A' });
  s.opened(0);
  const refused = s.receive(error('forbidden', 'this token does not give access here'), 0);
  assert.equal(events(refused, 'error')[0].quiet, true, 'the close that follows says it');
  const closed = s.closed(1008, 'this token does not give access here', 0);
  const [ended] = events(closed, 'access');
  assert.equal(ended.code, 'forbidden');
  assert.match(ended.text, /^This link does not open this document: it was revoked/);
  assert.match(ended.text, /new link/);
  assert.equal(s.stopped, ended.text);
  assert.equal(closed.reconnect, null);
  const t = new Session({ clientID: 'B' });
  t.opened(0);
  t.receive(error('unauthorized', 'no token'), 0);
  assert.match(events(t.closed(1008, '', 0), 'access')[0].text, /^This document needs a link with an access token\./);
  // An error frame on an earlier connection does not colour a later close.
  const u = new Session({ clientID: 'C', random: () => 0 });
  u.opened(0);
  u.receive(error('forbidden'), 0);
  u.closed(1006, '', 0);
  u.opened(0);
  assert.equal(events(u.closed(1008, '', 0), 'access')[0].code, null);
  assert.equal(ended.title, 'This link does not open this document.');
});

test('a document deleted during the session is said so, with no word of links (an instance may have none)', () => {
  const [s] = welcomed({ doc: 'gone soon', version: 1 });
  const [ended] = events(s.closed(1008, 'this document was deleted', 0), 'access');
  assert.equal(ended.title, 'This document was deleted.', 'was: "This link no longer works."');
  assert.equal(ended.text, 'Nobody can open or change it any more. Its text stays on this page until you leave or reload it.',
    'was the title again: "This document was deleted: nobody can ..."');
  assert.doesNotMatch(ended.text, /link/);
  const [reset] = events(welcomed({ doc: 'x', version: 1 })[0].closed(1008, 'the share links of this document were reset', 0), 'access');
  assert.equal(reset.title, 'This link no longer works.');
  assert.match(reset.text, /share links were reset/);
});

test('an update made by a restore is a restore event, with the text it removed, for every session', () => {
  const [s] = welcomed({ doc: 'old text', version: 1 });
  s.receive(updates(1, [upd('B', [8, [0, ' and Bob\'s new words']])]), 0);
  edit(s, { from: 0, insert: '>' }); // unconfirmed when the restore comes
  const step = s.receive(updates(2, [
    upd('restore-1a2b3c', [8, [20]]),
    upd('B', [8, [0, '!']]),
  ]), 0);
  const [r] = events(step, 'restore');
  assert.deepEqual(r, {
    type: 'restore', version: 3, restored: null, author: null,
    removed: " and Bob's new words", removedLength: 20, inserted: 0, mine: true,
  });
  assert.equal(s.state.doc.toString(), '>old text!', 'the unconfirmed edit survives, rebased');
  // The [extension] restore object names the version and the person, and marks a hidden clientID.
  const [v] = welcomed({ doc: 'abc', version: 5, role: 'view' });
  const seen = v.receive(updates(5, [{ clientID: 'h0123', changes: [[1, 'x'], 2], restore: { version: 2, author: 'Alice' } }]), 0);
  assert.deepEqual(events(seen, 'restore').map((e) => [e.version, e.restored, e.author, e.removed, e.inserted, e.mine]),
    [[6, 2, 'Alice', 'a', 1, false]]);
  // Ordinary updates are not restores; a malformed restore object is refused as a frame.
  assert.deepEqual(events(v.receive(updates(6, [upd('restorer', [3, [0, '.']])]), 0), 'restore'), []);
  const bad = v.receive(updates(7, [{ clientID: 'x', changes: [4], restore: 'yes' }]), 0);
  assert.match(events(bad, 'problem')[0].text, /restore must be/);
  // A restore in a resuming welcome (it happened while this page was away) is told too.
  const w = new Session({ clientID: 'A', random: () => 0.5 });
  w.opened(0);
  w.receive(welcome({ doc: 'keep this', version: 0 }), 0);
  w.closed(1006, '', 0);
  w.opened(0);
  const back = w.receive(JSON.stringify({ type: 'welcome', session: 's2', role: 'edit', version: 1, peers: [], from: 0,
    updates: [upd('restore-ff', [4, [5]])] }), 0);
  assert.deepEqual(events(back, 'restore').map((e) => e.removed), [' this']);
});

test('a rename closes 1008 saying the new name: a renamed event, not a revoked link', () => {
  const [s] = welcomed({ doc: 'x', version: 1 });
  const step = s.closed(1008, 'this document was renamed to new-name_2', 0);
  assert.deepEqual(events(step, 'renamed').map((e) => e.to), ['new-name_2']);
  assert.deepEqual(events(step, 'access'), []);
  assert.equal(step.reconnect, null);
  // Anything else after "renamed to" is no name: an ordinary end of access.
  const [t] = welcomed({ doc: 'x', version: 1 });
  assert.deepEqual(events(t.closed(1008, 'this document was renamed to ../etc', 0), 'renamed'), []);
  const [u] = welcomed({ doc: 'x', version: 1 });
  assert.deepEqual(events(u.closed(1001, 'this document was renamed to a', 0), 'renamed'), [], 'only a 1008 says it');
});
