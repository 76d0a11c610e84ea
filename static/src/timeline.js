// The History panel's reading of the history, pure (no DOM, no network):
// who is who, editing sessions, the slider's stops.
//
// What always holds here:
//  - A person is known by a key, as GET /api/docs/{doc}/authors names
//    them: U+001F and the person id for an update made with one
//    (hello.person), else the author's name (updates made before person ids,
//    or by clients without one). So a rename never splits a person, and two
//    people with one name stay two.
//  - A person is shown with their current name and colour: the newest that
//    is known, from the history entries, then what the server says of the
//    document's people, then the people here now (their name this moment).
//    People known only by name keep a colour picked from their name.
//  - A session is a stretch of editing without a pause of `gap` seconds in
//    the whole document, whoever typed: people writing in turns are one
//    session, with everyone who took part. A restore is a session of its
//    own, and a named version (checkpoint) ends the session it falls in, so
//    that it sits between two sessions in the timeline.

import { COLORS } from "./identity.js";

export const SESSION_GAP_S = 5 * 60;
export const PERSON_KEY = "\u001f";

/** The key of the person who made a history entry (as /authors' spans name them). */
export function authorKey(entry) {
  return typeof entry.person === "string" && entry.person ? PERSON_KEY + entry.person : String(entry.author ?? "");
}

/** The person id in a key, or null for a person known by name only. */
export function personOf(key) {
  return key.startsWith(PERSON_KEY) ? key.slice(PERSON_KEY.length) : null;
}

/** A stable palette slot for a name (FNV-1a): the colour of people known by name only. */
export function nameSlot(name, slots = COLORS.length) {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % slots;
}

const HEX = /^#(?:[0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/i;

/**
 * Who is who: key -> {key, person, name, color}. `entries` are history
 * entries (any order: the newest of each key wins), `known` maps keys to
 * {name, color} (the /authors answer's `people`), `live` lists the people
 * here now [{person, name, color}] (this page's own person among them).
 */
export function resolvePeople({ entries = [], known = {}, live = [] } = {}) {
  const out = new Map();
  const newest = new Map();
  for (const e of entries) {
    const key = authorKey(e);
    const seen = newest.get(key);
    if (!seen || e.version > seen.version) newest.set(key, e);
  }
  const set = (key, name, color) => {
    const person = personOf(key);
    const prev = out.get(key);
    out.set(key, {
      key, person,
      name: typeof name === "string" && name ? name : prev ? prev.name : person ? "Someone" : key,
      color: typeof color === "string" && HEX.test(color) ? color
        : prev ? prev.color : COLORS[nameSlot(person ? person : key)],
    });
  };
  for (const [key, e] of newest) set(key, personOf(key) ? e.author : key, personOf(key) ? e.color : null);
  for (const [key, who] of Object.entries(known || {})) {
    if (who && typeof who === "object") set(key, who.name, personOf(key) ? who.color : null);
  }
  for (const p of live) {
    if (p && typeof p.person === "string" && p.person) set(PERSON_KEY + p.person, p.name, p.color);
  }
  return out;
}

/**
 * History entries (any order) to sessions, newest first:
 * {from, to, start, end, inserted, deleted, count, restored (the version a
 * restore brought back, else null), people: [{key, count, inserted,
 * deleted}] in the order they first edited}. `checkpoints` are versions a
 * session must end at.
 */
export function groupSessions(entries, { gap = SESSION_GAP_S, checkpoints = [] } = {}) {
  const asc = [...entries].sort((x, y) => x.version - y.version);
  const ends = new Set(checkpoints);
  const out = [];
  let cur = null;
  for (const e of asc) {
    const restored = typeof e.restored === "number" ? e.restored : null;
    const key = authorKey(e);
    if (!cur || restored !== null || cur.restored !== null || e.version !== cur.to + 1
        || e.time - cur.end >= gap || ends.has(e.version - 1)) {
      cur = {
        from: e.version, to: e.version, start: e.time, end: e.time, inserted: 0, deleted: 0, count: 0,
        restored, people: [],
      };
      out.push(cur);
    }
    cur.to = e.version;
    cur.end = Math.max(cur.end, e.time);
    cur.inserted += e.inserted;
    cur.deleted += e.deleted;
    cur.count++;
    let who = cur.people.find((p) => p.key === key);
    if (!who) cur.people.push((who = { key, count: 0, inserted: 0, deleted: 0 }));
    who.count++;
    who.inserted += e.inserted;
    who.deleted += e.deleted;
  }
  return out.reverse();
}

/**
 * The versions the slider stops at when it moves by session, ascending:
 * 0, before and after every session, every named version, the head.
 */
export function sliderStops(sessions, head, checkpoints = []) {
  const stops = new Set([0, head]);
  for (const s of sessions) {
    stops.add(s.from - 1);
    stops.add(s.to);
  }
  for (const v of checkpoints) if (v >= 0 && v <= head) stops.add(v);
  return [...stops].filter((v) => v >= 0 && v <= head).sort((a, b) => a - b);
}

/** The index of the stop nearest to `version` (the earlier one on a tie). */
export function nearestStop(stops, version) {
  let best = 0;
  for (let i = 1; i < stops.length; i++) {
    if (Math.abs(stops[i] - version) < Math.abs(stops[best] - version)) best = i;
  }
  return best;
}
