"""The one error mapper: every exception becomes the OpenAI error its client should get."""

from __future__ import annotations

import logging
from http import HTTPStatus

import pytest
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from vllm.exceptions import GracefulHTTPError, VLLMClientError, VLLMValidationError
from vllm.v1.engine.exceptions import EngineDeadError

from huatuogpt2.prompt_format import PromptError
from server.errors import APIError, EngineFailure, _field_path, bad_request, to_api_error


def failure(cause: BaseException) -> EngineFailure:
    try:
        raise EngineFailure("engine request r failed") from cause
    except EngineFailure as exc:
        return exc


def shape(error: APIError) -> tuple:
    return error.status, error.type, error.code, error.param


def test_decided_errors_pass_through_unchanged() -> None:
    error = APIError(429, "full", code="server_overloaded", headers={"Retry-After": "1"})
    assert to_api_error(error) is error
    assert shape(bad_request("no", "messages")) == (400, "invalid_request_error", None,
                                                    "messages")


def test_request_problems_are_400s_naming_the_field() -> None:
    validation = RequestValidationError([{"loc": ("body", "messages", 2, "role"),
                                          "msg": "Field required", "type": "missing"}])
    error = to_api_error(validation)
    assert shape(error) == (400, "invalid_request_error", "invalid_value", "messages[2].role")
    assert error.message == "'messages[2].role': Field required"
    body_error = to_api_error(RequestValidationError([{"loc": ("body",), "msg": "bad",
                                                       "type": "x"}]))
    assert body_error.param is None and body_error.message == "The request body: bad"
    not_json = to_api_error(RequestValidationError([{"loc": ("body", 0), "msg": "x",
                                                     "type": "json_invalid"}]))
    assert not_json.message == "The request body is not valid JSON." and not_json.status == 400
    prompt = to_api_error(PromptError("too long", "messages", code="context_length_exceeded"))
    assert shape(prompt) == (400, "invalid_request_error", "context_length_exceeded",
                             "messages")
    assert prompt.message == "too long"
    vllm = to_api_error(VLLMValidationError("top_k must be -1", parameter="top_k", value=-5))
    assert shape(vllm) == (400, "invalid_request_error", "invalid_value", "top_k")
    assert vllm.message.startswith("top_k must be -1")
    client = to_api_error(VLLMClientError("bad"))
    assert shape(client) == (400, "invalid_request_error", "invalid_value", None)
    assert client.message == "bad"


def test_http_exceptions_keep_their_status() -> None:
    error = to_api_error(HTTPException(405, "Method Not Allowed"))
    assert shape(error) == (405, "invalid_request_error", "method_not_allowed", None)
    assert error.message == "Method Not Allowed"
    assert to_api_error(HTTPException(404, "Not Found")).type == "not_found_error"


def test_engine_failures_are_engine_errors() -> None:
    dead = to_api_error(failure(EngineDeadError()))
    assert shape(dead) == (503, "service_unavailable_error", "engine_dead", None)
    crashed = to_api_error(failure(RuntimeError("CUDA error")), "req-7")
    assert shape(crashed) == (500, "server_error", "engine_error", None)
    assert crashed.message == ("The inference engine failed (RuntimeError). The request was "
                               "not completed.")
    assert dead.message == "The inference engine died; the request was not completed."
    invalid = to_api_error(failure(VLLMValidationError("prompt too long", parameter="prompt")))
    assert shape(invalid) == (400, "invalid_request_error", "invalid_value", "prompt")
    busy = to_api_error(failure(GracefulHTTPError("busy", HTTPStatus.SERVICE_UNAVAILABLE)))
    assert shape(busy) == (503, "service_unavailable_error", "engine_overloaded", None)
    assert busy.headers == {"Retry-After": "1"} and busy.message == "busy"


def test_a_gateway_bug_is_an_internal_error_with_the_request_id_and_a_logged_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="huatuo.errors"):
        error = to_api_error(KeyError("choices"), "req-42")
    assert shape(error) == (500, "server_error", "internal_error", None)
    assert "req-42" in error.message and "KeyError" in error.message
    (logged,) = caplog.records
    assert "req-42" in logged.getMessage() and logged.exc_info[0] is KeyError
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="huatuo.errors"):
        to_api_error(failure(RuntimeError("CUDA error")), "req-43")
    (logged,) = caplog.records
    assert "req-43" in logged.getMessage() and logged.exc_info[0] is RuntimeError


def test_field_paths_read_as_the_client_wrote_them() -> None:
    assert _field_path(("body", "temperature")) == "temperature"
    assert _field_path(("body", "messages", 0, "content", 1, "text")) == (
        "messages[0].content[1].text")
    assert _field_path(("body",)) is None


def test_error_body_is_openai_shaped() -> None:
    error = APIError(413, "too big", code="request_too_large")
    assert error.body() == {"error": {"message": "too big", "type": "invalid_request_error",
                                      "param": None, "code": "request_too_large"}}
    assert error.json() == (b'{"error": {"message": "too big", "type": "invalid_request_error", '
                            b'"param": null, "code": "request_too_large"}}')
    assert APIError(502, "x").type == "server_error" and APIError(418, "x").type == (
        "invalid_request_error")
