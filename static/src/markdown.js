// Markdown to DOM nodes, safely: markdown-it parses (CommonMark, tables,
// strikethrough, bare links), and the DOM is built here from its tokens,
// element by element. No HTML string made from the text is ever parsed.
//
// What always holds here:
//  - HTML in the text is text (markdown-it with `html: false`, and any
//    html token is written as text): no <script>, no event handler, no
//    style attribute can come from the document.
//  - Only the elements of ALLOWED are made, with only the attributes set
//    below: a link's href (http, https, mailto, or a path on this site) and
//    title, an ordered list's start, a table cell's alignment (as a class:
//    the page's policy blocks style attributes), a code block's language
//    (as a class of letters and digits).
//  - Nothing is loaded: an image is shown only from a data: URL of a
//    raster type; any other image is a link to it, with its alt text.
//  - Links open in a new tab, without an opener or a referrer.

import MarkdownIt from "markdown-it";

const md = new MarkdownIt("default", { html: false, linkify: true, typographer: false });

const ALLOWED = new Set([
  "p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "li", "blockquote", "pre", "code", "hr",
  "table", "thead", "tbody", "tr", "th", "td", "strong", "em", "s", "a", "br",
]);
const SAFE_HREF = /^(?:https?:|mailto:)/i;
const HAS_SCHEME = /^[a-z][a-z0-9+.-]*:/i;
const DATA_IMAGE = /^data:image\/(?:png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]*$/i;
const ALIGN = /text-align:\s*(left|center|right)/;

/** Whether `href` may be a link target: web and mail addresses, and addresses on this site. */
export function safeHref(href) {
  const h = String(href ?? "").trim();
  if (!h || /[\u0000-\u001f]/.test(h)) return false;
  return SAFE_HREF.test(h) || !HAS_SCHEME.test(h);
}

function attr(token, name) {
  const i = token.attrIndex(name);
  return i < 0 ? null : token.attrs[i][1];
}

function plainText(tokens) {
  let s = "";
  for (const t of tokens || []) {
    if (t.type === "text" || t.type === "text_special" || t.type === "code_inline") s += t.content;
    else if (t.type === "softbreak" || t.type === "hardbreak") s += " ";
    else if (t.children) s += plainText(t.children);
  }
  return s;
}

function openElement(t, doc) {
  if (!ALLOWED.has(t.tag)) return null;
  if (t.tag === "a") {
    const href = attr(t, "href");
    if (!safeHref(href)) return doc.createElement("span"); // the text stays, the link goes
    const a = doc.createElement("a");
    a.href = href;
    const title = attr(t, "title");
    if (title) a.title = title;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    return a;
  }
  const el = doc.createElement(t.tag);
  if (t.tag === "ol") {
    const start = Number(attr(t, "start"));
    if (Number.isSafeInteger(start) && start !== 1) el.start = start;
  } else if (t.tag === "th" || t.tag === "td") {
    const m = ALIGN.exec(attr(t, "style") || "");
    if (m) el.className = `align-${m[1]}`;
  }
  return el;
}

function image(t, parent, doc) {
  const src = attr(t, "src") || "";
  const alt = plainText(t.children) || t.content || "";
  const title = attr(t, "title");
  if (DATA_IMAGE.test(src)) {
    const img = doc.createElement("img");
    img.alt = alt;
    if (title) img.title = title;
    img.src = src;
    parent.appendChild(img);
    return;
  }
  // Not loaded (no remote loads): a link to it, named by its alt text.
  const label = `${alt || "image"} (image)`;
  if (safeHref(src)) {
    const a = doc.createElement("a");
    a.className = "md-image-link";
    a.href = src;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.title = title || "The image is not loaded here: open it";
    a.textContent = label;
    parent.appendChild(a);
  } else {
    const span = doc.createElement("span");
    span.className = "md-image-link";
    span.textContent = label;
    parent.appendChild(span);
  }
}

function leaf(t, parent, doc) {
  switch (t.type) {
    case "inline":
      build(t.children || [], parent, doc);
      break;
    case "softbreak":
      parent.appendChild(doc.createTextNode("\n"));
      break;
    case "hardbreak":
      parent.appendChild(doc.createElement("br"));
      break;
    case "hr":
      parent.appendChild(doc.createElement("hr"));
      break;
    case "code_inline":
      parent.appendChild(doc.createElement("code")).textContent = t.content;
      break;
    case "fence":
    case "code_block": {
      const pre = parent.appendChild(doc.createElement("pre"));
      const code = pre.appendChild(doc.createElement("code"));
      const lang = (t.info || "").trim().split(/\s+/)[0];
      if (/^[A-Za-z0-9_+-]{1,40}$/.test(lang)) code.className = `language-${lang}`;
      code.textContent = t.content;
      break;
    }
    case "image":
      image(t, parent, doc);
      break;
    default: // text, text_special, html_inline and html_block (never markup: text), anything new
      if (t.content) parent.appendChild(doc.createTextNode(t.content));
  }
}

function build(tokens, root, doc) {
  const stack = [root];
  for (const t of tokens) {
    const top = stack[stack.length - 1];
    if (t.nesting === 1) {
      const el = t.hidden ? null : openElement(t, doc);
      if (el) top.appendChild(el);
      stack.push(el || top); // a hidden or unknown element: its content goes to the parent
    } else if (t.nesting === -1) {
      if (stack.length > 1) stack.pop();
    } else {
      leaf(t, top, doc);
    }
  }
}

/** The Markdown `text` as a DocumentFragment of `doc` (the page's document by default). */
export function renderMarkdown(text, doc = document) {
  const root = doc.createDocumentFragment();
  build(md.parse(String(text), {}), root, doc);
  return root;
}
