// Who this person is (name and colour, and a stable random person id),
// remembered in localStorage, plus the random readable names used for new
// documents.  No DOM, no network.
//
// The person id is made once per browser profile and never changes: the
// name and colour may change at any time, the id is what keeps a person one
// person (two tabs, a rename) for the others and in the history. It is not
// a secret: anyone in the document sees it in presence frames.

import { isPersonId } from "./core/frames.js";

/** The localStorage key of the name and colour (other tabs of this person watch it). */
export const USER_KEY = "collab:user";
const PERSON_KEY = "collab:person";

export const COLORS = [
  "#e5484d", "#f76b15", "#d6a100", "#30a46c", "#12a594",
  "#0090ff", "#3e63dd", "#8e4ec6", "#d6409f", "#7c6f64",
];

const ADJECTIVES = [
  "amber", "brave", "calm", "clever", "curious", "eager", "gentle", "happy",
  "jolly", "kind", "lively", "lucky", "merry", "nimble", "quiet", "rapid",
  "sunny", "swift", "tidy", "witty", "bold", "bright", "cosy", "fuzzy",
];
const ANIMALS = [
  "otter", "badger", "heron", "lynx", "panda", "falcon", "koala", "marten",
  "puffin", "robin", "seal", "tapir", "walrus", "wombat", "yak", "zebra",
  "beaver", "crane", "gecko", "ibis", "lemur", "moose", "newt", "owl",
];

function pick(list) {
  return list[Math.floor(Math.random() * list.length)];
}

function cap(word) {
  return word[0].toUpperCase() + word.slice(1);
}

/** A pleasant random identity, e.g. {name: "Curious Otter", color: "#0090ff"}. */
export function randomUser() {
  return { name: `${cap(pick(ADJECTIVES))} ${cap(pick(ANIMALS))}`, color: pick(COLORS) };
}

/** A readable document name such as "swift-heron-42" (matches the server's name rule). */
export function randomDocName() {
  return `${pick(ADJECTIVES)}-${pick(ANIMALS)}-${Math.floor(Math.random() * 90) + 10}`;
}

export const DOC_NAME_RE = /^[A-Za-z0-9_-]{1,100}$/;

/** Accept only colours the browser understands, so a peer cannot inject CSS. */
export function safeColor(color) {
  if (typeof color === "string" && /^#[0-9a-fA-F]{3,8}$/.test(color)) return color;
  if (typeof color === "string" && typeof CSS !== "undefined" && CSS.supports("color", color)
      && !/[;{}()]/.test(color)) return color;
  return "#888888";
}

/** Black or white, whichever reads better on `color` (a #hex colour; others get white): text on a person's colour. */
export function inkFor(color) {
  const m = /^#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/i.exec(color || "");
  if (!m) return "#ffffff";
  let hex = m[1];
  if (hex.length <= 4) hex = [...hex.slice(0, 3)].map((c) => c + c).join("");
  const lin = (i) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const l = 0.2126 * lin(0) + 0.7152 * lin(2) + 0.0722 * lin(4);
  return (1.05 / (l + 0.05)) >= (l + 0.05) / 0.05 ? "#ffffff" : "#000000"; // the higher contrast ratio
}

export function cleanName(name) {
  const s = String(name ?? "").replace(/\s+/g, " ").trim().slice(0, 40);
  return s || "Anonymous";
}

/** The remembered user, created (and stored) on first use. */
export function loadUser() {
  try {
    const u = JSON.parse(localStorage.getItem(USER_KEY));
    if (u && typeof u.name === "string" && typeof u.color === "string")
      return { name: cleanName(u.name), color: safeColor(u.color) };
  } catch (_) { /* fall through to a new identity */ }
  const u = randomUser();
  saveUser(u);
  return u;
}

export function saveUser(user) {
  try {
    localStorage.setItem(USER_KEY, JSON.stringify({ name: cleanName(user.name), color: safeColor(user.color) }));
  } catch (_) { /* storage full or disabled: the identity just isn't remembered */ }
}

/** A random client ID: fresh for every page (two tabs never share one). */
export function newClientID() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, "0")).join("").slice(0, 16);
}

/** A random person id: 22 characters of [A-Za-z0-9_-] (132 random bits). */
export function newPersonID() {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  const bytes = new Uint8Array(22);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => alphabet[b & 63]).join("");
}

/** This browser's person id, made (and stored) on first use; without storage, one for this page only. */
export function loadPerson() {
  try {
    const stored = localStorage.getItem(PERSON_KEY);
    if (isPersonId(stored)) return stored;
  } catch (_) { /* no storage: a fresh id below */ }
  const id = newPersonID();
  try {
    localStorage.setItem(PERSON_KEY, id);
  } catch (_) { /* not remembered: this page is a person of its own */ }
  return id;
}
