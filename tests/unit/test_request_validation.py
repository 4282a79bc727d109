"""Request validation, sampling defaults, settings and error shapes: no engine needed."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError
from vllm.sampling_params import RequestOutputKind

from huatuogpt2.prompt_format import SystemPolicy
from server.errors import APIError, _field_path
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.sampling import build_sampling_params
from server.settings import add_serve_arguments, settings_from_args
from server.sse import error_event

HUATUO_DEFAULTS = {"temperature": 0.3, "top_k": 5, "top_p": 0.85, "repetition_penalty": 1.1,
                   "max_new_tokens": 2048}


def chat(**fields) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}],
                                 **fields)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"temperature": 2.5}, ("temperature",)),
        ({"top_p": 0.0}, ("top_p",)),
        ({"n": 17}, ("n",)),
        ({"max_tokens": -1}, ("max_tokens",)),
        ({"frequency_penalty": -3}, ("frequency_penalty",)),
        ({"stop": ["a", "b", "c", "d", "e"]}, ()),
        ({"stop": [""]}, ()),
        ({"top_logprobs": 3}, ()),
        ({"response_format": {"type": "json_schema"}}, ("response_format",)),
        ({"stream_options": {"include_usage": "maybe"}}, ("stream_options", "include_usage")),
    ],
)
def test_invalid_fields_are_rejected(fields: dict, loc: tuple) -> None:
    with pytest.raises(ValidationError) as info:
        chat(**fields)
    assert info.value.errors()[0]["loc"][: len(loc)] == loc


def test_validation_locations_become_openai_params() -> None:
    assert _field_path(("body", "temperature")) == "temperature"
    assert _field_path(("body", "messages", 2, "role")) == "messages[2].role"
    assert _field_path(("body",)) is None


def test_unknown_fields_are_ignored_and_extensions_accepted() -> None:
    request = chat(top_k=5, repetition_penalty=1.2, parallel_tool_calls=False)
    assert request.top_k == 5 and request.repetition_penalty == 1.2


def test_max_completion_tokens_wins() -> None:
    assert chat(max_tokens=5, max_completion_tokens=7).requested_max_tokens == 7
    assert chat().requested_max_tokens is None
    assert CompletionRequest(model="m", prompt="x").requested_max_tokens == 16


def test_left_out_fields_take_generation_config_defaults() -> None:
    params = build_sampling_params(chat(), defaults=HUATUO_DEFAULTS, max_tokens=10,
                                   stream=False, logprobs=None)
    assert (params.temperature, params.top_k, params.top_p, params.repetition_penalty) == (
        0.3, 5, 0.85, 1.1)
    assert params.output_kind == RequestOutputKind.FINAL_ONLY
    given = build_sampling_params(chat(temperature=0.9, top_k=50, stop="x"),
                                  defaults=HUATUO_DEFAULTS, max_tokens=10, stream=True,
                                  logprobs=2)
    assert (given.temperature, given.top_k, given.stop, given.logprobs) == (0.9, 50, ["x"], 2)
    assert given.output_kind == RequestOutputKind.DELTA


def test_structured_output_params() -> None:
    params = build_sampling_params(
        chat(response_format={"type": "json_schema",
                               "json_schema": {"name": "a", "schema": {"type": "object"}}}),
        defaults={}, max_tokens=10, stream=False, logprobs=None)
    assert params.structured_outputs.json == '{"type": "object"}'
    params = build_sampling_params(chat(response_format={"type": "json_object"}), defaults={},
                                   max_tokens=10, stream=False, logprobs=None)
    assert params.structured_outputs.json_object is True


def test_greedy_with_several_choices_names_n() -> None:
    with pytest.raises(APIError) as info:
        build_sampling_params(chat(n=2, temperature=0), defaults={}, max_tokens=5,
                              stream=False, logprobs=None)
    assert info.value.status == 400 and info.value.param == "n"


def test_error_shapes() -> None:
    error = APIError(429, "slow down", code="server_overloaded")
    assert error.body() == {"error": {"message": "slow down", "type": "rate_limit_error",
                                      "param": None, "code": "server_overloaded"}}
    assert error_event(error).startswith(b"data: {") and error_event(error).endswith(b"\n\n")


def parse_serve(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path) -> None:
    monkeypatch.setenv("HUATUO_MAX_MODEL_LEN", "2048")
    monkeypatch.setenv("HUATUO_ENABLE_PREFIX_CACHING", "false")
    monkeypatch.setenv("HUATUO_SYSTEM_POLICY", "reject")
    monkeypatch.setenv("HUATUO_API_KEYS", "a, b")
    key_file = tmp_path / "keys"
    key_file.write_text("c\n\nb\n")
    settings = settings_from_args(parse_serve(
        ["--port", "9000", "--api-key", "z", "--api-key-file", str(key_file),
         "--max-model-len", "1024"]))
    assert settings.port == 9000
    assert settings.max_model_len == 1024  # the flag wins over the environment
    assert settings.enable_prefix_caching is False
    assert settings.system_policy is SystemPolicy.REJECT
    assert settings.api_keys == ["a", "b", "z", "c"]
    assert settings.model_name == "huatuo-demo"
    assert settings_from_args(parse_serve(["--model", "/m/HuatuoGPT2-7B/"])).model_name == (
        "HuatuoGPT2-7B")


@pytest.mark.parametrize("argv", [["--tensor-parallel-size", "0"], ["--dtype", "int3"],
                                  ["--system-policy", "ignore"], ["--queue-timeout", "0"]])
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_serve(argv)


def test_readme_lists_every_serve_flag_with_its_environment_variable() -> None:
    """The flags are declared once (server/settings.py); the README's table must keep up."""
    from pathlib import Path

    from server.settings import flag_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines()
            if line.startswith("| `--")}
    for option, env, _default, _help in flag_table():
        assert f"`{option}`" in rows, f"README.md has no row for {option}"
        assert f"`{env}`" in rows[f"`{option}`"], f"README.md: {option} row lacks {env}"


def test_help_shows_defaults_and_environment_variables() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "Port to bind. (default: 8000) [env HUATUO_PORT]" in text
    assert "(default: 127.0.0.1) [env HUATUO_HOST]" in text
    assert "(default: on) [env HUATUO_ENABLE_PREFIX_CACHING]" in text


def test_a_bad_environment_value_is_a_usage_error(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("HUATUO_PORT", "eighty")
    with pytest.raises(SystemExit) as info:
        parse_serve([])
    assert info.value.code == 2
    assert "HUATUO_PORT='eighty'" in capsys.readouterr().err
