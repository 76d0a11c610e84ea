// The panels beside the editor (History, the Markdown preview) and Escape:
// as a dialog does, an open panel closes on Escape and gives the focus back
// to what opened it (else to the editor). Escape keeps its meaning wherever
// it already has one, and closes nothing there:
//  - in the editor (CodeMirror's: Escape, then Tab, leaves the text; its
//    search panel closes on it);
//  - while a dialog is open (Escape closes the dialog alone);
//  - in a field where Escape means something (a text field, a select);
//  - for what took it first, calling preventDefault: History's naming form,
//    an "Undo anyway" question (docapi.js, undoRestore).
// With the focus in a panel, Escape closes that panel; elsewhere (the
// header, a notice, the page), the open panel opened last. A panel's Close
// button gives the focus back the same way (`focusBack`).

/** What to give the focus back to when `panel` closes: what has it now, unless that is the page or in the panel. */
export function openerOf(panel) {
  const el = document.activeElement;
  return el instanceof HTMLElement && el !== document.body && !panel.contains(el) ? el : null;
}

// Fields whose own Escape comes first (a range, a checkbox, a radio button have none).
const FIELD = "textarea, select, [contenteditable=''], [contenteditable=true], "
  + "input:not([type=range]):not([type=checkbox]):not([type=radio]):not([type=button]):not([type=submit])";

/** Whether `el` can take the focus back: still in the page, shown, enabled. */
function focusable(el) {
  return el && el.isConnected && el.getClientRects().length > 0 && !el.disabled;
}

/** Where the focus goes when `panel` closes from inside it (Escape, its Close button): what opened it,
 *  if that can still take the focus; else null (the panel's close() then gives it to the editor). */
export function focusBack(panel) {
  return focusable(panel.opener) ? panel.opener : null;
}

/**
 * Escape closes a panel. `panels()`: the panels, each {root, isOpen, openedAt, opener,
 * close(focusTo)}; `editor`: the live editor's element.
 */
export function escapeClosesPanels(panels, editor) {
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || ev.defaultPrevented || ev.isComposing
        || ev.ctrlKey || ev.metaKey || ev.altKey || ev.shiftKey) return;
    if (document.querySelector("dialog[open]")) return;
    const target = ev.target instanceof Element ? ev.target : null;
    if (target && (editor.contains(target) || target.closest(FIELD))) return;
    const open = panels().filter((p) => p && p.isOpen);
    const panel = open.find((p) => target && p.root.contains(target))
      || open.sort((a, b) => b.openedAt - a.openedAt)[0];
    if (!panel) return;
    ev.preventDefault();
    panel.close(focusBack(panel));
  });
}
