"""trim.release hands freed heap memory back to the system (what keeps a long pass's resident size flat)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent


def test_freed_heap_blocks_between_live_ones_leave_the_resident_size():
    """120 MB of blocks under the allocator's mmap threshold, every twentieth kept: freeing the rest leaves the
    resident size as it was (the live blocks pin the heap); release() gives the free pages back."""
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        from analysis import trim

        def rss():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096

        blocks = [bytearray(60_000) for _ in range(2000)]
        for b in blocks:
            b[::4096] = b"\\x01" * len(b[::4096])  # touched: resident
        keep = blocks[::20]
        del blocks
        before = rss()
        ok = trim.release()
        print(ok, before - rss(), len(keep))
    """)
    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc: the resident size cannot be read")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                         timeout=50).stdout.split()
    if out[0] != "True":
        pytest.skip("no malloc_trim here (not glibc)")
    assert int(out[1]) > 80 * 2**20  # of the 114 MB freed


def test_arrow_allocates_from_the_c_library_in_the_report_and_its_helpers(tmp_path, monkeypatch):
    """Importing the analysis puts Arrow on the C library's allocator before pyarrow loads (unless
    ARROW_DEFAULT_MEMORY_POOL names a pool): a Parquet read takes nothing from Arrow's bundled mimalloc, here or in a
    helper process; where pyarrow was loaded first, system_pool() still moves what pyarrow allocates."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"n": list(range(100_000)), "s": [f"id-{i}" for i in range(100_000)]}), table)
    probe = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        if sys.argv[3] == "analysis first":
            import analysis
        import pyarrow as pa, pyarrow.parquet as pq
        first = pa.default_memory_pool().backend_name
        if sys.argv[3] == "pyarrow first":
            from analysis import trim
            trim.system_pool()
        pq.read_table(sys.argv[2])
        try:
            held = pa.mimalloc_memory_pool().max_memory()
        except NotImplementedError:  # a build without it
            held = 0
        print(first, pa.default_memory_pool().backend_name, held)
    """)

    def run(order: str, **env: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", probe, str(ROOT), str(table), order], capture_output=True,
                              text=True, check=True, timeout=50, env={**os.environ, **env}).stdout.split()

    assert run("analysis first") == ["system", "system", "0"]
    assert run("analysis first", ARROW_DEFAULT_MEMORY_POOL="") == ["system", "system", "0"]  # empty: not chosen
    chosen = run("analysis first", ARROW_DEFAULT_MEMORY_POOL="jemalloc")
    assert chosen[0] == chosen[1] != "system"  # the user's choice stands (jemalloc, or what this build has)
    first, then, _ = run("pyarrow first")
    assert then == "system" and first != "system"
    assert run("pyarrow first", ARROW_DEFAULT_MEMORY_POOL="jemalloc")[1] != "system"
    from analysis import helper

    out_file = tmp_path / "pool"
    proc = helper.start("trim", "_main", str(out_file), str(table))
    assert proc is not None
    assert proc.wait(timeout=50) == 0
    assert out_file.read_text() == "system 0"
