"""Reading server-sent events as a strict client does: the one SSE client parser.

Used by the load generator and the tests. Comments (the server's `: ping` keep-alives), event
names and ids are skipped; the `data:` lines of one event are joined with newlines, and an
event ends at a blank line.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


class _Events:
    """Feeds lines, one at a time, returns each event's data when the event ends."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if line == "":
            return self.flush()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return data


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The data of each event in a stream of lines (e.g. `httpx.Response.aiter_lines()`)."""
    events = _Events()
    async for line in lines:
        data = events.feed(line.rstrip("\r"))
        if data is not None:
            yield data
    data = events.flush()
    if data is not None:
        yield data


def sse_data_from_text(text: str) -> list[str]:
    """The data of each event in a whole response body."""
    events = _Events()
    found = [data for line in text.splitlines() if (data := events.feed(line)) is not None]
    last = events.flush()
    return found + ([last] if last is not None else [])
