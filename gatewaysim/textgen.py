"""Token counting, seeded output text, embedding vectors and small PNG images."""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Iterable

from .draws import rng

WORDS = (
    "the of and to in is for on that with as it at by from this be or are an was not "
    "gateway token stream latency request model answer cache prompt price billing quota "
    "river mountain lantern harbor orchard meadow signal vector kernel packet socket cluster "
    "amber cobalt crimson silver velvet quiet rapid gentle bright hollow steady clever "
    "measure build follow carry gather listen notice shape travel wonder balance compare"
).split()
CHARS_PER_TOKEN = 4


def count_tokens(text: str) -> int:
    """The simulator's token-counting rule: ceil(characters / 4) per text, 0 for empty text."""
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def count_texts(texts: Iterable[str]) -> int:
    """Tokens of several texts, each counted on its own."""
    return sum(count_tokens(t) for t in texts)


def output_words(seed: int, key: str, n: int) -> list[str]:
    """n seeded output tokens: each is one word with a leading space (the first without)."""
    r = rng(seed, "text", key)
    words = [r.choice(WORDS) for _ in range(n)]
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def embedding(seed: int, text: str, dims: int) -> list[float]:
    """A seeded unit vector of `dims` floats for the text."""
    r = rng(seed, "embedding", text)
    vec = [r.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in vec)) or 1.0
    return [round(v / norm, 6) for v in vec]


def embedding_b64(vec: list[float]) -> str:
    """The vector as base64 of little-endian float32, as the OpenAI API sends it."""
    return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(seed: int, key: str, size: int = 16) -> bytes:
    """A real, small RGB PNG whose colours are seeded by key."""
    r = rng(seed, "image", key)
    c1 = bytes(r.randrange(256) for _ in range(3))
    c2 = bytes(r.randrange(256) for _ in range(3))
    rows = b"".join(
        b"\x00" + b"".join(c1 if (x // 4 + y // 4) % 2 else c2 for x in range(size)) for y in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows, 9))
        + _png_chunk(b"IEND", b"")
    )
