import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ERROR_CODES, CLOSE_CODES, errorText, closeEntry } from '../src/core.js';

test('the error table has exactly the protocol codes, each with a sentence', () => {
  assert.deepEqual(Object.keys(ERROR_CODES).sort(), [
    'bad-changes', 'bad-json', 'bad-message', 'bad-request', 'bad-version', 'conflict', 'forbidden',
    'internal', 'not-found', 'rate-limited', 'read-only', 'too-large', 'unauthorized', 'unavailable',
  ]);
  for (const [code, text] of Object.entries(ERROR_CODES)) {
    assert.match(text, /^[A-Z].*\.$/, `${code}: a sentence for a person`);
  }
});

test('the close table has exactly the protocol codes, each with a policy', () => {
  assert.deepEqual(Object.keys(CLOSE_CODES).map(Number), [1001, 1008, 1009, 1011, 1013, 4000, 4001, 4429]);
  const policy = Object.fromEntries(Object.entries(CLOSE_CODES).map(([k, v]) => [k, v.then]));
  assert.deepEqual(policy, {
    1001: 'reconnect', 1008: 'stop', 1009: 'backoff', 1011: 'backoff', 1013: 'reconnect',
    4000: 'backoff', 4001: 'stop', 4429: 'slow',
  });
});

test('errorText gives the meaning, then the code and the server\'s words', () => {
  assert.equal(errorText('bad-changes', 'length 3, document 5'),
    'The server refused an edit as invalid. (bad-changes: length 3, document 5)');
  assert.equal(errorText('read-only'), `${ERROR_CODES['read-only']} (read-only)`);
  assert.equal(errorText('toString', 'x'), 'The server reported an error. (toString: x)'); // not an inherited key
});

test('an unknown close code reconnects with backoff, quietly', () => {
  assert.deepEqual({ ...closeEntry(1006), text: undefined }, { text: undefined, notify: false, then: 'backoff' });
  assert.equal(closeEntry(4001), CLOSE_CODES[4001]);
});
