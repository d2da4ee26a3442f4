"""The whole read path under property tests: any bytes, cut anywhere, never crash and always end classified.

A fake socket feeds a complete HTTP response (status line, headers, framing, body) to the
real `Transport.send` in pieces at arbitrary boundaries, then closes, resets or times out.
Valid answers of every dialect and mode must succeed at any chunking; mutated answers and
random bytes must end in an Outcome whose error kind is one of the documented ones.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from locustfiles.calls import CallSpec
from locustfiles.dialects import DIALECTS
from locustfiles.profile import Profile
from locustfiles.streams import JsonArrayFramer, SSEFramer
from locustfiles.transport import Outcome, Timeouts, Transport

from .badgateway import ARRAY, PLAIN, SSE, content_type, plain_body, stream_body

pytestmark = pytest.mark.timeout(120)

ERROR_KINDS = {"http_4xx", "http_429", "http_5xx", "connect", "timeout", "reset", "stream_error", "truncated",
               "empty", "protocol"}
SHAPES = [(d, m) for d in ("chat", "messages", "gemini") for m in (PLAIN, SSE)] + [("gemini", ARRAY)]
MODELS = {"chat": "gpt-4o-mini", "messages": "claude-3-5-sonnet", "gemini": "gemini-2.0-flash"}
FRAMINGS = ("length", "chunked", "close")
ENDS = ("close", "reset", "timeout")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeSocket:
    """Gives back the response in the pieces it was cut into, then ends as told."""

    def __init__(self, pieces: list[bytes], end: str) -> None:
        self.pieces = list(pieces)
        self.end = end
        self.sent = b""
        self.closed = False

    def settimeout(self, _t: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, n: int) -> bytes:
        while self.pieces:
            piece = self.pieces.pop(0)
            if not piece:
                continue
            if len(piece) > n:
                self.pieces.insert(0, piece[n:])
            return piece[:n]
        if self.end == "reset":
            raise ConnectionResetError(104, "Connection reset by peer")
        if self.end == "timeout":
            raise TimeoutError("timed out")
        return b""

    def close(self) -> None:
        self.closed = True


class FakePool:
    """The one socket, however often it is asked for; remembers how it was handed back."""

    def __init__(self, sock: FakeSocket) -> None:
        self.sock = sock
        self.returned = 0
        self.released = 0

    def get_socket(self) -> FakeSocket:
        return self.sock

    def return_socket(self, _sock: Any) -> None:
        self.returned += 1

    def release_socket(self, sock: Any) -> None:
        self.released += 1
        sock.close()

    def close(self) -> None:
        pass


def http_response(body: bytes, ctype: str, framing: str, status: int = 200, chunk_sizes: list[int] | None = None,
                  extra: dict[str, str] | None = None) -> bytes:
    """A whole HTTP/1.1 response with the body framed by length, chunks or the connection's close."""
    headers = {"Content-Type": ctype, "X-TT-Request-ID": "req_fake", **(extra or {})}
    if framing == "length":
        headers["Content-Length"] = str(len(body))
        wire = body
    elif framing == "chunked":
        headers["Transfer-Encoding"] = "chunked"
        wire, i = b"", 0
        sizes = chunk_sizes or [len(body) or 1]
        k = 0
        while i < len(body):
            n = max(1, sizes[k % len(sizes)])
            wire += f"{n if i + n <= len(body) else len(body) - i:x}\r\n".encode() + body[i : i + n] + b"\r\n"
            i += n
            k += 1
        wire += b"0\r\n\r\n"
    else:
        headers["Connection"] = "close"
        wire = body
    head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + wire


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=False)]


def send(raw_pieces: list[bytes], end: str, dialect: str, mode: str, dry_run: bool = False) -> tuple[Outcome, Any,
                                                                                                       FakePool]:
    """The real Transport.send over the fake socket."""
    spec = CallSpec(endpoint=dialect, model=MODELS[dialect], name="x", prompt="Hello", max_tokens=8,
                    stream=mode != PLAIN, stream_format=mode if dialect == "gemini" and mode != PLAIN else None,
                    dry_run=dry_run)
    transport = Transport("http://127.0.0.1:9/prefix/", Timeouts(connect_s=1, first_byte_s=1, idle_s=1, total_s=5))
    pool = FakePool(FakeSocket(raw_pieces, end))
    transport.pool = pool  # type: ignore[assignment]
    mod = DIALECTS[dialect]
    reader = mod.Reader((mode if dialect == "gemini" else "sse") if spec.stream else None)
    wire = mod.build(spec)
    Profile().apply(wire, spec, "k")
    out = transport.send(wire, reader, spec.stream, dry_run)
    return out, reader, pool


def check(out: Outcome, pool: FakePool, reader: Any = None) -> None:
    """The invariants of any attempt: a documented error kind with a reason, or a success; the socket settled;
    whatever was kept can be written down as strict JSON (no NaN or Infinity for the analysis to choke on)."""
    assert out.error_kind is None or out.error_kind in ERROR_KINDS, (out.error_kind, out.error)
    json.dumps(out.body, allow_nan=False)
    if reader is not None:
        json.dumps([reader.usage, reader.usage_raw, reader.finish, reader.error], allow_nan=False)
    if out.error_kind is not None:
        assert out.error
    assert pool.returned + pool.released == 1  # handed back to the pool exactly once: never leaked
    if out.error_kind is not None:
        assert pool.sock.closed  # a failed attempt's connection is never reused
    elif pool.returned:
        assert not pool.sock.closed  # a clean keep-alive connection is


def valid(dialect: str, mode: str) -> bytes:
    return plain_body(dialect) if mode == PLAIN else stream_body(dialect, mode)


@SETTINGS
@given(st.sampled_from(SHAPES), st.sampled_from(FRAMINGS), st.lists(st.integers(0, 5000), max_size=15),
       st.lists(st.integers(1, 300), min_size=1, max_size=5), st.sampled_from(ENDS))
def test_valid_answers_succeed_at_any_chunking(shape, framing, cuts, chunk_sizes, end):
    dialect, mode = shape
    raw = http_response(valid(dialect, mode), content_type(mode), framing, chunk_sizes=chunk_sizes)
    if framing == "close":
        end = "close"  # a close-delimited body ends only with the close
    out, reader, pool = send(cut(raw, cuts), end, dialect, mode)
    check(out, pool, reader)
    assert out.error_kind is None, (out.error_kind, out.error)
    assert out.status == 200 and out.request_id == "req_fake"
    assert reader.has_content and reader.usage["output"] == 2 and reader.chars == len("Hello there")
    if mode != PLAIN:
        assert reader.stream_complete() and len(reader.chunks) == 2


MUTATION = st.tuples(st.sampled_from(["truncate", "flip", "insert", "delete", "duplicate"]), st.integers(0, 10**6),
                     st.integers(0, 10**6), st.binary(min_size=1, max_size=40))


def mutate(data: bytes, ops: list[tuple[str, int, int, bytes]]) -> bytes:
    for op, a, b, junk in ops:
        n = len(data)
        if n == 0:
            break
        i, j = sorted((a % n, b % n))
        if op == "truncate":
            data = data[:i]
        elif op == "flip":
            data = data[:i] + bytes([junk[0]]) + data[i + 1 :]
        elif op == "insert":
            data = data[:i] + junk + data[i:]
        elif op == "delete":
            data = data[:i] + data[j + 1 :]
        else:
            data = data[:j] + data[i:j] + data[j:]
    return data


@SETTINGS
@given(st.sampled_from(SHAPES), st.sampled_from(FRAMINGS), st.lists(MUTATION, min_size=1, max_size=4),
       st.booleans(), st.lists(st.integers(0, 5000), max_size=10), st.sampled_from(ENDS))
def test_mutated_answers_never_crash_and_end_classified(shape, framing, ops, body_only, cuts, end):
    dialect, mode = shape
    body = valid(dialect, mode)
    if body_only:  # mutate the body under sound framing
        raw = http_response(mutate(body, ops), content_type(mode), framing, chunk_sizes=[7, 64])
    else:  # mutate anything: status line, headers, framing, body
        raw = mutate(http_response(body, content_type(mode), framing, chunk_sizes=[7, 64]), ops)
    out, reader, pool = send(cut(raw, cuts), end, dialect, mode)
    check(out, pool, reader)
    if out.error_kind is None:
        assert reader.has_content and (mode == PLAIN or reader.stream_complete())


@SETTINGS
@given(st.sampled_from(SHAPES), st.binary(max_size=3000), st.sampled_from(FRAMINGS),
       st.sampled_from(["text/event-stream", "application/json", "text/html", "application/octet-stream", ""]),
       st.sampled_from([200, 200, 200, 201, 204, 301, 404, 429, 500, 503]), st.booleans(),
       st.lists(st.integers(0, 5000), max_size=10), st.sampled_from(ENDS))
def test_random_bodies_never_crash_and_end_classified(shape, body, framing, ctype, status, dry_run, cuts, end):
    dialect, mode = shape
    raw = http_response(body, ctype, framing, status=status, chunk_sizes=[5, 100])
    out, reader, pool = send(cut(raw, cuts), end, dialect, mode, dry_run=dry_run)
    check(out, pool, reader)
    if status == 204:
        return  # a 204 has no body: any bytes after its headers (a chunk, data) are no HTTP response (protocol)
    assert out.status == status
    if status >= 400:
        assert out.error_kind == ("http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx")


@SETTINGS
@given(st.binary(max_size=2000), st.sampled_from(SHAPES), st.lists(st.integers(0, 5000), max_size=10),
       st.sampled_from(ENDS))
def test_random_bytes_instead_of_a_response(raw, shape, cuts, end):
    dialect, mode = shape
    out, reader, pool = send(cut(raw, cuts), end, dialect, mode)
    check(out, pool, reader)
    assert out.error_kind is not None  # bytes from nowhere are never an answer


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
                        st.sampled_from(["choices", "delta", "content", "usage", "type", "error", "candidates",
                                         "parts", "text", "message", "finishReason", "usageMetadata", "index",
                                         "prompt_tokens", "completion_tokens", "input_tokens", "output_tokens",
                                         "content_block", "tool_calls", "functionCall", "x"]),
                        inner, max_size=4), max_leaves=12)


@SETTINGS
@given(st.sampled_from(SHAPES), st.lists(st.tuples(st.integers(0, 20), JSON), min_size=1, max_size=5),
       st.sampled_from(FRAMINGS))
def test_events_of_any_json_shape_never_crash_the_readers(shape, inserts, framing):
    """Well-framed events whose JSON has any shape at all (numbers, lists, wrong types in every field)."""
    dialect, mode = shape
    if mode == PLAIN:
        body = json.dumps(inserts[0][1]).encode()
    else:
        frames = stream_body(dialect, mode)
        parts: list[bytes] = [frames]
        for pos, value in inserts:
            payload = json.dumps(value).encode()
            piece = payload if mode == ARRAY else b"data: " + payload + b"\n\n"
            if mode == ARRAY:
                inner = parts[0][1:-1].split(b",\r\n")
                inner.insert(pos % (len(inner) + 1), piece)
                parts = [b"[" + b",\r\n".join(inner) + b"]"]
            else:
                events = parts[0].split(b"\n\n")
                events.insert(pos % len(events), piece[:-2])
                parts = [b"\n\n".join(events)]
        body = parts[0]
    raw = http_response(body, content_type(mode), framing, chunk_sizes=[50])
    out, reader, pool = send(cut(raw, [len(raw) // 3, len(raw) // 2]), "close", dialect, mode)
    check(out, pool, reader)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
@pytest.mark.parametrize("shape", SHAPES)
def test_numbers_json_does_not_have_are_protocol_errors(shape, number):
    """Python's json reads NaN and Infinity; the records would then hold them and strict readers would drop
    the line. The transport refuses them instead."""
    dialect, mode = shape
    body = valid(dialect, mode)
    for field in (b'"output_tokens":2', b'"completion_tokens":2', b'"candidatesTokenCount":2'):
        body = body.replace(field, field[:-1] + number)
    out, reader, pool = send([http_response(body, content_type(mode), "length")], "close", dialect, mode)
    check(out, pool, reader)
    assert out.error_kind == "protocol", (out.error_kind, out.error)


def _strict_json(text: str) -> Any:
    """Python's json with NaN, Infinity and numbers that overflow a double refused (ValueError)."""

    def refuse(x: str) -> Any:
        raise ValueError(x)

    def finite(x: str) -> float:
        v = float(x)
        if v in (float("inf"), float("-inf")):
            raise ValueError(x)
        return v

    return json.loads(text, parse_constant=refuse, parse_float=finite)


TEXTS = ['{"a":1.5,"b":[true,null]}', '"\\ud800"', "1" * 400, "NaN", "-Infinity", "1e400", '"a\tb"', "[1,]",
         "01", '{"a":1,"a":2}', ' {"x":"\\u00e9"} ', "{}x", "-0", "1.7976931348623157e308", '"\\x41"']


@pytest.mark.parametrize("text", TEXTS)
def test_the_readers_json_accepts_and_refuses_what_strict_standard_json_does(text):
    """The hot path's decoder against Python's json with NaN, Infinity and overflowing numbers refused."""
    from locustfiles.dialects.base import loads

    try:
        expected: Any = ("ok", _strict_json(text))
    except ValueError:
        expected = ("refused",)
    try:
        got: Any = ("ok", loads(text))
    except ValueError:
        got = ("refused",)
    assert got == expected


@pytest.mark.parametrize("body", [
    {"model": "m", "messages": [{"role": "user", "content": "héllo \u2028 \"q\" \\ \n"}], "max_tokens": 32},
    {"text": "lone \ud800 surrogate"},  # orjson refuses it: the standard library writes it
    {"n": 2 ** 70, "m": -(2 ** 63), "ok": True, "none": None, "list": [1, "2", [3]]},  # past 64 bits: likewise
])
def test_a_request_body_is_the_json_the_standard_library_reads_back(body):
    """Request bodies: compact JSON bytes that Python's json reads back as the same object."""
    from locustfiles.dialects.base import dumps

    wire = dumps(body)
    assert isinstance(wire, bytes) and b"\n" not in wire and b", " not in wire and b'": ' not in wire
    assert json.loads(wire) == body


def test_prompts_are_the_words_random_choice_draws():
    """Seeded prompts are the words `rng.choice` draws one call at a time, and leave the generator where it
    leaves it (a scenario's seed gives the same workload as before)."""
    from locustfiles.prompts import WORDS, make_prompt

    for seed in range(40):
        ours, stdlib = random.Random(seed), random.Random(seed)
        for words in (1, 3, 24, 257):
            assert make_prompt(ours, words) == " ".join(stdlib.choice(WORDS) for _ in range(words))
        assert ours.random() == stdlib.random()


def test_framers_take_a_long_line_in_linear_time():
    """A 32 MB body without a line end (or one JSON element) is read in one pass, not re-copied per block."""
    import time

    block = b"x" * 65536
    sse = SSEFramer()
    t0 = time.perf_counter()
    for _ in range(512):
        assert sse.feed(block) == []
    assert time.perf_counter() - t0 < 2.0
    arr = JsonArrayFramer()
    arr.feed(b'[{"text": "')
    t0 = time.perf_counter()
    for _ in range(512):
        assert arr.feed(block) == []
    assert arr.pending and not arr.garbage
    assert time.perf_counter() - t0 < 2.0


def test_a_seeded_fuzz_of_all_shapes():
    """A quick deterministic sweep on top of hypothesis: 2,000 random mutations, none escapes."""
    rng = random.Random(6)
    for _ in range(2000):
        dialect, mode = rng.choice(SHAPES)
        raw = http_response(valid(dialect, mode), content_type(mode), rng.choice(FRAMINGS), chunk_sizes=[9])
        ops = [(rng.choice(["truncate", "flip", "insert", "delete", "duplicate"]), rng.randrange(10**6),
                rng.randrange(10**6), bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))))
               for _ in range(rng.randint(1, 3))]
        out, reader, pool = send(cut(mutate(raw, ops), [rng.randrange(5000) for _ in range(4)]),
                                  rng.choice(ENDS), dialect, mode)
        check(out, pool, reader)


CHUNK = ('{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":'
         '[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}')
LATER = [CHUNK % '"plain"', CHUNK % '"line\\nbreak \\u00e9 \\"q\\""', CHUNK % '"\\ud800"', CHUNK % '"\\x41"',
         CHUNK % '"raw\ttab"', CHUNK % '""', CHUNK % "17", CHUNK % "null", CHUNK % '"a","content":"b"',
         CHUNK.replace('"created":1700000000', '"created":1e400') % '"x"',
         CHUNK.replace('"logprobs":null', '"logprobs":NaN') % '"x"',
         CHUNK.replace('"finish_reason":null', '"finish_reason":"stop"') % '"end"',
         CHUNK.replace('"model":"m"', '"model":"m2"') % '"other model"', CHUNK % '"ok" ',
         # as long as the text chunk's, but not the same around the content
         CHUNK.replace('"finish_reason":null', '"finish_reason":"ab"') % '"x"',
         CHUNK.replace('"model":"m"', '"model":"n"') % '"x"', CHUNK.replace('1700000000', '1e40000000') % '"x"']


def _read(reader: Any, events: list[str], together: bool, t: float) -> None:
    """Events read one call each at t, t + 1, ... or all in one call at t (a block of a stream that arrived at
    once shares its time)."""
    if together:
        reader.events([(None, e) for e in events], t)
    else:
        for i, e in enumerate(events):
            reader.event(None, e, t + i)


@pytest.mark.parametrize("keep", [True, False], ids=["text-kept", "text-not-kept"])
@pytest.mark.parametrize("together", [False, True], ids=["one-by-one", "together"])
@pytest.mark.parametrize("later", LATER)
def test_a_chat_chunk_after_a_text_chunk_reads_as_strict_json_says(later, together, keep):
    """The chat reader's shortcut for a stream's repeated text chunks: after one plain text chunk, every later
    chunk reads as Python's strict json says (NaN, Infinity, overflow, bad escapes and control characters
    refused; a duplicate key's last value wins; any other shape read whole), event by event or in one block,
    each text chunk at its own time."""
    from locustfiles.dialects import openai_chat

    reader = openai_chat.Reader("sse")
    reader.text_parts = [] if keep else None
    first, plain = CHUNK % '"first "', CHUNK % '" next"'
    _read(reader, [first, plain] if together else [first], together, 1.0)
    before = "first " + (" next" if together else "")
    times = [1.0, 1.0] if together else [1.0]
    assert reader.first_event == reader.first_content == reader.first_text == 1.0
    try:
        obj = _strict_json(later)
    except ValueError:
        with pytest.raises((ValueError, TypeError)):
            _read(reader, [later, plain], together, 5.0)
        return
    content = obj["choices"][0]["delta"]["content"]
    if isinstance(content, str) or not content:
        _read(reader, [later, plain], together, 5.0)
        text = before + (content or "") + " next"
        times += ([5.0] if content else []) + ([5.0] if together else [6.0])
        assert reader.text == (text if keep else None)
        assert reader.chunks == times
        assert reader.chars == len(text)
        assert reader.finish == obj["choices"][0]["finish_reason"]
        assert reader.first_event == reader.first_content == reader.first_text == 1.0
    else:  # a number where the text belongs: the shape is wrong (a `protocol` failure in the transport)
        with pytest.raises(TypeError):
            _read(reader, [later, plain], together, 5.0)


def test_a_duplicate_content_key_is_never_taken_for_a_text_chunks_shape():
    """A first chunk whose content key comes twice (the same text in both): a later one differing in its first
    copy still reads as its last copy, as JSON readers do."""
    from locustfiles.dialects import openai_chat

    reader = openai_chat.Reader("sse")
    reader.text_parts = []
    reader.event(None, CHUNK % '"a","content":"a"', 1.0)
    reader.event(None, CHUNK % '"b","content":"a"', 2.0)
    assert reader.text == "aa"
