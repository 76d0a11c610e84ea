// Unconfirmed edits kept in localStorage so that they survive a reload, a
// closed tab or a crash, and are pushed the next time the document is opened.
//
// Per document and per client ID (one tab = one client ID) two keys:
//   collab:pending:<doc>:<clientID>  {clientID, version, updates: [ChangeSetJSON], savedAt, resumeKey, heardAt, docId}
//   collab:base:<doc>:<clientID>     {version, text}: the text at `version`
// `updates` are the tab's unconfirmed updates, oldest first, based on
// `version`.  They are re-pushed with the same client ID, so the server's
// de-duplication (rebaseUpdates skips updates of that client it already
// accepted) makes a re-push of already-accepted edits harmless.  `resumeKey`
// (from the server's last welcome to that client ID, when it gave one) lets
// the page that adopts the record prove the client ID is its own.  `heardAt`
// (Date.now()) is when the tab last heard from the server about this document
// under this name: a tab offline types on, and saves, long after it.  `docId`
// (the server's welcome.docId) says which document `version` is of: if the
// document was deleted and another made under its name, the server sends
// that one's whole text instead of resuming, and the edits are rescued.
//
// A record belongs to the live tab that writes it.  Another page may adopt a
// record only when that tab is gone: with the Web Locks API (secure contexts,
// including 127.0.0.1/localhost) each tab holds the lock "collab:<clientID>"
// for its lifetime; without it, a heartbeat key that the tab removes on
// pagehide and refreshes every few seconds.
//
// A document renamed meanwhile takes its records with it: a live tab moves
// its own when it hears of the rename (`moveTo`); the next page of the
// document moves those left under a former name (`adoptFrom`, with the
// names the server says it had): those whose tab last heard from the server
// before the rename (a tab that heard from it since knew the new name, or
// wrote for another document given the old name).

const PENDING = "collab:pending:";
const BASE = "collab:base:";
const ALIVE = "collab:alive:";
const HEARTBEAT_MS = 5000;
const STALE_MS = 120000; // background tabs may only run timers once a minute
const CONFIRM_MS = 150; // without Web Locks: how long a page waits for a rival's mark before it keeps an ID

function read(key) {
  try {
    return JSON.parse(localStorage.getItem(key));
  } catch (_) {
    return null;
  }
}

/**
 * When the tab that kept record `rec` last heard from the server: its `heardAt`, or for a record kept
 * before there was one, when it was saved; null if neither is known.
 */
export function heardAt(rec) {
  if (typeof rec.heardAt === "number") return rec.heardAt;
  return typeof rec.savedAt === "number" ? rec.savedAt : null;
}

/** The client IDs with a `prefix` record (PENDING or BASE) of document `doc`. */
function recordIDs(prefix, doc) {
  const start = `${prefix}${doc}:`;
  const ids = [];
  for (let i = 0; i < localStorage.length; i++) {
    const key = localStorage.key(i);
    if (key && key.startsWith(start)) ids.push(key.slice(start.length));
  }
  return ids;
}

/** Move client `id`'s records (its updates and its base text) from document `from` to document `to`. */
function moveRecord(from, to, id) {
  for (const prefix of [PENDING, BASE]) {
    const value = localStorage.getItem(`${prefix}${from}:${id}`);
    if (value === null) continue;
    try {
      localStorage.setItem(`${prefix}${to}:${id}`, value);
      localStorage.removeItem(`${prefix}${from}:${id}`);
    } catch (_) { /* storage full: the record stays under the old name */ }
  }
}

/** The names of the Web Locks held or asked for in this browser (null without the Web Locks API). */
async function heldLocks() {
  if (!navigator.locks) return null;
  try {
    const q = await navigator.locks.query();
    return new Set([...(q.held || []), ...(q.pending || [])].map((l) => l.name));
  } catch (_) {
    return null;
  }
}

export class PendingStore {
  constructor(docName) {
    this.doc = docName;
    this.clientID = null;
    this.baseVersion = null; // version of the base text last written
    this.heartbeat = null;
    this.held = new Set(); // IDs this page holds (heartbeat fallback only)
    this.page = Math.random().toString(36).slice(2, 12); // this page's mark on what it holds (fallback only)
    this.lastError = null;
  }

  pendingKey(id) { return `${PENDING}${this.doc}:${id}`; }
  baseKey(id) { return `${BASE}${this.doc}:${id}`; }

  /** Records of this document that no live tab owns, newest first. */
  async orphans() {
    const held = await heldLocks();
    const out = [];
    for (const id of recordIDs(PENDING, this.doc)) {
      if (this.ownedElsewhere(held, id)) continue;
      const rec = read(this.pendingKey(id));
      if (!rec || !Array.isArray(rec.updates) || typeof rec.version !== "number") {
        localStorage.removeItem(this.pendingKey(id));
        localStorage.removeItem(this.baseKey(id));
        continue;
      }
      const base = read(this.baseKey(id));
      out.push({ ...rec, clientID: id, base: base && base.version === rec.version ? base.text : null });
    }
    out.sort((a, b) => (b.savedAt || 0) - (a.savedAt || 0));
    return out;
  }

  /** The client IDs of this document's records in storage (cheap: no parsing, no lock query). */
  recordIDs() {
    return recordIDs(PENDING, this.doc);
  }

  /** Names of the other documents this browser keeps records of. */
  otherDocs() {
    const docs = new Set();
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i);
      if (!key || !key.startsWith(PENDING)) continue;
      const doc = key.slice(PENDING.length, key.indexOf(":", PENDING.length)); // names hold no ':'
      if (doc && doc !== this.doc) docs.add(doc);
    }
    return docs;
  }

  /**
   * This document was called `name` until `untilMs` (it was renamed since): the records kept under
   * that name by tabs that last heard from the server before then are its own, and move here (with
   * their base texts), but for those a live tab still writes (it moves them itself when it hears of
   * the rename). A tab that was offline then saved its record later, as it typed or closed: when it
   * saved does not tell (a record without `heardAt`, from before it was kept: when it was saved).
   */
  async adoptFrom(name, untilMs) {
    const held = await heldLocks();
    for (const id of recordIDs(PENDING, name)) {
      if (this.ownedElsewhere(held, id)) continue;
      const rec = read(`${PENDING}${name}:${id}`);
      if (rec && (heardAt(rec) ?? 0) < untilMs) moveRecord(name, this.doc, id);
    }
  }

  /** Whether a live page owns `id`: it holds its Web Lock (`held`, from heldLocks), or without them, its mark is fresh. */
  ownedElsewhere(held, id) {
    return held ? held.has(`collab:${id}`) : this.aliveElsewhere(id);
  }

  aliveElsewhere(id) {
    const [t, page] = (localStorage.getItem(ALIVE + id) || "").split(":");
    return Number(t) > 0 && Date.now() - Number(t) < STALE_MS && page !== this.page;
  }

  /** Take ownership of `id` (our own fresh ID or an adopted one). Resolves false if another tab got it first. */
  async claim(id) {
    if (!(await this.acquire(id))) return false;
    this.clientID = id;
    this.baseVersion = null;
    this.beat();
    if (!this.heartbeat) this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    return true;
  }

  /** Hold `id` for this page's lifetime so that no other page adopts it too. */
  async acquire(id) {
    if (navigator.locks) {
      const got = await new Promise((resolve) => {
        navigator.locks.request(`collab:${id}`, { ifAvailable: true }, (lock) => {
          resolve(!!lock);
          return lock ? new Promise(() => {}) : undefined; // hold until the page goes away
        }).catch(() => resolve(false));
      });
      return got;
    }
    // Without locks, two pages may both see `id` free and both take it: each writes its own mark, waits
    // for the other's write to land, and keeps `id` only if the mark left is its own.
    if (this.aliveElsewhere(id)) return false;
    this.held.add(id);
    this.beat();
    await new Promise((resolve) => setTimeout(resolve, CONFIRM_MS));
    if (this.aliveElsewhere(id)) {
      this.held.delete(id);
      return false;
    }
    this.beat();
    return true;
  }

  beat() {
    if (navigator.locks) return;
    const now = `${Date.now()}:${this.page}`;
    for (const id of this.held) {
      try { localStorage.setItem(ALIVE + id, now); } catch (_) { /* ignore */ }
    }
  }

  /** Called on pagehide: a reload or a new tab may adopt our records at once. */
  release() {
    for (const id of this.held) {
      if ((localStorage.getItem(ALIVE + id) || "").endsWith(`:${this.page}`)) localStorage.removeItem(ALIVE + id);
    }
  }

  /** Whether this page has a record stored now. */
  hasRecord() {
    return this.baseVersion !== null;
  }

  /**
   * Store the unconfirmed updates (ChangeSets) based on `version`, whose text is `baseText()`;
   * `heardAt`: when this tab last heard from the server (Date.now(), or null); `docId`: the document
   * `version` is of (the server's welcome.docId, or null).
   */
  save(version, updates, baseText, resumeKey = null, heardAt = null, docId = null) {
    const id = this.clientID;
    if (!id) return;
    try {
      if (!updates.length) {
        localStorage.removeItem(this.pendingKey(id));
        localStorage.removeItem(this.baseKey(id));
        this.baseVersion = null;
      } else {
        if (this.baseVersion !== version) {
          localStorage.setItem(this.baseKey(id), JSON.stringify({ version, text: baseText() }));
          this.baseVersion = version;
        }
        localStorage.setItem(this.pendingKey(id), JSON.stringify({
          clientID: id, version, savedAt: Date.now(),
          updates: updates.map((u) => u.changes.toJSON()),
          ...(typeof resumeKey === "string" ? { resumeKey } : {}),
          ...(typeof heardAt === "number" ? { heardAt } : {}),
          ...(typeof docId === "string" ? { docId } : {}),
        }));
      }
      this.lastError = null;
    } catch (e) {
      // Quota exceeded: the edits are still on screen and will be sent; they
      // just would not survive a closed tab.  The page says so (sync.js storageChecked).
      this.lastError = e;
    }
  }

  /** The document was renamed (same document, same versions): its records move to the new name, for the page that opens it there. */
  moveTo(newName) {
    for (const id of new Set([...recordIDs(PENDING, this.doc), ...recordIDs(BASE, this.doc)])) {
      moveRecord(this.doc, newName, id);
    }
    this.doc = newName;
  }

  /** Forget an adopted record (after its edits were confirmed or rescued). */
  drop(id) {
    localStorage.removeItem(this.pendingKey(id));
    localStorage.removeItem(this.baseKey(id));
  }
}
