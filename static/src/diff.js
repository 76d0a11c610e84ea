// A small text diff for the history panel: lines first (Myers' O(ND)
// algorithm), then words inside each changed block of lines, so that a
// changed word reads as the old word struck out and the new one added
// ("item" -> "entry"), never letter by letter.  Pure: no DOM.
//
// Result: [[op, text]], op 0 = in both, -1 = only in `a`, 1 = only in `b`;
// the 0 and -1 pieces spell `a`, the 0 and 1 pieces spell `b`; between two
// pieces in both, what was removed comes before what was added. When the
// texts differ in too many lines for the line diff (MAX_LINE_D edits), the
// result is one replacement of everything from the first changed line to
// the last (trimmed by words at both ends), and it has `coarse: true`: its
// counts say nothing of how much changed.

const MAX_LINE_D = 2000; // beyond this many line edits: one big replacement

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

// Words: runs of letters, digits and marks (and "_"), runs of white space,
// and every other character on its own (a code point: never half a pair).
const TOKEN = /[\p{L}\p{N}\p{M}_]+|\s+|[^]/gu;
const MAX_WORD_BLOCK = 20000; // word diff only for changed blocks up to this many words
const MAX_WORD_D = 1000;
const GLUE = /^[^\p{L}\p{N}\p{M}_]{1,2}$/u; // one or two spaces or marks between two changes: part of the change

function tokens(s) {
  return s.match(TOKEN) || [];
}

/** Word differences of the block `a` -> `b` onto `out`. */
function wordDiff(out, a, b) {
  const ta = tokens(a), tb = tokens(b);
  // Common prefix and suffix first: most edits are small.
  let p = 0;
  while (p < ta.length && p < tb.length && ta[p] === tb[p]) p++;
  let s = 0;
  while (s < ta.length - p && s < tb.length - p && ta[ta.length - 1 - s] === tb[tb.length - 1 - s]) s++;
  pushPiece(out, 0, ta.slice(0, p).join(""));
  const am = ta.slice(p, ta.length - s), bm = tb.slice(p, tb.length - s);
  const ids = new Map();
  const id = (w) => {
    let n = ids.get(w);
    if (n === undefined) ids.set(w, (n = ids.size));
    return n;
  };
  const runs = am.length + bm.length <= MAX_WORD_BLOCK ? myers(am.map(id), bm.map(id), MAX_WORD_D) : null;
  const block = [];
  if (!runs) {
    block.push([-1, am.join("")], [1, bm.join("")]);
  } else {
    let i = 0, j = 0;
    for (const [op, count] of runs) {
      if (op === 0) { block.push([0, am.slice(i, i + count).join("")]); i += count; j += count; }
      else if (op === -1) { block.push([-1, am.slice(i, i + count).join("")]); i += count; }
      else { block.push([1, bm.slice(j, j + count).join("")]); j += count; }
    }
  }
  // A space or a comma left standing between two changed words splits one
  // change in two: it goes into the change (removed and added again).
  for (let k = 1; k < block.length - 1; k++) {
    if (block[k][0] === 0 && block[k - 1][0] !== 0 && block[k + 1][0] !== 0 && GLUE.test(block[k][1])) {
      block.splice(k, 1, [-1, block[k][1]], [1, block[k][1]]);
    }
  }
  // Within a change, everything removed first, then everything added.
  let dels = "", ins = "";
  const flush = () => {
    pushPiece(out, -1, dels);
    pushPiece(out, 1, ins);
    dels = ins = "";
  };
  for (const [op, text] of block) {
    if (op === 0) {
      flush();
      pushPiece(out, 0, text);
    } else if (op === -1) dels += text;
    else ins += text;
  }
  flush();
  pushPiece(out, 0, ta.slice(ta.length - s).join(""));
}

/** Differences between texts `a` and `b` as [[op, text]]. */
export function diffText(a, b) {
  const out = [];
  if (a === b) {
    pushPiece(out, 0, a);
    return out;
  }
  let la = splitLines(a), lb = splitLines(b);
  // The lines both texts begin and end with are left out of the line diff (most edits are small,
  // and it then works on the changed middle only).
  let p = 0;
  while (p < la.length && p < lb.length && la[p] === lb[p]) p++;
  let s = 0;
  while (s < la.length - p && s < lb.length - p && la[la.length - 1 - s] === lb[lb.length - 1 - s]) s++;
  const tail = la.slice(la.length - s).join("");
  pushPiece(out, 0, la.slice(0, p).join(""));
  la = la.slice(p, la.length - s);
  lb = lb.slice(p, lb.length - s);
  const ids = new Map();
  const id = (line) => {
    let n = ids.get(line);
    if (n === undefined) ids.set(line, (n = ids.size));
    return n;
  };
  const ia = la.map(id), ib = lb.map(id);
  const runs = myers(ia, ib, MAX_LINE_D);
  if (!runs) {
    wordDiff(out, la.join(""), lb.join(""));
    pushPiece(out, 0, tail);
    out.coarse = true;
    return out;
  }
  let i = 0, j = 0, delA = "", insB = "";
  const flush = () => {
    if (delA || insB) wordDiff(out, delA, insB);
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
  pushPiece(out, 0, tail);
  return out;
}
