import { test } from 'node:test';
import assert from 'node:assert/strict';
import { diffText } from '../src/diff.js';

const spell = (pieces, keep) => pieces.filter(([op]) => op === 0 || op === keep).map(([, t]) => t).join('');

function check(a, b) {
  const d = diffText(a, b);
  assert.equal(spell(d, -1), a, 'the 0 and -1 pieces spell a');
  assert.equal(spell(d, 1), b, 'the 0 and 1 pieces spell b');
  for (let i = 1; i < d.length; i++) assert.notEqual(d[i][0], d[i - 1][0], 'neighbours differ');
  for (const [, t] of d) assert.ok(t.length > 0, 'no empty piece');
  return d;
}

test('a changed word is the old word removed and the new one added, not letter by letter', () => {
  assert.deepEqual(check('one item here', 'one entry here'), [[0, 'one '], [-1, 'item'], [1, 'entry'], [0, ' here']]);
  assert.deepEqual(check('the item', 'the items'), [[0, 'the '], [-1, 'item'], [1, 'items']]);
});

test('two changed words with a space between are one change', () => {
  assert.deepEqual(check('a quick brown fox', 'a slow red fox'),
    [[0, 'a '], [-1, 'quick brown'], [1, 'slow red'], [0, ' fox']]);
});

test('lines first: an added line is one insertion, the lines around it untouched', () => {
  assert.deepEqual(check('Hello from Alice\nBob was here', 'Hello from Alice\nBob was here\nAlice again'),
    [[0, 'Hello from Alice\nBob was here'], [1, '\nAlice again']]);
  assert.deepEqual(check('a\nb\nc\n', 'a\nc\n'), [[0, 'a\n'], [-1, 'b\n'], [0, 'c\n']]);
});

test('punctuation and emoji are words of their own; a surrogate pair is never split', () => {
  assert.deepEqual(check('Hi, you 🎉!', 'Hi, you 🎈!'), [[0, 'Hi, you '], [-1, '🎉'], [1, '🎈'], [0, '!']]);
  assert.deepEqual(check('café au lait', 'café noir'), [[0, 'café '], [-1, 'au lait'], [1, 'noir']]);
});

test('random texts: the pieces always spell both texts', () => {
  let seed = 7;
  const rnd = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const words = ['a', 'bb', 'ccc', ' ', '  ', '\n', ',', '.', 'é', '🎉', 'dd dd', 'x\ny'];
  const text = () => Array.from({ length: rnd(30) }, () => words[rnd(words.length)]).join('');
  for (let i = 0; i < 500; i++) check(text(), text());
  check('', 'abc');
  check('abc', '');
  check('same', 'same');
});

test('a small change in a long text is found by lines, however long the text', () => {
  const lines = Array.from({ length: 20000 }, (_, i) => `line ${i} of a long text\n`);
  const a = lines.join('');
  const b = lines.map((l, i) => (i === 12345 ? 'line 12345 of a changed text\n' : l)).join('');
  const d = check(a, b);
  assert.equal(d.coarse, undefined);
  assert.deepEqual(d.filter(([op]) => op !== 0), [[-1, 'long'], [1, 'changed']]);
});

test('too many changed lines for the line diff: one replacement, marked coarse, trimmed to the changes', () => {
  const lines = Array.from({ length: 6000 }, (_, i) => `line ${i}\n`);
  const a = lines.join('');
  // Every other line from 1000 to 5999 changed: 2500 changed lines, 5000 line edits (past MAX_LINE_D).
  const b = lines.map((l, i) => (i >= 1000 && i % 2 === 0 ? `line ${i} edited\n` : l)).join('');
  const d = check(a, b);
  assert.equal(d.coarse, true);
  assert.ok(d[0][0] === 0 && d[0][1].startsWith('line 0\n') && d[0][1].includes('line 999\n'), 'the lines before, untouched');
  assert.ok(!spell(d.filter(([op]) => op === -1), -1).includes('line 999\n'));
});
