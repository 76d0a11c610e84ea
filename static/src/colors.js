// A person's colour as a CSS class (setting `--author-color`), for elements
// whose style attribute cannot be used: the server's Content-Security-Policy
// (style-src 'self') blocks style attributes that CodeMirror's decorations
// would set. The palette's colours have classes in style.css (.ac0 … .ac9);
// any other #hex colour gets a rule in a constructed stylesheet (CSSOM, which
// the policy allows), made once per colour. Anything but #hex is grey.

import { COLORS } from "./identity.js";

const HEX = /^#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/i;
const made = new Set();
let sheet = null;

/** The class giving `color` to `--author-color`. */
export function colorClass(color) {
  const c = typeof color === "string" ? color.toLowerCase() : "";
  const slot = COLORS.indexOf(c);
  if (slot >= 0) return `ac${slot}`;
  if (!HEX.test(c)) return "ac-unknown";
  const cls = `pc-${c.slice(1)}`;
  if (!made.has(cls)) {
    try {
      if (!sheet) {
        sheet = new CSSStyleSheet();
        document.adoptedStyleSheets = [...document.adoptedStyleSheets, sheet];
      }
      sheet.insertRule(`.${cls} { --author-color: ${c}; }`, sheet.cssRules.length);
    } catch (_) {
      return "ac-unknown"; // no constructed stylesheets: grey rather than nothing
    }
    made.add(cls);
  }
  return cls;
}
