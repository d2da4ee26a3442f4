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


def test_arrow_allocates_from_the_c_library_in_the_report_and_its_helpers(tmp_path):
    """system_pool() puts Arrow on the C library's allocator (unless ARROW_DEFAULT_MEMORY_POOL names a pool), and
    every helper process starts that way; an Arrow array made afterwards comes from that pool."""
    code = textwrap.dedent("""
        import os, sys
        sys.path.insert(0, sys.argv[1])
        import pyarrow as pa
        from analysis import trim
        before = pa.default_memory_pool().backend_name
        name = trim.system_pool()
        arr = pa.array(range(100_000))
        print(before, name, pa.system_memory_pool().bytes_allocated() >= arr.nbytes)
    """)
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                         timeout=50, env=env).stdout.split()
    assert out[1:] == ["system", "True"]
    chosen = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, check=True,
                            timeout=50, env={**env, "ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}).stdout.split()
    assert chosen[0] == chosen[1] != "system"  # the user's choice stands (jemalloc, or what this build has)
    from analysis import helper

    out_file = tmp_path / "pool"
    proc = helper.start("trim", "_main", str(out_file))
    assert proc is not None
    assert proc.wait(timeout=50) == 0
    assert out_file.read_text() == "system"
