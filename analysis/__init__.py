"""ttbench analysis: reads a run folder's files (records, ledger, price sheet) and answers from them."""

import os

# Arrow's buffers from the C library's allocator (trim.py says why): Arrow reads this variable when pyarrow is
# loaded, so it is set before any module of this package imports pyarrow. A value already set stands.
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
