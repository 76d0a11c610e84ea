// The History panel: a timeline of editing sessions (paged in lazily from
// GET /api/docs/{doc}/history), a slider over versions, a read-only preview
// of the chosen version with its differences from the current text (or who
// wrote each character), and Restore / Copy to a new document (the admin's) /
// Download. Requests carry the token in a header (docapi.js, auth.js).
//
// Scrubbing stays responsive: the label follows the slider at once, text
// and authorship are fetched after a short pause, in-flight requests for
// positions left behind are aborted, and an answer for any position but the
// current one is dropped.

import { EditorState, StateField, StateEffect, RangeSetBuilder } from "@codemirror/state";
import { EditorView, Decoration, WidgetType, lineNumbers } from "@codemirror/view";
import { getSyncedVersion } from "@codemirror/collab";
import { diffText } from "./diff.js";
import { api, apiUrl, restoreVersion, download } from "./docapi.js";
import { isAdmin } from "./auth.js";

const PAGE = 200; // history entries per request
const SESSION_GAP_S = 5 * 60; // a pause this long starts a new session
const SCRUB_DEBOUNCE_MS = 120;
const CURRENT_DEBOUNCE_MS = 250; // the diff against the live text, at most this often
const NEWER_DEBOUNCE_MS = 800; // new sessions while the panel is open, at most this often
const CACHE = 60; // version texts kept
const AUTHOR_COLORS = 10; // .ac0 … .ac9 in style.css
const WIDGET_MAX = 4000; // inserted text shown in the preview, at most

const $ = (sel) => document.querySelector(sel);

/** A stable colour slot for an author's name (FNV-1a). */
export function authorSlot(name) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % AUTHOR_COLORS;
}

function fmtTime(seconds, withDate) {
  const d = new Date(seconds * 1000);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  if (!withDate) return time;
  return `${d.toLocaleDateString([], { month: "short", day: "numeric" })} ${time}`;
}

/** Entries (any order) to sessions, newest first. */
export function groupSessions(entries) {
  const asc = [...entries].sort((x, y) => x.version - y.version);
  const out = [];
  let cur = null;
  for (const e of asc) {
    const restored = e.restored !== undefined && e.restored !== null;
    if (cur && !restored && !cur.restored && cur.author === e.author
        && e.version === cur.to + 1 && e.time - cur.end < SESSION_GAP_S) {
      cur.to = e.version;
      cur.end = e.time;
      cur.inserted += e.inserted;
      cur.deleted += e.deleted;
      cur.count++;
    } else {
      cur = {
        author: e.author, from: e.version, to: e.version, start: e.time, end: e.time,
        inserted: e.inserted, deleted: e.deleted, count: 1, restored: restored ? e.restored : null,
      };
      out.push(cur);
    }
  }
  return out.reverse();
}

// ---- the preview's decorations --------------------------------------------------

const setDecos = StateEffect.define();
const decoField = StateField.define({
  create: () => Decoration.none,
  update(deco, tr) {
    deco = deco.map(tr.changes);
    for (const e of tr.effects) if (e.is(setDecos)) deco = e.value;
    return deco;
  },
  provide: (f) => EditorView.decorations.from(f),
});

class InsertedWidget extends WidgetType {
  constructor(text) {
    super();
    this.text = text;
  }
  eq(o) { return o.text === this.text; }
  toDOM() {
    const span = document.createElement("span");
    span.className = "cm-hist-ins";
    span.textContent = this.text.length > WIDGET_MAX ? `${this.text.slice(0, WIDGET_MAX)}…` : this.text;
    span.title = "Added since this version";
    return span;
  }
  ignoreEvent() { return true; }
}

const delMark = Decoration.mark({ class: "cm-hist-del", attributes: { title: "Removed since this version" } });

function diffDecorations(versionText, currentText) {
  const builder = new RangeSetBuilder();
  let pos = 0, added = 0, removed = 0;
  for (const [op, text] of diffText(versionText, currentText)) {
    if (op === 0) pos += text.length;
    else if (op === -1) {
      builder.add(pos, pos + text.length, delMark);
      pos += text.length;
      removed += text.length;
    } else {
      builder.add(pos, pos, Decoration.widget({ widget: new InsertedWidget(text), side: 1 }));
      added += text.length;
    }
  }
  return { deco: builder.finish(), added, removed };
}

function authorDecorations(spans, length) {
  const builder = new RangeSetBuilder();
  const marks = new Map();
  for (const s of spans) {
    const from = Math.max(0, Math.min(length, s.from)), to = Math.max(0, Math.min(length, s.to));
    if (to <= from) continue;
    let mark = marks.get(s.author);
    if (!mark) {
      mark = Decoration.mark({
        class: `cm-author ac${authorSlot(s.author)}`,
        attributes: { "data-author": s.author, title: s.author },
      });
      marks.set(s.author, mark);
    }
    builder.add(from, to, mark);
  }
  return { deco: builder.finish(), authors: [...marks.keys()] };
}

// ---- the panel --------------------------------------------------------------------

export class HistoryPanel {
  /** opts: docName, getView() (the live editor), getUser(), getRole(), showError(text). */
  constructor(opts) {
    Object.assign(this, opts);
    this.root = $("#history");
    this.slider = $("#history-slider");
    this.list = $("#history-sessions");
    this.isOpen = false;
    this.entries = new Map(); // version -> entry
    this.oldest = null; // the oldest version loaded
    this.hasOlder = true;
    this.loadingOlder = null;
    this.head = 0;
    this.selected = null;
    this.mode = "changes";
    this.texts = new Map(); // version -> text (a small LRU)
    this.authors = new Map(); // version -> spans
    this.seq = 0;
    this.abort = null;
    this.shown = null; // {version, text, spans}
    this.scrubTimer = null;
    this.currentTimer = null;
    this.newerTimer = null;
    this.preview = null;

    $("#history-close").addEventListener("click", () => this.close());
    this.slider.addEventListener("input", () => this.select(Number(this.slider.value)));
    for (const r of document.querySelectorAll("input[name=history-mode]")) {
      r.addEventListener("change", () => { if (r.checked) this.setMode(r.value); });
    }
    $("#history-restore").addEventListener("click", () => this.restore());
    $("#history-fork").addEventListener("click", () => this.fork());
    $("#history-download").addEventListener("click", (ev) => {
      ev.preventDefault();
      this.download();
    });
    this.list.addEventListener("click", (ev) => {
      const item = ev.target.closest("[data-to]");
      if (item) this.select(Number(item.dataset.to));
    });
    $("#history-older").addEventListener("click", () => this.loadOlder());
    if (window.IntersectionObserver) {
      this.observer = new IntersectionObserver((items) => {
        if (items.some((i) => i.isIntersecting) && this.isOpen) this.loadOlder();
      }, { root: this.list.parentElement });
      this.observer.observe($("#history-older"));
    }
  }

  // ---- opening, closing, following the live document ----

  toggle() {
    if (this.isOpen) this.close(); else this.open();
  }

  /** Open the panel on `version`, comparing it with the current text (a restore notice's "see it in History"). */
  openAt(version) {
    if (!this.isOpen) this.open();
    this.setMode("changes");
    this.select(version);
  }

  open() {
    const view = this.getView();
    if (!view) return;
    this.isOpen = true;
    this.root.hidden = false;
    document.body.classList.add("history-open");
    $("#history-toggle").setAttribute("aria-expanded", "true");
    if (!this.preview) {
      this.preview = new EditorView({
        parent: $("#history-preview"),
        state: EditorState.create({
          extensions: [
            lineNumbers(), EditorView.lineWrapping, decoField,
            EditorState.readOnly.of(true), EditorView.editable.of(false),
            EditorView.contentAttributes.of({ "aria-label": "The chosen version (read-only)" }),
          ],
        }),
      });
    }
    this.head = getSyncedVersion(view.state);
    this.renderRole();
    this.entries.clear();
    this.oldest = null;
    this.hasOlder = true;
    this.loadingOlder = null;
    this.renderSessions();
    this.loadOlder();
    this.select(this.selected === null || this.selected > this.head ? this.head : this.selected);
  }

  close() {
    this.isOpen = false;
    this.root.hidden = true;
    document.body.classList.remove("history-open");
    $("#history-toggle").setAttribute("aria-expanded", "false");
    if (this.abort) this.abort.abort();
    const view = this.getView();
    if (view) view.focus();
  }

  /** Called by the editor on every transaction of the live view. */
  liveChanged() {
    if (!this.isOpen) return;
    // At most every CURRENT_DEBOUNCE_MS, also while someone types non-stop.
    if (this.currentTimer) return;
    this.currentTimer = setTimeout(() => { this.currentTimer = null; this.followLive(); }, CURRENT_DEBOUNCE_MS);
  }

  followLive() {
    const view = this.getView();
    if (!this.isOpen || !view) return;
    this.renderRole();
    const head = getSyncedVersion(view.state);
    if (head !== this.head) {
      this.head = head;
      this.slider.max = String(head);
      this.renderLabel();
      if (!this.newerTimer) {
        this.newerTimer = setTimeout(() => { this.newerTimer = null; this.loadNewer(); }, NEWER_DEBOUNCE_MS);
      }
    }
    if (this.shown && this.mode === "changes") this.renderPreview(false);
  }

  renderRole() {
    $("#history-restore").hidden = this.getRole() === "view";
    $("#history-fork").hidden = !isAdmin; // a fork creates a document: the admin's (docs/protocol.md)
  }

  // ---- the session list ----

  async loadOlder() {
    if (!this.hasOlder || this.loadingOlder) return this.loadingOlder;
    const before = this.oldest === null ? this.head + 1 : this.oldest;
    this.loadingOlder = (async () => {
      try {
        const r = await api(apiUrl(this.docName, "/history", { before, limit: PAGE }));
        const { entries } = await r.json();
        if (!this.isOpen) return;
        for (const e of entries) this.entries.set(e.version, e);
        if (entries.length) this.oldest = entries[entries.length - 1].version;
        if (entries.length < PAGE || this.oldest <= 1) this.hasOlder = false;
        this.renderSessions();
        this.renderLabel();
      } catch (e) {
        this.setError(`Could not load the history: ${e.message}`);
      } finally {
        this.loadingOlder = null;
      }
      // The list may still not fill its box: keep going while the sentinel shows.
      if (this.isOpen && this.hasOlder && this.sentinelVisible()) setTimeout(() => this.loadOlder(), 0);
    })();
    return this.loadingOlder;
  }

  sentinelVisible() {
    const s = $("#history-older").getBoundingClientRect();
    const box = this.list.parentElement.getBoundingClientRect();
    return s.height > 0 && s.top < box.bottom && s.bottom > box.top;
  }

  async loadNewer() {
    if (!this.isOpen) return;
    const newest = this.entries.size ? Math.max(...this.entries.keys()) : 0;
    if (this.head <= newest) return;
    try {
      const r = await api(apiUrl(this.docName, "/history", { limit: Math.min(1000, this.head - newest) }));
      const { entries } = await r.json();
      if (!this.isOpen) return;
      for (const e of entries) if (e.version > newest) this.entries.set(e.version, e);
      if (entries.length && entries[entries.length - 1].version > newest + 1) {
        // Too many to fill the gap in one go: start the list again from the top.
        this.entries.clear();
        for (const e of entries) this.entries.set(e.version, e);
        this.oldest = entries[entries.length - 1].version;
        this.hasOlder = true;
      }
      this.renderSessions();
      this.renderLabel();
    } catch (e) {
      this.setError(`Could not load the history: ${e.message}`);
    }
  }

  renderSessions() {
    this.sessions = groupSessions(this.entries.values());
    const list = this.list;
    list.textContent = "";
    const now = Date.now() / 1000;
    for (const s of this.sessions) {
      const li = list.appendChild(document.createElement("li"));
      li.className = "history-session";
      li.dataset.from = String(s.from);
      li.dataset.to = String(s.to);
      li.dataset.author = s.author;
      const item = li.appendChild(document.createElement("button"));
      item.type = "button";
      item.className = "history-session-button";
      const dot = item.appendChild(document.createElement("span"));
      dot.className = `author-dot ac${authorSlot(s.author)}`;
      dot.setAttribute("aria-hidden", "true");
      const who = item.appendChild(document.createElement("span"));
      who.className = "history-author";
      who.textContent = s.author;
      const when = item.appendChild(document.createElement("time"));
      when.className = "history-time";
      const withDate = now - s.end > 20 * 3600;
      when.textContent = s.start === s.end || fmtTime(s.start, withDate) === fmtTime(s.end, withDate)
        ? fmtTime(s.end, withDate) : `${fmtTime(s.start, withDate)}–${fmtTime(s.end, false)}`;
      when.dateTime = new Date(s.end * 1000).toISOString();
      const counts = item.appendChild(document.createElement("span"));
      counts.className = "history-counts";
      const ins = counts.appendChild(document.createElement("span"));
      ins.className = "count-ins";
      ins.textContent = `+${s.inserted}`;
      const del = counts.appendChild(document.createElement("span"));
      del.className = "count-del";
      del.textContent = `−${s.deleted}`;
      const what = item.appendChild(document.createElement("span"));
      what.className = "history-versions";
      what.textContent = (s.restored !== null ? `restored version ${s.restored} · ` : "")
        + (s.from === s.to ? `version ${s.to}` : `versions ${s.from}–${s.to}`);
      item.title = `${s.author}: ${s.count} edit${s.count === 1 ? "" : "s"}, ${s.inserted} characters inserted, ${s.deleted} deleted. Click to see the text after it.`;
    }
    if (!this.sessions.length && !this.hasOlder) {
      const li = list.appendChild(document.createElement("li"));
      li.className = "history-empty";
      li.textContent = "No edits yet.";
    }
    const older = $("#history-older");
    older.hidden = !this.hasOlder;
    this.markSelected();
  }

  markSelected() {
    for (const li of this.list.querySelectorAll(".history-session")) {
      const on = this.selected !== null && Number(li.dataset.from) <= this.selected && this.selected <= Number(li.dataset.to);
      li.classList.toggle("selected", on);
      li.firstChild.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  // ---- choosing a version ----

  select(version) {
    if (!this.isOpen) return;
    version = Math.max(0, Math.min(this.head, version | 0));
    this.selected = version;
    this.slider.max = String(this.head);
    this.slider.value = String(version);
    this.renderLabel();
    this.markSelected();
    this.root.dataset.state = "loading";
    if (this.abort) this.abort.abort();
    clearTimeout(this.scrubTimer);
    this.scrubTimer = setTimeout(() => this.load(version), SCRUB_DEBOUNCE_MS);
  }

  renderLabel() {
    const v = this.selected;
    const label = $("#history-label");
    if (v === null) { label.textContent = ""; return; }
    const parts = [`Version ${v} of ${this.head}`];
    const e = this.entries.get(v);
    if (v === this.head) parts.push("the current text");
    if (e) {
      parts.push(e.restored !== undefined && e.restored !== null
        ? `${e.author} restored version ${e.restored}` : `by ${e.author}`);
      parts.push(fmtTime(e.time, Date.now() / 1000 - e.time > 20 * 3600));
    } else if (v === 0) parts.push("before the first edit");
    label.textContent = parts.join(" · ");
  }

  setMode(mode) {
    this.mode = mode;
    for (const r of document.querySelectorAll("input[name=history-mode]")) r.checked = r.value === mode;
    if (this.selected !== null) this.select(this.selected);
  }

  async load(version) {
    const seq = ++this.seq;
    const ctrl = new AbortController();
    this.abort = ctrl;
    const mode = this.mode;
    try {
      let text = this.texts.get(version);
      if (text === undefined) {
        const r = await api(apiUrl(this.docName, `/versions/${version}`), { signal: ctrl.signal });
        text = (await r.json()).doc;
        this.texts.set(version, text);
        if (this.texts.size > CACHE) this.texts.delete(this.texts.keys().next().value);
      }
      let spans = null;
      if (mode === "authors") {
        spans = this.authors.get(version);
        if (!spans) {
          const r = await api(apiUrl(this.docName, "/authors", { version }), { signal: ctrl.signal });
          spans = (await r.json()).spans;
          this.authors.set(version, spans);
          if (this.authors.size > CACHE) this.authors.delete(this.authors.keys().next().value);
        }
      }
      if (seq !== this.seq || version !== this.selected || mode !== this.mode || !this.isOpen) return; // stale
      this.setError(null);
      this.shown = { version, text, spans, mode };
      this.renderPreview(true);
    } catch (e) {
      if (e.name === "AbortError" || seq !== this.seq) return;
      this.shown = null;
      this.root.dataset.state = "error";
      this.setError(`Version ${version} cannot be shown: ${e.message}`);
    }
  }

  renderPreview(newText) {
    const { version, text, spans, mode } = this.shown;
    const view = this.preview;
    const changes = newText || view.state.doc.length !== text.length || view.state.doc.toString() !== text
      ? { from: 0, to: view.state.doc.length, insert: text } : undefined;
    let deco, legend = "";
    const legendBox = $("#history-legend");
    legendBox.textContent = "";
    if (mode === "authors") {
      const made = authorDecorations(spans || [], text.length);
      deco = made.deco;
      for (const name of made.authors) {
        const item = legendBox.appendChild(document.createElement("span"));
        item.className = "legend-item";
        const dot = item.appendChild(document.createElement("span"));
        dot.className = `author-dot ac${authorSlot(name)}`;
        item.appendChild(document.createTextNode(name));
      }
    } else {
      const live = this.getView();
      const current = live ? live.state.doc.toString() : text;
      const made = diffDecorations(text, current);
      deco = made.deco;
      legend = made.added || made.removed
        ? `Compared with the current text: ${made.removed} characters removed since (red), ${made.added} added since (green).`
        : "Same as the current text.";
      legendBox.textContent = legend;
    }
    view.dispatch({ changes, effects: setDecos.of(deco) });
    this.root.dataset.shown = String(version);
    this.root.dataset.mode = mode;
    this.root.dataset.state = "ready";
  }

  setError(text) {
    const box = $("#history-error");
    box.hidden = !text;
    box.textContent = text || "";
  }

  note(text) {
    $("#history-note").textContent = text;
  }

  // ---- actions ----

  async restore() {
    const version = this.selected;
    if (version === null) return;
    const button = $("#history-restore");
    button.disabled = true;
    this.note(`Restoring version ${version}…`);
    try {
      const made = await restoreVersion(this.docName, version, this.getUser().name);
      this.lastRestore = { from: version, version: made };
      this.note(`Restored version ${version}: the text is now version ${made}. To undo, restore version ${made - 1}.`);
    } catch (e) {
      this.note("");
      this.setError(`Could not restore version ${version}: ${e.message}`);
      this.showError(`Could not restore version ${version}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async fork() {
    const version = this.selected;
    if (version === null) return;
    // Opened now, while the click still counts as the person's action, so
    // no popup blocker stops it; pointed at the new document below.
    const win = window.open("", "_blank");
    const button = $("#history-fork");
    button.disabled = true;
    this.note(`Copying version ${version} to a new document…`);
    try {
      const r = await api(apiUrl(this.docName, "/fork"), {
        method: "POST", admin: true, json: { version, author: this.getUser().name },
      });
      const data = await r.json();
      const url = data.links && data.links.edit ? data.links.edit : `/d/${encodeURIComponent(data.name)}`;
      this.note(`Version ${version} copied to the new document “${data.name}”.`);
      if (win) {
        win.opener = null;
        win.location.href = new URL(url, location.href).href;
      } else {
        location.assign(url);
      }
    } catch (e) {
      if (win) win.close();
      this.note("");
      this.setError(`Could not copy version ${version}: ${e.message}`);
      this.showError(`Could not copy version ${version}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  async download() {
    const version = this.selected;
    if (version === null) return;
    try {
      await download(apiUrl(this.docName, "/export", { version }), `${this.docName}-v${version}.txt`);
    } catch (e) {
      this.setError(`Could not download version ${version}: ${e.message}`);
    }
  }

  /** For tests and debugging. */
  get info() {
    return {
      open: this.isOpen, head: this.head, selected: this.selected, mode: this.mode,
      shown: this.shown ? this.shown.version : null,
      text: this.preview ? this.preview.state.doc.toString() : null,
      sessions: this.sessions ? this.sessions.map((s) => ({ ...s })) : [],
      lastRestore: this.lastRestore || null,
    };
  }
}
