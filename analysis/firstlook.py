"""A first look before an exact search: which of many 64-bit keys may be in a set, from a table of the set's slots."""

from __future__ import annotations

import numpy as np

_MULT = np.uint64(0x9E3779B97F4A7C15)  # the slot of a key: the top bits of the key times this odd constant
MAX_BITS = 22  # the largest table: 4 MiB


class FirstLook:
    """The slots a set of 64-bit keys takes (about 16 slots a key, 2**12 to 2**MAX_BITS of them): a key whose slot
    is empty is not in the set; one whose slot is taken may be, and is then looked up exactly."""

    def __init__(self, keys: np.ndarray) -> None:
        bits = max(12, min(MAX_BITS, int(len(keys) * 16).bit_length()))
        self._shift = np.uint64(64 - bits)
        self._table = np.zeros(1 << bits, dtype=bool)
        self._table[self._slots(keys)] = True

    def _slots(self, keys: np.ndarray) -> np.ndarray:
        return ((keys.astype(np.uint64, copy=False) * _MULT) >> self._shift).astype(np.intp)

    def maybe(self, keys: np.ndarray) -> np.ndarray:
        """Which keys may be in the set (a mask; every key of the set is in it)."""
        return self._table[self._slots(keys)]
