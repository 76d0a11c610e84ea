// The Markdown preview beside the editor (on a narrow screen, instead of
// it): the live text rendered by markdown.js, again shortly after every
// change, whoever made it (the editor calls liveChanged() on every
// transaction, other people's updates included).
//
// What always holds here:
//  - The preview is built as DOM by markdown.js: nothing from the text is
//    set as HTML, nothing is loaded, no script runs.
//  - Rendering waits a moment after a change and never runs more often
//    than it takes (a long document renders less often, never blocking
//    typing); the scroll position is kept across renders.
//  - Whether the preview is open is remembered in this browser.
//  - The Markdown library is loaded when the preview first opens (a chunk
//    of its own), not with the editor.
//  - Escape closes it, the focus going back to what opened it (panels.js);
//    so does its Close button.

import { focusBack, openerOf } from "./panels.js";

const $ = (sel) => document.querySelector(sel);
const OPEN_KEY = "collab:preview";
const MIN_DELAY_MS = 80;

export class MarkdownPreview {
  /** opts: getView() (the live editor). */
  constructor(opts) {
    this.getView = opts.getView;
    this.root = $("#preview");
    this.body = $("#preview-body");
    this.button = $("#preview-toggle");
    this.isOpen = false;
    this.timer = null;
    this.lastText = null;
    this.cost = 0; // ms the last render took
    this.renders = 0;
    this.renderMarkdown = null; // markdown.js, once loaded
    this.button.addEventListener("click", () => this.toggle());
    $("#preview-close").addEventListener("click", () => this.close(focusBack(this)));
    let remembered = false;
    try {
      remembered = localStorage.getItem(OPEN_KEY) === "1";
    } catch (_) { /* not remembered */ }
    if (remembered) this.open(false);
  }

  toggle() {
    if (this.isOpen) this.close(); else this.open();
  }

  open(remember = true) {
    this.isOpen = true;
    this.opener = openerOf(this.root); // where Escape gives the focus back (panels.js)
    this.openedAt = performance.now();
    this.root.hidden = false;
    document.body.classList.add("preview-open");
    this.button.setAttribute("aria-pressed", "true");
    if (remember) this.remember("1");
    this.lastText = null;
    this.render();
  }

  /** Close the preview; the focus goes to `focusTo` (Escape, Close: what opened it), else to the editor. */
  close(focusTo = null) {
    this.isOpen = false;
    this.root.hidden = true;
    document.body.classList.remove("preview-open");
    this.button.setAttribute("aria-pressed", "false");
    clearTimeout(this.timer);
    this.timer = null;
    this.remember(null);
    const view = this.getView();
    if (focusTo) focusTo.focus();
    else if (view) view.focus();
  }

  remember(value) {
    try {
      if (value) localStorage.setItem(OPEN_KEY, value); else localStorage.removeItem(OPEN_KEY);
    } catch (_) { /* not remembered */ }
  }

  /** Called by the editor on every transaction of the live view. */
  liveChanged() {
    if (!this.isOpen || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.render();
    }, Math.max(MIN_DELAY_MS, 2 * this.cost));
  }

  render() {
    const view = this.getView();
    if (!this.isOpen || !view) return;
    if (!this.renderMarkdown) {
      loadMarkdown().then((m) => {
        this.renderMarkdown = m.renderMarkdown;
        this.render();
      }, (e) => {
        this.body.textContent = `The preview could not be loaded: ${e.message}`;
      });
      return;
    }
    const text = view.state.doc.toString();
    if (text === this.lastText) return;
    const started = performance.now();
    const scroller = this.root;
    const top = scroller.scrollTop;
    this.body.replaceChildren(this.renderMarkdown(text));
    if (!text.trim()) {
      const p = this.body.appendChild(document.createElement("p"));
      p.className = "preview-empty";
      p.textContent = "Nothing to show yet: what you write in Markdown appears here, formatted.";
    }
    scroller.scrollTop = top;
    this.lastText = text;
    this.renders++;
    this.root.dataset.renders = String(this.renders);
    this.cost = performance.now() - started;
  }
}

let loading = null;

/** markdown.js (and markdown-it), loaded once. */
export function loadMarkdown() {
  if (!loading) loading = import("./markdown.js").catch((e) => { loading = null; throw e; });
  return loading;
}
