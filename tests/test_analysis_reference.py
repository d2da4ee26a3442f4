"""Today's analysis, kept: a small fixed run folder (records and a ledger with planted billing errors, made by
benchmarks/analysis_speed.py) analysed again reproduces its reference summary.json (issue 15: counts exact,
floats within 1e-9 relative), and the audit finds exactly the planted errors.

Regenerate the folder (only when the analysis is meant to change what it says) with the `regenerate` command in
tests/data/reference_run/planted.json."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from analysis.billing import FINDING_KINDS
from analysis.report import analyze

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "reference_run"
INPUTS = ("records.jsonl", "ledger.csv", "prices.yaml", "scenario.yaml")


def _load_compare() -> Any:
    """benchmarks/summary_compare.py (the one comparison rule, shared with the benchmark's --check-reference)."""
    path = ROOT / "benchmarks" / "summary_compare.py"
    spec = importlib.util.spec_from_file_location("summary_compare", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


summary_compare = _load_compare()


@pytest.fixture(scope="module")
def planted() -> dict[str, Any]:
    return json.loads((DATA / "planted.json").read_text())


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixed run folder, unpacked into a temporary folder and analysed there."""
    run = tmp_path_factory.mktemp("reference_run")
    for name in INPUTS:
        packed = DATA / f"{name}.gz"
        if packed.exists():
            with gzip.open(packed, "rb") as src, open(run / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copyfile(DATA / name, run / name)
    _, code = analyze(run)
    assert code == 0
    return run


def test_inputs_are_the_generated_ones(analysed: Path, planted: dict[str, Any]):
    for name, digest in planted["sha256"].items():
        assert hashlib.sha256((analysed / name).read_bytes()).hexdigest() == digest, name


def test_summary_reproduces_the_reference(analysed: Path):
    reference = json.loads((DATA / "summary.reference.json").read_text())
    new = json.loads((analysed / "summary.json").read_text())
    diffs = summary_compare.differences(reference, new, limit=20)
    assert not diffs, "summary.json differs from the reference:\n" + "\n".join(diffs)


def test_independent_truths(analysed: Path, planted: dict[str, Any]):
    """What the generator knows, not what an earlier analysis said."""
    summary = json.loads((analysed / "summary.json").read_text())
    with open(analysed / "records.jsonl", "rb") as f:
        records = sum(1 for _ in f)
    assert records == planted["records"] == summary["metrics"]["overall"]["attempts"]
    billing = summary["billing"]
    assert billing["counts"] == {k: planted["planted"].get(k, 0) for k in FINDING_KINDS}
    assert all(planted["planted"][k] > 0 for k in planted["planted"])  # every planted kind is exercised
    assert billing["findings_total"] == sum(planted["planted"].values())
    assert billing["charges"] == planted["charges"]
    assert billing["charges"] - billing["charges_joined"] == planted["planted"]["unknown_request"]
    assert billing["trusted"] is True


def test_comparison_rule():
    """Counts exact, floats within 1e-9 relative (1e-12 absolute near zero), same keys, lists element-wise."""
    differences = summary_compare.differences
    ref = {"n": 3, "x": 1.5, "z": 0.0, "ok": True, "s": "a", "l": [1, 2.0], "none": None}
    assert differences(ref, json.loads(json.dumps(ref))) == []
    assert differences(ref, {**ref, "x": 1.5 * (1 + 1e-10), "z": 1e-13, "l": [1, 2]}) == []  # 2.0 may come as 2
    assert differences(ref, {**ref, "x": 1.5 * (1 + 1e-6)})
    assert differences(ref, {**ref, "z": 1e-9})
    assert differences(ref, {**ref, "n": 4})
    assert differences(ref, {**ref, "n": 3.0})  # a count stays an int
    assert differences(ref, {**ref, "ok": 1})
    assert differences(ref, {**ref, "l": [1, 2.0, 3]})
    assert differences(ref, {k: v for k, v in ref.items() if k != "s"})
    assert differences(ref, {**ref, "extra": 1})
    assert differences(ref, {**ref, "none": 0})


def test_a_later_summary_version_may_add_its_keys(tmp_path):
    """Against a reference of an earlier summary version, the keys the later version added (and `version`) are
    listed, not counted as differences; any other new key (a group, an error kind) still counts, every figure both
    have is still compared, and a key the new one lacks still counts."""
    group = {"n": 3, "x": 1.5}
    ref = {"version": 3, "metrics": {"overall": dict(group), "groups": {"chat a": dict(group)}}}
    more = {"itl_per_request_p50_ms": 2.0, "summary_timing_calls": 0}
    new = {"version": 4, "timing": {}, "metrics": {"overall": {**group, **more}, "groups": {"chat a": {**group, **more}}}}
    paths = {}
    for name, doc in (
            ("ref", ref), ("new", new),
            ("new_n", {**new, "metrics": {**new["metrics"], "overall": {**group, **more, "n": 4}}}),
            ("new_x", {**new, "metrics": {**new["metrics"], "overall": {"n": 3, **more}}}),
            ("new_group", {**new, "metrics": {**new["metrics"], "groups": {**new["metrics"]["groups"], "chat b": {}}}}),
            ("new_key", {**new, "metrics": {**new["metrics"], "overall": {**group, **more, "x2": 1.0}}}),
            ("new_mean", {**new, "metrics": {**new["metrics"], "overall": {**group, **more,
                                                                        "itl_per_request_mean_ms": 1.0}}}),
            ("dotted_group", {**new, "metrics": {**new["metrics"], "groups": {**new["metrics"]["groups"],
                                                                             "x.summary_timing_calls": 0}}}),
            ("same_version", {**new, "version": 3})):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    added: list[str] = []
    assert summary_compare.compare_files(paths["ref"], paths["new"], added=added) == []
    assert sorted(added) == ["metrics.groups.chat a.itl_per_request_p50_ms", "metrics.groups.chat a.summary_timing_calls",
                             "metrics.overall.itl_per_request_p50_ms", "metrics.overall.summary_timing_calls", "timing"]
    assert summary_compare.compare_files(paths["ref"], paths["new"])  # without `added`: differences
    assert summary_compare.compare_files(paths["ref"], paths["new_n"], added=[]) == \
        ["metrics.overall.n: count: reference 3, new 4"]
    assert summary_compare.compare_files(paths["ref"], paths["new_x"], added=[]) == \
        ["metrics.overall: key 'x' missing from the new summary"]
    assert summary_compare.compare_files(paths["ref"], paths["new_group"], added=[]) == \
        ["metrics.groups: new key 'chat b' not in the reference"]
    assert summary_compare.compare_files(paths["ref"], paths["new_key"], added=[]) == \
        ["metrics.overall: new key 'x2' not in the reference"]
    assert summary_compare.compare_files(paths["ref"], paths["new_mean"], added=[]) == \
        ["metrics.overall: new key 'itl_per_request_mean_ms' not in the reference"]  # version 3 had it already
    assert summary_compare.compare_files(paths["ref"], paths["dotted_group"], added=[]) == \
        ["metrics.groups: new key 'x.summary_timing_calls' not in the reference"]  # a group, whatever its name
    assert len(summary_compare.compare_files(paths["ref"], paths["same_version"], added=[])) == 5  # no later version


def test_the_generator_writes_the_baselines_record_version(tmp_path):
    """--record-version 4 (the newest record version the baseline, 66f5fba, reads): the same lines but for `v`, the
    same ledger, and the same summary from today's analysis; the version a baseline reads is found in its code."""
    from .test_columnar import _bench

    bench = _bench()
    v5, v4 = tmp_path / "v5", tmp_path / "v4"
    bench.write_run(v5, 2000, 200.0, 3, sample=50)
    bench.write_run(v4, 2000, 200.0, 3, sample=50, version=4)
    lines5 = (v5 / "records.jsonl").read_bytes().splitlines()
    lines4 = (v4 / "records.jsonl").read_bytes().splitlines()
    assert len(lines5) == len(lines4) == 2000
    assert all(a.startswith(b'{"v":5,') and b == b'{"v":4,' + a[len(b'{"v":5,'):] for a, b in zip(lines5, lines4, strict=True))
    assert (v5 / "ledger.csv").read_bytes() == (v4 / "ledger.csv").read_bytes()
    for run in (v5, v4):
        assert analyze(run)[1] == 0
    assert summary_compare.compare_files(v5 / "summary.json", v4 / "summary.json") == []
    with pytest.raises(SystemExit, match="--record-version 3"):
        bench.write_run(tmp_path / "v3", 10, 10.0, 3, version=3)
    code = tmp_path / "code"
    (code / "analysis").mkdir(parents=True)
    for text, newest in (("RECORD_VERSIONS = (1, 2, 3, 4)  # which", 4), ("RECORD_VERSIONS = (1, 2, 3, 4, 5)", 5),
                         ("RECORD_VERSIONS: tuple[int, ...] = (\n    1, 2,\n    3, 4,\n)", 4),
                         ("RECORD_VERSIONS = (1, 2, 3)", bench.RECORD_VERSION),
                         ("RECORD_VERSIONS = tuple(range(1, 5))", bench.RECORD_VERSION)):
        (code / "analysis" / "records.py").write_text(f"X = 1\n{text}\n")
        assert bench.newest_read(code) == newest, text
    (code / "analysis" / "records.py").unlink()
    assert bench.newest_read(code) == bench.RECORD_VERSION  # no such file: a warning, not a crash
