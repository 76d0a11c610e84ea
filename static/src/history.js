// The History panel: a timeline of editing sessions (paged in lazily from
// GET /api/docs/{doc}/history) with the named versions between them, a
// slider that moves by session (or by single edit, on demand), a read-only
// preview of the chosen version with its differences from the current text
// word by word (or who wrote each character), and Restore / Name this
// version / Copy to a new document (the admin's) / Download (.txt, .md or a
// web page). Requests carry the token in a header (docapi.js, auth.js).
//
// What always holds here:
//  - People are told apart by their person id (hello.person) and shown
//    with their current name and chosen colour (timeline.js): a rename does
//    not split a person in two, and two people with one name stay two.
//    Updates made without a person id are attributed by name, as before.
//  - Sessions end at a pause in the document, not at a change of author
//    (timeline.js).
//  - Scrubbing stays responsive: the label follows the slider at once, text
//    and authorship are fetched after a short pause, in-flight requests for
//    positions left behind are aborted, and an answer for any position but
//    the current one is dropped.
//  - What could not be loaded is said (each failure its own message, gone
//    when that part loads; loads that failed for one reason, the server out
//    of reach, say, in one line) and, when the server could not be reached
//    or was busy, tried again later, waiting 1 s, then twice as long each
//    time up to 30 s, or at once when the page is connected again; never in
//    a loop. The preview never shows a version other than the one the label
//    names: a version that could not be loaded leaves it empty.
//  - Escape closes the panel, the focus going back to what opened it
//    (panels.js), but for Escape in the naming form, which closes only the
//    form, and on an "Undo anyway" question, which takes it back. The
//    Close button gives the focus back the same way.

import { EditorState, StateField, StateEffect, RangeSetBuilder } from "@codemirror/state";
import { EditorView, Decoration, WidgetType, lineNumbers } from "@codemirror/view";
import { getSyncedVersion } from "@codemirror/collab";
import { diffText } from "./diff.js";
import { api, apiUrl, getJSON, restoreVersion, undoRestore, UNDO_RESTORE } from "./docapi.js";
import { isAdmin } from "./auth.js";
import { groupSessions, sliderStops, nearestStop, resolvePeople, authorKey, SESSION_GAP_S } from "./timeline.js";
import { colorClass } from "./colors.js";
import { exportDocument } from "./export.js";
import { focusBack, openerOf } from "./panels.js";

const PAGE = 200; // history entries per request
const SCRUB_DEBOUNCE_MS = 120;
const CURRENT_DEBOUNCE_MS = 250; // the diff against the live text, at most this often
const NEWER_DEBOUNCE_MS = 800; // new sessions while the panel is open, at most this often
const CACHE = 60; // version texts kept
const WIDGET_MAX = 4000; // inserted text shown in the preview, at most
const MAX_NAME = 100; // a version's name (the server's limit)
const RETRY_MIN_MS = 1000; // after a failed load, the first try again; then twice as long each time
const RETRY_MAX_MS = 30000;

/** Whether a failed load is worth trying again: the server could not be reached, or was busy. */
const transient = (e) => !e.status || e.status >= 500 || e.status === 429;

const $ = (sel) => document.querySelector(sel);
const LIST = new Intl.ListFormat("en", { type: "conjunction" }); // "a, b, and c"
const LOADS = ["version", "checkpoints", "newer", "older"]; // failed loads, said in the reverse of this order

// One formatter per format, made once: a list of thousands of sessions formats thousands of
// times at every rebuild, and toLocaleTimeString makes a new formatter each call (50 times slower).
const TIME_FORMAT = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });
const DATE_FORMAT = new Intl.DateTimeFormat([], { month: "short", day: "numeric" });

function fmtTime(seconds, withDate) {
  const d = new Date(seconds * 1000);
  const time = TIME_FORMAT.format(d);
  return withDate ? `${DATE_FORMAT.format(d)} ${time}` : time;
}

/** A version's name as the server keeps it (protocol.clean_name): NFC, no control or format
 * characters (line breaks, zero-width spaces), spaces collapsed; "" if nothing visible is left. */
function cleanName(raw) {
  return String(raw).normalize("NFC").replace(/[\p{Cc}\p{Cf}]/gu, "").replace(/\s+/g, " ").trim()
    .slice(0, MAX_NAME).trim();
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

/** The line under a named version's name: its version, who named it, when. */
function checkpointText(c, now) {
  const by = typeof c.author === "string" && c.author ? ` · named by ${c.author}` : "";
  const at = typeof c.time === "number" ? ` · ${fmtTime(c.time, now - c.time > 20 * 3600)}` : "";
  return `version ${c.version}${by}${at}`;
}

/** A new `tag` element of class `className`, holding `text` if given; appended to `parent` if given. */
function element(tag, className, text = null, parent = null) {
  const el = document.createElement(tag);
  el.className = className;
  if (text !== null) el.textContent = text;
  return parent ? parent.appendChild(el) : el;
}

/** A dot in a person's colour and their name. */
function personLabel(who, className) {
  const span = element("span", className);
  span.dataset.person = who.person || "";
  span.dataset.author = who.name;
  element("span", `author-dot ${colorClass(who.color)}`, null, span).setAttribute("aria-hidden", "true");
  span.appendChild(document.createElement("span")).textContent = who.name;
  return span;
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
  const pieces = diffText(versionText, currentText);
  for (const [op, text] of pieces) {
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
  return { deco: builder.finish(), added, removed, coarse: Boolean(pieces.coarse) };
}

/** Marks for who wrote what: `spans` [{from, to, author (a key)}], `people` key -> {name, color, person}. */
function authorDecorations(spans, length, people) {
  const builder = new RangeSetBuilder();
  const marks = new Map();
  for (const s of spans) {
    const from = Math.max(0, Math.min(length, s.from)), to = Math.max(0, Math.min(length, s.to));
    if (to <= from) continue;
    let mark = marks.get(s.author);
    if (!mark) {
      const who = people.get(s.author) || { name: s.author, color: null, person: null };
      mark = Decoration.mark({
        class: `cm-author ${colorClass(who.color)}`,
        attributes: { "data-author": who.name, "data-person": who.person || "", title: who.name },
      });
      marks.set(s.author, mark);
    }
    builder.add(from, to, mark);
  }
  return { deco: builder.finish(), authors: [...marks.keys()] };
}

// ---- the panel --------------------------------------------------------------------

export class HistoryPanel {
  /**
   * opts: docName, getView() (the live editor), getUser() ({name, color}), person (this page's
   * person id, as its hello says), getRole(),
   * getPeople() (the people here now, this page's own person included:
   * [{person, name, color}]), showError(text).
   */
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
    this.fine = false; // the slider moves by single edits, not by session
    this.gap = SESSION_GAP_S; // seconds of quiet that end a session (tests shorten it)
    this.stops = [0];
    this.sessions = [];
    this.checkpoints = []; // [{version, name, author, time}], oldest first
    this.checkpointsAsked = 0; // loads of them asked for (only the last one's answer is shown)
    this.known = {}; // person keys -> {name, color}, from /authors
    this.peopleNow = null; // who is who, as of the last renderSessions
    this.rowCache = new Map(); // the list's rows by all they show (renderSessions)
    this.texts = new Map(); // version -> text (a small LRU)
    this.authors = new Map(); // version -> spans
    this.seq = 0;
    this.abort = null;
    this.shown = null; // {version, text, spans}
    this.scrubTimer = null;
    this.currentTimer = null;
    this.newerTimer = null;
    this.preview = null;
    this.restoring = false;
    this.errors = new Map(); // what failed ("older", "version", "restore", ...) -> what to say
    this.retryable = new Set(); // the loads among them tried again later ("older", "newer", "checkpoints", "version")
    this.retryTimer = null;
    this.retryDelay = RETRY_MIN_MS;

    $("#history-close").addEventListener("click", () => this.close(focusBack(this)));
    this.slider.addEventListener("input", () => this.slid());
    $("#history-fine").addEventListener("change", (ev) => {
      this.fine = ev.target.checked;
      this.renderSlider();
    });
    for (const r of document.querySelectorAll("input[name=history-mode]")) {
      r.addEventListener("change", () => { if (r.checked) this.setMode(r.value); });
    }
    $("#history-restore").addEventListener("click", () => this.restore());
    $("#history-fork").addEventListener("click", () => this.fork());
    $("#history-download").addEventListener("click", (ev) => {
      ev.preventDefault();
      this.download();
    });
    $("#history-name").addEventListener("click", () => this.openNameForm());
    $("#history-name-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.saveName($("#history-name-input").value);
    });
    $("#history-name-remove").addEventListener("click", () => this.saveName(null));
    $("#history-name-cancel").addEventListener("click", () => this.closeNameForm(true));
    $("#history-name-form").addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      ev.preventDefault();
      ev.stopPropagation();
      this.closeNameForm(true);
    });
    this.list.addEventListener("click", (ev) => {
      const item = ev.target.closest("[data-to]");
      if (item) this.select(Number(item.dataset.to));
    });
    $("#history-older").addEventListener("click", () => this.loadOlder());
    if (window.IntersectionObserver) {
      this.observer = new IntersectionObserver((items) => {
        // Not while a failed load waits for its retry (scheduleRetry).
        if (items.some((i) => i.isIntersecting) && this.isOpen && !this.errors.has("older")) this.loadOlder();
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
    this.opener = openerOf(this.root); // where Escape gives the focus back
    this.openedAt = performance.now();
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
    this.errors.clear();
    this.retryable.clear();
    this.renderErrors();
    this.stopRetry();
    this.closeNameForm();
    this.renderSessions();
    this.loadCheckpoints();
    this.loadOlder();
    this.select(this.selected === null || this.selected > this.head ? this.head : this.selected);
  }

  /** Close the panel; the focus goes to `focusTo` (Escape, Close: what opened it), else to the editor. */
  close(focusTo = null) {
    this.isOpen = false;
    this.root.hidden = true;
    document.body.classList.remove("history-open");
    $("#history-toggle").setAttribute("aria-expanded", "false");
    if (this.abort) this.abort.abort();
    this.stopRetry();
    const view = this.getView();
    if (focusTo) focusTo.focus();
    else if (view) view.focus();
  }

  /** The page is connected again (editor.js): what could not be loaded is tried again now, and the
   *  named versions are read again (a name given while the page was cut off came as no frame). */
  reconnected() {
    if (!this.isOpen) return;
    const names = this.retryable.has("newer") || this.retryable.has("checkpoints"); // retry() reads them
    this.stopRetry();
    this.retry();
    if (!names) this.loadCheckpoints();
  }

  /** Called by the editor on every transaction of the live view. */
  liveChanged() {
    if (!this.isOpen) return;
    // At most every CURRENT_DEBOUNCE_MS, also while someone types non-stop.
    if (this.currentTimer) return;
    this.currentTimer = setTimeout(() => { this.currentTimer = null; this.followLive(); }, CURRENT_DEBOUNCE_MS);
  }

  /** The people here changed (a name, a colour, someone came): names in the panel are current ones. */
  peopleChanged() {
    if (!this.isOpen) return;
    this.renderSessions();
    this.renderLabel();
    if (this.shown && this.shown.mode === "authors") this.renderPreview(false);
  }

  followLive() {
    const view = this.getView();
    if (!this.isOpen || !view) return;
    this.renderRole();
    const head = getSyncedVersion(view.state);
    if (head !== this.head) {
      this.head = head;
      this.renderSlider();
      this.renderLabel();
      if (!this.newerTimer) {
        this.newerTimer = setTimeout(() => { this.newerTimer = null; this.loadNewer(); }, NEWER_DEBOUNCE_MS);
      }
    }
    if (this.shown && this.mode === "changes") this.renderPreview(false);
  }

  renderRole() {
    const viewer = this.getRole() === "view";
    $("#history-restore").hidden = viewer;
    $("#history-name").hidden = viewer; // naming a version takes edit rights
    if (viewer) this.closeNameForm();
    $("#history-fork").hidden = !isAdmin; // a fork creates a document: the admin's (docs/protocol.md)
  }

  /** Who is who now: the entries loaded, what /authors said, the people here. */
  people() {
    return resolvePeople({ entries: this.entries.values(), known: this.known, live: this.getPeople() });
  }

  // ---- the session list ----

  async loadOlder() {
    if (!this.hasOlder || this.loadingOlder) return this.loadingOlder;
    const before = this.oldest === null ? this.head + 1 : this.oldest;
    this.loadingOlder = (async () => {
      let failed = false;
      try {
        const r = await api(apiUrl(this.docName, "/history", { before, limit: PAGE }));
        const { entries } = await r.json();
        if (!this.isOpen) return;
        for (const e of entries) this.entries.set(e.version, e);
        if (entries.length) this.oldest = entries[entries.length - 1].version;
        if (entries.length < PAGE || this.oldest <= 1) this.hasOlder = false;
        this.setError("older", null);
        this.renderSessions();
        this.renderLabel();
      } catch (e) {
        failed = true;
        if (this.isOpen) this.loadFailed("older", "the history", "Could not load the history", e);
      } finally {
        this.loadingOlder = null;
      }
      // The list may still not fill its box: keep going while the sentinel shows (after a failure, the retry does).
      if (!failed && this.isOpen && this.hasOlder && this.sentinelVisible()) setTimeout(() => this.loadOlder(), 0);
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
    if (this.head <= newest) { // nothing newer to read (any more): a failure to read it is moot
      this.setError("newer", null);
      this.loadCheckpoints();
      return;
    }
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
      this.setError("newer", null);
      this.renderSessions();
      this.renderLabel();
    } catch (e) {
      if (this.isOpen) this.loadFailed("newer", "the history", "Could not load the history", e);
    }
    this.loadCheckpoints(); // someone may have named a version meanwhile
  }

  /** A version was named, renamed or unnamed (by anyone: the server says so, editor.js). */
  checkpointsChanged() {
    if (this.isOpen) this.loadCheckpoints();
  }

  async loadCheckpoints() {
    const asked = ++this.checkpointsAsked; // of two loads under way, the later one's answer is kept
    try {
      const { checkpoints } = await getJSON(apiUrl(this.docName, "/checkpoints"));
      if (!this.isOpen || !Array.isArray(checkpoints) || asked !== this.checkpointsAsked) return;
      this.setError("checkpoints", null);
      this.setCheckpoints(checkpoints);
    } catch (e) {
      // an older load failing after a newer one answered says nothing about the list shown
      if (this.isOpen && asked === this.checkpointsAsked) {
        this.loadFailed("checkpoints", "the named versions", "Could not load the named versions", e);
      }
    }
  }

  setCheckpoints(list) {
    this.checkpoints = list.filter((c) => c && Number.isSafeInteger(c.version) && typeof c.name === "string")
      .sort((a, b) => a.version - b.version);
    this.renderSessions();
    this.renderLabel();
  }

  checkpointAt(version) {
    return this.checkpoints.find((c) => c.version === version) || null;
  }

  renderSessions() {
    const people = this.people();
    this.peopleNow = people; // for the label, which follows every move of the slider
    this.sessions = groupSessions(this.entries.values(), {
      gap: this.gap, checkpoints: this.checkpoints.map((c) => c.version),
    });
    const now = Date.now() / 1000;
    // Rows are rebuilt only when what they show changed: new edits while the panel is open
    // change the newest session, not the thousands below it (a row's key is all it shows).
    const rows = [], kept = new Map();
    const row = (key, make) => {
      const li = this.rowCache.get(key) || make();
      kept.set(key, li);
      rows.push(li);
    };
    // Named versions go between the sessions, above the session they end (the list is newest first).
    const floor = this.hasOlder ? (this.oldest === null ? Infinity : this.oldest - 1) : 0;
    const marks = this.checkpoints.filter((c) => c.version >= floor && c.version <= this.head).reverse();
    let m = 0;
    const marksDownTo = (v) => {
      while (m < marks.length && marks[m].version >= v) {
        const c = marks[m++];
        const what = checkpointText(c, now);
        row(JSON.stringify(["c", c.version, c.name, what]), () => this.checkpointRow(c, what));
      }
    };
    for (const s of this.sessions) {
      marksDownTo(s.to);
      const who = s.people.map((p) => ({ ...(people.get(p.key) || { name: p.key, color: null, person: null }), count: p.count }));
      const withDate = now - s.end > 20 * 3600;
      const when = s.start === s.end || fmtTime(s.start, withDate) === fmtTime(s.end, withDate)
        ? fmtTime(s.end, withDate) : `${fmtTime(s.start, withDate)}–${fmtTime(s.end, false)}`;
      const key = JSON.stringify(["s", s.from, s.to, s.end, s.inserted, s.deleted, s.restored, when,
        who.map((p) => [p.name, p.color, p.person, p.count])]);
      row(key, () => this.sessionRow(s, who, when));
    }
    marksDownTo(floor);
    if (!this.sessions.length && !this.hasOlder && !marks.length) {
      row("empty", () => element("li", "history-empty", "No edits yet."));
    }
    this.rowCache = kept;
    // Rows that stay are left where they are (and keep the focus): only the others go or come.
    const stay = new Set(rows);
    for (const li of [...this.list.children]) if (!stay.has(li)) li.remove();
    let at = this.list.firstChild;
    for (const li of rows) {
      if (li === at) at = at.nextSibling;
      else this.list.insertBefore(li, at);
    }
    const older = $("#history-older");
    older.hidden = !this.hasOlder;
    this.renderSlider();
    this.markSelected();
  }

  /** A session's row: `who` [{name, color, person, count}], `when` its time as shown. */
  sessionRow(s, who, when) {
    const li = element("li", "history-session");
    li.dataset.from = String(s.from);
    li.dataset.to = String(s.to);
    const item = element("button", "history-session-button", null, li);
    item.type = "button";
    const names = element("span", "history-people", null, item);
    for (const p of who) names.appendChild(personLabel(p, "history-person"));
    element("time", "history-time", when, item).dateTime = new Date(s.end * 1000).toISOString();
    const counts = element("span", "history-counts", null, item);
    element("span", "count-ins", `+${s.inserted}`, counts);
    element("span", "count-del", `−${s.deleted}`, counts);
    const versions = s.from === s.to ? `version ${s.to}` : `versions ${s.from}–${s.to}`;
    element("span", "history-versions", (s.restored !== null ? `restored version ${s.restored} · ` : "") + versions, item);
    const edits = who.map((p) => `${p.name} (${plural(p.count, "edit")})`).join(", ");
    item.title = `${edits}: ${s.inserted} characters inserted, ${s.deleted} deleted. Click to see the text after it.`;
    return li;
  }

  /** A named version's row; `what` its line under the name (checkpointText). */
  checkpointRow(c, what) {
    const li = element("li", "history-checkpoint");
    li.dataset.to = String(c.version);
    li.dataset.version = String(c.version);
    const item = element("button", "history-checkpoint-button", null, li);
    item.type = "button";
    element("span", "checkpoint-flag", "⚑", item).setAttribute("aria-hidden", "true");
    element("span", "checkpoint-name", c.name, item);
    element("span", "history-versions", what, item);
    item.title = `The version named “${c.name}”. Click to see it.`;
    return li;
  }

  markSelected() {
    for (const li of this.list.querySelectorAll(".history-session, .history-checkpoint")) {
      const on = this.selected !== null && (li.classList.contains("history-checkpoint")
        ? Number(li.dataset.version) === this.selected
        : Number(li.dataset.from) <= this.selected && this.selected <= Number(li.dataset.to));
      li.classList.toggle("selected", on);
      li.firstChild.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }

  // ---- choosing a version ----

  /** The slider: by session (its stops), or by single edit when fine steps are on. */
  renderSlider() {
    this.stops = sliderStops(this.sessions, this.head, this.checkpoints.map((c) => c.version));
    const selected = this.selected === null ? this.head : this.selected;
    if (this.fine) {
      this.slider.max = String(this.head);
      this.slider.value = String(selected);
    } else {
      this.slider.max = String(this.stops.length - 1);
      this.slider.value = String(nearestStop(this.stops, selected));
    }
    this.root.dataset.steps = this.fine ? "edits" : "sessions";
  }

  slid() {
    const i = Number(this.slider.value);
    if (this.fine) {
      this.select(i);
      return;
    }
    this.select(this.stops[Math.max(0, Math.min(this.stops.length - 1, i))] ?? 0);
    if (i === 0 && this.hasOlder) this.loadOlder(); // the far end: older sessions may bring more stops
  }

  select(version) {
    if (!this.isOpen) return;
    version = Math.max(0, Math.min(this.head, version | 0));
    this.selected = version;
    this.renderSlider();
    this.renderLabel();
    this.markSelected();
    this.closeNameForm();
    // About the version chosen before, if an action on it failed.
    for (const what of ["version", "restore", "fork", "download"]) this.setError(what, null);
    this.root.dataset.state = "loading";
    if (this.abort) this.abort.abort();
    clearTimeout(this.scrubTimer);
    this.scrubTimer = setTimeout(() => this.load(version), SCRUB_DEBOUNCE_MS);
  }

  renderLabel() {
    const v = this.selected;
    const label = $("#history-label");
    const nameButton = $("#history-name");
    if (v === null) { label.textContent = ""; return; }
    const parts = [`Version ${v} of ${this.head}`];
    const named = this.checkpointAt(v);
    if (named) parts.push(`“${named.name}”`);
    const e = this.entries.get(v);
    if (v === this.head) parts.push("the current text");
    if (e) {
      const who = (this.peopleNow || this.people()).get(authorKey(e));
      const name = who ? who.name : e.author;
      parts.push(e.restored !== undefined && e.restored !== null
        ? `${name} restored version ${e.restored}` : `by ${name}`);
      parts.push(fmtTime(e.time, Date.now() / 1000 - e.time > 20 * 3600));
    } else if (v === 0) parts.push("before the first edit");
    label.textContent = parts.join(" · ");
    this.slider.setAttribute("aria-valuetext", label.textContent);
    nameButton.textContent = named ? "Rename this version" : "Name this version";
    this.renderRestore();
  }

  /** Restore is not offered for the current text: it would change nothing. */
  renderRestore() {
    const button = $("#history-restore");
    const current = this.selected === this.head;
    button.disabled = current || this.restoring;
    if (current) button.title = "This version is the current text: restoring it would change nothing.";
    else button.removeAttribute("title");
  }

  setMode(mode) {
    this.mode = mode;
    for (const r of document.querySelectorAll("input[name=history-mode]")) r.checked = r.value === mode;
    if (this.selected !== null) this.select(this.selected);
  }

  /** The text at `version` (cached). */
  async textAt(version, signal) {
    let text = this.texts.get(version);
    if (text === undefined) {
      const r = await api(apiUrl(this.docName, `/versions/${version}`), { signal });
      text = (await r.json()).doc;
      this.texts.set(version, text);
      if (this.texts.size > CACHE) this.texts.delete(this.texts.keys().next().value);
    }
    return text;
  }

  async load(version) {
    const seq = ++this.seq;
    const ctrl = new AbortController();
    this.abort = ctrl;
    const mode = this.mode;
    try {
      const text = await this.textAt(version, ctrl.signal);
      let spans = null;
      if (mode === "authors") {
        let got = this.authors.get(version);
        if (!got) {
          const r = await api(apiUrl(this.docName, "/authors", { version }), { signal: ctrl.signal });
          const body = await r.json();
          got = { spans: body.spans, people: body.people && typeof body.people === "object" ? body.people : {} };
          this.authors.set(version, got);
          if (this.authors.size > CACHE) this.authors.delete(this.authors.keys().next().value);
        }
        spans = got.spans;
        this.known = { ...this.known, ...got.people };
      }
      if (seq !== this.seq || version !== this.selected || mode !== this.mode || !this.isOpen) return; // stale
      this.setError("version", null);
      this.shown = { version, text, spans, mode };
      this.renderPreview(true);
      if (mode === "authors") this.renderSessions(); // /authors may have told newer names
    } catch (e) {
      if (e.name === "AbortError" || seq !== this.seq || !this.isOpen) return;
      // Not the text of the version chosen before under this one's label: nothing, until it loads.
      this.shown = null;
      this.preview.dispatch({ changes: { from: 0, to: this.preview.state.doc.length }, effects: setDecos.of(Decoration.none) });
      $("#history-legend").textContent = "";
      delete this.root.dataset.shown;
      this.root.dataset.state = "error";
      this.loadFailed("version", `version ${version}`, `Version ${version} cannot be shown`, e);
    }
  }

  renderPreview(newText) {
    const { version, text, spans, mode } = this.shown;
    const view = this.preview;
    const changes = newText || view.state.doc.length !== text.length || view.state.doc.toString() !== text
      ? { from: 0, to: view.state.doc.length, insert: text } : undefined;
    let deco;
    const legendBox = $("#history-legend");
    legendBox.textContent = "";
    if (mode === "authors") {
      const people = this.people();
      const made = authorDecorations(spans || [], text.length, people);
      deco = made.deco;
      for (const key of made.authors) {
        legendBox.appendChild(personLabel(people.get(key) || { name: key, color: null, person: null }, "legend-item"));
      }
    } else {
      const live = this.getView();
      const current = live ? live.state.doc.toString() : text;
      const made = diffDecorations(text, current);
      deco = made.deco;
      legendBox.textContent = made.coarse
        ? "Compared with the current text: too different to show in detail, so everything from the first change to the last is shown as removed (struck out) and added (green)."
        : made.added || made.removed
          ? `Compared with the current text: ${plural(made.removed, "character")} removed since (struck out), ${made.added} added since (green).`
          : "Same as the current text.";
    }
    view.dispatch({ changes, effects: setDecos.of(deco) });
    this.root.dataset.shown = String(version);
    this.root.dataset.mode = mode;
    this.root.dataset.state = "ready";
  }

  /** Say that loading `subject` ("the history", "version 12") failed with `e` (`alone`: how to say it
   *  if nothing else failed with the same message); a transient failure is tried again later. */
  loadFailed(what, subject, alone, e) {
    this.setError(what, { subject, cause: e.message, text: `${alone}: ${e.message}` }, transient(e));
  }

  /** Say (`text`, or loadFailed's) or stop saying (null) what went wrong with `what`; a `transient` failure
   *  is tried again later. */
  setError(what, text, transient = false) {
    if (text) this.errors.set(what, text);
    else if (!this.errors.delete(what)) return;
    if (text && transient) this.retryable.add(what);
    else this.retryable.delete(what);
    this.renderErrors();
    if (!this.retryable.size) this.stopRetry();
    else if (transient) this.scheduleRetry();
  }

  renderErrors() {
    const box = $("#history-error");
    // Loads that failed with one message (offline: "The server could not be reached") are one line.
    const lines = new Map(); // a line's key -> its text, or the failed loads with that cause
    const loadsFirst = [...this.errors].sort(([a], [b]) => LOADS.indexOf(b) - LOADS.indexOf(a));
    for (const [, error] of loadsFirst) {
      if (typeof error === "string") { lines.set(error, error); continue; }
      const key = `load\0${error.cause}`;
      const same = lines.get(key) || [];
      if (!same.some((other) => other.subject === error.subject)) same.push(error);
      lines.set(key, same);
    }
    const text = [...lines.values()].map((line) => typeof line === "string" ? line
      : line.length === 1 ? line[0].text
        : `Could not load ${LIST.format(line.map((e) => e.subject))}: ${line[0].cause}`).join("\n");
    box.hidden = !text;
    box.textContent = text;
  }

  scheduleRetry() {
    if (this.retryTimer || !this.isOpen) return;
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.retry(); }, this.retryDelay);
    this.retryDelay = Math.min(RETRY_MAX_MS, this.retryDelay * 2);
  }

  stopRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryDelay = RETRY_MIN_MS;
  }

  /** Load again what failed to load. */
  retry() {
    if (!this.isOpen) return;
    const again = this.retryable;
    if (again.has("older")) this.loadOlder();
    if (again.has("newer")) this.loadNewer();
    else if (again.has("checkpoints")) this.loadCheckpoints(); // loadNewer loads them too
    if (again.has("version") && this.selected !== null) {
      if (this.abort) this.abort.abort();
      this.root.dataset.state = "loading";
      this.load(this.selected);
    }
  }

  note(text) {
    $("#history-note").textContent = text;
  }

  // ---- naming a version ----

  openNameForm() {
    const version = this.selected;
    if (version === null) return;
    const named = this.checkpointAt(version);
    $("#history-name-version").textContent = String(version);
    const input = $("#history-name-input");
    input.value = named ? named.name : "";
    input.maxLength = MAX_NAME;
    $("#history-name-remove").hidden = !named;
    $("#history-name-form").hidden = false;
    input.focus();
    input.select();
  }

  /** Close the naming form; `refocus`: back to the button that opened it (Escape, Cancel, a save). */
  closeNameForm(refocus = false) {
    const form = $("#history-name-form");
    if (form) form.hidden = true;
    this.setError("name", null); // what was wrong with the name typed there goes with it
    if (refocus) $("#history-name").focus();
  }

  /** Name the selected version (`name` null: take its name away). */
  async saveName(name) {
    const version = this.selected;
    if (version === null) return;
    const clean = name === null ? null : cleanName(name);
    if (clean === "") {
      this.setError("name", "A name needs at least one letter, digit or other visible character.");
      $("#history-name-input").focus();
      return;
    }
    const form = $("#history-name-form");
    for (const b of form.querySelectorAll("button")) b.disabled = true;
    try {
      const r = await api(apiUrl(this.docName, "/checkpoints"), {
        method: "POST", json: { version, name: clean, author: this.getUser().name },
      });
      const { checkpoints } = await r.json();
      this.setError("name", null);
      this.closeNameForm(true);
      if (Array.isArray(checkpoints)) {
        this.checkpointsAsked++; // newer than any load under way: its answer is not shown over this one
        this.setCheckpoints(checkpoints);
      }
      const named = this.checkpointAt(version); // the name as the server keeps it
      this.note(clean === null ? `Version ${version} no longer has a name.`
        : `Version ${version} is now named “${named ? named.name : clean}”.`);
    } catch (e) {
      this.setError("name", `Could not name version ${version}: ${e.message}`);
    } finally {
      for (const b of form.querySelectorAll("button")) b.disabled = false;
    }
  }

  // ---- actions ----

  async restore() {
    const version = this.selected;
    if (version === null || version === this.head || this.restoring) return;
    this.restoring = true;
    this.renderRestore();
    this.note(`Restoring version ${version}…`);
    try {
      const { name, color } = this.getUser();
      const { version: made, unchanged } = await restoreVersion(this.docName, version,
        { author: name, person: this.person, color });
      this.setError("restore", null);
      if (unchanged) { // the server made no update: the text already was that version's
        this.note(`Version ${version} has the same text as the current one: nothing to restore.`);
        return;
      }
      this.lastRestore = { from: version, version: made };
      this.restoredNote(version, made);
    } catch (e) {
      this.note("");
      this.setError("restore", `Could not restore version ${version}: ${e.message}`);
      this.showError(`Could not restore version ${version}: ${e.message}`);
    } finally {
      this.restoring = false;
      this.renderRestore();
    }
  }

  /**
   * After this page's own restore: what it did, and the undo everyone else's notice offers
   * (docapi.js, undoRestore). It said "To undo, restore version N": no button, nothing about
   * edits made since, which that would take away too, and still there after someone had undone it.
   */
  restoredNote(from, made) {
    const box = $("#history-note");
    box.textContent = `Restored version ${from}: the text is now version ${made}. `;
    const asked = box.appendChild(document.createElement("span")); // what else undoing would take away
    asked.id = "history-undo-ask";
    const undo = box.appendChild(document.createElement("button"));
    undo.type = "button";
    undo.className = "link";
    undo.id = "history-undo-restore";
    undo.textContent = UNDO_RESTORE;
    undo.addEventListener("click", () => this.undoRestore(made, undo, asked));
  }

  /**
   * Someone else restored a version (it became `version`). After this page's own restore, its "Undo
   * the restore" would now bring back the text from before both: the note says what happened instead.
   */
  restoredElsewhere(version) {
    const undo = $("#history-undo-restore");
    const last = this.lastRestore;
    if (!undo || !last || version <= last.version) return;
    this.note(`Restored version ${last.from} (it became version ${last.version}); `
      + `someone restored a version since (version ${version}).`);
  }

  /** "Undo the restore" (docapi.js, as a restore notice's); here, not while another restore is under way. */
  async undoRestore(made, button, asked) {
    const view = this.getView();
    const { name, color } = this.getUser();
    const said = await undoRestore({
      docName: this.docName, made, head: view ? getSyncedVersion(view.state) : this.head,
      by: { author: name, person: this.person, color }, button,
      ask: (text) => { asked.textContent = text ? `${text} ` : ""; },
      begin: () => {
        if (this.restoring) return false;
        this.restoring = true;
        this.renderRestore();
        return true;
      },
    });
    if (said === null) return; // it asked, or another restore was under way
    this.restoring = false;
    this.renderRestore();
    if (said.ok) {
      this.setError("restore", null);
      this.note(said.text);
    } else {
      this.setError("restore", said.text);
      this.showError(said.text);
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
        method: "POST", admin: true,
        json: { version, author: this.getUser().name, person: this.person, color: this.getUser().color },
      });
      const data = await r.json();
      const url = data.links && data.links.edit ? data.links.edit : `/d/${encodeURIComponent(data.name)}`;
      this.setError("fork", null);
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
      this.setError("fork", `Could not copy version ${version}: ${e.message}`);
      this.showError(`Could not copy version ${version}: ${e.message}`);
    } finally {
      button.disabled = false;
    }
  }

  /** Download the selected version as plain text, Markdown (the server's) or a web page (made here). */
  async download() {
    const version = this.selected;
    if (version === null) return;
    const format = $("#history-format").value;
    try {
      await exportDocument({ docName: this.docName, version, format, getText: () => this.textAt(version) });
      this.setError("download", null);
    } catch (e) {
      this.setError("download", `Could not download version ${version}: ${e.message}`);
    }
  }

  /** For tests and debugging. */
  get info() {
    return {
      open: this.isOpen, head: this.head, selected: this.selected, mode: this.mode, fine: this.fine,
      shown: this.shown ? this.shown.version : null,
      text: this.preview ? this.preview.state.doc.toString() : null,
      sessions: this.sessions ? this.sessions.map((s) => ({ ...s, people: s.people.map((p) => ({ ...p })) })) : [],
      stops: this.stops.slice(),
      checkpoints: this.checkpoints.map((c) => ({ ...c })),
      lastRestore: this.lastRestore || null,
    };
  }
}
