import { test } from 'node:test';
import assert from 'node:assert/strict';
import { peopleHere } from '../src/people.js';
import { loadPerson, newPersonID } from '../src/identity.js';
import { hello, isPersonId } from '../src/core.js';

test('one person in two tabs is one entry; our own other tabs are not somebody else', () => {
  const peers = [
    { session: 's1', name: 'Ann', color: '#e5484d', person: 'pa', stamp: 1 },
    { session: 's2', name: 'Bob', color: '#0090ff', person: 'pb', stamp: 2 },
    { session: 's3', name: 'Annie', color: '#8e4ec6', person: 'pa', stamp: 5 },
    { session: 's4', name: 'Me', color: '#000000', person: 'me', stamp: 3 },
    { session: 's5', name: 'Old', color: '#888888', stamp: 4 },
    { session: 's6', name: 'Old', color: '#888888', stamp: 6 },
  ];
  const { others, myTabs } = peopleHere(peers, 'me');
  assert.equal(myTabs, 1);
  assert.deepEqual(others.map((p) => [p.name, p.color, p.sessions]), [
    ['Annie', '#8e4ec6', ['s1', 's3']], // the tab that spoke last names the person
    ['Bob', '#0090ff', ['s2']],
    ['Old', '#888888', ['s5']], // without a person id, each connection is a person
    ['Old', '#888888', ['s6']],
  ]);
  assert.deepEqual(peopleHere([], 'me'), { others: [], myTabs: 0 });
});

test('a browser keeps one person id, valid for hello.person; a bad stored one is replaced', () => {
  const store = new Map();
  globalThis.localStorage = {
    getItem: (k) => (store.has(k) ? store.get(k) : null),
    setItem: (k, v) => store.set(k, String(v)),
    removeItem: (k) => store.delete(k),
  };
  try {
    const first = loadPerson();
    assert.ok(isPersonId(first) && first.length === 22, first);
    assert.equal(loadPerson(), first, 'the same id next time');
    assert.equal(hello('c', null, { name: 'n', color: '#000' }, null, first).person, first);
    store.set('collab:person', 'not valid!');
    const second = loadPerson();
    assert.ok(isPersonId(second) && second !== first);
    assert.equal(store.get('collab:person'), second);
    const ids = new Set(Array.from({ length: 200 }, newPersonID));
    assert.equal(ids.size, 200);
  } finally {
    delete globalThis.localStorage;
  }
});
