// The reference for bench/load.py: CodeMirror's own authority, in memory, in one Node process.
//
// The authority of @codemirror/collab's documentation (its "collab" example),
// speaking docs/protocol.md as far as a stock client needs: `hello` ->
// `welcome` (the full text, or a resume from the updates in memory), `push`
// -> `rebaseUpdates` over what the push missed, applied and appended, and one
// `updates` frame to every connection of the document (the sender's is its
// acknowledgement), `presence` relayed at once as a `presences` frame,
// `leave` when a connection closes. GET /api/docs/{doc} answers {name,
// version, doc} and GET /healthz {ok}, as collab does.
//
// What it leaves out, on purpose, so that it is the floor to measure collab
// against: no disk (nothing is durable), no access control, no limits beyond
// a frame size, no normalisation of pushed changes, no presence mapping or
// coalescing, no frame boundaries for resumes. Frames from outside are still
// checked: anything malformed gets an `error` frame, never a crash.
//
//   node bench/reference.mjs [--port 0] [--host 127.0.0.1]
//
// Prints `listening PORT` on stdout once it accepts connections. The `ws`
// package and CodeMirror come from tests/js/node_modules.

import { createRequire } from 'node:module';
import http from 'node:http';
import { randomBytes } from 'node:crypto';

const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
const { WebSocketServer } = require('ws');
const { ChangeSet, Text } = require('@codemirror/state');
const { rebaseUpdates } = require('@codemirror/collab');

const arg = (name, dflt) => { const i = process.argv.indexOf(`--${name}`); return i > 0 ? process.argv[i + 1] : dflt; };
const NAME = /^[A-Za-z0-9_-]{1,100}$/;
const docs = new Map();  // name -> {updates: [{clientID, changes, json}], doc: Text, conns: Set}

function docOf(name) {
  let d = docs.get(name);
  if (!d) docs.set(name, d = { updates: [], doc: Text.empty, conns: new Set() });
  return d;
}

const isCount = (v) => Number.isSafeInteger(v) && v >= 0;
const send = (ws, obj) => ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
const refuse = (ws, code, message) => send(ws, { type: 'error', code, message });
function broadcast(d, frame) {
  const text = JSON.stringify(frame);  // encoded once for every connection
  for (const c of d.conns) c.send(text);
}

function onHello(ws, s, d, m) {
  if (typeof m.clientID !== 'string' || !m.clientID || !(m.version === null || isCount(m.version))) {
    refuse(ws, 'bad-message', 'hello needs clientID and version');
    return ws.close(4000);
  }
  s.clientID = m.clientID;
  s.user = m.user && typeof m.user === 'object' ? m.user : { name: 'Anonymous', color: '#888888' };
  const head = d.updates.length;
  const peers = [...d.conns].filter((c) => c.state.presence).map((c) => c.state.presence);
  const welcome = { type: 'welcome', session: s.session, role: 'edit', version: head, peers };
  if (m.version !== null && m.version <= head) {
    welcome.from = m.version;
    welcome.updates = d.updates.slice(m.version).map((u) => u.json);
  } else {
    welcome.doc = d.doc.toString();
  }
  d.conns.add(ws);
  send(ws, welcome);
}

function onPush(ws, s, d, m) {
  const head = d.updates.length;
  if (!isCount(m.version) || !Array.isArray(m.updates)) return refuse(ws, 'bad-message', 'push needs version and updates');
  if (m.version > head) return refuse(ws, 'bad-version', `version ${m.version} is ahead of ${head}`);
  let updates;
  try {
    updates = m.updates.map((u) => {
      if (!u || u.clientID !== s.clientID) throw new Error('an update of another clientID');
      return { clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes) };
    });
    if (m.version < head) updates = rebaseUpdates(updates, d.updates.slice(m.version));
    let doc = d.doc;
    for (const u of updates) doc = u.changes.apply(doc);  // throws on a length that does not fit: all or nothing
    d.doc = doc;
  } catch (e) {
    return refuse(ws, 'bad-changes', String(e.message));
  }
  if (!updates.length) return;
  for (const u of updates) d.updates.push({ clientID: u.clientID, changes: u.changes, json: { clientID: u.clientID, changes: u.changes.toJSON() } });
  broadcast(d, { type: 'updates', from: head, updates: d.updates.slice(head).map((u) => u.json) });
}

function onPresence(ws, s, d, m) {
  if (!isCount(m.version) || m.version > d.updates.length || !Array.isArray(m.ranges)
      || !m.ranges.every((r) => r && isCount(r.anchor) && isCount(r.head))) return refuse(ws, 'bad-message', 'bad presence');
  s.presence = { type: 'presence', session: s.session, user: s.user, version: m.version,
    ranges: m.ranges.map((r) => ({ anchor: r.anchor, head: r.head })) };
  broadcast(d, { type: 'presences', peers: [s.presence] });
}

const server = http.createServer((req, res) => {
  const m = /^\/api\/docs\/([^/?]+)$/.exec(req.url) || (req.url === '/healthz' ? [] : null);
  const d = m && m[1] ? docs.get(decodeURIComponent(m[1])) : null;
  const body = !m ? null : m[1] ? { name: m[1], version: d ? d.updates.length : 0, doc: d ? d.doc.toString() : '' } : { ok: true };
  res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body ?? { error: { code: 'not-found', message: 'no such path' } }));
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1 << 20,
  handleProtocols: (protocols) => (protocols.has('collab.v1') ? 'collab.v1' : false) });
server.on('upgrade', (req, socket, head) => {
  const m = /^\/ws\/([^/?]+)/.exec(req.url);
  if (!m || !NAME.test(m[1])) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => {
    const d = docOf(m[1]);
    const s = ws.state = { session: randomBytes(9).toString('base64url'), clientID: null, user: null, presence: null };
    ws.on('message', (data, isBinary) => {
      let msg;
      try {
        msg = isBinary ? null : JSON.parse(data.toString());
      } catch {
        return refuse(ws, 'bad-json', 'not JSON');
      }
      if (!msg || typeof msg !== 'object') return refuse(ws, 'bad-message', 'not a JSON object');
      if (s.clientID === null) return msg.type === 'hello' ? onHello(ws, s, d, msg) : (refuse(ws, 'bad-message', 'hello first'), ws.close(4000));
      if (msg.type === 'push') onPush(ws, s, d, msg);
      else if (msg.type === 'presence') onPresence(ws, s, d, msg);
      else refuse(ws, 'bad-message', `unexpected ${String(msg.type).slice(0, 40)}`);
    });
    ws.on('close', () => {
      if (d.conns.delete(ws)) broadcast(d, { type: 'leave', session: s.session });
    });
    ws.on('error', () => {});
  });
});
server.listen(Number(arg('port', 0)), arg('host', '127.0.0.1'), () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
