// Other people's carets and selections, drawn in their colour with a name
// label.  Positions are kept in this editor's current document coordinates and
// mapped through every transaction (local typing and remote updates alike);
// the sync code converts the server's positions before handing them in.

import { StateField, StateEffect, EditorSelection } from "@codemirror/state";
import { EditorView, layer, RectangleMarker } from "@codemirror/view";
import { safeColor, cleanName, inkFor } from "./identity.js";
import { isPersonId } from "./core/frames.js";

/** {session, user: {name, color, person?}, ranges: [{anchor, head}]}: set one peer (ranges in local coordinates). */
export const setPeer = StateEffect.define({
  map: (p, mapping) => ({ ...p, ranges: mapRanges(p.ranges, mapping) }),
});
/** session: that peer left. */
export const removePeer = StateEffect.define();
/** Drop every peer (a new connection brings a fresh list). */
export const clearPeers = StateEffect.define();

function mapRanges(ranges, mapping) {
  return ranges.map((r) => ({ anchor: mapping.mapPos(r.anchor), head: mapping.mapPos(r.head) }));
}

let stamps = 0;

export const peersField = StateField.define({
  create: () => new Map(),
  update(peers, tr) {
    let next = peers;
    if (!tr.changes.empty) {
      next = new Map();
      for (const [id, p] of peers) next.set(id, { ...p, ranges: mapRanges(p.ranges, tr.changes) });
    }
    for (const e of tr.effects) {
      if (e.is(setPeer)) {
        if (next === peers) next = new Map(peers);
        const len = tr.state.doc.length;
        const clamp = (n) => Math.max(0, Math.min(len, n | 0));
        next.set(e.value.session, {
          session: e.value.session,
          user: {
            name: cleanName(e.value.user?.name), color: safeColor(e.value.user?.color),
            person: isPersonId(e.value.user?.person) ? e.value.user.person : null,
          },
          ranges: e.value.ranges.map((r) => ({ anchor: clamp(r.anchor), head: clamp(r.head) })),
          stamp: ++stamps, // a new stamp shows the name label again
        });
      } else if (e.is(removePeer)) {
        if (next === peers) next = new Map(peers);
        next.delete(e.value);
      } else if (e.is(clearPeers)) {
        next = new Map();
      }
    }
    return next;
  },
});

class CaretMarker {
  constructor(left, top, height, color, name, stamp, session) {
    Object.assign(this, { left, top, height, color, name, stamp, session });
  }
  eq(o) {
    return o.left === this.left && o.top === this.top && o.height === this.height
      && o.color === this.color && o.name === this.name && o.stamp === this.stamp;
  }
  draw() {
    const caret = document.createElement("div");
    caret.className = "cm-remote-caret";
    caret.dataset.session = this.session;
    const label = caret.appendChild(document.createElement("div"));
    label.className = "cm-remote-label";
    this.apply(caret);
    return caret;
  }
  update(dom, prev) {
    if (prev.stamp !== this.stamp) return false; // redraw: restarts the label's fade
    this.apply(dom);
    return true;
  }
  apply(caret) {
    caret.style.left = `${this.left}px`;
    caret.style.top = `${this.top}px`;
    caret.style.height = `${this.height}px`;
    caret.style.setProperty("--peer-color", this.color);
    caret.style.setProperty("--peer-ink", inkFor(this.color));
    caret.title = this.name;
    caret.firstChild.textContent = this.name;
    // Near the top of the document the label goes below the line.
    caret.classList.toggle("cm-remote-caret-low", this.top < 18);
  }
}

class SelectionMarker {
  constructor(rect, color) {
    this.rect = rect;
    this.color = color;
  }
  eq(o) {
    return o.color === this.color && this.rect.eq(o.rect);
  }
  draw() {
    const el = this.rect.draw();
    el.style.setProperty("--peer-color", this.color);
    return el;
  }
  update(dom, prev) {
    if (!this.rect.update(dom, prev.rect)) return false;
    dom.style.setProperty("--peer-color", this.color);
    return true;
  }
}

function changed(update) {
  return update.docChanged || update.viewportChanged || update.geometryChanged
    || update.startState.field(peersField) !== update.state.field(peersField);
}

const selectionLayer = layer({
  above: false,
  class: "cm-remote-selections",
  update: changed,
  markers(view) {
    const out = [];
    for (const p of view.state.field(peersField).values()) {
      for (const r of p.ranges) {
        if (r.anchor === r.head) continue;
        const range = EditorSelection.range(r.anchor, r.head);
        for (const rect of RectangleMarker.forRange(view, "cm-remote-selection", range))
          out.push(new SelectionMarker(rect, p.user.color));
      }
    }
    return out;
  },
});

const caretLayer = layer({
  above: true,
  class: "cm-remote-carets",
  update: changed,
  markers(view) {
    const out = [];
    for (const p of view.state.field(peersField).values()) {
      for (const r of p.ranges) {
        const [m] = RectangleMarker.forRange(view, "x", EditorSelection.cursor(r.head));
        if (m) out.push(new CaretMarker(m.left, m.top, m.height, p.user.color, p.user.name, p.stamp, p.session));
      }
    }
    return out;
  },
});

/** The peers, their layers and the styling hooks. */
export function presence() {
  return [peersField, selectionLayer, caretLayer, EditorView.baseTheme({
    ".cm-remote-carets": { pointerEvents: "none" },
  })];
}
