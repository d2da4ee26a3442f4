"""ttbench analysis: reads a run folder's files (records, ledger, price sheet) and answers from them."""

import os

# Arrow's buffers from the C library's allocator (trim.py says why): Arrow reads this variable when pyarrow is
# loaded, so it is set before any module of this package imports pyarrow. A value already set (not empty) stands.
if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
    os.environ["ARROW_DEFAULT_MEMORY_POOL"] = "system"
