// The HTTP API as the pages call it (docs/protocol.md, "HTTP API"): URLs,
// the token in a header (auth.js), errors as ApiError with the server's own
// words, and restores, whose versions this page remembers so that it can
// tell its own restores from other people's.
//
// What always holds here:
//  - no URL built here carries a token: requests send it in a header;
//  - state-changing requests send JSON with Content-Type: application/json
//    (the server refuses anything else: httpguard);
//  - a restore made from this page is known as ours before the version it
//    made is looked at (`wasOwnRestore` waits for restores still in flight);
//  - "Undo the restore" is one protocol wherever it is offered (`undoRestore`:
//    it asks first when edits came after the restore).

import { authFetch, adminToken, withAuth } from "./auth.js";

export class ApiError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** `/api/docs/{doc}{tail}?params` (no token: it goes in a header). */
export function apiUrl(docName, tail = "", params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, String(v));
  const s = q.toString();
  return `/api/docs/${encodeURIComponent(docName)}${tail}${s ? `?${s}` : ""}`;
}

/** fetch with the page's token (or the admin's, `admin: true`); resolves to the Response when ok, else throws ApiError. */
export async function api(url, init = {}) {
  const { admin, json, ...rest } = init;
  const req = json === undefined ? rest : {
    ...rest,
    headers: { ...(rest.headers || {}), "Content-Type": "application/json" },
    body: JSON.stringify(json),
  };
  let r;
  try {
    r = admin && adminToken ? await fetch(url, withAuth(req, adminToken)) : await authFetch(url, req);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError("The server could not be reached.");
  }
  if (r.ok) return r;
  let message = `${r.status} ${r.statusText}`;
  let code = "";
  try {
    const body = await r.json();
    if (body && body.error && body.error.message) message = body.error.message;
    if (body && body.error && body.error.code) code = body.error.code;
  } catch (_) { /* not JSON */ }
  throw new ApiError(message, r.status, code);
}

/** GET and parse JSON. */
export async function getJSON(url, init) {
  return (await api(url, init)).json();
}

// ---- restores -----------------------------------------------------------------

const ownVersions = new Set();
const inFlight = new Set();

/**
 * POST /restore: a new update bringing back the text of `version`; resolves to {version, unchanged}:
 * the new version, or with `unchanged` the current one (the text already was that version's: the
 * server made no update, so `version` may be someone else's). `by` {author, person, color}: who
 * restores, as this page's hello says (one person, one colour).
 */
export async function restoreVersion(docName, version, { author, person, color }) {
  const call = (async () => {
    const r = await api(apiUrl(docName, "/restore"), { method: "POST", json: { version, author, person, color } });
    const data = await r.json();
    const unchanged = data.unchanged === true;
    if (!unchanged) ownVersions.add(data.version);
    return { version: data.version, unchanged };
  })();
  inFlight.add(call);
  try {
    return await call;
  } finally {
    inFlight.delete(call);
  }
}

/** The button's label until it asks (and again when the question is taken back). */
export const UNDO_RESTORE = "Undo the restore";

/** The "Undo the restore" buttons asking their question now, with the Escape listener that takes it back. */
const asking = new WeakMap();

/**
 * "Undo the restore", as the History panel's note after this page's own restore and everyone else's
 * restore notice offer it: restores the version before the restore that made `made`. `head`: the
 * page's synced version now; `by` as for restoreVersion; `button` the "Undo the restore" button.
 *
 * When edits came after the restore, the first click only asks: the button says "Undo anyway" and
 * `ask(text)` is told what else the undo takes away; until the undo is sent, Escape on the button takes
 * the question back (the button as before, `ask("")`), and goes no further (a panel it is in stays open). `begin()`,
 * called before the undo is sent: false sends nothing (the page has another restore under way).
 *
 * Resolves to null when nothing was sent (it asked, or `begin` said no), else to {ok, text}: what happened,
 * for the caller to say; the button is gone after an undo, enabled again after a failure.
 */
export async function undoRestore({ docName, made, head, by, button, ask, begin = () => true }) {
  const back = made - 1;
  const later = head - made;
  if (later > 0 && button.dataset.confirm !== "yes") {
    button.dataset.confirm = "yes";
    button.textContent = "Undo anyway";
    ask(`${later === 1 ? "1 edit" : `${later} edits`} came after the restore. Undoing it brings back version ${back}`
      + ` as a whole, so ${later === 1 ? "that edit is" : "those are"} undone too.`);
    const takeBack = (ev) => {
      if (ev.key !== "Escape" || ev.defaultPrevented || button.dataset.confirm !== "yes") return;
      ev.preventDefault();
      ev.stopPropagation();
      delete button.dataset.confirm;
      button.textContent = UNDO_RESTORE;
      button.removeEventListener("keydown", takeBack);
      asking.delete(button);
      ask("");
    };
    button.addEventListener("keydown", takeBack);
    asking.set(button, takeBack);
    return null;
  }
  if (!begin()) return null;
  const question = asking.get(button);
  if (question) {  // answered: Escape no longer takes it back (nor erases what the undo leads to, a failure)
    button.removeEventListener("keydown", question);
    asking.delete(button);
  }
  button.disabled = true;
  try {
    const { version, unchanged } = await restoreVersion(docName, back, by);
    button.remove();
    return {
      ok: true,
      text: unchanged ? `Version ${back} is already the text: nothing to undo.` : `Undone: version ${back} is back (now version ${version}).`,
    };
  } catch (e) {
    button.disabled = false;
    return { ok: false, text: `Could not undo the restore: ${e.message}` };
  }
}

/** Whether the update that made `version` came from a restore this page asked for. */
export async function wasOwnRestore(version) {
  await Promise.allSettled([...inFlight]);
  return ownVersions.has(version);
}

/** One history entry (the update that made `version`), or null. */
export async function historyEntry(docName, version) {
  const { entries } = await getJSON(apiUrl(docName, "/history", { before: version + 1, limit: 1 }));
  return entries && entries[0] && entries[0].version === version ? entries[0] : null;
}

/** Download `url` (fetched with the token) as `filename`: a link's href could not carry the header. */
export async function download(url, filename) {
  saveBlob(await (await api(url)).blob(), filename);
}

/** Save `blob` as a download named `filename`. */
export function saveBlob(blob, filename) {
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}
