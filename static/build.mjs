// Build static/dist/ from static/src/: `npm ci && node build.mjs`.
// Deterministic: pinned esbuild and packages (package-lock.json), no
// timestamps, no source maps, a fixed target; CI rebuilds and compares.
//
// What it writes:
//  - the bundles and the stylesheet under names with their content's hash
//    (editor-XXXXXXXX.js, index-…, style-….css), and the chunks they import
//    (chunk-XXXXXXXX.js: code both pages share, and the Markdown renderer,
//    which the editor loads only when the preview opens or a web page is
//    exported): the server lets browsers keep those for a year
//    (collab/api.py, static_headers);
//  - the pages index.html and editor.html from the ones in static/, naming
//    those files (the server serves the pages from dist/; a page that names
//    a /static/ file the build did not make fails the build);
//  - style.css under its plain name too, for the error pages the server
//    writes itself (they cannot know the hash);
//  - next to every .js and .css a gzip (.gz) and a brotli (.br) copy, which
//    the server sends to browsers that take them (Content-Encoding).

import { build } from "esbuild";
import { rmSync, mkdirSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync, brotliCompressSync, constants as zlib } from "node:zlib";

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

const result = await build({
  plugins: [adoptStyles],
  entryNames: "[name]-[hash]",
  chunkNames: "[name]-[hash]", // code both pages share, and what a page loads later (the Markdown renderer)
  splitting: true,
  metafile: true,
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

// "/static/editor.js" -> "/static/editor-XXXXXXXX.js", from what esbuild wrote.
const names = new Map();
for (const [file, info] of Object.entries(result.metafile.outputs)) {
  if (!info.entryPoint) continue;
  const plain = basename(info.entryPoint).replace(/\.[^.]+$/, "") + file.slice(file.lastIndexOf("."));
  names.set(`/static/${plain}`, `/static/${basename(file)}`);
}

for (const page of ["index.html", "editor.html"]) {
  const html = readFileSync(join(here, page), "utf8").replace(/(src|href)="(\/static\/[^"]+)"/g, (_, attr, path) => {
    if (!names.has(path)) throw new Error(`${page} names ${path}, which the build does not make`);
    return `${attr}="${names.get(path)}"`;
  });
  writeFileSync(join(out, page), html);
}
writeFileSync(join(out, "style.css"), readFileSync(join(out, basename(names.get("/static/style.css")))));

for (const file of readdirSync(out).sort()) {
  if (!/\.(js|css)$/.test(file)) continue;
  const data = readFileSync(join(out, file));
  writeFileSync(join(out, `${file}.gz`), gzipSync(data, { level: 9 }));
  writeFileSync(join(out, `${file}.br`), brotliCompressSync(data, { params: {
    [zlib.BROTLI_PARAM_QUALITY]: 11, [zlib.BROTLI_PARAM_MODE]: zlib.BROTLI_MODE_TEXT,
    [zlib.BROTLI_PARAM_SIZE_HINT]: data.length } }));
}
console.log("built static/dist");
