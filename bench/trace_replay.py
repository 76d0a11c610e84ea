"""Replay a real editing trace through the change engine, one edit at a time.

Each edit is turned (untimed) into the ChangeSetJSON text a client would send;
the timed loop then does what the server does per update: parse the JSON
(orjson), validate it into a ChangeSet, check it against the document and apply
it to the server's chunked Text. The final text must equal `endContent`.

    .venv/bin/python bench/trace_replay.py [--trace PATH] [--repeat 3] [--against DIR]

The rate is given by wall time and by the process's CPU time (on a shared
machine the second moves less). `--against DIR` times another copy of the
engine in the same run, alternately with this one: DIR holds a `collab`
package (for instance `git archive <commit> collab | tar -x -C DIR`), whose
`changes` and `text` modules are loaded under another name; the ratio of the
two is taken within each repeat.

With node installed, each repeat also replays the same edits through
CodeMirror's own engine in V8 (bench/trace_replay.mjs: JSON.parse,
ChangeSet.fromJSON, apply to its Text), and the rate is given as a share of
that one's, taken within each repeat: the issue's target, 450,000 edits/s
against about 486,000 for V8, is 0.93 of it. `--no-reference` skips it.

The default trace, automerge-paper, ships in bench/traces/ (see its README for
the attribution); others in the same format, such as seph-blog1, are in
sequential_traces/ of https://github.com/josephg/editing-traces.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab.changes import ChangeSet, utf16_len  # noqa: E402
from collab.text import Text  # noqa: E402

DEFAULT_TRACE = ROOT / "bench" / "traces" / "automerge-paper.json.gz"
REFERENCE = ROOT / "bench" / "trace_replay.mjs"
WHERE_TO_GET = ("editing traces in this format (seph-blog1.json.gz and others) are in sequential_traces/ "
                "of https://github.com/josephg/editing-traces")


def add_trace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, metavar="PATH",
                        help=f"gzip'd JSON editing trace (default: bench/traces/{DEFAULT_TRACE.name}; "
                        f"{WHERE_TO_GET})")


def load_trace(path: Path) -> dict:
    if not Path(path).is_file():
        raise SystemExit(f"no trace at {path}: {WHERE_TO_GET}")
    with gzip.open(path, "rb") as f:
        return orjson.loads(f.read())


def trace_to_frames(trace: dict) -> list[bytes]:
    """One ChangeSetJSON (bytes, as received off the wire) per patch.

    Trace positions count code points; the protocol counts UTF-16 units, so
    positions are converted against the document as it is at that point.
    """
    doc = trace["startContent"]
    wide = not doc.isascii()
    frames = []
    for txn in trace["txns"]:
        for pos, deleted, inserted in txn["patches"]:
            if wide:
                pos16 = utf16_len(doc[:pos])
                del16 = utf16_len(doc[pos:pos + deleted])
                length = utf16_len(doc)
            else:
                pos16, del16, length = pos, deleted, len(doc)
            change: list = []
            if pos16:
                change.append(pos16)
            change.append([del16, *inserted.split("\n")])
            rest = length - pos16 - del16
            if rest:
                change.append(rest)
            frames.append(orjson.dumps(change))
            doc = doc[:pos] + inserted + doc[pos + deleted:]
            wide = wide or not inserted.isascii()
    if doc != trace["endContent"]:
        raise SystemExit("trace conversion bug: naive replay does not give endContent")
    return frames


def replay(frames: list[bytes], start: str, change_set=ChangeSet, text_class=Text) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, final text) of one replay."""
    loads, from_json = orjson.loads, change_set.from_json
    text = text_class(start)
    apply = text.apply
    c0, t0 = time.process_time(), time.perf_counter()
    for frame in frames:
        apply(from_json(loads(frame)))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return elapsed, cpu, str(text)


def replay_in_v8(node: str, files: tuple[Path, Path, Path], passes: int = 2) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of CodeMirror's engine replaying the same edits: its last pass (the
    earlier ones warm the JIT up), one timed replay like this engine's in each repeat."""
    proc = subprocess.run([node, str(REFERENCE), *map(str, files), "--passes", str(passes)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"bench/trace_replay.mjs failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    runs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    if len(runs) != passes or not all(r["same"] for r in runs):
        raise SystemExit(f"FAIL: CodeMirror's replay did not end at endContent: {proc.stdout[-2000:]}")
    return runs[-1]["wall"], runs[-1]["cpu"]


def write_reference_input(folder: Path, frames: list[bytes], trace: dict) -> tuple[Path, Path, Path]:
    """The files bench/trace_replay.mjs reads: one frame a line, the start and the end text."""
    paths = folder / "frames.jsonl", folder / "start.txt", folder / "end.txt"
    paths[0].write_bytes(b"\n".join(frames) + b"\n")
    paths[1].write_text(trace["startContent"], encoding="utf-8")
    paths[2].write_text(trace["endContent"], encoding="utf-8")
    return paths


def load_engine(folder: Path):
    """(ChangeSet, Text) of the `collab` package in `folder`, imported as `collab_against`."""
    init = Path(folder) / "collab" / "__init__.py"
    if not init.is_file():
        raise SystemExit(f"--against: no collab package in {folder}")
    spec = importlib.util.spec_from_file_location("collab_against", init, submodule_search_locations=[str(init.parent)])
    package = importlib.util.module_from_spec(spec)
    sys.modules["collab_against"] = package
    spec.loader.exec_module(package)
    changes = importlib.import_module("collab_against.changes")
    text = importlib.import_module("collab_against.text")
    return changes.ChangeSet, text.Text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trace_argument(ap)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    ap.add_argument("--against", type=Path, metavar="DIR", help="also time the collab package in DIR, alternately")
    ap.add_argument("--no-reference", action="store_true", help="skip CodeMirror's engine in V8")
    args = ap.parse_args()
    trace = load_trace(args.trace)
    frames = trace_to_frames(trace)
    engines = {"this": (ChangeSet, Text)}
    if args.against:
        engines[str(args.against)] = load_engine(args.against)
    node = None if args.no_reference else shutil.which("node")
    if not args.no_reference and node is None:
        raise SystemExit("node is not installed: it runs the reference (bench/trace_replay.mjs); "
                         "or pass --no-reference")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    v8: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory(prefix="collab-trace-") as tmp:
        files = write_reference_input(Path(tmp), frames, trace) if node else None
        for k in range(args.repeat):
            for name in (list(engines) if k % 2 == 0 else list(reversed(engines))):
                elapsed, cpu, final = replay(frames, trace["startContent"], *engines[name])
                if final != trace["endContent"]:
                    raise SystemExit(f"FAIL: final text differs from endContent ({name})")
                runs[name].append((elapsed, cpu))
            if node:
                v8.append(replay_in_v8(node, files))
    n = len(frames)
    print(f"trace: {Path(args.trace).name}")
    print(f"edits: {n:,}  final length: {len(trace['endContent']):,} chars  final text == endContent: yes")
    for name, times in runs.items():
        best = min(t for t, _ in times)
        best_cpu = min(c for _, c in times)
        label = "" if len(runs) == 1 else f"{name}: "
        print(f"{label}best of {args.repeat}: {best:.3f} s  ->  {n / best:,.0f} edits/s (parse + validate + apply); "
              f"by CPU time {n / best_cpu:,.0f} edits/s, median {n / statistics.median(c for _, c in times):,.0f}")
    if v8:
        shares = [r[1] / t[1] for t, r in zip(runs["this"], v8)]
        walls = [r[0] / t[0] for t, r in zip(runs["this"], v8)]
        print(f"CodeMirror in V8 (bench/trace_replay.mjs), best of {args.repeat}: {n / min(w for w, _ in v8):,.0f} "
              f"edits/s; by CPU time {n / min(c for _, c in v8):,.0f} edits/s")
        # V8's CPU time includes its background GC and compiler threads, which the replay's wall time does not.
        print(f"this / V8, within each repeat: by CPU time {statistics.median(shares):.2f} "
              f"(range {min(shares):.2f}-{max(shares):.2f}), by wall time {statistics.median(walls):.2f} "
              f"(range {min(walls):.2f}-{max(walls):.2f}); the target, 450,000 against 486,000, is 0.93")
    if args.against:
        ratios = [o[1] / t[1] for t, o in zip(runs["this"], runs[str(args.against)])]
        print(f"this / {args.against}, by CPU time within each repeat: {statistics.median(ratios):.2f}x faster "
              f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
