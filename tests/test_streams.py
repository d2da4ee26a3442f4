"""Stream framing and record encoding, at every chunk boundary."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from locustfiles.dialects import anthropic, gemini, openai_chat
from locustfiles.records import decode_chunks, encode_chunks
from locustfiles.streams import JsonArrayFramer, SSEFramer

pytestmark = pytest.mark.timeout(60)

SSE = (b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":5,"output_tokens":1}}}\n\n'
       b': keep-alive\n\n'
       b'event: content_block_delta\r\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \\u00e9"}}\r\n\r\n'
       b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}\n\n'
       b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
ARRAY = (b'[{"candidates":[{"content":{"parts":[{"text":"a {\\"b\\"} ]"}]}}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":1}}\n'
         b',\r\n{"candidates":[{"content":{"parts":[{"text":" c"}]},"finishReason":"STOP"}],'
         b'"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2}}\n]')


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=False)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_sse_events_survive_any_chunking(cuts):
    framer = SSEFramer()
    events = []
    for piece in split_at(SSE, cuts):
        events += framer.feed(piece)
    events += framer.finish()
    assert [e for e, _ in events] == ["message_start", "content_block_delta", "message_delta", "message_stop"]
    reader = anthropic.Reader("sse")
    for name, data in events:
        reader.event(name, data, 1.0)
    assert reader.done and reader.usage == {"input": 5, "output": 7, "cached_input": 0, "cache_write": 0,
                                            "reasoning": 0}
    assert reader.chars == len("Hi é") and framer.comments == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_json_array_elements_survive_any_chunking(cuts):
    framer = JsonArrayFramer()
    elements = []
    for piece in split_at(ARRAY, cuts):
        elements += framer.feed(piece)
    assert framer.closed and not framer.garbage and not framer.pending
    assert [json.loads(e)["usageMetadata"]["candidatesTokenCount"] for e in elements] == [1, 2]
    reader = gemini.Reader("json_array")
    for e in elements:
        reader.event(None, e.decode(), 1.0)
    assert reader.usage["output"] == 2 and reader.finish == "STOP"  # the last usage, never a sum


def test_openai_reader_usage_chunk_and_done():
    reader = openai_chat.Reader("sse")
    reader.event(None, '{"choices":[{"delta":{"role":"assistant","content":""}}],"usage":null}', 1.0)
    assert not reader.has_content  # a role chunk is not content
    reader.event(None, '{"choices":[{"delta":{"content":"Hi"}}]}', 2.0)
    reader.event(None, '{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}', 3.0)
    reader.event(None, '{"choices":[{"delta":{},"finish_reason":"stop"}]}', 4.0)
    reader.event(None, '{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
                       '"prompt_tokens_details":{"cached_tokens":1}}}', 5.0)
    reader.event(None, "[DONE]", 6.0)
    assert reader.first_event == 1.0 and reader.first_text == 2.0 and reader.first_tool == 3.0
    assert reader.chunks == [2.0, 3.0] and reader.finish == "stop" and reader.done
    assert reader.usage == {"input": 3, "output": 2, "cached_input": 1, "cache_write": 0, "reasoning": 0}


def test_in_band_errors_are_noticed():
    r = openai_chat.Reader("sse")
    r.event(None, '{"error":{"type":"server_error","message":"x"}}', 1.0)
    assert r.error == "server_error"
    g = gemini.Reader("sse")
    g.event(None, '{"error":{"code":503,"status":"UNAVAILABLE"}}', 1.0)
    assert g.error == "UNAVAILABLE"


def test_garbage_is_flagged():
    framer = JsonArrayFramer()
    framer.feed(b"<html>oops</html>")
    assert framer.garbage


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=80))
def test_chunk_times_round_trip_to_the_microsecond(offsets):
    times = sorted(offsets)
    enc = encode_chunks([10.0 + t for t in times], 10.0)
    assert enc["n"] == len(times)
    assert decode_chunks(enc) == pytest.approx([t * 1000 for t in times], abs=0.001 * len(times) + 0.001)


def _reference_sse(text: bytes) -> list[tuple[str | None, str]]:
    """SSE events of a whole body, line by line as the spec reads them (the framer's independent truth)."""
    events, name, data = [], None, []
    for raw in text.split(b"\n")[:-1]:  # whole lines only: an unfinished last line is no line yet
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            if data:
                events.append((name, "\n".join(data)))
            name, data = None, []
        elif line.startswith(b"data:"):
            data.append(line[6:].decode() if line[5:6] == b" " else line[5:].decode())
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return events


SSE_LINES = st.sampled_from([b"data: {\"a\":1}", b"data:{\"b\":2}", b"data: x", b"data: [DONE]", b"event: ping",
                             b": keep-alive", b"", b"", b"", b"data: \xc3\xa9t\xc3\xa9", b"data:", b"id: 7"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(SSE_LINES, st.sampled_from([b"\n", b"\n", b"\r\n"])), max_size=30),
       st.lists(st.integers(min_value=0, max_value=2_000), max_size=8))
def test_the_sse_framer_gives_the_events_a_line_by_line_reading_gives(lines, cuts):
    """Bodies of every SSE line shape (LF and CRLF, named events, comments, multi-line data), cut anywhere: the
    framer's block-at-a-time path and its line-by-line path give exactly the spec's events."""
    body = b"".join(line + end for line, end in lines)
    framer = SSEFramer()
    got = []
    for piece in split_at(body, cuts):
        got += framer.feed(piece)
    assert got == _reference_sse(body)


DATA_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(DATA_TEXT.map(lambda t: b"data: " + t.encode() + b"\n\n"),
                          st.sampled_from([b"data:x\n\n", b": \xff ping\n\n", b"\n\n", b"data: a\ndata: b\n\n",
                                           b"event: e\ndata: n\n\n", b"data: \xc3\xa9\n\n", b"data: data: \n\n"])),
                max_size=40),
       st.lists(st.integers(min_value=0, max_value=4_000), max_size=6))
def test_bodies_of_one_line_data_events_frame_as_a_line_by_line_reading(events, cuts):
    """Bodies made mostly of one-line `data: ` events (read whole blocks at a time), with a few of every other
    shape among them (a comment that is not UTF-8, a blank event, two data lines, a named event), cut anywhere:
    exactly the spec's events."""
    body = b"".join(events)
    framer = SSEFramer()
    got = []
    for piece in split_at(body, cuts):
        got += framer.feed(piece)
    assert got == _reference_sse(body)


@pytest.mark.parametrize("rec", [
    {"a": "héllo", "n": 2 ** 63 - 1, "f": [0.1, 1e-05, -0.0, 1.7976931348623157e308], "x": None, "b": True},
    {"error": "lone \ud800 surrogate"},  # orjson refuses it: the standard library writes it
    {"big": 2 ** 70},                    # past 64 bits: the standard library writes it
    {"nested": {"k": [{"deep": "\n\t\"quoted\""}]}},
])
def test_a_record_line_is_one_line_of_the_same_json(rec):
    from ttformats.jsonline import json_line

    line = json_line(rec)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line) == rec
