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

function guard(f) {
  try { return f() } catch (e) { return {error: String(e && e.message || e)} }
}

let input = JSON.parse(process.argv[2] ? readFileSync(process.argv[2], "utf8") : readFileSync(0, "utf8"))
let out = {
  results: (input.cases || []).map(c => guard(() => runCase(c))),
  sims: (input.sims || []).map(s => guard(() => simulate(s))),
}
process.stdout.write(JSON.stringify(out))
