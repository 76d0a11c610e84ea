// The reference for bench/trace_replay.py: the same edits through CodeMirror's
// own change engine in V8, in the same run.
//
// Per edit, what the Python replay times: JSON.parse of the ChangeSetJSON
// text, ChangeSet.fromJSON (which checks its shape), and apply to the
// document (a @codemirror/state Text, CodeMirror's rope). The edits and the
// start text come from files bench/trace_replay.py writes; the final text
// must equal the end text it gives.
//
//   node bench/trace_replay.mjs FRAMES START END [--passes 2]
//
// FRAMES has one ChangeSetJSON per line; START and END are the trace's texts.
// Prints one JSON line per pass: {wall, cpu} in seconds, and whether the
// final text was END. The first pass warms the JIT up; the Python side takes
// the last. @codemirror/state comes from tests/js/node_modules.

import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';

const require = createRequire(new URL('../tests/js/package.json', import.meta.url));
const { ChangeSet, Text } = require('@codemirror/state');

const [framesPath, startPath, endPath] = process.argv.slice(2, 5);
if (!endPath) {
  console.error('usage: node bench/trace_replay.mjs FRAMES START END [--passes 2]');
  process.exit(2);
}
const i = process.argv.indexOf('--passes');
const passes = i > 0 ? Number(process.argv[i + 1]) : 2;
const frames = readFileSync(framesPath, 'utf8').split('\n').filter((line) => line);
const start = readFileSync(startPath, 'utf8');
const end = readFileSync(endPath, 'utf8');

for (let pass = 0; pass < passes; pass++) {
  let doc = Text.of(start.split('\n'));
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (const frame of frames) doc = ChangeSet.fromJSON(JSON.parse(frame)).apply(doc);
  const wall = (performance.now() - t0) / 1000;
  const used = process.cpuUsage(c0);
  const cpu = (used.user + used.system) / 1e6;
  console.log(JSON.stringify({ wall, cpu, same: doc.toString() === end }));
}
