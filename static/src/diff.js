// A small text diff for the history panel: lines first (Myers' O(ND)
// algorithm), then characters inside each changed block of lines.  Result:
// [[op, text]], op 0 = in both, -1 = only in `a`, 1 = only in `b`;
// the 0 and -1 pieces spell `a`, the 0 and 1 pieces spell `b`.

const MAX_LINE_D = 2000; // beyond this many line edits: one big replacement
const MAX_CHAR_BLOCK = 20000; // character diff only for changed blocks up to this size
const MAX_CHAR_D = 1000;

/** Myers' diff of two arrays; returns [[op, count]] runs, or null if more than maxD edits. */
function myers(a, b, maxD) {
  const n = a.length, m = b.length, max = n + m, off = max + 1;
  const v = new Int32Array(2 * max + 3);
  const trace = [];
  for (let d = 0; d <= Math.min(max, maxD); d++) {
    trace.push(v.slice(off - d - 1, off + d + 2));
    for (let k = -d; k <= d; k += 2) {
      let x = k === -d || (k !== d && v[off + k - 1] < v[off + k + 1]) ? v[off + k + 1] : v[off + k - 1] + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) { x++; y++; }
      v[off + k] = x;
      if (x >= n && y >= m) return backtrack(trace, n, m);
    }
  }
  return null;
}

function backtrack(trace, n, m) {
  const ops = [];
  let x = n, y = m;
  const push = (op) => {
    const last = ops[ops.length - 1];
    if (last && last[0] === op) last[1]++;
    else ops.push([op, 1]);
  };
  for (let d = trace.length - 1; d >= 0; d--) {
    const v = trace[d];
    const at = (k) => v[k + d + 1];
    const k = x - y;
    const prevK = k === -d || (k !== d && at(k - 1) < at(k + 1)) ? k + 1 : k - 1;
    const prevX = d === 0 ? 0 : at(prevK);
    const prevY = d === 0 ? 0 : prevX - prevK;
    while (x > prevX && y > prevY) { push(0); x--; y--; }
    if (d > 0) {
      if (x === prevX) push(1); else push(-1);
    }
    x = prevX; y = prevY;
  }
  return ops.reverse();
}

function splitLines(s) {
  const out = [];
  let start = 0;
  for (;;) {
    const i = s.indexOf("\n", start);
    if (i < 0) break;
    out.push(s.slice(start, i + 1));
    start = i + 1;
  }
  if (start < s.length) out.push(s.slice(start));
  return out;
}

function pushPiece(out, op, text) {
  if (!text) return;
  const last = out[out.length - 1];
  if (last && last[0] === op) last[1] += text;
  else out.push([op, text]);
}

function charDiff(out, a, b) {
  // Common prefix and suffix first: most edits are small.
  let p = 0;
  while (p < a.length && p < b.length && a[p] === b[p]) p++;
  let s = 0;
  while (s < a.length - p && s < b.length - p && a[a.length - 1 - s] === b[b.length - 1 - s]) s++;
  pushPiece(out, 0, a.slice(0, p));
  const am = a.slice(p, a.length - s), bm = b.slice(p, b.length - s);
  const runs = am.length + bm.length <= MAX_CHAR_BLOCK ? myers(am, bm, MAX_CHAR_D) : null;
  if (!runs) {
    pushPiece(out, -1, am);
    pushPiece(out, 1, bm);
  } else {
    let i = 0, j = 0;
    for (const [op, count] of runs) {
      if (op === 0) { pushPiece(out, 0, am.slice(i, i + count)); i += count; j += count; }
      else if (op === -1) { pushPiece(out, -1, am.slice(i, i + count)); i += count; }
      else { pushPiece(out, 1, bm.slice(j, j + count)); j += count; }
    }
  }
  pushPiece(out, 0, a.slice(a.length - s));
}

/** Differences between texts `a` and `b` as [[op, text]]. */
export function diffText(a, b) {
  const out = [];
  if (a === b) {
    pushPiece(out, 0, a);
    return out;
  }
  const la = splitLines(a), lb = splitLines(b);
  const ids = new Map();
  const id = (line) => {
    let n = ids.get(line);
    if (n === undefined) ids.set(line, (n = ids.size));
    return n;
  };
  const ia = la.map(id), ib = lb.map(id);
  const runs = myers(ia, ib, MAX_LINE_D);
  if (!runs) {
    charDiff(out, a, b);
    return out;
  }
  let i = 0, j = 0, delA = "", insB = "";
  const flush = () => {
    if (delA || insB) charDiff(out, delA, insB);
    delA = insB = "";
  };
  for (const [op, count] of runs) {
    if (op === 0) {
      flush();
      pushPiece(out, 0, la.slice(i, i + count).join(""));
      i += count; j += count;
    } else if (op === -1) {
      delA += la.slice(i, i + count).join("");
      i += count;
    } else {
      insB += lb.slice(j, j + count).join("");
      j += count;
    }
  }
  flush();
  return out;
}
