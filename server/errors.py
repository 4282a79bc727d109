"""One error factory: every error the gateway returns is OpenAI-shaped.

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

Used for HTTP error responses and, once a stream has started, for the error chunk that precedes
`data: [DONE]`.
"""

from __future__ import annotations

import json
from http import HTTPStatus

from fastapi.responses import JSONResponse

# OpenAI's `type` values by HTTP status.
_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}


class APIError(Exception):
    """Raised anywhere in the gateway; rendered by `error_response` / `error_event`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else
                                   "invalid_request_error")

    def body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, param=param, code=code)


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def error_event(error: APIError) -> str:
    """The SSE event for an error after a stream has started; `[DONE]` must follow."""
    return f"data: {json.dumps(error.body(), ensure_ascii=False)}\n\n"


def engine_failure(exc: BaseException) -> APIError:
    """An internal failure, without leaking request content or stack traces to the client."""
    return APIError(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        f"The inference engine failed ({type(exc).__name__}). The request was not completed.",
        code="engine_error",
    )
