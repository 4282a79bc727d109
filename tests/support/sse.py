"""Reading an SSE response the way a strict client would, for tests."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import httpx

from loadtests.sse import sse_data


@dataclass
class StreamResult:
    status: int
    events: list[str] = field(default_factory=list)
    error: dict | None = None
    text: str = ""
    transport_error: str | None = None

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1] == "[DONE]"

    @property
    def finish_reasons(self) -> list[str]:
        reasons = []
        for event in self.events[:-1]:
            payload = json.loads(event)
            for choice in payload.get("choices", []):
                if choice.get("finish_reason"):
                    reasons.append(choice["finish_reason"])
        return reasons


def parse_event(data: str, result: StreamResult) -> None:
    result.events.append(data)
    if data == "[DONE]":
        return
    payload = json.loads(data)
    if "error" in payload:
        result.error = payload["error"]
        return
    for choice in payload.get("choices", []):
        result.text += (choice.get("delta") or {}).get("content") or choice.get("text") or ""


async def read_stream(client: httpx.AsyncClient, url: str, body: dict,
                      headers: dict[str, str] | None = None,
                      answered: asyncio.Event | None = None) -> StreamResult:
    """`answered` is set once the response's status line has arrived: the server has taken
    the request, so a test may act on it in flight."""
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if answered is not None:
                answered.set()
            result = StreamResult(response.status_code)
            if response.status_code != 200:
                await response.aread()
                result.error = response.json().get("error")
                return result
            async for data in sse_data(response.aiter_lines()):
                parse_event(data, result)
            return result
    except httpx.HTTPError as exc:
        return StreamResult(0, transport_error=repr(exc))
