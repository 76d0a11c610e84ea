// The landing page /: the list of documents and "New document".

import { randomDocName, DOC_NAME_RE } from "./identity.js";

const $ = (sel) => document.querySelector(sel);
const token = new URLSearchParams(location.search).get("token");
const tokenQuery = token ? `?token=${encodeURIComponent(token)}` : "";

function docUrl(name) {
  return `/d/${encodeURIComponent(name)}${tokenQuery}`;
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

async function loadDocs() {
  const body = $("#docs tbody");
  const note = $("#docs-note");
  let docs;
  try {
    const r = await fetch(`/api/docs${tokenQuery}`, { headers: { accept: "application/json" } });
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error(data?.error?.message || `HTTP ${r.status}`);
    docs = data.docs || [];
  } catch (e) {
    note.textContent = `Could not load the documents: ${e.message}`;
    note.className = "note note-error";
    return;
  }
  docs.sort((a, b) => (b.updated || 0) - (a.updated || 0));
  body.textContent = "";
  for (const d of docs) {
    const tr = body.appendChild(document.createElement("tr"));
    const nameCell = tr.appendChild(document.createElement("td"));
    const a = nameCell.appendChild(document.createElement("a"));
    a.href = docUrl(d.name);
    a.textContent = d.name;
    const when = tr.appendChild(document.createElement("td"));
    if (d.updated) {
      const t = when.appendChild(document.createElement("time"));
      const date = new Date(d.updated * 1000);
      t.dateTime = date.toISOString();
      t.title = date.toLocaleString();
      t.textContent = ago(d.updated);
    }
    const sz = tr.appendChild(document.createElement("td"));
    sz.className = "num";
    sz.textContent = size(d.length);
    sz.title = typeof d.version === "number" ? `${d.version} edits` : "";
  }
  note.textContent = docs.length ? "" : "No documents yet. Start one with “New document”.";
  note.className = "note";
  $("#docs").hidden = !docs.length;
}

function newDocument(ev) {
  ev.preventDefault();
  const input = $("#new-name");
  const name = input.value.trim() || suggested;
  if (!DOC_NAME_RE.test(name)) {
    $("#new-error").textContent = "Use letters, digits, “-” and “_” only (up to 100).";
    input.focus();
    return;
  }
  location.href = docUrl(name);
}

$("#new-form").addEventListener("submit", newDocument);
$("#new-name").addEventListener("input", () => { $("#new-error").textContent = ""; });
const suggested = randomDocName();
$("#new-name").placeholder = suggested;
loadDocs();
