import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inkFor, COLORS } from '../src/identity.js';

const lum = (hex) => {
  const c = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255)
    .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
  return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
};
const contrast = (a, b) => {
  const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
};

test('the ink on a person\'s colour is the more readable of black and white', () => {
  assert.equal(inkFor('#d6a100'), '#000000', 'yellow takes black');
  assert.equal(inkFor('#3e63dd'), '#ffffff', 'indigo takes white');
  assert.equal(inkFor('#fff'), '#000000', 'short hex');
  assert.equal(inkFor('red'), '#ffffff', 'not hex: white, as before');
  for (const c of COLORS) {
    const ink = inkFor(c);
    const other = ink === '#000000' ? '#ffffff' : '#000000';
    assert.ok(contrast(ink, c) >= contrast(other, c), c);
    assert.ok(contrast(ink, c) >= 4.5, `${c}: ${contrast(ink, c).toFixed(2)}`);
  }
});
