"""ttbench analysis: reads a run folder's files (records, ledger, price sheet) and answers from them."""
