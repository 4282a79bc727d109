"""The SSE client parser on literal streams: `SSEDecoder` on raw reads cut at every byte, and
the line and whole-text readers built on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from loadtests.sse import SSEDecoder, sse_data, sse_data_from_text

STREAM = (b": ping\n\n"
          b"data: {\"a\": 1}\n\n"
          b"data:{\"b\": 2}\n\n"  # no space after the colon
          b"event: message\nid: 7\nretry: 10\ndata: x\n: a comment inside\ndata:  y\ndata\n\n"
          b"\n\n"  # blank lines with no event between them
          + "data: 头痛\n\n".encode()
          + b"data:\n\n"  # an event whose data is empty
          b"data: [DONE]\n\n")
EVENTS = [b"{\"a\": 1}", b"{\"b\": 2}", b"x\n y\n", "头痛".encode(), b"", b"[DONE]"]


def _decode(reads: list[bytes]) -> list[bytes]:
    decoder = SSEDecoder()
    events = [data for read in reads for data in decoder.feed(read)]
    return events + decoder.close()


def test_one_read_holds_every_event() -> None:
    assert _decode([STREAM]) == EVENTS


@pytest.mark.parametrize("ending", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_other_line_endings(ending: bytes) -> None:
    assert _decode([STREAM.replace(b"\n", ending)]) == EVENTS


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_reads_cut_at_every_position(ending: bytes) -> None:
    stream = STREAM.replace(b"\n", ending)
    for cut in range(1, len(stream)):
        assert _decode([stream[:cut], stream[cut:]]) == EVENTS, cut
    assert _decode([stream[i:i + 1] for i in range(len(stream))]) == EVENTS


def test_an_event_is_returned_by_the_read_that_completes_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: 1\n") == []
    assert decoder.feed(b"\ndata: 2\n\ndata: 3\n\nda") == [b"1", b"2", b"3"]
    assert decoder.feed(b"ta: 4\r") == []
    assert decoder.feed(b"\n\r") == []  # `\r\n\r` could still be `\r\n` + `\r\n`
    assert decoder.feed(b"\n") == [b"4"]
    assert decoder.close() == []


def test_an_event_open_at_the_end_of_the_stream_counts() -> None:
    for tail in (b"data: [DONE]", b"data: [DONE]\n", b"data: [DONE]\r"):
        decoder = SSEDecoder()
        assert decoder.feed(b"data: 1\n\n" + tail) == [b"1"]
        assert decoder.close() == [b"[DONE]"]
    decoder = SSEDecoder()
    decoder.feed(b": only a comment")
    assert decoder.close() == []


def test_the_line_and_text_readers() -> None:
    text = STREAM.decode()
    expected = [event.decode() for event in EVENTS]
    assert sse_data_from_text(text) == expected
    assert sse_data_from_text(text.replace("\n", "\r\n")) == expected

    async def lines() -> AsyncIterator[str]:  # as httpx's aiter_lines gives them
        for line in text.rstrip("\n").split("\n"):
            yield line

    async def read() -> list[str]:
        return [data async for data in sse_data(lines())]

    assert asyncio.run(read()) == expected
