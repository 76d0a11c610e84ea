// The landing page /: the list of documents (searchable; rename and delete
// on each row) and "New document". The admin's page: with access tokens the
// list needs the admin token, which auth.js keeps in this tab (never in the
// address); without it the page says how to get in instead of failing.

import { accessControl } from "./auth.js";
import { api, getJSON, apiUrl, ApiError } from "./docapi.js";
import { randomDocName, DOC_NAME_RE } from "./identity.js";

const $ = (sel) => document.querySelector(sel);

/** A document's address: no token in it (this tab's admin token travels in headers and sessionStorage). */
function docUrl(name) {
  return `/d/${encodeURIComponent(name)}`;
}

const UNITS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
const rtf = typeof Intl !== "undefined" && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

export function ago(seconds, now = Date.now() / 1000) {
  const diff = Math.max(0, now - seconds);
  if (diff < 45) return "just now";
  for (const [unit, size] of UNITS) {
    if (diff >= size) {
      const n = Math.floor(diff / size);
      return rtf ? rtf.format(-n, unit) : `${n} ${unit}${n === 1 ? "" : "s"} ago`;
    }
  }
  return rtf ? rtf.format(-1, "minute") : "1 minute ago";
}

export function size(length) {
  if (typeof length !== "number") return "";
  if (length < 1000) return `${length} ${length === 1 ? "character" : "characters"}`;
  if (length < 1e6) return `${(length / 1000).toFixed(length < 1e4 ? 1 : 0)}k characters`;
  return `${(length / 1e6).toFixed(1)}M characters`;
}

/**
 * The rename, in words. The server answers {name, links} and sends links
 * made for the old name on to the new one (collab/api.py, rename); an
 * answer with "oldLinksWork": false would say they stopped working.
 */
export function renamedText(oldName, data) {
  const base = `Renamed “${oldName}” to “${data.name}”.`;
  if (data.oldLinksWork === false) return `${base} Links with the old name no longer work: send people the new links (Share, in the document).`;
  return `${base} Links with the old name keep working: they lead to the new name. People who had it open were taken there.`;
}

let docs = [];
// Each document's row, made once per load of the list: a search shows some of them again, never
// makes them anew (with 6,000 documents, making every row at each keystroke froze the page for
// 0.3 to 1.2 s, measured).
let rows = new Map();
// One formatter, made once: Date.toLocaleString makes a new one at each call, thousands per list.
const WHEN = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric", second: "numeric",
});

// ---- the list --------------------------------------------------------------------

function needsAdmin(e) {
  $("#admin-only").hidden = true;
  $("#docs").hidden = true;
  const note = $("#docs-note");
  note.className = "note note-error";
  note.textContent = e.status === 401
    ? "This server shows its documents only to its admin. If you run it, open its admin link: collab printed it when it started, and keeps it in the file admin-link (/var/lib/collab/admin-link with the systemd unit). To open a document, use the edit or view link someone shared with you."
    : `This link cannot list the documents (${e.message}). To open a document, use the edit or view link someone shared with you.`;
}

async function loadDocs() {
  const note = $("#docs-note");
  try {
    docs = (await getJSON("/api/docs", { headers: { accept: "application/json" } })).docs || [];
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) return needsAdmin(e);
    note.textContent = `Could not load the documents: ${e.message}`;
    note.className = "note note-error";
    return;
  }
  docs.sort((a, b) => (b.updated || 0) - (a.updated || 0));
  rows = new Map();
  $("#doc-search").hidden = docs.length < 2;
  render();
}

function render() {
  const body = $("#docs tbody");
  const note = $("#docs-note");
  const query = $("#doc-search").value.trim().toLowerCase();
  const shown = query ? docs.filter((d) => d.name.toLowerCase().includes(query)) : docs;
  const made = [];
  for (const d of shown) {
    let tr = rows.get(d.name);
    if (!tr) rows.set(d.name, (tr = row(d)));
    made.push(tr);
  }
  // Rows that stay are left where they are: only the others go or come (narrowing a search moves nothing).
  const stay = new Set(made);
  for (const tr of [...body.children]) if (!stay.has(tr)) tr.remove();
  let at = body.firstChild;
  for (const tr of made) {
    if (tr === at) at = at.nextSibling;
    else body.insertBefore(tr, at);
  }
  note.className = "note";
  if (!docs.length) note.textContent = "No documents yet. Start one with “New document”.";
  else if (!shown.length) note.textContent = `No document name contains “${$("#doc-search").value.trim()}”.`;
  else note.textContent = query ? `${shown.length} of ${docs.length} documents` : "";
  $("#docs").hidden = !shown.length;
}

function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.name = d.name;
  const nameCell = tr.appendChild(document.createElement("td"));
  nameCell.className = "doc-name-cell";
  const a = nameCell.appendChild(document.createElement("a"));
  a.href = docUrl(d.name);
  a.textContent = d.name;
  const when = tr.appendChild(document.createElement("td"));
  when.className = "doc-when";
  if (d.updated) {
    const t = when.appendChild(document.createElement("time"));
    const date = new Date(d.updated * 1000);
    t.dateTime = date.toISOString();
    t.title = WHEN.format(date);
    t.textContent = ago(d.updated);
  }
  const sz = tr.appendChild(document.createElement("td"));
  sz.className = "num doc-size";
  sz.textContent = size(d.length);
  sz.title = typeof d.version === "number" ? `${d.version} edits` : "";
  const acts = tr.appendChild(document.createElement("td"));
  acts.className = "doc-actions";
  const rename = acts.appendChild(document.createElement("button"));
  rename.type = "button";
  rename.className = "link";
  rename.dataset.action = "rename";
  rename.textContent = "Rename";
  rename.setAttribute("aria-label", `Rename ${d.name}`);
  rename.addEventListener("click", () => askRename(d.name));
  const del = acts.appendChild(document.createElement("button"));
  del.type = "button";
  del.className = "link danger-link";
  del.dataset.action = "delete";
  del.textContent = "Delete";
  del.setAttribute("aria-label", `Delete ${d.name}`);
  del.addEventListener("click", () => askDelete(d.name));
  return tr;
}

function listNote(text, error = false) {
  const note = $("#list-note");
  note.textContent = text;
  note.className = error ? "note note-error" : "note";
}

// ---- rename --------------------------------------------------------------------

let renaming = null;

function askRename(name) {
  renaming = name;
  $("#rename-title").textContent = `Rename “${name}”`;
  $("#rename-name").value = name;
  $("#rename-error").textContent = "";
  $("#rename-dialog").showModal();
  $("#rename-name").select();
}

async function rename(ev) {
  ev.preventDefault();
  const name = $("#rename-name").value.trim();
  if (!DOC_NAME_RE.test(name)) {
    $("#rename-error").textContent = "Use letters, digits, “-” and “_” only (up to 100).";
    return;
  }
  if (name === renaming) {
    $("#rename-dialog").close();
    return;
  }
  const save = $("#rename-save");
  save.disabled = true;
  try {
    const r = await api(apiUrl(renaming, "/rename"), { method: "POST", admin: true, json: { name } });
    const data = await r.json();
    $("#rename-dialog").close();
    listNote(renamedText(renaming, data));
    await loadDocs();
  } catch (e) {
    $("#rename-error").textContent = `Could not rename: ${e.message}`;
  } finally {
    save.disabled = false;
  }
}

// ---- delete --------------------------------------------------------------------

let deleting = null;

function askDelete(name) {
  deleting = name;
  $("#delete-title").textContent = `Delete “${name}”?`;
  $("#delete-text").textContent = `Its text and its whole history are removed for everyone, and its links stop working: people who have it open are cut off. This cannot be undone.`;
  $("#delete-error").textContent = "";
  $("#delete-dialog").showModal();
  $("#delete-cancel").focus();
}

async function remove() {
  const button = $("#delete-confirm");
  button.disabled = true;
  try {
    await api(apiUrl(deleting), { method: "DELETE", admin: true });
    $("#delete-dialog").close();
    listNote(`Deleted “${deleting}”.`);
    await loadDocs();
  } catch (e) {
    $("#delete-error").textContent = `Could not delete: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

// ---- new document ----------------------------------------------------------------

async function newDocument(ev) {
  ev.preventDefault();
  const input = $("#new-name");
  const error = $("#new-error");
  const button = $("#new-doc");
  const name = input.value.trim() || suggested;
  if (!DOC_NAME_RE.test(name)) {
    error.textContent = "Use letters, digits, “-” and “_” only (up to 100).";
    input.focus();
    return;
  }
  // Asked of the server as the button is pressed: this page's list misses what was made since it
  // loaded, and opening a taken name showed someone's text as if it were the new document. (Nothing is
  // made until the first edit, as at any /d/ address.) A former name is told apart only without access
  // control: with it, a page's redirect needs a token in its address, which this page keeps out.
  button.disabled = true;
  try {
    let taken = "exists";
    try {
      // The named versions' list: 404 without a document, and cheap (a document's own URL rebuilds its text).
      await api(apiUrl(name, "/checkpoints"), { method: "HEAD", admin: true });
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      // A name a document had before it was renamed leads to that document (its page redirects).
      const page = await fetch(docUrl(name), { method: "HEAD", redirect: "manual" });
      taken = page.type === "opaqueredirect" ? "renamed" : null;
    }
    if (taken === null) {
      location.href = docUrl(name);
      return;
    }
    error.textContent = taken === "exists"
      ? `A document named “${name}” already exists: pick another name, or `
      : `“${name}” is the former name of a renamed document, and leads to it: pick another name, or `;
    const open = error.appendChild(document.createElement("a"));
    open.href = docUrl(name);
    open.textContent = "open it";
    error.appendChild(document.createTextNode("."));
  } catch (e) {
    error.textContent = `Could not check the name: ${e.message}`;
  } finally {
    button.disabled = false;
  }
  input.focus();
}

$("#new-form").addEventListener("submit", newDocument);
$("#new-name").addEventListener("input", () => { $("#new-error").textContent = ""; });
$("#doc-search").addEventListener("input", render);
$("#rename-form").addEventListener("submit", rename);
$("#rename-cancel").addEventListener("click", () => $("#rename-dialog").close());
$("#delete-cancel").addEventListener("click", () => $("#delete-dialog").close());
$("#delete-confirm").addEventListener("click", remove);
const suggested = randomDocName();
$("#new-name").placeholder = suggested;
document.body.dataset.access = accessControl ? "tokens" : "open";
loadDocs().finally(() => { document.body.dataset.ready = "true"; });
