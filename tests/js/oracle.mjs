// Differential-test oracle: the real @codemirror/state and @codemirror/collab.
//
// Usage: node oracle.mjs INPUT.json  (or the JSON on stdin); writes one JSON
// object to stdout. Input: {"cases": [...], "sims": [...]}. Output:
// {"results": [...], "sims": [...]}, one entry per input, in order.
//
// Each case is {"op": ...} with
//   roundtrip {json}                 -> {json, length, newLength}
//   apply     {doc, json}            -> {text}
//   map       {doc, a, b, before}    -> {json, text}   text = a.map(b).apply(b.apply(doc))
//   compose   {doc, a, b}            -> {json, text, stepText}
//   mappos    {json, pos, assoc}     -> {pos}
//   rebase    {updates, over}        -> {updates}
// A case whose CodeMirror call throws gives {"error": message} instead.
//
// Each sim is {"seed", "doc", "peers", "steps", "mode"}: an authority plus
// `peers` EditorStates with collab() making random edits. mode "cm" is the
// model @codemirror/collab's own tests use: a push is handled as soon as it is
// sent, and a peer receives everything it lacks in one receiveUpdates call
// (peers still re-push updates that were already accepted). mode "network" is
// a WebSocket server: pushes wait in flight and are handled in random order,
// each accepted batch is its own frame to each peer, peers resend unconfirmed
// updates, and disconnects lose acknowledgements (catch-up on reconnect).
// It returns {initial, final, accepted, events, converged, peerDocs, crash}
// (crash: the message if a CodeMirror call threw mid-run); each
// event is one push handled by the authority:
//   {version, at, updates, result}  (over = accepted.slice(version, at))
//   {version, at, updates, rejected: true}  (version in the future)
// All changes travel as JSON, as on the wire.
//
// Each serverSim is {"seed", "doc", "peers", "steps", "batched"}: the network
// mode above, with an authority that behaves like collab's server
// (collab/sequencer.py) instead of CodeMirror's reference one. Accepted
// updates wait for the store; a commit takes them as one batch and, once
// durable, broadcasts it as one frame; a push is rebased with rebaseUpdates
// group by group along the frames broadcast since its version plus the batch
// being written; a reconnecting peer is sent what it missed in those same
// frames. `batched`: commits happen when the schedule says so (else each
// accepted push is committed at once). With "resume": "one" it is the server
// as it was before: a reconnecting peer gets what it missed composed into one
// frame (the welcome), and a push is rebased along the frames its own
// connection was sent (the welcome's end and each broadcast since), even
// those the connection lost. Returns {initial, final, peerDocs,
// converged, crash, drift, accepted, events}; drift is the first time a peer's
// text was not the authority's text at its version plus its unconfirmed
// updates; events, in order:
//   {type: "push", peer, version, updates, result} (or rejected: true)
//   {type: "take"}              the store takes every pending update
//   {type: "done", version}     that batch is durable and broadcast
//   {type: "resume", peer, from, frames: [[from, count], ...]}
//
// Each replay is {"doc", "peers", "actions"}: real EditorStates with collab()
// fed exactly the given inputs, to compare a model of the client with the
// real one. Actions: {"edit": i, "changes"}, {"receive": i, "updates"} (one
// receiveUpdates call), {"report": i}. Returns {"reports": [...]}, one per
// report action: {peer, version, doc, unconfirmed: [ChangeSetJSON]}.

import {readFileSync} from "node:fs"
import {ChangeSet, EditorState, Text} from "@codemirror/state"
import {collab, receiveUpdates, sendableUpdates, getSyncedVersion, rebaseUpdates} from "@codemirror/collab"

const docText = s => Text.of(s.split("\n"))
const cs = json => ChangeSet.fromJSON(json)
const updJSON = u => ({clientID: u.clientID, changes: u.changes.toJSON()})
const updFromJSON = u => ({clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes)})

function runCase(c) {
  switch (c.op) {
    case "roundtrip": {
      let set = cs(c.json)
      return {json: set.toJSON(), length: set.length, newLength: set.newLength}
    }
    case "apply":
      return {text: cs(c.json).apply(docText(c.doc)).toString()}
    case "map": {
      let a = cs(c.a), b = cs(c.b), doc = docText(c.doc)
      let mapped = a.map(b, c.before)
      return {json: mapped.toJSON(), text: mapped.apply(b.apply(doc)).toString()}
    }
    case "compose": {
      let a = cs(c.a), b = cs(c.b), doc = docText(c.doc)
      let composed = a.compose(b)
      return {json: composed.toJSON(), text: composed.apply(doc).toString(),
              stepText: b.apply(a.apply(doc)).toString()}
    }
    case "mappos":
      return {pos: cs(c.json).mapPos(c.pos, c.assoc)}
    case "rebase":
      return {updates: rebaseUpdates(c.updates.map(updFromJSON), c.over.map(updFromJSON)).map(updJSON)}
    default:
      throw new Error("unknown op " + c.op)
  }
}

// mulberry32: small seeded PRNG so a sim is replayable from its seed.
function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const PIECES = ["a", "b", "xy", "é", "中", "😀", "𝒳", "\n", " ", "Q😀"]

function simulate(spec) {
  let rnd = prng(spec.seed)
  let cm = spec.mode == "cm"
  let int = n => Math.floor(rnd() * n)
  let pick = arr => arr[int(arr.length)]

  let accepted = []            // [{clientID, changes (ChangeSet)}]
  let authDoc = docText(spec.doc)
  let events = []
  let peers = []
  for (let i = 0; i < spec.peers; i++) {
    peers.push({
      id: "peer" + i,
      state: EditorState.create({doc: spec.doc, extensions: [collab({clientID: "peer" + i, startVersion: 0})]}),
      inbox: [],               // batches {from, updates (JSON)} in order
      connected: true,
    })
  }
  let inflight = []            // pushes {peer, version, updates (JSON)}

  // A random edit on a peer's current text; never cuts a surrogate pair.
  function edit(peer) {
    let str = peer.state.doc.toString()
    let okPos = p => !(p > 0 && p < str.length && /[\uDC00-\uDFFF]/.test(str[p]))
    let randPos = () => { let p = int(str.length + 1); while (!okPos(p)) p--; return p }
    let specs = [], n = 1 + int(3)
    for (let k = 0; k < n; k++) {
      let from = randPos(), to = from
      if (rnd() < 0.45 && str.length) { to = Math.min(str.length, from + 1 + int(4)); while (!okPos(to)) to++ }
      let insert = rnd() < 0.75 || to == from ? Array.from({length: 1 + int(3)}, () => pick(PIECES)).join("") : ""
      specs.push({from, to, insert})
    }
    peer.state = peer.state.update({changes: specs}).state
  }

  function push(peer) {
    let sendable = sendableUpdates(peer.state)
    if (!sendable.length) return
    let p = {peer, version: getSyncedVersion(peer.state), updates: sendable.map(updJSON)}
    if (cm) handlePush(p)
    else inflight.push(p)
  }

  function handlePush(p) {
    let at = accepted.length
    if (p.version > at) { events.push({version: p.version, at, updates: p.updates, rejected: true}); return }
    let result, doc = authDoc
    try {
      result = rebaseUpdates(p.updates.map(updFromJSON), accepted.slice(p.version))
      for (let u of result) doc = u.changes.apply(doc)
    } catch (e) {
      // The authority itself cannot take this push (CodeMirror throws).
      events.push({version: p.version, at, updates: p.updates, error: String(e.message || e)})
      throw new Error("authority: " + (e.message || e))
    }
    let resultJSON = result.map(updJSON)
    events.push({version: p.version, at, updates: p.updates, result: resultJSON})
    if (!result.length) return
    authDoc = doc
    for (let u of result) accepted.push({clientID: u.clientID, changes: u.changes})
    for (let peer of peers) if (peer.connected) peer.inbox.push({from: at, updates: resultJSON})
  }

  function deliver(peer) {
    if (cm) {                    // everything the peer lacks, in one call
      let v = getSyncedVersion(peer.state)
      if (v < accepted.length) peer.state = receiveUpdates(peer.state, accepted.slice(v)).state
      peer.inbox = []
      return
    }
    let batch = peer.inbox.shift()
    let version = getSyncedVersion(peer.state)
    let end = batch.from + batch.updates.length
    if (end <= version) return
    if (batch.from > version) throw new Error(`gap: ${peer.id} at ${version} got batch from ${batch.from}`)
    let ups = batch.updates.slice(version - batch.from).map(updFromJSON)
    peer.state = receiveUpdates(peer.state, ups).state
  }

  function disconnect(peer) {
    peer.connected = false
    peer.inbox = []
    // Its pushes still in flight are lost or still arrive (an ack lost).
    if (rnd() < 0.5) inflight = inflight.filter(p => p.peer != peer)
  }

  function reconnect(peer) {
    peer.connected = true
    let v = getSyncedVersion(peer.state)
    peer.inbox.push({from: v, updates: accepted.slice(v).map(updJSON)})
    if (rnd() < 0.7) push(peer)   // resend everything unconfirmed
  }

  function run() {
    for (let step = 0; step < spec.steps; step++) {
      let peer = pick(peers), r = rnd()
      if (r < 0.3) edit(peer)
      else if (r < 0.48) push(peer)
      else if (r < 0.7) { if (inflight.length) handlePush(inflight.splice(int(inflight.length), 1)[0]) }
      else if (r < 0.94) { if (peer.inbox.length) deliver(peer) }
      else if (cm) push(peer)    // a re-push, as after a lost acknowledgement
      else if (r < 0.97) { if (peer.connected) disconnect(peer) }
      else if (!peer.connected) reconnect(peer)
    }
    // Settle: everyone reconnects, pushes and receives until nothing is left.
    for (let peer of peers) if (!peer.connected) reconnect(peer)
    for (let round = 0; round < 100; round++) {
      while (inflight.length) handlePush(inflight.splice(int(inflight.length), 1)[0])
      for (let peer of peers) while (peer.inbox.length) deliver(peer)
      let pending = peers.filter(p => sendableUpdates(p.state).length)
      if (!pending.length) break
      for (let peer of pending) push(peer)
    }
  }

  let crash = null
  try {
    run()
  } catch (e) {
    // A stock client (or the authority) threw: keep what happened so far.
    crash = String(e && e.message || e)
  }
  let final = authDoc.toString()
  let peerDocs = peers.map(p => p.state.doc.toString())
  return {
    initial: spec.doc, final, peerDocs, crash,
    converged: !crash && peerDocs.every(d => d == final) && peers.every(p => getSyncedVersion(p.state) == accepted.length),
    accepted: accepted.map(updJSON), events,
  }
}

function simulateServer(spec) {
  let rnd = prng(spec.seed)
  let int = n => Math.floor(rnd() * n)
  let pick = arr => arr[int(arr.length)]

  let accepted = []            // [{clientID, changes}], committed or not
  let texts = [docText(spec.doc)]  // the authority's text at each version
  let committed = 0, frameEnds = [], writing = null  // writing: end of the batch being written
  let events = [], drift = null
  let peers = []
  for (let i = 0; i < spec.peers; i++) {
    peers.push({
      id: "peer" + i,
      state: EditorState.create({doc: spec.doc, extensions: [collab({clientID: "peer" + i, startVersion: 0})]}),
      inbox: [], connected: true,
      frameEnds: [],           // resume "one": the ends of the frames its connection was sent
    })
  }
  let inflight = []
  let oneWelcome = spec.resume == "one"

  function edit(peer) {       // as in simulate()
    let str = peer.state.doc.toString()
    let okPos = p => !(p > 0 && p < str.length && /[\uDC00-\uDFFF]/.test(str[p]))
    let randPos = () => { let p = int(str.length + 1); while (!okPos(p)) p--; return p }
    let specs = [], n = 1 + int(3)
    for (let k = 0; k < n; k++) {
      let from = randPos(), to = from
      if (rnd() < 0.45 && str.length) { to = Math.min(str.length, from + 1 + int(4)); while (!okPos(to)) to++ }
      let insert = rnd() < 0.75 || to == from ? Array.from({length: 1 + int(3)}, () => pick(PIECES)).join("") : ""
      specs.push({from, to, insert})
    }
    peer.state = peer.state.update({changes: specs}).state
  }

  function check(peer) {
    if (drift) return
    let v = getSyncedVersion(peer.state), text = texts[v], doc = peer.state.doc.toString()
    try { for (let u of sendableUpdates(peer.state)) text = u.changes.apply(text) } catch (e) { text = null }
    if (text == null || text.toString() != doc)
      drift = {peer: peer.id, version: v, doc, expected: text && text.toString()}
  }

  function push(peer) {
    let sendable = sendableUpdates(peer.state)
    if (sendable.length) inflight.push({peer, version: getSyncedVersion(peer.state), updates: sendable.map(updJSON)})
  }

  function handlePush(p) {
    let head = accepted.length
    if (p.version > head) { events.push({type: "push", peer: p.peer.id, version: p.version, updates: p.updates, rejected: true}); return }
    let ends = (oneWelcome ? p.peer.frameEnds : frameEnds).filter(e => p.version < e && e < head)
    if (writing != null && p.version < writing && writing < head) ends.push(writing)
    let updates = p.updates.map(updFromJSON), start = p.version
    for (let end of [...ends, head]) { updates = rebaseUpdates(updates, accepted.slice(start, end)); start = end }
    let doc = texts[head]
    let added = updates.map(u => { doc = u.changes.apply(doc); texts.push(doc); return {clientID: u.clientID, changes: u.changes} })
    accepted.push(...added)
    events.push({type: "push", peer: p.peer.id, version: p.version, updates: p.updates, result: added.map(updJSON)})
    if (added.length && !spec.batched) while (commitStep()) {}
  }

  // The store's next move: finish the batch it writes (broadcast), or take the pending ones.
  function commitStep() {
    if (writing != null) {
      let from = committed, batch = accepted.slice(from, writing).map(updJSON)
      committed = writing; writing = null
      frameEnds.push(committed)
      events.push({type: "done", version: committed})
      for (let peer of peers) if (peer.connected) { peer.inbox.push({from, updates: batch}); peer.frameEnds.push(committed) }
      return true
    }
    if (accepted.length > committed) { writing = accepted.length; events.push({type: "take"}); return true }
    return false
  }

  function deliver(peer) {
    let batch = peer.inbox.shift()
    let version = getSyncedVersion(peer.state)
    if (batch.from + batch.updates.length <= version) return
    if (batch.from > version) throw new Error(`gap: ${peer.id} at ${version} got batch from ${batch.from}`)
    peer.state = receiveUpdates(peer.state, batch.updates.slice(version - batch.from).map(updFromJSON)).state
    check(peer)
  }

  function disconnect(peer) {
    peer.connected = false
    peer.inbox = []            // frames sent but not read are lost
    let v = getSyncedVersion(peer.state)
    peer.frameEnds = peer.frameEnds.filter(e => e <= v)
    if (rnd() < 0.5) inflight = inflight.filter(p => p.peer != peer)
  }

  function reconnect(peer) {   // hello at the synced version: the missed updates, in their frames
    peer.connected = true
    let v = getSyncedVersion(peer.state), start = v, frames = []
    peer.frameEnds.push(committed)
    for (let end of [...(oneWelcome ? [] : frameEnds.filter(e => v < e && e < committed)), committed]) {
      if (end > start) { peer.inbox.push({from: start, updates: accepted.slice(start, end).map(updJSON)}); frames.push([start, end - start]) }
      start = Math.max(start, end)
    }
    events.push({type: "resume", peer: peer.id, from: v, frames})
    if (rnd() < 0.7) push(peer)
  }

  function run() {
    for (let step = 0; step < spec.steps; step++) {
      let peer = pick(peers), r = rnd()
      if (r < 0.3) edit(peer)
      else if (r < 0.48) push(peer)
      else if (r < 0.7) {
        if (spec.batched && rnd() < 0.4) commitStep()
        else if (inflight.length) handlePush(inflight.splice(int(inflight.length), 1)[0])
      }
      else if (r < 0.94) { if (peer.inbox.length) deliver(peer) }
      else if (r < 0.97) { if (peer.connected) disconnect(peer) }
      else if (!peer.connected) reconnect(peer)
    }
    for (let peer of peers) if (!peer.connected) reconnect(peer)
    for (let round = 0; round < 100; round++) {
      while (inflight.length) handlePush(inflight.splice(int(inflight.length), 1)[0])
      while (commitStep()) {}
      for (let peer of peers) while (peer.inbox.length) deliver(peer)
      let pending = peers.filter(p => sendableUpdates(p.state).length)
      if (!pending.length) break
      for (let peer of pending) push(peer)
    }
  }

  let crash = null
  try { run() } catch (e) { crash = String(e && e.message || e) }
  let final = texts[texts.length - 1].toString()
  let peerDocs = peers.map(p => p.state.doc.toString())
  return {
    initial: spec.doc, final, peerDocs, crash, drift,
    converged: !crash && !drift && committed == accepted.length && peerDocs.every(d => d == final)
      && peers.every(p => getSyncedVersion(p.state) == accepted.length && !sendableUpdates(p.state).length),
    accepted: accepted.map(updJSON), events,
  }
}

function replay(spec) {
  let states = []
  for (let i = 0; i < spec.peers; i++)
    states.push(EditorState.create({doc: spec.doc, extensions: [collab({clientID: "p" + i, startVersion: 0})]}))
  let reports = []
  for (let a of spec.actions) {
    if ("edit" in a) states[a.edit] = states[a.edit].update({changes: cs(a.changes)}).state
    else if ("receive" in a) {
      // Updates that do not fit the synced text would make receiveUpdates loop forever.
      let st = states[a.receive], unconfirmed = sendableUpdates(st)
      let length = unconfirmed.length ? unconfirmed[0].changes.length : st.doc.length
      let updates = a.updates.map(updFromJSON)
      for (let u of updates) {
        if (u.changes.length != length) throw new Error(`peer ${a.receive}: an update of length ${u.changes.length} for a text of ${length}`)
        length = u.changes.newLength
      }
      states[a.receive] = receiveUpdates(st, updates).state
    }
    else if ("report" in a) {
      let st = states[a.report]
      reports.push({peer: a.report, version: getSyncedVersion(st), doc: st.doc.toString(),
                    unconfirmed: sendableUpdates(st).map(u => u.changes.toJSON())})
    } else throw new Error("unknown replay action " + JSON.stringify(a))
  }
  return {reports}
}

function guard(f) {
  try { return f() } catch (e) { return {error: String(e && e.message || e)} }
}

let input = JSON.parse(process.argv[2] ? readFileSync(process.argv[2], "utf8") : readFileSync(0, "utf8"))
let out = {
  results: (input.cases || []).map(c => guard(() => runCase(c))),
  sims: (input.sims || []).map(s => guard(() => simulate(s))),
}
if (input.serverSims) out.serverSims = input.serverSims.map(s => guard(() => simulateServer(s)))
if (input.replays) out.replays = input.replays.map(r => guard(() => replay(r)))
process.stdout.write(JSON.stringify(out))
