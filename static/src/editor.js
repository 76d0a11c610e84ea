// The editor page /d/{doc}: header (status, people, identity), the editor,
// the notices and the dialogs.  Syncing lives in sync.js (around the
// protocol core, core.js), cursors in presence.js, the people list's rules
// in people.js, the Markdown preview in preview.js, downloads in export.js,
// the Share dialog in share.js, lasting notices in notices.js, Escape on
// the panels in panels.js, the token in auth.js (imported first: it takes
// an admin token out of the address before anything runs).

import { socketQuery, isAdmin, accessControl, adminToken, pageTokenKind } from "./auth.js";
import { CollabSession, pageLimits } from "./sync.js";
import { PendingStore } from "./pending.js";
import { flushRecord } from "./flush.js";
import { editorSetup, followColorScheme } from "./setup.js";
import { EditorView } from "@codemirror/view";
import { HistoryPanel } from "./history.js";
import { ShareDialog } from "./share.js";
import { ShortcutHelp } from "./shortcuts.js";
import { showNotice, setNoticeText } from "./notices.js";
import { undoRestore, UNDO_RESTORE, wasOwnRestore, historyEntry, getJSON, apiUrl } from "./docapi.js";
import { MarkdownPreview } from "./preview.js";
import { escapeClosesPanels } from "./panels.js";
import { exportDocument } from "./export.js";
import { peopleHere } from "./people.js";
import {
  loadUser, saveUser, loadPerson, USER_KEY, COLORS, cleanName, safeColor, inkFor, newClientID, DOC_NAME_RE,
} from "./identity.js";

const $ = (sel) => document.querySelector(sel);

function docNameFromPath() {
  const m = /^\/d\/([^/]+)\/?$/.exec(location.pathname);
  return m ? decodeURIComponent(m[1]) : null;
}

/** The "collab" logo: a link to the document list for those who may see it, plain text for everyone else (an edit or view link would meet a refusal there). */
function renderHome() {
  const home = $("#home");
  if (isAdmin) return;
  const span = document.createElement("span");
  span.id = "home";
  span.className = "brand";
  span.textContent = home.textContent;
  home.replaceWith(span);
}

// ---- messages -----------------------------------------------------------------

let toastTimer = null;
/** A toast; the same text again (a push refused on every retry, say) counts on the last one instead. */
function showError(text) {
  const box = $("#messages");
  const last = box.lastElementChild;
  if (last && last.dataset.text === text) {
    const count = Number(last.dataset.count) + 1;
    last.dataset.count = String(count);
    last.firstChild.textContent = `${text} (${count} times)`;
  } else {
    const item = document.createElement("div");
    item.className = "message";
    item.setAttribute("role", "alert");
    item.dataset.text = text;
    item.dataset.count = "1";
    item.textContent = text;
    const close = item.appendChild(document.createElement("button"));
    close.type = "button";
    close.className = "message-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    close.onclick = () => item.remove();
    box.appendChild(item);
    while (box.children.length > 4) box.firstChild.remove();
  }
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { for (const m of [...box.children]) m.remove(); }, 12000);
}

/** A toast that is not repeated while it shows (only its time is renewed). */
function showHint(text) {
  if ([...$("#messages").children].some((m) => m.dataset.text === text)) {
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { for (const m of [...$("#messages").children]) m.remove(); }, 12000);
    return;
  }
  showError(text);
}

const VIEW_ONLY_HINT = "This link is view only: you can read the text and its history, not change them."
  + " To edit, ask the person who shared it for an edit link.";

/**
 * Someone with a view link types or pastes: the editor takes nothing, and said nothing either (only
 * "view only" in the header), as if the page were broken. The keys that would change the text say why.
 * (The read-only editor cannot hold the focus: the keys reach the page, outside any field.)
 */
function viewOnlyKeys() {
  const typing = (ev) => typeof ev.key === "string" && !ev.ctrlKey && !ev.metaKey && !ev.altKey
    && ((ev.key.length === 1 && ev.key !== "?") || ev.key === "Enter" || ev.key === "Backspace" || ev.key === "Delete");
  // Where keys meant for the text land: the page itself or the editor. Keys on anything else that holds
  // the focus (a field, a button, a notice's "Show the removed text") work that control, and say nothing.
  const intoText = (t) => t === document.body || t === document.documentElement
    || (t instanceof Element && t.closest("#editor") !== null && t.closest("input, textarea, select, button, a") === null);
  const refused = () => session && session.role === "view" && session.accessEnded === null;
  document.addEventListener("keydown", (ev) => {
    if (!ev.defaultPrevented && refused() && intoText(ev.target) && typing(ev)) showHint(VIEW_ONLY_HINT);
  });
  document.addEventListener("paste", (ev) => {
    if (refused() && intoText(ev.target)) showHint(VIEW_ONLY_HINT);
  });
}

// ---- status ------------------------------------------------------------------------

const STATUS_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting",
  offline: "Offline",
  stopped: "Not syncing",
};

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

let statusTick = null;
function renderStatus(info) {
  const el = $("#status");
  el.dataset.state = info.state;
  el.dataset.pending = String(info.pending);
  if (connectedNow !== (info.state === "connected")) {
    connectedNow = info.state === "connected";
    renderPeopleCount();
  }
  // The state, its countdown (which a narrow header may leave out: style.css), then " · view only".
  let text = STATUS_TEXT[info.state];
  let when = "";
  if (info.state === "reconnecting" && info.retryAt) {
    const secs = Math.max(0, Math.ceil((info.retryAt - Date.now()) / 1000));
    if (secs > 0) when = ` in ${secs}s`;
    else text += "…";
  }
  const viewOnly = info.role === "view" ? " · view only" : "";
  // Each said in full and, for a phone's narrow header (style.css), briefly: there the count of edits
  // not yet saved is what must show whole, not the words around it.
  const [pending, brief] = info.pending
    ? [`${plural(info.pending, "edit")} not yet saved`, `${info.pending} unsaved`]
    : info.state === "connected" && info.role !== "view" ? ["all changes saved", "all saved"] : ["", ""];
  $("#status-state").textContent = text;
  $("#status-when").textContent = when;
  $("#status-role").textContent = viewOnly;
  $("#status-pending-full").textContent = pending;
  $("#status-pending-brief").textContent = brief;
  $("#status-pending").hidden = !pending;
  $("#status-pending").title = pending;
  el.title = info.stopped || (info.pending && info.state !== "connected"
    ? (info.storageFull
      ? "This browser's storage is full: your edits are sent when the connection is back if this tab stays open."
      : "Your edits are kept in this browser and sent when the connection is back.")
    : "");
  // Retrying helps after a lost connection, never after a revoked link (only a new link does).
  $("#reconnect").hidden = info.accessEnded !== null
    || !(info.state === "reconnecting" || info.state === "stopped" || info.state === "offline");
  clearTimeout(statusTick);
  if (info.state === "reconnecting" && info.retryAt) statusTick = setTimeout(() => renderStatus(session.statusInfo()), 500);
}

// ---- people --------------------------------------------------------------------------

function personChip(name, color, you) {
  const li = document.createElement("li");
  li.className = "person" + (you ? " person-you" : "");
  li.style.setProperty("--peer-color", safeColor(color));
  li.style.setProperty("--peer-ink", inkFor(safeColor(color)));
  li.title = you ? `${name} (you)` : name;
  const dot = li.appendChild(document.createElement("span"));
  dot.className = "person-dot";
  dot.textContent = (name.trim()[0] || "?").toUpperCase();
  const label = li.appendChild(document.createElement("span"));
  label.className = "person-name";
  label.textContent = you ? `${name} (you)` : name;
  return li;
}

let peopleNames = ""; // the names and colours of the people here, as last rendered
let othersHere = 0; // how many other people are here, as last rendered
let connectedNow = false; // the page is connected: who is here is known

/** "3 here", "only you"; nothing while not connected (offline, "only you" would say everyone left). */
function renderPeopleCount() {
  $("#people-count").textContent = !connectedNow ? "" : othersHere ? `${othersHere + 1} here` : "only you";
}

/** The people here, one entry per person (people.js): two tabs of one person are one entry; our own other tabs are us. */
function renderPeople(list) {
  const { others, myTabs } = peopleHere(list, person);
  const ul = $("#people");
  ul.textContent = "";
  const me = ul.appendChild(personChip(user.name, user.color, true));
  if (myTabs) me.title = `${user.name} (you, here in ${myTabs + 1} tabs)`;
  for (const p of others) {
    const li = ul.appendChild(personChip(p.name, p.color, false));
    li.dataset.sessions = p.sessions.join(" ");
    if (p.person) li.dataset.person = p.person;
    if (p.sessions.length > 1) li.title = `${p.name} (in ${p.sessions.length} tabs)`;
  }
  othersHere = others.length;
  renderPeopleCount();
  // History names people as they are now: tell it when a name or colour changed (not at every cursor move).
  const names = JSON.stringify([[person, user.name, user.color], ...others.map((p) => [p.person, p.name, p.color])]);
  if (names !== peopleNames && historyPanel) historyPanel.peopleChanged();
  peopleNames = names;
}

// ---- identity dialog -------------------------------------------------------------------

function openIdentity() {
  const dlg = $("#identity");
  const input = $("#identity-name");
  input.value = user.name;
  const swatches = $("#identity-colors");
  swatches.textContent = "";
  for (const c of COLORS) {
    const label = swatches.appendChild(document.createElement("label"));
    label.className = "swatch";
    label.style.setProperty("--peer-color", c);
    const radio = label.appendChild(document.createElement("input"));
    radio.type = "radio";
    radio.name = "color";
    radio.value = c;
    radio.checked = c === user.color;
    radio.setAttribute("aria-label", c);
  }
  dlg.showModal();
  input.select();
}

function applyIdentity(ev) {
  ev.preventDefault();
  const color = $("#identity-colors input:checked")?.value || user.color;
  user = { name: cleanName($("#identity-name").value), color: safeColor(color) };
  saveUser(user);
  $("#identity").close();
  identityChanged();
}

/** A new name or colour (from the dialog, or from this person's other tab): everyone learns it from a new hello. */
function identityChanged() {
  renderMe();
  if (!session) return;
  session.setUser(user);
  renderPeople(session.peerList());
}

function renderMe() {
  const me = $("#me");
  me.style.setProperty("--peer-color", user.color);
  me.style.setProperty("--peer-ink", inkFor(user.color));
  $("#me-name").textContent = user.name;
}

// ---- notices: restores, a link that stopped working, the admin's hint ---------------------

function fmtClock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/**
 * Someone restored an earlier version: everyone's text was replaced. Say
 * who and which version, what it removed (to copy), and offer to see it in
 * History or to undo it (restore the version before the restore).
 */
async function onRestore(e) {
  // Known before anything is said: its update may come before the answer to this page's own request.
  const own = await wasOwnRestore(e.version);
  // An earlier restore's notice would now undo this one too (it brings back the text from before it):
  // its Undo goes, as the History panel's does after the page's own restore. Not the one whose undo
  // this restore is (its button is disabled while that is sent): that notice says what came of it.
  for (const old of document.querySelectorAll("#notices .notice-restore")) {
    const undo = old.querySelector('[data-action="undo"]');
    if (undo && !undo.disabled && Number(old.dataset.key.slice("restore-".length)) < e.version) {
      undo.remove();
      setNoticeText(old, `${own ? "You" : "Someone"} restored a version since (version ${e.version}): undoing this one `
        + `from here would undo ${own ? "yours" : "theirs"} too.`);
    }
  }
  if (own) return; // the History panel already says so
  if (historyPanel) historyPanel.restoredElsewhere(e.version);
  let { author, restored } = e;
  let time = null;
  if (author === null || restored === null) {
    try {
      const entry = await historyEntry(docName, e.version);
      if (entry) {
        author = author ?? entry.author;
        restored = restored ?? (typeof entry.restored === "number" ? entry.restored : null);
        time = entry.time;
      }
    } catch (_) { /* said without the details */ }
  }
  const who = author || "Someone";
  const which = restored !== null ? `version ${restored}` : "an earlier version";
  const removed = e.removedLength;
  const text = (removed
    ? `The text is now as it was at ${which}: ${plural(removed, "character")} written since were removed from everyone’s screen.`
    : `The text is now as it was at ${which}; nothing was removed.`)
    + (e.mine ? " What you typed while it happened was kept; your words from before may be among the removed ones." : "");
  const canUndo = session.role !== "view" && session.accessEnded === null;
  const actions = [{
    id: "see", label: "See what changed", run: () => historyPanel.openAt(e.version - 1),
  }];
  if (canUndo) actions.unshift({ id: "undo", label: UNDO_RESTORE, primary: true, run: (el, button) => undoNoticedRestore(e, el, button) });
  showNotice({
    kind: "restore", role: "alert", key: `restore-${e.version}`,
    title: `${who} restored ${which}${time ? ` at ${fmtClock(time)}` : ""}.`,
    text,
    details: removed ? { summary: `Show the removed text (${plural(removed, "character")})`, text: e.removed } : null,
    actions,
  });
}

// ---- export ------------------------------------------------------------------------------

/** The Export dialog: the text at the synced version (saved on the server) as .txt, .md or a web page. */
function openExport() {
  const version = session.core.version;
  const dlg = $("#export-dialog");
  $("#export-intro").textContent = version === null
    ? "The text is still loading."
    : `The text as saved on the server: version ${version}${session.pendingCount()
      ? " (your edits still on their way are not in it yet: copy those from the editor)" : ""}.`;
  $("#export-note").textContent = "";
  dlg.dataset.version = String(version);
  if (!dlg.open) dlg.showModal();
}

async function runExport(format) {
  const dlg = $("#export-dialog");
  const version = Number(dlg.dataset.version);
  if (!Number.isSafeInteger(version)) return;
  const text = session.core.version === version ? session.core.syncedDoc.toString() : null;
  $("#export-note").textContent = "Preparing the download…";
  try {
    await exportDocument({
      docName, version, format, localText: text,
      getText: async () => (await getJSON(apiUrl(docName, `/versions/${version}`))).doc,
    });
    $("#export-note").textContent = `Downloaded version ${version} as ${format === "html" ? "a web page" : `.${format}`}.`;
  } catch (e) {
    $("#export-note").textContent = `Could not export: ${e.message}`;
  }
}

/** A restore notice's "Undo the restore" (docapi.js, as History's after this page's own restore). */
async function undoNoticedRestore(e, el, button) {
  const said = await undoRestore({
    docName, made: e.version, head: session.core.version,
    by: { author: user.name, person, color: user.color }, button,
    ask: (text) => setNoticeText(el, text),
  });
  if (said) setNoticeText(el, said.text);
}

/** Access ended for good (links reset, document deleted): say so, and keep what was typed within reach. */
function onAccessEnded(text, title = "This link no longer works.") {
  const pending = session.pendingCount();
  showNotice({
    kind: "access", role: "alert", key: "access", dismissible: false, title,
    text: pending ? `${text} ${plural(pending, "edit")} of yours could not be saved; copy the text before you leave.` : text,
    actions: pending ? [{ id: "copy-text", label: "Copy your text", primary: true, run: () => showRescue({
      text: session.view.state.doc.toString(), count: pending, fragments: false }) }] : [],
  });
}

/**
 * Edits this browser kept under a name this document had before a rename (a tab closed, or stopped,
 * while it was renamed) are this document's: they move to its name before the page looks for them.
 * Asked of the server only when there are records of other names at all; offline, next time.
 */
async function adoptRenamed(store) {
  const others = store.otherDocs();
  if (!others.size) return;
  let names;
  try {
    names = (await getJSON(apiUrl(store.doc, "/former-names"))).names;
  } catch (_) {
    return; // offline, no such document yet, or no access: nothing to adopt now
  }
  for (const { name, until } of Array.isArray(names) ? names : []) {
    if (others.has(name) && typeof until === "number") await store.adoptFrom(name, until * 1000);
  }
}

const REFOCUS_KEY = "collab:refocus"; // this tab's editor had the focus, with the caret here, when the page went to the new name
let refocusAt = null; // that caret, until the page has the text it was in

/** The editor focused, with the caret at `refocusAt` (as far as the text goes until `final`, its welcome). */
function placeCaret(final = false) {
  const view = session.view;
  view.dispatch({ selection: { anchor: Math.min(refocusAt, view.state.doc.length) }, scrollIntoView: true });
  view.focus();
  if (final) refocusAt = null;
}

/**
 * The document was renamed: its unsent edits move with it, and the page
 * opens it under the new name. An edit or view link reloads its own address
 * (the server sends it on to the new name with a token for it); the admin
 * and a personal instance go straight there.
 */
function onRenamed(to, text) {
  showNotice({ kind: "hint", key: "renamed", dismissible: false, text: `${text} Opening it there…` });
  // Whoever is typing goes on typing into the page at the new name, where they were, not into nowhere.
  try {
    if (session.view && session.view.hasFocus) {
      sessionStorage.setItem(REFOCUS_KEY, String(session.view.state.selection.main.head));
    }
  } catch (_) { /* no storage: the person clicks into the text */ }
  session.savePending(true);
  store.moveTo(to);
  store.release();
  leaving = true;
  const tokenLink = pageTokenKind === "edit" || pageTokenKind === "view";
  setTimeout(() => location.replace(tokenLink ? location.href : `/d/${encodeURIComponent(to)}`), 600);
}

const ADOPT_CHECK_MS = 2000; // how often an open page looks for the records of tabs closed meanwhile
const ADOPT_GRACE_MS = 2000; // a record saved since then may be its own tab's, reloading: left to it

const HINT_KEY = "collab:hint:share"; // set once the admin took the hint (opened Share or dismissed it)

/** The admin opened a document: the people to write with get its edit or view link, from Share (said until taken). */
function adminHint() {
  if (!accessControl || !adminToken || pageTokenKind !== "admin") return;
  try {
    if (localStorage.getItem(HINT_KEY)) return;
  } catch (_) { /* no storage: say it */ }
  const taken = () => { try { localStorage.setItem(HINT_KEY, "1"); } catch (_) { /* said again next time */ } };
  const el = showNotice({
    kind: "hint", key: "share-hint",
    text: "To write together, send people this document’s edit or view link from Share. Those links open only this document.",
    actions: [{ id: "share", label: "Share", run: (notice) => { notice.remove(); taken(); share.open(); } }],
  });
  el.querySelector("[data-action=dismiss]").addEventListener("click", taken);
  $("#share").addEventListener("click", () => { el.remove(); taken(); }, { once: true });
}

// ---- rescue ----------------------------------------------------------------------------

// Why the server refused unsent edits for good (a rescue's `refused`), said before what the dialog holds.
const REFUSED_WHY = {
  "too-large": "This document has reached the largest size the server allows, so it could not take",
  "bad-changes": "The server refused as invalid",
  "bad-message": "The server refused as malformed",
};

// The document the page's text was of is not there any more (a rescue's `gone`): what happened.
const GONE_WHY = {
  deleted: ["The server no longer has this document (it was deleted while this page was away)",
    "The editor now shows an empty document; typing in it makes the document again"],
  replaced: ["This document was deleted while this page was away, and another one made under its name",
    "The editor now shows the new document's text"],
};

function showRescue({ text, count, fragments, older = false, refused = null, gone = null }) {
  const dlg = $("#rescue");
  const ta = $("#rescue-text");
  const why = refused ? REFUSED_WHY[refused] ?? `The server refused (${refused})` : null;
  const [happened, shows] = GONE_WHY[gone] ?? [];
  $("#rescue-intro").textContent = happened
    ? `${happened}, so ${count ? `your ${plural(count, "unsent edit")} could not be saved` : "what you saw as saved is not on the server any more"}. ${shows}. ${fragments
      ? "These are the pieces of text you typed" : "This is the text as you had it"}; copy what you need.`
    : why
    ? `${why} your ${plural(count, "unsent edit")}. The editor goes back to the server's text. ${fragments
      ? "These are the pieces of text you typed" : "This is the text as you had it"}; copy what you need${
      refused === "too-large" ? ", make room, and paste it back in smaller parts" : " and paste it back"}.`
    : older
    ? "The server's copy of this document is older than the one this page had (it was restored from a backup, say), so what you saw as saved is not on the server any more. The editor now shows the server's text. This is the text as you had it; copy what you need and paste it back."
    : fragments
      ? `${plural(count, "unsent edit")} could not be merged, and the text they were based on was not stored. These are the pieces of text you typed; copy what you need.`
      : `The server could no longer merge your ${plural(count, "unsent edit")} (it does not have the version they were based on any more). The editor now shows the server's text. This is the text as you had it; copy what you need and paste it back.`;
  // Added to what is kept from earlier rescues until the person dismisses them (closing the dialog
  // with Escape keeps them), so closing the tab or a second rescue does not lose it either.
  let kept = dlg.open ? ta.value : "";
  try {
    const stored = JSON.parse(localStorage.getItem(RESCUE_KEY));
    if (stored && typeof stored.text === "string" && stored.text) kept = stored.text;
  } catch (_) { /* nothing readable kept */ }
  ta.value = kept ? `${kept}\n\n----\n\n${text}` : text;
  try {
    localStorage.setItem(RESCUE_KEY, JSON.stringify({ text: ta.value, savedAt: Date.now() }));
  } catch (_) { /* best effort: the dialog shows it now */ }
  if (!dlg.open) dlg.showModal();
}

async function copyRescue() {
  const ta = $("#rescue-text");
  try {
    await navigator.clipboard.writeText(ta.value);
  } catch (_) {
    ta.select();
    document.execCommand("copy");
  }
  $("#rescue-copy").textContent = "Copied";
}

// ---- boot ------------------------------------------------------------------------------------

const docName = docNameFromPath();
const RESCUE_KEY = `collab:rescue:${docName}`; // rescued text, kept until the person dismisses it
let user = loadUser();
const person = loadPerson(); // this browser's stable person id (hello.person)
let session = null;
let historyPanel = null;
let preview = null;
let share = null;
let store = null;
let leaving = false; // the page is going to the document's new name: no "unsaved edits" prompt

async function boot() {
  if (!docName || !DOC_NAME_RE.test(docName)) {
    $("#doc-name").textContent = "Invalid document name";
    showError("A document name may only contain letters, digits, '-' and '_' (up to 100).");
    return;
  }
  document.title = `${docName} · collab`;
  $("#doc-name").textContent = docName;
  renderMe();

  store = new PendingStore(docName);
  await adoptRenamed(store);
  let restore = null;
  const extras = []; // more closed tabs' edits: sent over their own connection
  for (const rec of await store.orphans()) {
    if (!restore) {
      if (await store.claim(rec.clientID)) restore = rec;
    } else if (await store.acquire(rec.clientID)) {
      extras.push(rec);
    }
  }
  let clientID = restore ? restore.clientID : null;
  while (!clientID) {
    const id = newClientID();
    if (await store.claim(id)) clientID = id;
  }

  const wsProto = location.protocol === "https:" ? "wss:" : "ws:";
  const wsUrl = `${wsProto}//${location.host}/ws/${encodeURIComponent(docName)}${socketQuery()}`;
  let flushing = false;
  // A tab of this document closed with unsent edits while this page was open (the server was down,
  // say): its record is adopted on the next connection, not left until some later page opens.
  // `grace` (ms): leave alone a record saved less than that long ago, for its own tab's reload to take.
  // Resolves to how many records it adopted.
  const adoptClosedTabs = async (grace = 0) => {
    let adopted = 0;
    for (const rec of await store.orphans()) {
      if (rec.clientID !== clientID && !extras.some((e) => e.clientID === rec.clientID)
          && Date.now() - (rec.savedAt || 0) >= grace && await store.acquire(rec.clientID)) {
        extras.push(rec);
        adopted++;
      }
    }
    return adopted;
  };
  const flushExtras = async () => {
    if (flushing || !extras.length) return;
    flushing = true;
    for (const rec of extras.slice()) {
      const result = await flushRecord({ wsUrl, rec, user, person, store, rescue: showRescue, limits: pageLimits() });
      if (result !== "failed") extras.splice(extras.indexOf(rec), 1);
    }
    flushing = false;
  };
  let wasConnected = false;
  session = new CollabSession({
    docName,
    wsUrl,
    parent: $("#editor"),
    extensions: [editorSetup(), EditorView.updateListener.of((u) => {
      if (historyPanel && (u.docChanged || u.transactions.length)) historyPanel.liveChanged();
      if (preview && u.docChanged) preview.liveChanged();
    })],
    user,
    person,
    store,
    clientID,
    restore,
    on: {
      status: (info) => {
        renderStatus(info);
        if (info.state === "connected" && refocusAt !== null) placeCaret(true);
        if (info.state === "connected") adoptClosedTabs().then(flushExtras, flushExtras);
        // Connected again: History loads what it could not (not at every status, which follows each edit).
        if (info.state === "connected" && !wasConnected && historyPanel) historyPanel.reconnected();
        wasConnected = info.state === "connected";
      },
      error: showError,
      rescue: showRescue,
      peers: renderPeople,
      role: () => renderStatus(session.statusInfo()),
      restore: (e) => { onRestore(e).catch((err) => console.error(err)); },
      checkpoints: () => { if (historyPanel) historyPanel.checkpointsChanged(); },
      access: onAccessEnded,
      renamed: onRenamed,
    },
  });
  // Such a tab may also close while this page stays connected (its own connection was down, or it
  // was offline alone): no status change of this page would then look for its record, and its edits
  // would wait in storage, unseen by everyone, while this page says all is saved. So while another
  // tab's record of this document is in storage, this page looks every few seconds.
  setInterval(() => {
    if (flushing || session.statusInfo().state !== "connected") return;
    const others = store.recordIDs().filter((id) => id !== clientID && !extras.some((e) => e.clientID === id));
    if (others.length) adoptClosedTabs(ADOPT_GRACE_MS).then((n) => (n ? flushExtras() : null), () => null);
  }, ADOPT_CHECK_MS);
  historyPanel = new HistoryPanel({
    docName,
    getView: () => session.view,
    getUser: () => user,
    person,
    getRole: () => session.role,
    getPeople: () => [...session.peerList(), { person, name: user.name, color: user.color }],
    showError,
  });
  $("#history-toggle").addEventListener("click", () => {
    historyPanel.toggle();
    // Into the panel it opened (after the editor, whose Tab indents, a keyboard could hardly get there).
    if (historyPanel.isOpen) $("#history-slider").focus();
  });
  preview = new MarkdownPreview({ getView: () => session.view });
  $("#export").addEventListener("click", openExport);
  share = new ShareDialog({ docName, getRole: () => session.role });
  $("#share").addEventListener("click", () => share.open());
  adminHint();
  renderPeople([]);
  renderStatus(session.statusInfo());
  try {
    const kept = JSON.parse(localStorage.getItem(RESCUE_KEY));
    if (kept && typeof kept.text === "string" && !$("#rescue").open) {
      $("#rescue-intro").textContent = "Text rescued earlier from edits the server could not merge. Copy what you need, then dismiss it.";
      $("#rescue-text").value = kept.text;
      $("#rescue").showModal();
    }
  } catch (_) { /* nothing kept */ }
  followColorScheme(() => session.view);

  window.addEventListener("beforeunload", (ev) => {
    if (session.pendingCount() > 0 && !leaving) {
      session.savePending(true);
      ev.preventDefault();
      ev.returnValue = "";
    }
  });
  window.addEventListener("pagehide", () => {
    session.savePending(true);
    store.release();
  });
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) store.beat(); });

  // A small hook for the browser tests and for debugging from the console.
  window.__collab = {
    session,
    get view() { return session.view; },
    get clientID() { return session.clientID; },
    get status() { return session.statusInfo(); },
    get statusLog() { return session.statusLog.slice(); },
    get pending() { return session.pendingCount(); },
    get version() { return session.core.version; },
    get unconfirmed() { return session.core.unconfirmed.length; },
    peers: () => session.peerList(),
    person,
    history: historyPanel,
    preview,
  };
  try {
    const at = sessionStorage.getItem(REFOCUS_KEY);
    if (at !== null) {
      sessionStorage.removeItem(REFOCUS_KEY);
      refocusAt = Number(at) || 0;
      placeCaret(session.view.state.doc.length >= refocusAt); // else again once the text came
    }
  } catch (_) { /* no storage: nothing was kept to do */ }
  document.body.dataset.ready = "true";
}

renderHome();
new ShortcutHelp();
viewOnlyKeys();
escapeClosesPanels(() => [historyPanel, preview], $("#editor"));
$("#me").addEventListener("click", openIdentity);
for (const id of ["#share-dialog", "#identity", "#rescue", "#shortcuts", "#export-dialog"]) {
  $(id).addEventListener("close", () => {
    // Back to the editor, with the caret where it was (focusing alone may
    // let the browser put the DOM caret at the start).
    const view = session && session.view;
    if (!view) return;
    setTimeout(() => {
      const selection = view.state.selection;
      view.focus();
      view.dispatch({ selection });
    }, 0);
  });
}
$("#identity-form").addEventListener("submit", applyIdentity);
// This person renamed themselves in another tab: this tab takes the new name too (one person, one name).
window.addEventListener("storage", (ev) => {
  if (ev.key !== USER_KEY) return;
  const next = loadUser();
  if (next.name === user.name && next.color === user.color) return;
  user = next;
  identityChanged();
});
for (const b of document.querySelectorAll("#export-dialog [data-format]")) {
  b.addEventListener("click", () => runExport(b.dataset.format));
}
$("#export-close").addEventListener("click", () => $("#export-dialog").close());
$("#identity-cancel").addEventListener("click", () => $("#identity").close());
$("#rescue-copy").addEventListener("click", copyRescue);
$("#rescue-close").addEventListener("click", () => {
  $("#rescue").close();
  localStorage.removeItem(RESCUE_KEY);
});
$("#reconnect").addEventListener("click", () => session && session.reconnectNow());

boot().catch((e) => {
  console.error(e);
  showError(`The editor failed to start: ${e.message}`);
});
