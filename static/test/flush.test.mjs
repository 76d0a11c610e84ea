// The closed-tab flush (src/flush.js) against a fake WebSocket: it needs no
// DOM, only the browser's WebSocket, which this test provides.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { flushRecord } from '../src/flush.js';
import { ChangeSet, Text, utf8Length } from '../src/core.js';

/** A WebSocket whose server is `serve(frame, socket)`; frames are answered on the next turn. */
function fakeSocketClass(serve) {
  return class FakeSocket {
    constructor(url, protocol) {
      this.url = url;
      this.protocol = protocol;
      this.sent = [];
      FakeSocket.last = this;
      setTimeout(() => this.onopen && this.onopen(), 0);
    }
    send(text) {
      this.sent.push(text);
      setTimeout(() => serve(JSON.parse(text), this), 0);
    }
    deliver(frame) {
      if (!this.closed) this.onmessage({ data: JSON.stringify(frame) });
    }
    close() {
      this.closed = true;
    }
  };
}

/** A record of `n` one-letter insertions typed at the end of `base`, made by client T at version `version`. */
function record(n, base = 'base', version = 2, letter = 'x') {
  const updates = [];
  let len = base.length;
  for (let i = 0; i < n; i++) {
    updates.push(ChangeSet.of([{ from: len, insert: letter }], len).toJSON());
    len += letter.length;
  }
  return { clientID: 'T', version, updates, base };
}

/** A server that holds `text` at version `version`, accepts pushes at its version, and enforces limits. */
function server({ text, version, limits }) {
  const state = { doc: Text.of(text.split('\n')), version, pushes: [], refused: [] };
  state.serve = (m, ws) => {
    if (m.type === 'hello') {
      const resume = m.version === state.version;
      ws.deliver({ type: 'welcome', session: 's', role: 'edit', version: state.version, peers: [], limits,
        ...(resume ? { from: m.version, updates: [] } : { doc: state.doc.toString() }) });
    } else if (m.type === 'push') {
      const bytes = utf8Length(JSON.stringify(m));
      if (m.updates.length > limits.maxUpdates || bytes >= limits.maxFrame || m.version !== state.version) {
        state.refused.push({ updates: m.updates.length, bytes });
        ws.deliver({ type: 'error', code: 'too-large', message: 'no' });
        return;
      }
      state.pushes.push(m.updates.length);
      for (const u of m.updates) state.doc = ChangeSet.fromJSON(u.changes).apply(state.doc);
      ws.deliver({ type: 'updates', from: state.version, updates: m.updates });
      state.version += m.updates.length;
    }
  };
  return state;
}

function storeSpy() {
  const dropped = [];
  return { dropped, drop: (id) => dropped.push(id) };
}

test('a closed tab\'s backlog over maxUpdates goes in several pushes, then the record is dropped', async () => {
  const limits = { maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 };
  const srv = server({ text: 'base', version: 2, limits });
  globalThis.WebSocket = fakeSocketClass(srv.serve);
  const store = storeSpy();
  const result = await flushRecord({ wsUrl: 'ws://x/ws/d', rec: record(2500), user: { name: 'n', color: '#000' }, store, rescue: () => assert.fail('no rescue') });
  assert.equal(result, 'sent');
  assert.deepEqual(srv.pushes, [1000, 1000, 500]);
  assert.deepEqual(srv.refused, []);
  assert.equal(srv.doc.toString(), 'base' + 'x'.repeat(2500));
  assert.deepEqual(store.dropped, ['T']);
});

test('a closed tab\'s backlog over a frame goes in pushes under maxFrame bytes', async () => {
  const limits = { maxFrame: 4096, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 };
  const srv = server({ text: '', version: 0, limits });
  globalThis.WebSocket = fakeSocketClass(srv.serve);
  const store = storeSpy();
  const rec = record(40, '', 0, '😀'.repeat(50)); // 200 bytes of UTF-8 each, 8 KB in all
  const result = await flushRecord({ wsUrl: 'ws://x/ws/d', rec, user: { name: 'n', color: '#000' }, store, rescue: () => assert.fail('no rescue') });
  assert.equal(result, 'sent');
  assert.ok(srv.pushes.length >= 3, srv.pushes);
  assert.equal(srv.pushes.reduce((a, b) => a + b, 0), 40);
  assert.deepEqual(srv.refused, []);
  assert.equal(srv.doc.length, 40 * 100);
});

test('when the server cannot resume, the record\'s text is rescued and dropped', async () => {
  const limits = { maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 };
  const srv = server({ text: 'other', version: 0, limits }); // the record's version 2 is unknown here
  globalThis.WebSocket = fakeSocketClass(srv.serve);
  const store = storeSpy();
  const rescued = [];
  const result = await flushRecord({ wsUrl: 'ws://x/ws/d', rec: record(3), user: { name: 'n', color: '#000' }, store, rescue: (r) => rescued.push(r) });
  assert.equal(result, 'rescued');
  assert.deepEqual(rescued, [{ text: 'basexxx', count: 3, fragments: false, refused: null }]);
  assert.deepEqual(store.dropped, ['T']);
  assert.deepEqual(srv.pushes, []);
});

test('a refused push fails the flush and keeps the record', async () => {
  const limits = { maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 };
  const srv = server({ text: 'base', version: 2, limits });
  const serve = srv.serve;
  globalThis.WebSocket = fakeSocketClass((m, ws) => (m.type === 'push' ? ws.deliver({ type: 'error', code: 'read-only', message: 'view link' }) : serve(m, ws)));
  const store = storeSpy();
  const warn = console.warn;
  console.warn = () => {};
  try {
    const result = await flushRecord({ wsUrl: 'ws://x/ws/d', rec: record(3), user: { name: 'n', color: '#000' }, store, rescue: () => assert.fail('no rescue') });
    assert.equal(result, 'failed');
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(store.dropped, []);
});

test('a push the server refuses for good (the document at its size limit) is rescued, saying so, and dropped', async () => {
  const limits = { maxFrame: 1 << 20, maxDoc: 10 << 20, maxUpdates: 1000, maxRanges: 100 };
  const srv = server({ text: 'base', version: 2, limits });
  const serve = srv.serve;
  let pushes = 0;
  globalThis.WebSocket = fakeSocketClass((m, ws) => {
    if (m.type !== 'push') return serve(m, ws);
    pushes++;
    ws.deliver({ type: 'error', code: 'too-large', message: 'the document would pass --max-doc' });
  });
  const store = storeSpy();
  const rescued = [];
  const result = await flushRecord({ wsUrl: 'ws://x/ws/d', rec: record(3), user: { name: 'n', color: '#000' }, store, rescue: (r) => rescued.push(r) });
  assert.equal(result, 'rescued', 'was: failed, the record kept and pushed again at every load, refused every time');
  assert.deepEqual(rescued, [{ text: 'basexxx', count: 3, fragments: false, refused: 'too-large' }]);
  assert.deepEqual(store.dropped, ['T']);
  assert.equal(pushes, 1);
});
