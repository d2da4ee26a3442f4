"""Reading a response body as bytes arrive, and framing it as SSE events or JSON-array elements."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from geventhttpclient.response import HTTPParseError


class ProtocolError(ValueError):
    """The response cannot be read as an answer: bad framing, bad shape, too large."""


class BodyReader:
    """Yields raw body bytes from a geventhttpclient response as soon as they arrive, with perf_counter times.

    geventhttpclient's own `read(n)` and `iter_content` wait until n bytes are buffered,
    which delays small SSE events; this reads whatever one recv() returns. A body that
    grows past `limit` bytes raises ProtocolError before more is read; a connection that
    closes before the end of the body raises ConnectionResetError.
    """

    def __init__(self, resp: Any, block_size: int = 65536, limit: int | None = None) -> None:
        self.resp = resp
        self.block_size = block_size
        self.limit = limit
        self.nbytes = 0

    def __iter__(self) -> Iterator[tuple[bytes, float]]:
        resp = self.resp
        buf = resp._body_buffer
        limit = self.limit
        while True:
            if buf:
                data = bytes(buf)
                del buf[:]
                self.nbytes += len(data)
                if limit is not None and self.nbytes > limit:
                    raise ProtocolError(f"response body larger than {limit} bytes")
                yield data, time.perf_counter()
                continue
            if resp.message_complete:
                return
            sock = resp._sock
            if sock is None:
                raise ConnectionResetError("connection closed before the end of the body")
            data = sock.recv(self.block_size)
            if not data:
                try:
                    resp.feed(data)  # lets the parser notice a close-delimited end
                except HTTPParseError:
                    pass  # "Incomplete response": the body was cut
                if resp.message_complete:
                    continue
                raise ConnectionResetError("connection closed before the end of the body")
            resp.feed(data)


class SSEFramer:
    """Splits bytes into SSE events: (event name or None, data string)."""

    def __init__(self) -> None:
        self._tail: list[bytes] = []  # the pieces of an unfinished line (joined once its end arrives)
        self._event: str | None = None
        self._data: list[str] = []
        self.comments = 0

    def feed(self, data: bytes) -> list[tuple[str | None, str]]:
        """Feed bytes; returns the events completed by them."""
        tail = self._tail
        if tail:
            if b"\n" not in data:  # still no line end: keep the piece (a long line costs linear time)
                tail.append(data)
                return []
            tail.append(data)
            data = b"".join(tail)
            tail.clear()
        out: list[tuple[str | None, str]] = []
        if not self._data and self._event is None and b"\r" not in data:
            # the usual shape, `data: ...` then a blank line: whole events at once, if each is that shape
            end = data.rfind(b"\n\n")
            payloads = self._payloads(data, end) if end > 0 and data[:6] == b"data: " else None
            if payloads is not None:
                out = [(None, payload) for payload in payloads]
                data = data[end + 2:]
            else:  # an event at a time; anything else line by line
                blocks = data.split(b"\n\n")
                data = blocks.pop()
                for block in blocks:
                    if block[:6] == b"data: " and b"\n" not in block:
                        out.append((None, block[6:].decode("utf-8")))
                    elif block:
                        self._lines([*block.split(b"\n"), b""], out)
            if not data:  # it ended with its last event's blank line (the usual case)
                return out
        lines = data.split(b"\n")
        last = lines.pop()
        if last:
            tail.append(last)
        self._lines(lines, out)
        return out

    @staticmethod
    def _payloads(data: bytes, end: int) -> list[str] | None:
        """The data of the events before `end` if each is one `data: ` line (then a blank line) and all of it is
        UTF-8, else None (the caller reads them line by line)."""
        try:
            payloads = data[6:end].decode("utf-8").split("\n\ndata: ")
        except UnicodeDecodeError:
            return None  # read line by line: only data lines must be UTF-8
        return None if "\n" in "".join(payloads) else payloads

    def _lines(self, lines: list[bytes], out: list[tuple[str | None, str]]) -> None:
        """Whole lines (without their line end): the events they complete go to `out`."""
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data:
                    out.append((self._event, "\n".join(self._data)))
                self._event, self._data = None, []
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                self._data.append((value[1:] if value.startswith(b" ") else value).decode("utf-8"))
            elif line.startswith(b"event:"):
                self._event = line[6:].strip().decode("utf-8")
            elif line.startswith(b":"):
                self.comments += 1

    def finish(self) -> list[tuple[str | None, str]]:
        """Events left when the body ends without a final blank line."""
        out = self.feed(b"\n\n") if (self._tail or self._data) else []
        return out

    @property
    def partial_line(self) -> bool:
        """Whether the body so far ends inside a line (not at a line end)."""
        return bool(b"".join(self._tail).strip())

    @property
    def pending(self) -> bool:
        """Whether an event was cut off by the end of the body."""
        return self.partial_line or bool(self._data)


_IN_STRING = re.compile(rb'["\\]')  # what can end or escape inside a string
_IN_OBJECT = re.compile(rb'[{}"]')  # what changes the state inside an element


class JsonArrayFramer:
    """Splits a streamed JSON array into its elements with a string-aware brace-depth scanner.

    Inside strings and elements it jumps between the bytes that matter (quotes, backslashes,
    braces), so a long element costs little more than a search.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._depth = 0
        self._in_str = False
        self._escape = False
        self._start = -1
        self.opened = False
        self.closed = False
        self.garbage = False

    def feed(self, data: bytes) -> list[bytes]:
        """Feed bytes; returns the elements completed by them (raw JSON bytes)."""
        out: list[bytes] = []
        buf = self._buf
        buf += data
        i = self._pos
        n = len(buf)
        while i < n:
            if self._in_str:
                if self._escape:
                    self._escape = False
                    i += 1
                    continue
                m = _IN_STRING.search(buf, i)
                if m is None:
                    i = n
                    break
                i = m.start()
                if buf[i] == 0x5C:  # backslash
                    self._escape = True
                else:
                    self._in_str = False
                i += 1
                continue
            if self._depth > 0:
                m = _IN_OBJECT.search(buf, i)
                if m is None:
                    i = n
                    break
                i = m.start()
            c = buf[i]
            if c == 0x22:
                self._in_str = True
                if self._depth == 0:
                    self.garbage = True  # a string is no element of a Gemini stream
            elif c == 0x7B:  # {
                if self._depth == 0:
                    self._start = i
                self._depth += 1
            elif c == 0x7D:  # }
                self._depth -= 1
                if self._depth == 0 and self._start >= 0:
                    out.append(bytes(buf[self._start : i + 1]))
                    self._start = -1
                elif self._depth < 0:
                    self.garbage = True
                    self._depth = 0
            elif self._depth == 0:
                if c == 0x5B and not self.opened:  # [
                    self.opened = True
                elif c == 0x5D:  # ]
                    self.closed = True
                elif c not in b" \t\r\n,":
                    self.garbage = True
            i += 1
        if self._depth == 0 and self._start < 0:
            del buf[:i]
            i = 0
        self._pos = i
        return out

    @property
    def pending(self) -> bool:
        """Whether an element was cut off."""
        return self._depth > 0
