"""trim.release hands freed heap memory back to the system (what keeps a long pass's resident size flat)."""

from __future__ import annotations

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
