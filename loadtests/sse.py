"""Reading server-sent events as a strict client does: the one SSE client parser.

Used by the load generator and the tests. Comments (the server's `: ping` keep-alives), event
names and ids are skipped; the `data:` lines of one event are joined with newlines, and an
event ends at a blank line. Lines may end in `\\n`, `\\r\\n` or `\\r`. An event still open when
the stream ends counts (a last `data: [DONE]` without its blank line is not lost).

`SSEDecoder` works on raw bytes as they are read off the socket, so the load generator never
decodes or splits lines in Python: an event is one `bytes.split`, and its data goes to
`orjson.loads` as bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

_DATA = b"data"


class SSEDecoder:
    """Feeds raw reads (any split: mid-line, several events at once), returns the data of each
    event that the read completed."""

    def __init__(self) -> None:
        self._rest = b""  # the part of the stream after the last complete event

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._rest + chunk if self._rest else chunk
        held = b""
        if b"\r" in buf:
            if buf[-1:] == b"\r":  # the `\n` of a `\r\n` may be in the next read
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, rest = buf.split(b"\n\n")
        self._rest = rest + held
        if not blocks:
            return blocks
        return [data for block in blocks if (data := _event_data(block)) is not None]

    def close(self) -> list[bytes]:
        """At the end of the stream: the data of the event still open, if any."""
        return self.feed(b"\n\n")


def _event_data(block: bytes) -> bytes | None:
    """The data of one event's lines (no blank line among them); None when it has none."""
    if block[:5] == b"data:" and b"\n" not in block:  # the usual event: one data line
        return block[6:] if block[5:6] == b" " else block[5:]
    values = []
    for line in block.split(b"\n"):
        name, _, value = line.partition(b":")
        if name == _DATA:  # comments have an empty name; other fields are skipped
            values.append(value[1:] if value[:1] == b" " else value)
    return b"\n".join(values) if values else None


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The data of each event in a stream of lines (e.g. `httpx.Response.aiter_lines()`)."""
    decoder = SSEDecoder()
    async for line in lines:
        for data in decoder.feed(line.encode() + b"\n"):
            yield data.decode()
    for data in decoder.close():
        yield data.decode()


def sse_data_from_text(text: str) -> list[str]:
    """The data of each event in a whole response body."""
    decoder = SSEDecoder()
    return [data.decode() for data in decoder.feed(text.encode()) + decoder.close()]
