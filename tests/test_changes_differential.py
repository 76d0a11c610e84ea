"""collab.changes and collab.rebase against the real CodeMirror, case by case.

All cases are generated here from one seeded RNG, sent in one batch to one
Node process running tests/js/oracle.mjs (the real @codemirror/state and
@codemirror/collab), and the answers compared exactly: toJSON() against
to_json(), texts, positions, rebased updates.

Replay: every failure message carries the seed and the case's JSON. Re-run
with `COLLAB_DIFF_SEED=<seed> pytest tests/test_changes_differential.py`, or
feed the case alone to the oracle:
`echo '{"cases": [<case>]}' | node tests/js/oracle.mjs`.

Rebase cases come from scenarios the oracle simulates (an authority and three
peers running EditorState + collab(), re-pushes of accepted updates; in
"network" mode also random delivery order, one frame per accepted push, lost
acknowledgements): every rebaseUpdates call is recorded and fed to
`rebase_updates`, and the whole push sequence is replayed with Python as the
authority, which must accept exactly what CodeMirror's authority accepted.

Stock peers converge in "cm" mode (the model of @codemirror/collab's own
tests: a push is handled when sent, a peer receives all it lacks at once), and
that is asserted. In "network" mode they do not always, with CodeMirror's own
rebaseUpdates: a peer that gets the updates its pending push will be rebased
over in two frames maps it step by step, while the authority maps it over their
composition, and CodeMirror's `x.map(a.compose(b))` differs from
`x.map(a).map(b)` in where concurrent insertions land (see
tests/test_rebase_properties.py::test_split_frames_diverge). The numbers are
printed; this file only demands that we do exactly what CodeMirror does.

Sets with zero-length keeps (a bare 0) go through fromJSON/toJSON, apply and
mapPos like any other, but not through CodeMirror's map/compose, which are
wrong on them (see casegen). The server normalises pushed sets instead
(`ChangeSet.normalized()`); test_normalized_leaves_what_codemirror_makes_alone
checks that this never rewrites a set CodeMirror itself made, and
tests/test_changes_properties.py that it never changes what a set means.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

import casegen as cg
from collab.changes import ChangeError, ChangeSet
from collab.rebase import Update, rebase_updates

JS_DIR = Path(__file__).resolve().parent / "js"
SEED = int(os.environ.get("COLLAB_DIFF_SEED") or random.SystemRandom().randrange(2**32))

COUNTS = {
    "roundtrip": 3000,
    "apply": 3000,
    "map": 5000,
    "compose": 3000,
    "mappos": 4000,
}
SIMS = {"cm": 60, "network": 80}
SIM_STEPS = 160
MIN_TOTAL = 20_000


def generate(seed: int) -> dict:
    rng = random.Random(seed)
    cases: list[dict] = []
    for _ in range(COUNTS["roundtrip"]):
        doc = cg.rand_doc(rng)
        cases.append({"op": "roundtrip", "json": cg.rand_changes(rng, doc, cg.rand_flavour(rng))})
    for _ in range(COUNTS["apply"]):
        doc = cg.rand_doc(rng)
        cases.append({"op": "apply", "doc": doc, "json": cg.rand_changes(rng, doc, cg.rand_flavour(rng))})
    for k in range(COUNTS["map"]):
        doc = cg.rand_doc(rng)
        a = cg.rand_changes(rng, doc, cg.rand_flavour(rng, allow_zero_keeps=False))
        b = cg.rand_changes(rng, doc, cg.rand_flavour(rng, allow_zero_keeps=False))
        cases.append({"op": "map", "doc": doc, "a": a, "b": b, "before": k % 2 == 1})
    for _ in range(COUNTS["compose"]):
        doc = cg.rand_doc(rng)
        a = cg.rand_changes(rng, doc, cg.rand_flavour(rng, allow_zero_keeps=False))
        b = cg.rand_changes(rng, cg.ref_apply(doc, a), cg.rand_flavour(rng, allow_zero_keeps=False))
        cases.append({"op": "compose", "doc": doc, "a": a, "b": b})
    mappos = 0
    while mappos < COUNTS["mappos"]:
        doc = cg.rand_doc(rng)
        js = cg.rand_changes(rng, doc, cg.rand_flavour(rng))
        for pos in cg.positions_for(rng, js, 4):
            for assoc in (-1, 1):
                cases.append({"op": "mappos", "json": js, "pos": pos, "assoc": assoc})
                mappos += 1
    sims = [
        {"seed": rng.randrange(2**31), "doc": rng.choice(["", "hello 😀 world", cg.rand_text(rng, 10)]),
         "peers": 3, "steps": SIM_STEPS, "mode": mode}
        for mode, count in SIMS.items() for _ in range(count)
    ]
    return {"cases": cases, "sims": sims}


@pytest.fixture(scope="module")
def oracle(node, tmp_path_factory):
    """(input, output) of one oracle run over all cases and simulations."""
    data = generate(SEED)
    path = tmp_path_factory.mktemp("oracle") / "cases.json"
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    started = time.monotonic()
    proc = subprocess.run([node, str(JS_DIR / "oracle.mjs"), str(path)], capture_output=True, timeout=300)
    assert proc.returncode == 0, f"oracle failed (seed {SEED}):\n{proc.stderr.decode(errors='replace')}"
    out = json.loads(proc.stdout.decode("utf-8"))
    calls = sum(len(s["events"]) for s in out["sims"] if "events" in s)
    net = [s for spec, s in zip(data["sims"], out["sims"]) if spec["mode"] == "network" and "events" in s]
    print(f"\ndifferential seed {SEED}: {len(data['cases'])} cases + {calls} rebase calls from "
          f"{len(data['sims'])} sims, node {time.monotonic() - started:.1f}s; network sims where stock "
          f"peers diverged: {sum(not s['converged'] for s in net)}/{len(net)}, "
          f"where a CodeMirror call threw: {sum(bool(s['crash']) for s in net)}")
    assert len(out["results"]) == len(data["cases"]) and len(out["sims"]) == len(data["sims"])
    return data, out


class Failures:
    """Collects mismatches; the assertion shows the first few, replayable."""

    def __init__(self, what: str):
        self.what = what
        self.items: list[str] = []
        self.checked = 0

    def add(self, case, cm, ours) -> None:
        self.items.append(
            f"case: {json.dumps(case, ensure_ascii=False)}\n"
            f"  CodeMirror: {json.dumps(cm, ensure_ascii=False)}\n"
            f"  ours:       {ours!r}"
        )

    def check(self) -> None:
        assert self.checked > 0, f"{self.what}: no cases were checked"
        assert not self.items, (
            f"{self.what}: {len(self.items)} of {self.checked} cases failed "
            f"(COLLAB_DIFF_SEED={SEED}); first ones:\n" + "\n".join(self.items[:5])
        )


def _ours(fn):
    """Run `fn`; an exception becomes a comparable value."""
    try:
        return fn()
    except ChangeError as e:
        return {"error": f"ChangeError({e.message})"}
    except Exception as e:  # noqa: BLE001 - any other type is a finding in itself
        return {"crash": f"{type(e).__name__}: {e}"}


def _compare(oracle, op: str, ours_fn, cm_view=lambda r: r) -> Failures:
    data, out = oracle
    fails = Failures(op)
    for case, cm in zip(data["cases"], out["results"]):
        if case["op"] != op:
            continue
        fails.checked += 1
        ours = _ours(lambda: ours_fn(case))
        if "error" in cm:
            # CodeMirror refused: we must refuse too, with our error type.
            if not (isinstance(ours, dict) and "error" in ours):
                fails.add(case, cm, ours)
        elif ours != cm_view(cm):
            fails.add(case, cm, ours)
    return fails


def test_enough_cases(oracle):
    data, out = oracle
    rebase_calls = sum(len(s["events"]) for s in out["sims"] if "events" in s)
    print(f"{len(data['cases'])} cases + {rebase_calls} rebase calls = {len(data['cases']) + rebase_calls}")
    total = len(data["cases"]) + rebase_calls
    assert total >= MIN_TOTAL, f"only {total} differential cases"
    ops = {c["op"] for c in data["cases"]}
    assert ops == set(COUNTS)


def test_coverage_of_edge_cases(oracle):
    """The generator really produces the cases the issue lists."""
    data, _ = oracle
    cases = data["cases"]
    docs = [c["doc"] for c in cases if "doc" in c]
    sets = [c["json"] if "json" in c else c["a"] for c in cases]
    assert any(d == "" for d in docs)
    assert any("😀" in d or "𝒳" in d for d in docs)
    assert any(any(isinstance(p, int) and p == 0 for p in s) for s in sets)            # zero-length keeps
    assert any(any(isinstance(p, list) and p[1:] == [""] for p in s) for s in sets)  # [d, ""]
    assert any(any(isinstance(p, list) and len(p) == 1 and p[0] > 0 for p in s) for s in sets)  # pure deletions
    same_pos_inserts = [
        c for c in cases if c["op"] == "map"
        and any(a[0] == b[0] and a[2] and b[2] and a[0] == a[1] for a in cg.merged_changes(c["a"])
                for b in cg.merged_changes(c["b"]) if b[0] == b[1])
    ]
    assert len(same_pos_inserts) > 100
    assert {c["before"] for c in cases if c["op"] == "map"} == {False, True}
    assert {c["assoc"] for c in cases if c["op"] == "mappos"} == {-1, 1}


def test_from_json_to_json(oracle):
    def ours(case):
        cs = ChangeSet.from_json(case["json"])
        return {"json": cs.to_json(), "length": cs.length, "newLength": cs.new_length}

    _compare(oracle, "roundtrip", ours).check()


def test_apply(oracle):
    _compare(oracle, "apply", lambda c: {"text": ChangeSet.from_json(c["json"]).apply_to_str(c["doc"])}).check()


def test_map(oracle):
    def ours(case):
        a, b = ChangeSet.from_json(case["a"]), ChangeSet.from_json(case["b"])
        mapped = a.map(b, case["before"])
        return {"json": mapped.to_json(), "text": mapped.apply_to_str(b.apply_to_str(case["doc"]))}

    _compare(oracle, "map", ours).check()


def test_compose(oracle):
    data, out = oracle
    # CodeMirror itself must agree with itself on these inputs (sanity of the generator).
    for case, cm in zip(data["cases"], out["results"]):
        if case["op"] == "compose":
            assert cm.get("text") == cm.get("stepText"), f"CodeMirror compose inconsistent on {case} -> {cm}"

    def ours(case):
        a, b = ChangeSet.from_json(case["a"]), ChangeSet.from_json(case["b"])
        composed = a.compose(b)
        return {"json": composed.to_json(), "text": composed.apply_to_str(case["doc"])}

    _compare(oracle, "compose", ours, lambda cm: {"json": cm["json"], "text": cm["text"]}).check()


def test_map_pos(oracle):
    _compare(oracle, "mappos",
             lambda c: {"pos": ChangeSet.from_json(c["json"]).map_pos(c["pos"], c["assoc"])}).check()


def test_normalized_leaves_what_codemirror_makes_alone(oracle):
    """collab/protocol.py runs pushed changes through `normalized()`.

    Every set a stock client can push is one CodeMirror built (edits, map,
    compose), so on those normalising must be a no-op: the client keeps its
    own copy, and a rewritten copy on the server maps concurrent insertions
    differently (e.g. [[2], [0, "x"]] vs [[2, "x"]]) and the client diverges.
    Sources here: CodeMirror's results for the map/compose cases whose inputs
    were canonical, and every update stock peers pushed in the simulations.
    """
    data, out = oracle
    made = [r["json"] for c, r in zip(data["cases"], out["results"])
            if c["op"] in ("map", "compose") and "json" in r and cg.is_canonical(c["a"]) and cg.is_canonical(c["b"])]
    made += [u["changes"] for s in out["sims"] for e in s["events"] for u in e["updates"]]
    assert all(cg.is_canonical(js) for js in made[:2000]), "the generator's idea of canonical is off"
    fails = Failures("normalized() on sets CodeMirror made")
    for js in made:
        fails.checked += 1
        ours = _ours(lambda: ChangeSet.from_json(js).normalized().to_json())
        if ours != js:
            fails.add({"set": js}, js, ours)
    fails.check()


def _updates(items) -> list[Update]:
    return [Update(u["clientID"], ChangeSet.from_json(u["changes"])) for u in items]


def _updates_json(updates: list[Update]) -> list[dict]:
    return [{"clientID": u.client_id, "changes": u.changes.to_json()} for u in updates]


def test_simulations_ran(oracle):
    """The oracle's scenarios ran and exercised rebasing and deduplication."""
    data, out = oracle
    for spec, sim in zip(data["sims"], out["sims"]):
        assert "error" not in sim, f"oracle sim failed: {spec} -> {sim['error']}"
    events = [e for s in out["sims"] for e in s["events"]]
    dedups = sum(1 for e in events if "result" in e and len(e["result"]) < len(e["updates"]))
    rebased = sum(1 for e in events if e["version"] < e["at"])
    assert dedups > 100 and rebased > 1000, (dedups, rebased)


def test_stock_peers_converge_in_cm_model(oracle):
    data, out = oracle
    for spec, sim in zip(data["sims"], out["sims"]):
        if spec["mode"] == "cm":
            assert not sim["crash"] and sim["converged"], f"CodeMirror peers did not converge in {spec}: {sim['crash']}"


def test_rebase_updates_calls(oracle):
    """Every rebaseUpdates(updates, over) call of the simulations, one by one."""
    data, out = oracle
    fails = Failures("rebase_updates")
    for spec, sim in zip(data["sims"], out["sims"]):
        for ev in sim["events"]:
            if ev.get("rejected") or "error" in ev:
                continue
            fails.checked += 1
            over = sim["accepted"][ev["version"]:ev["at"]]
            ours = _ours(lambda: _updates_json(rebase_updates(_updates(ev["updates"]), _updates(over))))
            if ours != ev["result"]:
                fails.add({"op": "rebase", "updates": ev["updates"], "over": over, "sim": spec}, ev["result"], ours)
    fails.check()


def _units(s: str) -> bytes:
    return s.encode("utf-16-le", "surrogatepass")


def test_python_authority_replays_simulations(oracle):
    """Python as the authority over the same pushes: same updates, same final text.

    Where CodeMirror's authority threw, ours must refuse the push with a
    ChangeError, not crash. In network mode, where peers' and authority's
    views drift apart (see the module docstring), CodeMirror's rebaseUpdates
    sometimes yields an update that cuts a surrogate pair in the authority's
    text: CodeMirror applies it, `apply_to_str` refuses it (our contract). So
    the text is followed here with the JavaScript-like reference apply, and a
    refusal is accepted in network mode only.
    """
    data, out = oracle
    replayed = refused = 0
    for spec, sim in zip(data["sims"], out["sims"]):
        accepted: list[Update] = []
        text = sim["initial"]
        for n, ev in enumerate(sim["events"]):
            where = f"sim {spec} (COLLAB_DIFF_SEED={SEED}) event {n}: push at version {ev['version']}"
            if ev["version"] > len(accepted):
                assert ev.get("rejected"), f"{where}: we would reject a push CodeMirror accepted"
                continue
            if "error" in ev:
                with pytest.raises(ChangeError):
                    for u in rebase_updates(_updates(ev["updates"]), accepted[ev["version"]:]):
                        text = u.changes.apply_to_str(text)
                break
            result = rebase_updates(_updates(ev["updates"]), accepted[ev["version"]:])
            assert _updates_json(result) == ev["result"], (
                f"{where} over {len(accepted) - ev['version']} updates\n  pushed: {ev['updates']}\n"
                f"  CodeMirror: {ev['result']}\n  ours: {_updates_json(result)}"
            )
            for u in result:
                try:
                    u.changes.apply_to_str(text)
                except ChangeError as e:
                    assert spec["mode"] == "network" and "surrogate" in str(e), f"{where}: apply_to_str refused: {e}"
                    refused += 1
                text = cg.ref_apply(text, u.changes.to_json())
            accepted.extend(result)
            replayed += 1
        else:
            assert _units(text) == _units(sim["final"]), f"sim {spec}: final text differs"
            assert len(accepted) == len(sim["accepted"])
    print(f"replayed {replayed} pushes; {refused} rebased updates (network mode) cut a surrogate pair")
    assert replayed > 1000
