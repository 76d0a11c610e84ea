// The page's access token: which token this page speaks with, and where it
// keeps it. Imported first by both pages, so it runs before anything reads
// the address.
//
// What always holds here:
//  - The admin token never stays in the address bar. A page that loads with
//    `?token=<admin token>` (the admin link) moves it to sessionStorage (this
//    tab only; gone when the tab closes) and takes it out of the address with
//    history.replaceState before anything else runs, so it is neither
//    copied from the address bar nor handed on by a hint.
//  - Edit and view tokens stay in the address: such a link is the
//    capability meant to be shared, and the page must survive a reload.
//  - The page's HTTP requests carry the token in `Authorization: Bearer`,
//    never in their URL. Only the WebSocket, which cannot carry a header,
//    sends it as `?token=` (a URL no address bar shows).
//  - The kind of a token is read from its first letter (a, e, v: see
//    collab/access.py). That is a guess for the page's wording; the server
//    decides what the token may do.

const ADMIN_KEY = "collab:admin-token";
const KINDS = { a: "admin", e: "edit", v: "view" };

/** "admin" | "edit" | "view" | null: what a token says it is. */
export function tokenKind(token) {
  return typeof token === "string" && token.length > 1 ? KINDS[token[0]] || null : null;
}

function readSession() {
  try {
    return sessionStorage.getItem(ADMIN_KEY);
  } catch (_) {
    return null;
  }
}

/** Take an admin token out of the address (kept in sessionStorage); returns {token, kind, admin}. */
function takeToken() {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get("token");
  let admin = readSession();
  if (fromUrl && tokenKind(fromUrl) === "admin") {
    admin = fromUrl;
    try {
      sessionStorage.setItem(ADMIN_KEY, fromUrl);
    } catch (_) { /* storage disabled: the token lives in this page's memory only */ }
    url.searchParams.delete("token");
    history.replaceState(history.state, "", url.pathname + url.search + url.hash);
  }
  const token = fromUrl || admin || null;
  return { token, kind: tokenKind(token), admin: admin || null };
}

const taken = takeToken();

/** The token this page's requests send (the link's, else this tab's admin token), or null. */
export const pageToken = taken.token;
/** What the page's token says it is ("admin" | "edit" | "view" | null: no token, a personal instance or a missing link). */
export const pageTokenKind = taken.kind;
/** This tab's admin token, or null (it may also be looking at a page through an edit or view link). */
export const adminToken = taken.admin;

/**
 * Whether the server uses access tokens: the page says so in
 * <meta name="collab-access" content="tokens|open"> (api.py); without the
 * tag, a token in hand means it does.
 */
export const accessControl = (() => {
  const meta = document.querySelector('meta[name="collab-access"]');
  return meta ? meta.content === "tokens" : Boolean(pageToken);
})();

/** Whether this page may do what only the admin may (reset links, fork, delete, list): a personal instance, or the admin token in this tab. */
export const isAdmin = !accessControl || Boolean(adminToken);

/** `init` for fetch with `token` (the page's by default) in an Authorization header. */
export function withAuth(init = {}, token = pageToken) {
  if (!token) return init;
  const headers = new Headers(init.headers || {});
  headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

/** fetch() with the page's token. */
export function authFetch(url, init) {
  return fetch(url, withAuth(init));
}

/** The query string carrying the token for a WebSocket URL ("" without one). */
export function socketQuery() {
  return pageToken ? `?token=${encodeURIComponent(pageToken)}` : "";
}

