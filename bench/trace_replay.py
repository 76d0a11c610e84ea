"""Replay a real editing trace through the change engine, one edit at a time.

Each edit is turned (untimed) into the ChangeSetJSON text a client would send;
the timed loop then does what the server does per update: parse the JSON
(orjson), validate it into a ChangeSet, check it against the document and apply
it to the server's chunked Text. The final text must equal `endContent`.

    .venv/bin/python bench/trace_replay.py [--trace PATH] [--repeat 3]

The default trace, automerge-paper, ships in bench/traces/ (see its README for
the attribution); others in the same format, such as seph-blog1, are in
sequential_traces/ of https://github.com/josephg/editing-traces.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collab.changes import ChangeSet, utf16_len  # noqa: E402
from collab.text import Text  # noqa: E402

DEFAULT_TRACE = ROOT / "bench" / "traces" / "automerge-paper.json.gz"
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


def replay(frames: list[bytes], start: str) -> tuple[float, str]:
    loads, from_json = orjson.loads, ChangeSet.from_json
    text = Text(start)
    apply = text.apply
    t0 = time.perf_counter()
    for frame in frames:
        apply(from_json(loads(frame)))
    elapsed = time.perf_counter() - t0
    return elapsed, str(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trace_argument(ap)
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    args = ap.parse_args()
    trace = load_trace(args.trace)
    frames = trace_to_frames(trace)
    best = None
    for _ in range(args.repeat):
        elapsed, final = replay(frames, trace["startContent"])
        if final != trace["endContent"]:
            raise SystemExit("FAIL: final text differs from endContent")
        best = elapsed if best is None else min(best, elapsed)
    print(f"trace: {Path(args.trace).name}")
    print(f"edits: {len(frames):,}  final length: {len(trace['endContent']):,} chars  final text == endContent: yes")
    print(f"best of {args.repeat}: {best:.3f} s  ->  {len(frames) / best:,.0f} edits/s (parse + validate + apply)")


if __name__ == "__main__":
    main()
