// The keyboard help: a dialog listing the editor's shortcuts, opened with
// "?" (anywhere but in a text field or the editor, where "?" is typed) or
// Ctrl-/ (everywhere, the editor included), and from the header's "?"
// button. It begins with how to leave the editor: Tab indents there, so
// Escape then Tab moves on (CodeMirror's rule), or Ctrl-M makes Tab move
// focus until pressed again. Outside the editor, Escape closes History or
// the preview (panels.js).

const $ = (sel) => document.querySelector(sel);

const mac = typeof navigator !== "undefined" && /Mac|iP(hone|ad|od)/.test(navigator.platform || "");
const mod = mac ? "⌘" : "Ctrl";

/** [keys, what] rows; the first ones are about leaving the editor. */
export const SHORTCUTS = [
  ["Esc, then Tab", "leave the editor (in the editor, Tab indents); Shift-Tab after Esc goes back"],
  [mac ? "Shift-Alt-M" : "Ctrl-M", "Tab moves the focus instead of indenting, until pressed again"],
  [`${mod}-/ or ? (outside the editor)`, "this list"],
  ["Esc (outside the editor)", "close History or the preview (the focus goes back to what opened it)"],
  [`${mod}-F`, "find and replace (Enter: next, Shift-Enter: previous, Esc: close)"],
  [`${mod}-G, Shift-${mod}-G`, "next and previous match"],
  [`${mod}-D`, "select the next occurrence of the selection"],
  [`${mod}-Z`, "undo your own last change (other people’s edits stay)"],
  [mac ? "Shift-⌘-Z" : "Ctrl-Y or Shift-Ctrl-Z", "redo"],
  ["Alt-↑, Alt-↓", "move the line up or down"],
  ["Shift-Alt-↑, Shift-Alt-↓", "copy the line up or down"],
  [`Shift-${mod}-K`, "delete the line"],
  [`${mod}-], ${mod}-[`, "indent, dedent"],
  ["Alt-drag", "rectangular selection (a column of text on several lines)"],
  [mac ? "⌘-Alt-[, ⌘-Alt-]" : "Shift-Ctrl-[, Shift-Ctrl-]", "fold and unfold the section under a heading"],
  [`${mod}-Alt-G`, "go to a line"],
  ["Enter in a list", "continues the list"],
];

/** What separates the keys of a row, or follows them, and is not a key. */
const KEY_WORDS = /(, then |, | or | \(outside the editor\)| in a list)/;

function editable(target) {
  return target instanceof Element
    && (target.closest("input, textarea, select, [contenteditable=''], [contenteditable=true]") !== null);
}

export class ShortcutHelp {
  constructor() {
    this.dialog = $("#shortcuts");
    const body = $("#shortcuts-list");
    for (const [keys, what] of SHORTCUTS) {
      const dt = body.appendChild(document.createElement("dt"));
      // Keys as keys, the words between and after them as words (it showed "then Tab",
      // "? (outside the editor)" and "Enter in a list" as if each were one key).
      for (const [i, part] of keys.split(KEY_WORDS).entries()) {
        if (i % 2) dt.appendChild(document.createTextNode(part));
        else if (part) dt.appendChild(document.createElement("kbd")).textContent = part;
      }
      body.appendChild(document.createElement("dd")).textContent = what;
    }
    $("#shortcuts-close").addEventListener("click", () => this.dialog.close());
    $("#help").addEventListener("click", () => this.open());
    document.addEventListener("keydown", (ev) => {
      if (ev.defaultPrevented || this.dialog.open) return;
      const ctrlSlash = ev.key === "/" && (mac ? ev.metaKey : ev.ctrlKey) && !ev.altKey;
      const question = ev.key === "?" && !ev.ctrlKey && !ev.metaKey && !ev.altKey && !editable(ev.target);
      if (ctrlSlash || question) {
        ev.preventDefault();
        ev.stopPropagation(); // before the editor's own Mod-/ (toggle comment)
        this.open();
      }
    }, true);
  }

  open() {
    if (!this.dialog.open) this.dialog.showModal();
  }
}
