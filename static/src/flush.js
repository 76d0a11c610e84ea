// Send the unconfirmed edits of another, closed tab of this document: a
// record that this page adopted but cannot merge into its own editor (an
// editor has one client ID; the record was made under another).  A short
// second connection speaks for that client ID through its own core Session
// (core.js): hello at the record's version, the updates accepted since are
// received as any client receives them (which rebases the record's edits
// and drops those the server already has), pushes split to the server's
// limits, and the record is forgotten once the server has confirmed them
// all.  The edits then reach this page's editor like anyone else's.
//
// Without the record's base text the edits can still be rebased and pushed
// (only lengths matter for that: the Session is told so); if the server can
// no longer resume from the record's version, what was typed is rescued.

import { Session, SUBPROTOCOL } from "./core.js";

const TIMEOUT_MS = 20000;

/**
 * rec: {clientID, version, updates: [ChangeSetJSON], base, resumeKey, docId} (a kept record); user and
 * person: who sends them (this page's person); limits: the page's; resolves to "sent", "rescued" (the server could not resume:
 * `rescue` was called with the text) or "failed" (the record stays for a
 * later page).
 */
export function flushRecord({ wsUrl, rec, user, person, store, rescue, limits }) {
  return new Promise((resolve) => {
    let core;
    let ws;
    try {
      core = new Session({ clientID: rec.clientID, user, person, limits, restore: rec, blindRestore: true, presence: false });
      ws = new WebSocket(wsUrl, SUBPROTOCOL);
    } catch (e) {
      console.warn("collab: cannot send the edits of a closed tab:", e);
      resolve("failed");
      return;
    }
    let done = false;
    let wakeTimer = null;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(wakeTimer);
      try { ws.close(1000); } catch (_) { /* closing anyway */ }
      resolve(result);
    };
    const timer = setTimeout(() => finish("failed"), TIMEOUT_MS);
    const run = (step) => {
      for (const frame of step.send) ws.send(JSON.stringify(frame));
      for (const e of step.events) {
        if (e.type === "rescue") {
          rescue({ text: e.text, count: e.count, fragments: e.fragments, refused: e.refused ?? null });
          store.drop(rec.clientID);
          return finish("rescued");
        }
        if ((e.type === "error" && !e.quiet) || e.type === "problem") {
          console.warn("collab: could not send the edits of a closed tab:", e.text);
          return finish("failed");
        }
      }
      if (step.reconnect || step.stop !== null) return finish("failed");
      if (core.welcomed && core.pending === 0) {
        store.drop(rec.clientID);
        return finish("sent");
      }
      if (step.wakeAt !== null) {
        clearTimeout(wakeTimer);
        wakeTimer = setTimeout(() => run(core.tick(performance.now())), Math.max(0, step.wakeAt - performance.now()));
      }
    };
    ws.onopen = () => run(core.opened(performance.now()));
    ws.onclose = () => finish("failed");
    ws.onmessage = (ev) => {
      if (done) return;
      try {
        run(core.receive(ev.data, performance.now()));
      } catch (e) {
        console.error("collab: flushing a closed tab's edits failed", e);
        finish("failed");
      }
    };
  });
}
