// Send the unconfirmed edits of another, closed tab of this document: a
// record that this page adopted but cannot merge into its own editor (an
// editor has one client ID; the record was made under another).  A short
// second connection speaks for that client ID: hello at the record's
// version, rebase the record's updates over what was accepted since (as
// rebaseUpdates does, skipping updates of that client already accepted),
// push, and forget the record once the server echoes them.  The edits then
// reach this page's editor like anyone else's.

import { ChangeSet, Text } from "@codemirror/state";
import { rebaseUpdates } from "@codemirror/collab";

const TIMEOUT_MS = 20000;

/**
 * rec: {clientID, version, updates: [ChangeSetJSON], base}; resolves to
 * "sent", "rescued" (the server could not resume: `rescue` was called with
 * the text) or "failed" (the record stays for a later page).
 */
export function flushRecord({ wsUrl, rec, user, store, rescue }) {
  return new Promise((resolve) => {
    let ws;
    try {
      ws = new WebSocket(wsUrl, "collab.v1");
    } catch (_) {
      resolve("failed");
      return;
    }
    let waiting = 0;
    let pushed = false;
    let done = false;
    const finish = (result) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      try { ws.close(1000); } catch (_) { /* closing anyway */ }
      resolve(result);
    };
    const timer = setTimeout(() => finish("failed"), TIMEOUT_MS);
    const mine = rec.updates.map((json) => ({ clientID: rec.clientID, changes: ChangeSet.fromJSON(json) }));
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", clientID: rec.clientID, version: rec.version, user }));
    ws.onclose = () => finish("failed");
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      try {
        if (msg.type === "welcome") {
          if (typeof msg.doc === "string") {
            let text;
            if (typeof rec.base === "string") {
              text = mine.reduce((doc, u) => u.changes.apply(doc), Text.of(rec.base.split("\n"))).toString();
            } else {
              const pieces = [];
              for (const u of mine) u.changes.iterChanges((_a, _b, _c, _d, ins) => { if (ins.length) pieces.push(ins.toString()); });
              text = pieces.join("\n");
            }
            rescue({ text, count: mine.length, fragments: typeof rec.base !== "string" });
            store.drop(rec.clientID);
            finish("rescued");
            return;
          }
          const over = (msg.updates || []).map((u) => ({ clientID: u.clientID, changes: ChangeSet.fromJSON(u.changes) }));
          const rebased = rebaseUpdates(mine, over);
          if (!rebased.length) {
            store.drop(rec.clientID);
            finish("sent");
            return;
          }
          waiting = rebased.length;
          pushed = true;
          ws.send(JSON.stringify({
            type: "push", version: msg.version,
            updates: rebased.map((u) => ({ clientID: u.clientID, changes: u.changes.toJSON() })),
          }));
        } else if (msg.type === "updates" && pushed) {
          waiting -= msg.updates.filter((u) => u.clientID === rec.clientID).length;
          if (waiting <= 0) {
            store.drop(rec.clientID);
            finish("sent");
          }
        } else if (msg.type === "error") {
          console.warn("collab: could not send the edits of a closed tab:", msg);
          finish("failed");
        }
      } catch (e) {
        console.error("collab: flushing a closed tab's edits failed", e);
        finish("failed");
      }
    };
  });
}
