import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  groupSessions, resolvePeople, sliderStops, nearestStop, authorKey, nameSlot, SESSION_GAP_S, PERSON_KEY,
} from '../src/timeline.js';
import { COLORS } from '../src/identity.js';

// A history entry as GET /history gives it.
const entry = (version, time, author, person, extra = {}) => ({
  version, clientID: `c-${author}`, author, time, inserted: 1, deleted: 0,
  ...(person ? { person, color: extra.color ?? '#e5484d' } : {}), ...extra,
});

test('two people typing in turns for two minutes are one session naming both, not one per change of author', () => {
  const entries = [];
  for (let i = 0; i < 26; i++) entries.push(entry(i + 1, 1000 + i * 4.6, i % 2 ? 'Bob' : 'Ann', i % 2 ? 'pb' : 'pa'));
  const sessions = groupSessions(entries);
  assert.equal(sessions.length, 1);
  const [s] = sessions;
  assert.deepEqual([s.from, s.to, s.count, s.inserted], [1, 26, 26, 26]);
  assert.deepEqual(s.people.map((p) => [p.key, p.count]), [[`${PERSON_KEY}pa`, 13], [`${PERSON_KEY}pb`, 13]]);
});

test('a pause of five minutes in the document starts a new session; sessions come newest first', () => {
  const t0 = 50000;
  const entries = [
    entry(1, t0, 'Ann', 'pa'), entry(2, t0 + 60, 'Ann', 'pa'),
    entry(3, t0 + 60 + SESSION_GAP_S, 'Bob', 'pb'), // exactly the gap: new session
    entry(4, t0 + 61 + SESSION_GAP_S, 'Ann', 'pa'),
    entry(5, t0 + 60 + 2 * SESSION_GAP_S, 'Ann', 'pa'), // one second short of the gap: same session
  ];
  assert.deepEqual(groupSessions(entries.reverse()).map((s) => [s.from, s.to, s.people.length]), [[3, 5, 2], [1, 2, 1]]);
  assert.deepEqual(groupSessions(entries, { gap: 30 }).map((s) => [s.from, s.to]), [[5, 5], [3, 4], [2, 2], [1, 1]]);
});

test('a restore is a session of its own; a named version ends the session it falls in; a gap in versions too', () => {
  const entries = [
    entry(1, 10, 'Ann', 'pa'), entry(2, 11, 'Ann', 'pa'), entry(3, 12, 'Bob', 'pb'),
    entry(4, 13, 'Bob', null, { restored: 1 }), entry(5, 14, 'Ann', 'pa'), entry(6, 15, 'Ann', 'pa'),
    entry(9, 16, 'Ann', 'pa'),
  ];
  const sessions = groupSessions(entries, { checkpoints: [2] });
  assert.deepEqual(sessions.map((s) => [s.from, s.to, s.restored]),
    [[9, 9, null], [5, 6, null], [4, 4, 1], [3, 3, null], [1, 2, null]]);
});

test('people: a rename does not split a person, two people of one name stay two, the newest name wins', () => {
  const entries = [
    entry(1, 1, 'Alice', 'pa', { color: '#e5484d' }), entry(2, 2, 'Bob', 'pb1', { color: '#0090ff' }),
    entry(3, 3, 'Bob', 'pb2', { color: '#30a46c' }), entry(4, 4, 'Alicia', 'pa', { color: '#8e4ec6' }),
    entry(5, 5, 'Dora', null), // before person ids: by name
  ];
  const people = resolvePeople({ entries });
  assert.equal(people.size, 4);
  assert.deepEqual(people.get(`${PERSON_KEY}pa`), { key: `${PERSON_KEY}pa`, person: 'pa', name: 'Alicia', color: '#8e4ec6' });
  assert.equal(people.get(`${PERSON_KEY}pb1`).name, 'Bob');
  assert.equal(people.get(`${PERSON_KEY}pb2`).name, 'Bob');
  assert.notEqual(people.get(`${PERSON_KEY}pb1`).color, people.get(`${PERSON_KEY}pb2`).color);
  assert.deepEqual(people.get('Dora'), { key: 'Dora', person: null, name: 'Dora', color: COLORS[nameSlot('Dora')] });
  const [s] = groupSessions(entries);
  assert.deepEqual(s.people.map((p) => p.key), [`${PERSON_KEY}pa`, `${PERSON_KEY}pb1`, `${PERSON_KEY}pb2`, 'Dora']);
});

test('people: what /authors knows, then who is here now, win over older entries', () => {
  const entries = [entry(1, 1, 'Alice', 'pa', { color: '#e5484d' })];
  const known = { [`${PERSON_KEY}pa`]: { name: 'Alicia', color: '#8e4ec6' }, Dora: { name: 'Dora', color: null } };
  let people = resolvePeople({ entries, known });
  assert.equal(people.get(`${PERSON_KEY}pa`).name, 'Alicia');
  assert.equal(people.get('Dora').color, COLORS[nameSlot('Dora')]);
  people = resolvePeople({ entries, known, live: [{ person: 'pa', name: 'Ally', color: '#d6a100' }, { name: 'No id' }] });
  assert.deepEqual(people.get(`${PERSON_KEY}pa`), { key: `${PERSON_KEY}pa`, person: 'pa', name: 'Ally', color: '#d6a100' });
  assert.equal(people.size, 2);
  // A colour that is not #hex is never taken.
  people = resolvePeople({ entries, live: [{ person: 'pa', name: 'X', color: 'red;background:url(x)' }] });
  assert.equal(people.get(`${PERSON_KEY}pa`).color, '#e5484d');
});

test('authorKey names people as /authors does', () => {
  assert.equal(authorKey({ author: 'Ann', person: 'p1' }), '\u001fp1');
  assert.equal(authorKey({ author: 'Ann' }), 'Ann');
});

test('the slider stops before and after every session, at named versions and at both ends', () => {
  const sessions = groupSessions([entry(3, 10, 'A', 'a'), entry(4, 11, 'A', 'a'), entry(5, 1000, 'B', 'b')]);
  assert.deepEqual(sliderStops(sessions, 7, [1, 4, 99]), [0, 1, 2, 4, 5, 7]);
  assert.deepEqual(sliderStops([], 0), [0]);
  const stops = [0, 4, 10];
  assert.deepEqual([0, 1, 2, 3, 7, 8, 10, 12].map((v) => nearestStop(stops, v)), [0, 0, 0, 1, 1, 2, 2, 2]);
});
