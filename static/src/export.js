// Downloads of a document at a version: plain text and Markdown made here
// from the page's own text when it is at that version, else as the server
// exports them (GET /api/docs/{doc}/export, the token in a header), and a
// standalone web page made here: the text rendered as the preview
// renders it (markdown.js, built as DOM, never from an HTML string of the
// text), with the preview's stylesheet inlined, saved as a Blob.
//
// What always holds here: the web page has no script and loads nothing
// (markdown.js shows only data: images); everything in it is in the file.

import css from "./markdown.css" with { type: "text" };
import { loadMarkdown } from "./preview.js";
import { apiUrl, download, saveBlob } from "./docapi.js";

export const FORMATS = { txt: "Plain text (.txt)", md: "Markdown (.md)", html: "Web page (.html)" };

const PAGE_CSS = ":root { color-scheme: light dark; }\nbody { margin: 0; }\n"
  + ".markdown-body { margin: 0 auto; min-height: 100vh; box-sizing: border-box; }\n";

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => ESCAPES[c]);

/**
 * A whole HTML file: `text` rendered as Markdown, titled `title`, its styles
 * inside. The body is the rendered DOM serialised by the browser (which
 * escapes every text); only the title is put into markup here, escaped.
 * (No <style> element is made in a document: the page's policy would refuse it.)
 */
export async function standaloneHtml(title, text) {
  const { renderMarkdown } = await loadMarkdown();
  const main = document.createElement("main");
  main.className = "markdown-body";
  main.appendChild(renderMarkdown(text));
  if (/<\/style/i.test(css)) throw new Error("the stylesheet cannot be inlined");
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="collab">
<title>${escapeHtml(title)}</title>
<style>
${css}
${PAGE_CSS}</style>
</head>
<body>
${main.outerHTML}
</body>
</html>
`;
}

const TYPES = { txt: "text/plain;charset=utf-8", md: "text/markdown;charset=utf-8" };

/** Download `docName` at `version` as `format` ("txt", "md" or "html"). `localText`: the text at that
 * version, when this page has it (then nothing is asked of the server, so it works offline too); else
 * getText() gives it for html, and the server exports txt and md (the same text). */
export async function exportDocument({ docName, version, format, getText, localText = null }) {
  const filename = `${docName}-v${version}.${format}`;
  if (format === "html") {
    const html = await standaloneHtml(`${docName} (version ${version})`, localText ?? await getText());
    saveBlob(new Blob([html], { type: "text/html;charset=utf-8" }), filename);
    return;
  }
  if (!Object.prototype.hasOwnProperty.call(FORMATS, format)) throw new Error(`unknown format ${format}`);
  if (localText !== null) {
    saveBlob(new Blob([localText], { type: TYPES[format] }), filename);
    return;
  }
  await download(apiUrl(docName, "/export", { version, format }), filename);
}
