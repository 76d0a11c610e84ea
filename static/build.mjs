// Build static/dist/ from static/src/: `npm ci && node build.mjs`.
// Deterministic: pinned esbuild and packages (package-lock.json), no
// timestamps, no source maps, a fixed target; CI rebuilds and compares.

import { build } from "esbuild";
import { rmSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "dist");

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

await build({
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
