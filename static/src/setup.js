// The editor's features: everything CodeMirror brings except syncing. No
// fold gutter (it put a chevron on every wrapped paragraph); sections under a
// heading still fold from the keyboard (foldKeymap, listed in shortcuts.js).

import { EditorState, Compartment, Prec } from "@codemirror/state";
import {
  EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter,
  highlightSpecialChars, drawSelection, dropCursor, rectangularSelection, crosshairCursor,
} from "@codemirror/view";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import {
  syntaxHighlighting, bracketMatching, indentOnInput, foldKeymap, Language, LanguageSupport,
} from "@codemirror/language";
import { search, searchKeymap, highlightSelectionMatches } from "@codemirror/search";
import { markdownLanguage, markdownKeymap } from "@codemirror/lang-markdown";
import { tagHighlighter, tags as t } from "@lezer/highlight";

// Markdown (and the HTML/code inside it) to CSS classes; colours live in
// style.css so the light and dark palettes are plain CSS.
const highlighter = tagHighlighter([
  { tag: t.heading1, class: "tok-heading tok-h1" },
  { tag: t.heading2, class: "tok-heading tok-h2" },
  { tag: t.heading3, class: "tok-heading tok-h3" },
  { tag: t.heading, class: "tok-heading" },
  { tag: t.emphasis, class: "tok-emphasis" },
  { tag: t.strong, class: "tok-strong" },
  { tag: t.strikethrough, class: "tok-strike" },
  { tag: [t.link, t.url], class: "tok-link" },
  { tag: t.monospace, class: "tok-code" },
  { tag: t.quote, class: "tok-quote" },
  { tag: t.list, class: "tok-list" },
  { tag: [t.processingInstruction, t.contentSeparator], class: "tok-mark" },
  { tag: [t.keyword, t.tagName], class: "tok-keyword" },
  { tag: [t.string, t.attributeValue], class: "tok-string" },
  { tag: [t.number, t.bool, t.atom], class: "tok-number" },
  { tag: [t.comment, t.meta], class: "tok-comment" },
  { tag: [t.attributeName, t.propertyName], class: "tok-property" },
  { tag: t.invalid, class: "tok-invalid" },
]);

// The longest paragraph (or table, or other paragraph-like block) the
// highlighter parses as one, in characters: a longer one is ended at the
// next line after that many and the rest parsed as another. The Markdown
// parser re-parses the whole block an edit falls in, inline syntax and
// all, and cannot stop half-way through one; a text without blank lines (a
// log, a poem, a 1 MB table) is one block, and each keystroke in it re-parsed
// all of it (a quarter of a second per keystroke at 1 MB). Cut, an edit
// re-parses a piece of at most this size plus a line, and the pieces after
// it are reused. What changes: emphasis or a link spanning a cut is not
// highlighted as one, and a table's rows after a cut are shown as plain
// text; the preview (markdown-it) renders the whole text as it is.
export const LEAF_MAX = 20000;

const longBlocksCut = {
  parseBlock: [{ name: "CutLongLeaf", endLeaf: (_cx, _line, leaf) => leaf.content.length >= LEAF_MAX }],
};

// markdownLanguage with that cut; the same language data, so markdownKeymap's commands still see Markdown.
const markdownEditorLanguage = new Language(
  markdownLanguage.data, markdownLanguage.parser.configure(longBlocksCut), [], "markdown");

const dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
const themeConf = new Compartment();

function themeFor(isDark) {
  return EditorView.darkTheme.of(isDark);
}

/** Follow the system's light/dark setting in a live view. */
export function followColorScheme(getView) {
  if (!dark) return;
  dark.addEventListener("change", () => {
    const view = getView();
    if (view) view.dispatch({ effects: themeConf.reconfigure(themeFor(dark.matches)) });
  });
}

export function editorSetup() {
  return [
    lineNumbers(),
    highlightActiveLineGutter(),
    highlightSpecialChars(),
    history(),
    drawSelection(),
    dropCursor(),
    EditorState.allowMultipleSelections.of(true),
    indentOnInput(),
    syntaxHighlighting(highlighter),
    bracketMatching(),
    rectangularSelection(),
    crosshairCursor(),
    highlightActiveLine(),
    highlightSelectionMatches(),
    search({ top: true }),
    EditorView.lineWrapping,
    // GitHub-flavoured Markdown without the nested HTML/JS/CSS parsers that
    // markdown() would bundle (they triple the bundle for little gain).
    new LanguageSupport(markdownEditorLanguage, [Prec.high(keymap.of(markdownKeymap))]),
    keymap.of([...defaultKeymap, ...searchKeymap, ...historyKeymap, ...foldKeymap, indentWithTab]),
    themeConf.of(themeFor(!!(dark && dark.matches))),
    EditorView.contentAttributes.of({ spellcheck: "true", "aria-label": "Document text", "aria-describedby": "editor-keys" }),
  ];
}
