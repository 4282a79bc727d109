"""A small async client for OpenAI-compatible servers, with retries that honour Retry-After."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass

import httpx

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class UsageError(Exception):
    """A mistake the user can fix (bad key, unknown model, unreachable URL): one line."""


class RequestFailed(Exception):
    """A request that still failed after every retry, or that the server refused."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Unreachable(UsageError):
    """No connection to the server at all."""


class AuthRefused(UsageError):
    """The server refused the API key."""


def api_root(base_url: str) -> str:
    """The `/v1` root of a server given as its root or as its `/v1` URL."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"--base-url must start with http:// or https://, got {base_url!r}")
    if url.endswith("/v1"):
        url = url[:-3]
    return url + "/v1"


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class RetryPolicy:
    max_retries: int = 6
    base_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        backoff = min(self.max_delay, self.base_delay * 2**attempt)
        return backoff * (0.5 + random.random() / 2)


class OpenAIClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0,
                 retry: RetryPolicy | None = None, concurrency: int = 8,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.root = api_root(base_url)
        self.base_url = base_url
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(timeout, connect=10.0), transport=transport,
            limits=httpx.Limits(max_connections=max(concurrency, 1) * 2))
        self.retry = retry or RetryPolicy()
        self.semaphore = asyncio.Semaphore(max(concurrency, 1))
        self.requests_sent = 0

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> OpenAIClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _unreachable(self) -> Unreachable:
        return Unreachable(f"the server at {self.base_url} is not reachable (connection failed)")

    async def list_models(self) -> list[str]:
        """Model ids from /v1/models; UsageError with a one-line reason when that fails."""
        try:
            response = await self._client.get(f"{self.root}/models")
        except httpx.TransportError:
            raise self._unreachable() from None
        if response.status_code in (401, 403):
            raise AuthRefused(f"the server at {self.base_url} refused the API key "
                             f"(HTTP {response.status_code}); pass --api-key or set "
                             "OPENAI_API_KEY")
        if response.status_code != 200:
            raise UsageError(f"GET {self.root}/models answered HTTP {response.status_code}; "
                             "name the model with --model")
        try:
            return [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise UsageError(f"GET {self.root}/models did not return a model list; name the "
                             "model with --model") from None

    async def post(self, path: str, body: dict) -> dict:
        """POST with bounded concurrency; retries 429/5xx/connection errors with backoff."""
        async with self.semaphore:
            attempt = 0
            while True:
                retry_after = None
                try:
                    self.requests_sent += 1
                    response = await self._client.post(f"{self.root}{path}", json=body)
                except httpx.TransportError as exc:
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                else:
                    if response.status_code == 200:
                        try:
                            return response.json()
                        except ValueError:
                            error = "the server answered 200 with a body that is not JSON"
                    elif response.status_code in RETRY_STATUS:
                        error = f"HTTP {response.status_code}: {response.text[:300]}"
                        retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    else:
                        if response.status_code in (401, 403):
                            raise AuthRefused(
                                f"the server at {self.base_url} refused the API key (HTTP "
                                f"{response.status_code}); pass --api-key or set OPENAI_API_KEY")
                        raise RequestFailed(f"HTTP {response.status_code}: "
                                            f"{response.text[:500]}", response.status_code)
                if attempt >= self.retry.max_retries:
                    raise RequestFailed(f"gave up after {attempt + 1} attempts: {error}")
                await asyncio.sleep(self.retry.delay(attempt, retry_after))
                attempt += 1
