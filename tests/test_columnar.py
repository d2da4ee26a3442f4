"""The columnar copy of records.jsonl (analysis/columnar.py): the same rows, values, dtypes and load report as
load_records, in batches of any size; built again only when records.jsonl changed; a copy elsewhere when the run
folder cannot take one."""

from __future__ import annotations

import base64
import errno
import importlib.util
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from analysis import columnar, helper, records
from analysis.chunks import decode_chunk_column
from analysis.load import LoadReport
from analysis.records import COLUMNS, load_records
from locustfiles.records import encode_chunks

from .test_analysis_figures import RECORDS as V2_RECORDS
from .test_analysis_limits import rec3
from .test_analysis_metrics import RECORDS as V1_RECORDS
from .test_analysis_metrics import rec

ROOT = Path(__file__).resolve().parent.parent
SCALARS = [c for c in COLUMNS if c != "chunks_us"]
BATCHES = (columnar.BATCH_ROWS, 7, 1000)


# ---------------------------------------------------------------------------------------------------------------
# the record files


def _bench() -> Any:
    """benchmarks/analysis_speed.py, imported by its path (its generator writes records as the harness does)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("analysis_speed_for_columnar", ROOT / "benchmarks" / "analysis_speed.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder of 3,000 chat-mix records from the benchmark's generator (never changed by a test)."""
    run = tmp_path_factory.mktemp("generated")
    _bench().write_run(run, 3000, 300.0, 7, sample=50, ledger=False)
    return run


def small_parts(monkeypatch: pytest.MonkeyPatch, part_bytes: int, block_bytes: int = 0) -> None:
    """Parts of about part_bytes, cut at blocks of block_bytes (load_records then reads in those blocks too)."""
    monkeypatch.setattr(columnar, "PART_BYTES", part_bytes)
    monkeypatch.setattr(records, "_READ_BYTES", block_bytes or part_bytes)


def copy_run(src: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "records.jsonl").write_bytes((src / "records.jsonl").read_bytes())
    return dest


def v3(i: int, **kw: Any) -> dict[str, Any]:
    return rec3(i, 1000.0 + i, **kw)


def dumps(r: Any) -> str:
    return json.dumps(r, separators=(",", ":"))


def edge_lines() -> list[str]:
    """Records of every version, lines that are not records, and values of the wrong type, as lines."""
    lines = [dumps(r) for r in V1_RECORDS]
    lines += ["", "not json at all", dumps({"v": 99, "call_id": "x"}), "   ", dumps([1, 2]), "5", '"text"',
              dumps({"no_v": 1}), dumps(V1_RECORDS[0] | {"v": True}), dumps(V1_RECORDS[1] | {"v": 1.0})]
    lines += [dumps(r) for r in V2_RECORDS]
    lines += [dumps(v3(1, tenant="t1", refusal="rate_limit")), dumps(v3(2, status=None)), dumps(v3(3, v=4)),
              dumps(v3(4, ids={"gateway": "g-4", "request": "req-4"})), dumps(v3(5, ids={"request": "req-5"})),
              '{"v": 3, "torn": ', dumps(v3(6, stream=True, chunks=encode_chunks([1.0, 1.5, 1.75], 0.9)))]
    foreign = [dict(model=5), dict(end_ms="12.5"), dict(ok="yes"), dict(ok=None), dict(attempt=2.5),
               dict(attempt="3"), dict(turn="x"), dict(turn=3), dict(worker=2**64 - 1), dict(retry_after_s=1),
               dict(retry_after_s=1.5), dict(estimate={"amount": 0.5}), dict(estimate={"estimate": {"amount": "0.1"}}),
               dict(chunks={"n": 1, "us": "AAA="}), dict(chunks={"n": 1, "us": "!!!!"}), dict(chunks={"n": 1, "us": 7}),
               dict(chunks={"n": 0, "us": ""}), dict(usage={"input": "x", "output": None}), dict(sent=None),
               dict(sent="no"), dict(dry_run_ignored=1), dict(max_tokens=2.0), dict(stage=True), dict(status="200"),
               dict(name=None), dict(session_id=17), dict(pair_id={"a": [1, 2.5, None]}), dict(scheduled=1e400)]
    lines += [dumps(v3(10 + i) | kw) for i, kw in enumerate(foreign)]
    lines += [dumps(v3(50, v=2)), dumps({k: v for k, v in v3(51).items() if k not in ("tenant", "sent")})]
    lines += [dumps(rec("K", 1, 110.0, 3, ok=False, kind="connect")),  # version 1: sent unless connect failed
              dumps({k: v for k, v in v3(52, status=None).items() if k != "sent"})]
    return lines


def write_lines(run: Path, lines: list[str], torn: str = "") -> Path:
    run.mkdir(parents=True, exist_ok=True)
    (run / "records.jsonl").write_text("".join(line + "\n" for line in lines) + torn)
    return run


def blocks_lines(n: int = 2600) -> list[str]:
    """Clean version-3 records whose `other` columns change form from block to block of 1,024 rows (ints, then
    floats, then nulls), and text columns that are null for a while."""
    out = []
    for i in range(n):
        kw: dict[str, Any] = {"worker": 2**60 + i, "turn": i if i < 1100 else None, "retry_after_s": (i % 7 if i < 1500 else i / 8)
                              if i % 3 else None, "max_tokens": 100 + i, "tenant": None if i < 2000 else "t"}
        if i % 5 == 0:
            kw["chunks"] = encode_chunks([2.0 + k / 100 for k in range(i % 9)], 2.0)
        out.append(dumps(v3(i, **kw)))
    return out


def grouped_lines(n: int = 1500) -> list[str]:
    """Records whose `ids` records.py reads as None or keeps as {} by the other records parsed with them (the
    128 lines of a block it parses together): only the same blocks and groups give the same values."""
    return [dumps(v3(i, v=3 + i % 2, ids={"gateway": f"g-{i}"} if i % 300 == 0 else {} if i % 3 else False))
            for i in range(n)]


def fuzz_lines(seed: int, n: int = 700) -> list[str]:
    """Records with, now and then, a value of another type in any column, and lines that are not records."""
    rnd = random.Random(seed)
    odd = [None, 0, 1, -5, 2**63 + 5, 1.5, -0.0, 1e300, True, False, "", "x", "12", [], [1], {}, {"k": "v"}]
    out = []
    for i in range(n):
        r = v3(i, stream=bool(i % 2), chunks=encode_chunks([0.01 * k for k in range(1, i % 6)], 0.0) if i % 2 else None)
        if rnd.random() < 0.5:
            r["v"] = rnd.choice([1, 2, 4])
        for _ in range(rnd.choice([0, 0, 1, 2])):
            key, value = rnd.choice(list(r)), rnd.choice(odd)
            if key not in ("chunks", "usage") or not value or isinstance(value, dict):  # others: load_records fails
                r[key] = value
        roll = rnd.random()
        out.append("garbage{" if roll < 0.02 else "" if roll < 0.04 else dumps(r))
    return out


# ---------------------------------------------------------------------------------------------------------------
# the comparison


def strict(values: Any) -> list[tuple[str, str]]:
    """Each value's type and repr: None, NaN, 1 and 1.0 all differ."""
    return [(type(v).__name__, repr(v)) for v in values]


def expected_deltas(cell: Any) -> np.ndarray | None:
    """The uint32 deltas of a chunks_us cell as analysis.chunks decodes it (None: it cannot)."""
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or not cell:
        return np.zeros(0, dtype=np.uint32)
    try:
        decode_chunk_column([cell])
    except (TypeError, ValueError):
        return None
    return np.frombuffer(base64.b64decode(cell), dtype="<u4")


def assert_same_as_load_records(run: Path, rows_each: tuple[int, ...] = BATCHES) -> columnar.Columnar:
    want_report = LoadReport()
    try:
        df = load_records(run / "records.jsonl", want_report)
    except Exception as e:  # records load_records cannot read: no copy either
        with pytest.raises(type(e)):
            columnar.ensure(run).close()
        pytest.fail(f"load_records fails on these records: {e!r}")
    report = LoadReport()
    col = columnar.ensure(run, report)
    assert report == want_report
    assert col.report is report and col.rows == len(df)
    cells = df["chunks_us"].tolist()
    deltas = [expected_deltas(c) for c in cells]
    assert col.bad_chunk_rows == [i for i, d in enumerate(deltas) if d is None]
    for rows in rows_each:
        batches = list(col.batches(rows=rows))
        assert [b.start_row for b in batches] == list(range(0, max(len(df), 1), rows))
        assert all(len(b) == rows for b in batches[:-1]) and len(batches[-1]) <= rows
        assert all(b.frame.index.equals(pd.RangeIndex(len(b))) for b in batches)
        got = pd.concat([b.frame for b in batches], ignore_index=True)
        pd.testing.assert_frame_equal(got, df[SCALARS])
        for name in SCALARS:
            assert col.dtype(name) == df[name].dtype, name
            if df[name].dtype == object:
                assert strict(got[name]) == strict(df[name]), name
        offsets = np.concatenate([[0]] + [b.chunk_offsets[1:] - b.chunk_offsets[:-1] for b in batches]).cumsum()
        values = np.concatenate([b.chunk_values for b in batches])
        assert values.dtype == np.uint32 and all(b.chunk_offsets[0] == 0 for b in batches)
        assert all(len(b.chunk_offsets) == len(b) + 1 and b.chunk_offsets[-1] == len(b.chunk_values)
                   for b in batches)
        for i, d in enumerate(deltas):
            mine = values[offsets[i]:offsets[i + 1]]
            assert np.array_equal(mine, d if d is not None else np.zeros(0, dtype=np.uint32)), i
            if d is not None and d.size:
                times = decode_chunk_column([cells[i]])[0]
                assert np.array_equal(columnar.chunk_times(offsets, values, i), times)
    return col


# ---------------------------------------------------------------------------------------------------------------
# the tests


@pytest.mark.timeout(60)
def test_generated_records_read_back_as_load_records_gives_them(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    with assert_same_as_load_records(run) as col:
        assert col.path == run / columnar.COPY and col.rows == 3000
    names = sorted(p.name for p in (run / columnar.COPY).iterdir())
    assert names == ["_limits.json", "_meta.json", "part-00000.parquet"]
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl", columnar.COPY]  # no temporary folder left


@pytest.mark.timeout(60)
@pytest.mark.parametrize("records", ["generated", "fuzzed", "from a folder with another analysis package"])
def test_parts_built_by_two_processes_read_back_the_same(generated, tmp_path, monkeypatch, records):
    run = copy_run(generated, tmp_path / "run") if records != "fuzzed" else \
        write_lines(tmp_path / "run", fuzz_lines(4, 1500), torn='{"v":')
    if records.startswith("from"):  # the helper is to import this project's package, not the working folder's
        decoy = tmp_path / "elsewhere" / "analysis"
        decoy.mkdir(parents=True)
        (decoy / "__init__.py").write_text("raise ImportError('not the analysis package of ttbench')\n")
        monkeypatch.chdir(decoy.parent)
    size = (run / "records.jsonl").stat().st_size
    small_parts(monkeypatch, size // 9, size // 37)
    monkeypatch.setattr(columnar, "HELPER_BYTES", 0)
    ours = []
    build_part = columnar._build_part

    def slow_part(*a: Any) -> dict[str, Any]:  # while the helper starts: it is to take some parts
        ours.append(a)
        time.sleep(0.4)
        return build_part(*a)

    monkeypatch.setattr(columnar, "_build_part", slow_part)
    with assert_same_as_load_records(run, (columnar.BATCH_ROWS, 1000)) as col:
        assert len(col.meta["parts"]) >= 9 and sum(p["rows"] for p in col.meta["parts"]) == col.rows
        assert 0 < len(ours) < len(col.meta["parts"])  # the helper built the others
    assert sorted(p.name for p in (run / columnar.COPY).iterdir())[:2] == ["_limits.json", "_meta.json"]
    assert all(p.name.startswith("part-") for p in sorted((run / columnar.COPY).iterdir())[2:])


@pytest.mark.timeout(60)
def test_a_helper_that_cannot_start_leaves_its_parts_to_us(generated, tmp_path, monkeypatch):
    run = copy_run(generated, tmp_path / "run")
    small_parts(monkeypatch, (run / "records.jsonl").stat().st_size // 4)
    monkeypatch.setattr(columnar, "HELPER_BYTES", 0)
    monkeypatch.setattr(helper.sys, "executable", str(tmp_path / "no-python"))
    assert_same_as_load_records(run, (1000,)).close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("part_bytes", [None, 300, 4000])
def test_hand_made_records_every_version_bad_and_torn_lines(tmp_path, monkeypatch, part_bytes):
    if part_bytes:
        small_parts(monkeypatch, part_bytes, part_bytes // 3)
    run = write_lines(tmp_path / "run", edge_lines(), torn='{"v": 3, "run_id": "r", "wor')
    with assert_same_as_load_records(run) as col:
        assert col.report.torn_lines == 1 and col.report.bad_lines > 5 and col.bad_chunk_rows
        assert "torn" in col.report.warnings[0] and str(run / "records.jsonl") in col.report.warnings[0]
        assert col.meta["columns"]["model"]["mode"] == "raw" and col.dtype("model") == np.dtype(object)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("part_bytes", [None, 50_000])
def test_columns_that_change_form_from_block_to_block(tmp_path, monkeypatch, part_bytes):
    if part_bytes:
        small_parts(monkeypatch, part_bytes, part_bytes // 2)
    run = write_lines(tmp_path / "run", blocks_lines())
    with assert_same_as_load_records(run, (columnar.BATCH_ROWS, 999)) as col:
        assert col.dtype("turn") == np.float64 and col.dtype("tenant") == col.dtype("model")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("part_bytes, block_bytes", [(None, None), (60_000, 7_777), (100_000, 33_333)])
def test_values_that_depend_on_the_lines_parsed_together(tmp_path, monkeypatch, part_bytes, block_bytes):
    if part_bytes:
        small_parts(monkeypatch, part_bytes, block_bytes)
    run = write_lines(tmp_path / "run", grouped_lines())
    df = load_records(run / "records.jsonl")
    assert {repr(v) for v in df["ids"]} >= {"None", "{}", "False"}  # so some groups kept {} and False
    assert_same_as_load_records(run, (columnar.BATCH_ROWS,)).close()


@pytest.mark.timeout(60)
def test_a_big_file_load_records_reads_in_parts(tmp_path, monkeypatch):
    """load_records reads a big file in parts (records._parts), each in blocks from its own start: so does the
    copy (records.py's split made small here; its helper process reads with the usual blocks)."""
    if helper.cpus() < 2:
        pytest.skip("records._parts splits a file only with two CPUs")
    run = write_lines(tmp_path / "run", grouped_lines(3000))
    size = (run / "records.jsonl").stat().st_size
    monkeypatch.setattr(records, "SPLIT_BYTES", 1)
    monkeypatch.setattr(records, "_PART_BYTES", size // 7)
    monkeypatch.setattr(columnar, "PART_BYTES", size // 3)
    assert len(records._parts(run / "records.jsonl", size)) == 7
    with assert_same_as_load_records(run, (columnar.BATCH_ROWS,)) as col:
        assert len(col.meta["parts"]) == 7


@pytest.mark.timeout(30)
def test_a_version_true_record_among_version_4_ones_is_a_bad_line(tmp_path):
    lines = [dumps(v3(i, v=4)) for i in range(40)]
    lines[17] = dumps(v3(17, v=True))
    with assert_same_as_load_records(write_lines(tmp_path / "run", lines)) as col:
        assert col.rows == 39 and col.report.bad_lines == 1


@pytest.mark.timeout(30)
def test_a_moved_run_folder_reuses_its_copy_and_names_its_new_place(tmp_path):
    run = write_lines(tmp_path / "run", edge_lines(), torn='{"v": 3, "run_id": "r", "wor')
    columnar.build(run)
    moved = tmp_path / "moved"
    run.rename(moved)
    before = _part_stamps(moved)
    with assert_same_as_load_records(moved, (columnar.BATCH_ROWS,)) as col:
        assert str(moved) in col.report.warnings[0] and str(run) + "/" not in " ".join(col.report.warnings)
    assert _part_stamps(moved) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_records_in_small_parts(tmp_path, monkeypatch, seed):
    part = random.Random(seed).choice([3000, 20_000, 100_000])
    small_parts(monkeypatch, part, part // random.Random(seed).choice([1, 2, 5]))
    run = write_lines(tmp_path / "run", fuzz_lines(seed))
    assert_same_as_load_records(run, (columnar.BATCH_ROWS, 61)).close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("content", ["", "\n\n  \n", "nonsense\n{\"v\": 7}\n", '{"v": 1, "torn'])
def test_files_without_records(tmp_path, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / "records.jsonl").write_text(content)
    with assert_same_as_load_records(run) as col:
        assert col.rows == 0
        (batch,) = col.batches(["call_id", "ok", "chunk_us"])
        assert len(batch) == 0 and batch.chunk_offsets.tolist() == [0] and batch.chunk_values.size == 0


@pytest.mark.timeout(60)
def test_only_the_columns_asked_for(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    df = load_records(run / "records.jsonl")
    with columnar.ensure(run) as col:
        # the generator writes version-5 records without `sent`: a version-5 record that leaves a key out means its
        # default (ttformats.records.expand), so the column is whole flags (version 1 derived it from error_kind)
        assert col.meta["columns"]["sent"]["mode"] == "bool"
        for names in (["sent"], ["call_id", "t_start", "ok", "endpoint", "u_output"], ["chunk_us"]):
            batches = list(col.batches(names, rows=1000))
            got = pd.concat([b.frame for b in batches], ignore_index=True)
            scalars = [n for n in names if n != "chunk_us"]
            assert list(got.columns) == scalars and len(got) == len(df)
            pd.testing.assert_frame_equal(got, df[scalars])
            assert (batches[0].chunk_values is not None) == ("chunk_us" in names)
        with pytest.raises(ValueError, match="chunk_us"):
            next(col.batches(["chunks_us"]))
        with pytest.raises(ValueError, match="no column"):
            next(col.batches(["nope"]))


@pytest.mark.timeout(60)
def test_batches_can_be_written_as_load_records_frames_can(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    with columnar.ensure(run) as col:
        for rows in (100, columnar.BATCH_ROWS):  # one part's slice, or pieces of several (here: one part)
            batch = next(col.batches(["t_start", "attempt", "ok", "call_id", "ids", "sent", "chunk_us"], rows=rows))
            f = batch.frame
            f.loc[0, "t_start"], f.loc[0, "attempt"], f.loc[0, "ok"], f.loc[0, "call_id"] = 1.0, 9, False, "z"
            f.loc[0, "sent"] = False
            batch.chunk_values[:1] = 7
            assert f.loc[0, ["t_start", "attempt", "ok", "call_id", "sent"]].tolist() == [1.0, 9, False, "z", False]


def _part_stamps(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (run / columnar.COPY).iterdir()}


@pytest.mark.timeout(60)
def test_an_unchanged_file_reuses_the_copy_a_changed_one_rebuilds_it(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    path = columnar.build(run)
    assert path == run / columnar.COPY
    first = _part_stamps(run)
    columnar.build(run)  # build: always built again
    before = _part_stamps(run)
    assert before.keys() == first.keys() and all(before[k] != first[k] for k in before)
    with columnar.ensure(run) as col:
        assert col.rows == 3000
    assert _part_stamps(run) == before  # reused: not one file written again
    with open(run / "records.jsonl", "a") as f:  # the run goes on: one more record
        f.write(dumps(v3(9000, tenant="late")) + "\n")
    with assert_same_as_load_records(run, (columnar.BATCH_ROWS,)) as col:
        assert col.rows == 3001
    after = _part_stamps(run)
    assert after != before
    st = (run / "records.jsonl").stat()
    os.utime(run / "records.jsonl", ns=(st.st_atime_ns, st.st_mtime_ns + 1000))  # touched only: built again
    columnar.ensure(run).close()
    assert _part_stamps(run) != after
    meta = json.loads((run / columnar.COPY / "_meta.json").read_text())
    assert meta["source"]["size"] == st.st_size and meta["rows"] == 3001 and meta["format"] == columnar.FORMAT
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl", columnar.COPY]


@pytest.mark.timeout(60)
def test_a_copy_that_does_not_match_is_built_again(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    columnar.build(run)
    meta_path = run / columnar.COPY / "_meta.json"
    meta = json.loads(meta_path.read_text())
    for change in ({"format": -1}, {"code": "other"}, {"source": meta["source"] | {"tail": "0"}}):
        meta_path.write_text(json.dumps(meta | change))
        before = _part_stamps(run)
        columnar.ensure(run).close()
        assert _part_stamps(run) != before, change
    meta_path.write_text("{not json")
    assert_same_as_load_records(run, (columnar.BATCH_ROWS,)).close()


@pytest.mark.timeout(60)
def test_a_copy_another_process_placed_first_is_kept_and_old_leftovers_go(generated, tmp_path):
    run = copy_run(generated, tmp_path / "run")
    columnar.build(run)
    before = _part_stamps(run)
    mine = tmp_path / "mine"
    mine.mkdir()
    meta = columnar._build_folder(run / "records.jsonl", mine)
    assert columnar._place(mine, run / columnar.COPY, meta) == json.loads((run / columnar.COPY / "_meta.json").read_text())
    assert _part_stamps(run) == before and mine.exists()  # theirs kept; ours is for the caller to delete
    left = run / f".{columnar.COPY}.new-killed"
    left.mkdir()
    (left / "part-00000.parquet").write_bytes(b"half")
    fresh = run / f".{columnar.COPY}.new-running"
    fresh.mkdir()
    os.utime(left, (1, 1))
    (run / "records.jsonl").touch()
    columnar.ensure(run).close()
    assert not left.exists() and fresh.exists()


@pytest.mark.timeout(60)
def test_an_unwritable_run_folder_gets_a_copy_elsewhere(generated, tmp_path, capsys):
    run = copy_run(generated, tmp_path / "run")
    os.chmod(run, 0o500)
    try:
        if os.access(run, os.W_OK):
            pytest.skip("running as root: chmod does not stop writing")
        with assert_same_as_load_records(run, (columnar.BATCH_ROWS,)) as col:
            elsewhere = col.path
            assert run not in elsewhere.parents and elsewhere.exists()
        assert not elsewhere.exists() and not elsewhere.parent.name.startswith("ttbench-records-")
        assert capsys.readouterr().err.count("columnar copy") == 1
        assert sorted(p.name for p in run.iterdir()) == ["records.jsonl"]
    finally:
        os.chmod(run, 0o700)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("failure", ["mkdtemp", "disk full"])
def test_a_run_folder_that_fails_gets_a_copy_elsewhere(generated, tmp_path, monkeypatch, capsys, failure):
    """As the unwritable-folder test, when running as root: the run folder's failures are simulated."""
    run = copy_run(generated, tmp_path / "run")
    real_mkdtemp, real_write = tempfile.mkdtemp, columnar.pq.write_table

    def mkdtemp(*a: Any, **kw: Any) -> str:
        if failure == "mkdtemp" and Path(kw.get("dir") or tempfile.gettempdir()) == run:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_mkdtemp(*a, **kw)

    def write_table(table: Any, where: Any, **kw: Any) -> None:
        if failure == "disk full" and run in Path(where).parents:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(table, where, **kw)

    monkeypatch.setattr(columnar.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(columnar.pq, "write_table", write_table)
    col = assert_same_as_load_records(run, (columnar.BATCH_ROWS,))
    elsewhere = col.path
    assert run not in elsewhere.parents and elsewhere.exists()
    err = capsys.readouterr().err
    assert err.count("columnar copy") == 1 and str(elsewhere) in err
    col.close()
    assert not elsewhere.exists()
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl"]  # nothing half-built left behind


@pytest.mark.timeout(30)
def test_records_load_records_cannot_read_give_no_copy(tmp_path):
    run = write_lines(tmp_path / "run", [dumps(v3(1)), dumps(v3(2) | {"usage": "lots"})])
    with pytest.raises(AttributeError):
        load_records(run / "records.jsonl")
    with pytest.raises(AttributeError):
        columnar.ensure(run)
    assert sorted(p.name for p in run.iterdir()) == ["records.jsonl"]


@pytest.mark.timeout(30)
def test_no_records_file(tmp_path):
    with pytest.raises(columnar.InputError, match="no records file"):
        columnar.ensure(tmp_path)
