// Build static/dist/ from static/src/: `npm ci && node build.mjs`.
// Deterministic: pinned esbuild and packages (package-lock.json), no
// timestamps, no source maps, a fixed target; CI rebuilds and compares.

import { build } from "esbuild";
import { rmSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

// The server sends `Content-Security-Policy: style-src 'self'`, which blocks
// the <style> element CodeMirror (style-mod) injects into a document.  Its
// other path, a constructed stylesheet in document.adoptedStyleSheets, is
// CSSOM and not subject to style-src; style-mod takes it only for shadow
// roots, so take it for documents too.  Fails loudly if style-mod changes.
const adoptStyles = {
  name: "style-mod-adopted-sheets",
  setup(b) {
    b.onLoad({ filter: /style-mod[\\/]src[\\/]style-mod\.js$/ }, (args) => {
      const from = "if (!root.head && root.adoptedStyleSheets && win.CSSStyleSheet) {";
      const src = readFileSync(args.path, "utf8");
      if (!src.includes(from)) throw new Error(`style-mod changed: cannot find "${from}" in ${args.path}`);
      return { contents: src.replace(from, "if (root.adoptedStyleSheets && win.CSSStyleSheet) {"), loader: "js" };
    });
  },
};

await build({
  plugins: [adoptStyles],
  absWorkingDir: here,
  entryPoints: {
    editor: "src/editor.js",
    index: "src/index.js",
    style: "src/style.css",
  },
  outdir: out,
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
});
console.log("built static/dist");
