import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseServerFrame, FrameError, hello, push, presence } from '../src/core.js';

const ok = (frame) => parseServerFrame(JSON.stringify(frame));

function refused(input, frameType, pattern) {
  assert.throws(() => parseServerFrame(typeof input === 'string' ? input : JSON.stringify(input)), (e) => {
    assert.ok(e instanceof FrameError, e);
    assert.equal(e.frameType, frameType);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

test('builders make the protocol\'s client frames', () => {
  assert.deepEqual(hello('A', null, { name: 'n', color: '#000' }), { type: 'hello', clientID: 'A', version: null, user: { name: 'n', color: '#000' } });
  assert.deepEqual(hello('A', 2, { name: 'n', color: '#000' }, 'k', 'p1', 1_764_000_000_000),
    { type: 'hello', clientID: 'A', version: 2, user: { name: 'n', color: '#000' }, resumeKey: 'k', person: 'p1', opened: 1_764_000_000_000 });
  for (const bad of [-1, 1.5, 2 ** 53, '7', null]) {
    assert.equal('opened' in hello('A', null, { name: 'n', color: '#000' }, null, null, bad), false, String(bad));
  }
  assert.deepEqual(hello('A', null, { name: 'n', color: '#000' }, null, null, null, null, true),
    { type: 'hello', clientID: 'A', version: null, user: { name: 'n', color: '#000' }, checkpoints: true });
  assert.equal('checkpoints' in hello('A', null, { name: 'n', color: '#000' }, null, null, null, null, 'yes'), false);
  assert.deepEqual(push(3, []), { type: 'push', version: 3, updates: [] });
  assert.deepEqual(presence(3, [{ anchor: 1, head: 2 }]), { type: 'presence', version: 3, ranges: [{ anchor: 1, head: 2 }] });
});

test('well-formed server frames pass', () => {
  const peer = { type: 'presence', session: 'p', user: { name: 'P', color: '#fff' }, version: 2, ranges: [{ anchor: 0, head: 1 }] };
  ok({ type: 'welcome', session: 's', role: 'view', version: 2, peers: [peer], doc: 'ab', limits: { maxFrame: 10 } });
  ok({ type: 'welcome', session: 's', role: 'edit', version: 2, peers: [], from: 1, updates: [{ clientID: 'x', changes: [[0, 'a']] }] });
  ok({ type: 'updates', from: 0, updates: [{ clientID: 'x', changes: [1, [0, 'a']] }] });
  ok(peer);
  ok({ type: 'leave', session: 'p' });
  ok({ type: 'error', code: 'bad-json', message: 'no' });
  ok({ type: 'checkpoints', version: 0 });
});

test('anything else is a FrameError naming the frame type', () => {
  refused('{not json', null, /not JSON/);
  refused('[1]', null, /not a JSON object/);
  refused({ type: 'hello' }, null, /unknown frame type/);
  refused({ type: 'constructor' }, null, /unknown frame type/);
  assert.throws(() => parseServerFrame(Buffer.from('{}')), /binary/);
  refused({ type: 'welcome', session: 's', role: 'admin', version: 0, peers: [], doc: '' }, 'welcome', /role/);
  refused({ type: 'welcome', session: 's', role: 'edit', version: -1, peers: [], doc: '' }, 'welcome', /version/);
  refused({ type: 'welcome', session: 's', role: 'edit', version: 0, peers: [], from: 0 }, 'welcome', /updates/);
  refused({ type: 'welcome', session: 's', role: 'edit', version: 0, peers: [] }, 'welcome', /doc/);
  refused({ type: 'welcome', session: 's', role: 'edit', version: 0, peers: [{}], doc: '' }, 'welcome');
  refused({ type: 'welcome', session: 's', role: 'edit', version: 0, peers: [], doc: '', limits: { maxFrame: '1' } }, 'welcome', /limits/);
  refused({ type: 'updates', from: 1.5, updates: [] }, 'updates', /from/);
  refused({ type: 'updates', from: 1, updates: [{ clientID: 1, changes: [] }] }, 'updates', /updates\[0\]/);
  refused({ type: 'updates', from: 1, updates: [{ clientID: 'x', changes: 'no' }] }, 'updates');
  refused({ type: 'presence', session: 'p', user: {}, version: 0, ranges: [{ anchor: -1, head: 0 }] }, 'presence', /ranges\[0\]/);
  refused({ type: 'presence', session: 'p', version: 0, ranges: [] }, 'presence', /user/);
  refused({ type: 'leave' }, 'leave');
  refused({ type: 'error', code: 5 }, 'error');
  refused({ type: 'checkpoints', version: '3' }, 'checkpoints', /version/);
  refused({ type: 'checkpoints' }, 'checkpoints', /version/);
});
