"""Errors: the one place that decides what a client is told when something goes wrong.

Every error the gateway returns is OpenAI-shaped:

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

`to_api_error` is the single mapper from any exception to that error: middleware, validation,
routes, streams, sampling and the engine all go through it. Code that knows exactly what went
wrong raises `APIError` itself (a queue timeout, a limit); anything else is mapped here:

- a bug in the gateway is a 500 `internal_error` carrying the request id, logged with its
  traceback (never the request's content);
- only failures of the engine (wrapped in `EngineFailure` where the engine is called) are
  `engine_error` / `engine_dead`;
- request problems found by pydantic, the prompt format or vLLM's own validation are 400s that
  name the field.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError

from huatuogpt2.prompt_format import PromptError
from server.lora import AdapterError

logger = logging.getLogger("huatuo.errors")

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
    """An error whose status, code and message are already decided."""

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
        self.status = int(status)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else
                                   "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def json(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()


class EngineFailure(Exception):
    """An exception the engine raised while serving a request (the cause is `__cause__`)."""


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(HTTPStatus.BAD_REQUEST, message, param=param, code=code)


def to_api_error(exc: BaseException, request_id: str | None = None) -> APIError:
    """The error a client gets for `exc`. Unexpected exceptions are logged with a traceback."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, PromptError):
        return bad_request(exc.message, param=exc.param, code=exc.code)
    if isinstance(exc, AdapterError):  # a runtime load; at startup the command exits instead
        return bad_request(exc.message, param="lora_path", code="invalid_adapter")
    if isinstance(exc, StarletteHTTPException):
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return APIError(exc.status_code, str(exc.detail), code=code)
    if isinstance(exc, VLLMValidationError):
        return bad_request(str(exc), param=exc.parameter, code="invalid_value")
    if isinstance(exc, VLLMClientError):
        return bad_request(str(exc), code="invalid_value")
    if isinstance(exc, EngineFailure):
        return _engine_error(exc.__cause__ or exc, request_id)
    logger.error("Request %s failed inside the gateway", request_id, exc_info=exc)
    return APIError(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        f"Internal error in the gateway ({type(exc).__name__}); request id {request_id}. "
        "The request was not completed; the server log has the details.",
        code="internal_error",
    )


def _engine_error(cause: BaseException, request_id: str | None) -> APIError:
    if isinstance(cause, (VLLMClientError, APIError)):
        return to_api_error(cause, request_id)
    if isinstance(cause, GracefulHTTPError):
        return APIError(getattr(cause, "http_status", HTTPStatus.SERVICE_UNAVAILABLE),
                        str(cause), code="engine_overloaded", headers={"Retry-After": "1"})
    if isinstance(cause, EngineDeadError):
        return APIError(HTTPStatus.SERVICE_UNAVAILABLE,
                        "The inference engine died; the request was not completed.",
                        code="engine_dead")
    logger.error("Engine request %s failed", request_id, exc_info=cause)
    return APIError(
        HTTPStatus.INTERNAL_SERVER_ERROR,
        f"The inference engine failed ({type(cause).__name__}). The request was not completed.",
        code="engine_error",
    )


def _validation_error(exc: RequestValidationError) -> APIError:
    first = exc.errors()[0] if exc.errors() else {}
    param = _field_path(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return bad_request("The request body is not valid JSON.", code="invalid_value")
    where = f"'{param}'" if param else "The request body"
    return bad_request(f"{where}: {first.get('msg', 'invalid value')}", param=param,
                       code="invalid_value")


def _field_path(loc: tuple) -> str | None:
    """pydantic's location as the client wrote it: ('body', 'messages', 2, 'role') ->
    'messages[2].role'."""
    parts = [str(p) for p in loc if p != "body"]
    if not parts:
        return None
    name = parts[0]
    for part in parts[1:]:
        name += f"[{part}]" if part.isdigit() else f".{part}"
    return name


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)
