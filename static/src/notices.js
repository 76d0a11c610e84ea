// Notices that stay until the person acts on them, under the header: a
// restore that replaced everyone's text (who, which version, what it
// removed, and one click to see it or undo it), a link that stopped
// working, a hint. Short-lived errors are toasts (editor.js), not these.
//
// What always holds here:
//  - text from the server or from other people (names, removed text) is
//    set as text, never as markup;
//  - every notice has a dismiss button and a role the screen reader
//    announces (alert for what went wrong, status otherwise).

const $ = (sel) => document.querySelector(sel);

/**
 * Show a notice; returns its element. spec: {kind ("restore" | "access" |
 * "hint"), role ("alert" | "status"), title, text, details: {summary, text}
 * (a disclosure with text the person may copy), actions: [{label, run(el),
 * primary, id}], dismissible (default true), key (a notice with the same
 * key is replaced)}.
 */
export function showNotice(spec) {
  const box = $("#notices");
  if (spec.key) for (const old of box.querySelectorAll(`[data-key="${CSS.escape(spec.key)}"]`)) old.remove();
  const el = document.createElement("section");
  el.className = `notice notice-${spec.kind || "hint"}`;
  el.setAttribute("role", spec.role || "status");
  if (spec.key) el.dataset.key = spec.key;
  const body = el.appendChild(document.createElement("div"));
  body.className = "notice-body";
  if (spec.title) {
    const title = body.appendChild(document.createElement("strong"));
    title.className = "notice-title";
    title.textContent = spec.title;
  }
  if (spec.text) {
    const p = body.appendChild(document.createElement("p"));
    p.className = "notice-text";
    p.textContent = spec.text;
  }
  if (spec.details) {
    const d = body.appendChild(document.createElement("details"));
    d.className = "notice-details";
    const summary = d.appendChild(document.createElement("summary"));
    summary.textContent = spec.details.summary;
    const pre = d.appendChild(document.createElement("pre"));
    pre.className = "notice-removed";
    pre.textContent = spec.details.text;
    const copy = d.appendChild(document.createElement("button"));
    copy.type = "button";
    copy.className = "notice-copy";
    copy.textContent = "Copy this text";
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(spec.details.text);
        copy.textContent = "Copied";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(pre);
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        copy.textContent = "Selected: press Ctrl+C";
      }
    });
  }
  const actions = el.appendChild(document.createElement("div"));
  actions.className = "notice-actions";
  for (const a of spec.actions || []) {
    const b = actions.appendChild(document.createElement("button"));
    b.type = "button";
    b.textContent = a.label;
    if (a.id) b.dataset.action = a.id;
    if (a.primary) b.className = "primary";
    b.addEventListener("click", () => a.run(el, b));
  }
  if (spec.dismissible !== false) {
    const close = actions.appendChild(document.createElement("button"));
    close.type = "button";
    close.className = "notice-dismiss";
    close.dataset.action = "dismiss";
    close.textContent = "Dismiss";
    close.addEventListener("click", () => el.remove());
  }
  box.appendChild(el);
  while (box.children.length > 3) box.firstChild.remove();
  return el;
}

/** Replace a notice's text (an action's outcome); "" takes it away. */
export function setNoticeText(el, text) {
  let p = el.querySelector(".notice-outcome");
  if (!text) {
    if (p) p.remove();
    return;
  }
  if (!p) {
    p = el.querySelector(".notice-body").appendChild(document.createElement("p"));
    p.className = "notice-outcome";
  }
  p.textContent = text;
}
