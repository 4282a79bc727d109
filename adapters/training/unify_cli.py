"""`huatuo unify`: rewrite medical passages into question/answer pairs through an LLM endpoint.

    huatuo unify --input adapters/training/data/passages.jsonl --output unified.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --concurrency 16

Ends with a summary of the drop and failure reasons with counts. Exit status (the convention of
every `huatuo` subcommand): 0 done; 1 the work failed: fewer than --min-kept-fraction of the
passages are in the output, some requests failed (retries exhausted, a prompt longer than the
server's context), the endpoint cannot be reached; 2 bad usage: bad flags, a missing input or
prompt file, an empty API key, an endpoint that rejects the key or the model; 130 interrupted.
Errors are one line on stderr, with the fix.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from adapters.training.unify import ANSWER_PROMPT, QUESTION_PROMPT, UnifyOptions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help="Passages: JSONL/JSON list of {\"id\", \"text\"} (or strings), or a "
                             ".txt file with passages separated by blank lines.")
    parser.add_argument("--output", type=Path, required=True,
                        help="JSONL output (appended; a rerun skips finished ids). Dropped "
                             "passages go to <output>.dropped.jsonl.")
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL",
                                                             "http://127.0.0.1:8000/v1"),
                        help="OpenAI-compatible endpoint, e.g. our own `huatuo serve` "
                             "(default: $OPENAI_BASE_URL or http://127.0.0.1:8000/v1).")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", "EMPTY"),
                        help="API key (default: $OPENAI_API_KEY).")
    parser.add_argument("--model", default=None,
                        help="Model name (default: the first one /v1/models lists).")
    parser.add_argument("--concurrency", type=int, default=8, help="Requests in flight.")
    parser.add_argument("--max-retries", type=int, default=5,
                        help="Retries of a request on connection errors, 429 and 5xx.")
    parser.add_argument("--backoff", type=float, default=1.0,
                        help="First retry delay in seconds (doubles each retry, with jitter).")
    parser.add_argument("--timeout", type=float, default=300.0, help="Per-request timeout (s).")
    parser.add_argument("--language", default="Chinese",
                        help="Language of the questions and answers (upstream: Chinese).")
    parser.add_argument("--question-chars", type=int, default=400,
                        help="Passage characters shown for the question (upstream: 400).")
    parser.add_argument("--answer-chars", type=int, default=600,
                        help="Passage characters shown for the answer (upstream: 600).")
    parser.add_argument("--max-question-chars", type=int, default=180,
                        help="Longer questions are rejected (upstream: 180).")
    parser.add_argument("--banned-answer-word", action="append", default=None,
                        help="Answers containing it are rejected (repeatable; default: 参考).")
    parser.add_argument("--tries", type=int, default=2,
                        help="Attempts for a question and for an answer that fail the filters.")
    parser.add_argument("--temperature", type=float, default=None, help="Sampling temperature.")
    parser.add_argument("--question-max-tokens", type=int, default=None,
                        help="max_tokens of the question request.")
    parser.add_argument("--answer-max-tokens", type=int, default=None,
                        help="max_tokens of the answer request.")
    parser.add_argument("--question-prompt-file", type=Path, default=None,
                        help="Own question prompt ({language}, {text} are filled in).")
    parser.add_argument("--answer-prompt-file", type=Path, default=None,
                        help="Own answer prompt ({language}, {question}, {text}).")
    parser.add_argument("--source", default="unified",
                        help="`source` field written with every record.")
    parser.add_argument("--retry-dropped", action="store_true",
                        help="Try the passages recorded as dropped again.")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="Skip malformed input records instead of failing.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.add_argument("--min-kept-fraction", type=float, default=0.5,
                        help="Exit 1 unless at least this fraction of the input passages is in "
                             "the output at the end (default 0.5; 0 disables the check).")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        default="info",
                        help="Log level (default info). The HTTP clients' per-request lines "
                             "(httpx, openai) are shown only with debug.")


class UsageError(Exception):
    """Bad usage: one line on stderr, exit status 2."""


class WorkFailed(Exception):
    """The work could not be done: one line on stderr, exit status 1."""


def _error(message: str, code: int) -> int:
    message = " ".join(str(message).split())  # one line
    print(f"huatuo unify: error: {message}", file=sys.stderr)
    return code


def _read_prompt(path: Path | None, default: str, flag: str, **fields: str) -> str:
    if path is None:
        return default
    try:
        prompt = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or exc}") from None
    try:
        prompt.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        names = ", ".join("{" + name + "}" for name in fields)
        raise UsageError(f"{flag} {path}: bad placeholder {exc} (allowed: {names}; write "
                         "literal braces as {{ }})") from None
    return prompt


def _check_usage(args: argparse.Namespace) -> None:
    if not args.input.is_file():
        raise UsageError(f"--input {args.input}: no such file")
    if not args.api_key.strip():
        raise UsageError("--api-key is empty (is $OPENAI_API_KEY set?); export OPENAI_API_KEY="
                         "<key>, or leave --api-key out for a server without authentication "
                         "such as `huatuo serve`")
    if not 0 <= args.min_kept_fraction <= 1:
        raise UsageError(f"--min-kept-fraction must be between 0 and 1, got "
                         f"{args.min_kept_fraction}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be >= 1, got {args.concurrency}")


# Loggers of the HTTP stack (per-request INFO lines); "httpx2" is the openai SDK's copy.
HTTP_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "h11", "h2", "hpack")


class _HttpBelowWarning(logging.Filter):
    """Drops the HTTP stack's records below WARNING, whatever their logger's level."""

    def filter(self, record: logging.LogRecord) -> bool:
        top = record.name.split(".", 1)[0]
        return record.levelno >= logging.WARNING or top not in HTTP_LOGGERS


def _quiet_http_logs(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()),
                        format="%(levelname)s %(name)s: %(message)s")
    if level != "debug":
        for handler in logging.getLogger().handlers:
            handler.addFilter(_HttpBelowWarning())
        for name in HTTP_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


async def _preflight(client, args: argparse.Namespace) -> str:
    """Reach the endpoint once before the work: the model to use, or a one-line error."""
    import openai

    try:
        models = await client.models.list()
    except (openai.APIConnectionError, openai.APITimeoutError) as exc:
        raise WorkFailed(f"cannot reach {args.base_url} ({exc}); start the server (e.g. huatuo "
                         "serve --model <checkpoint>) or pass --base-url / set "
                         "OPENAI_BASE_URL") from None
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise UsageError(f"{args.base_url} refused the API key (HTTP {exc.status_code}); pass "
                         "--api-key <key> or set OPENAI_API_KEY") from None
    except openai.APIStatusError as exc:
        if args.model:  # some endpoints do not list models; the requests will tell
            return args.model
        raise WorkFailed(f"GET {args.base_url}/models: HTTP {exc.status_code} ({exc.message}); "
                         "pass --model, or check --base-url (it ends with /v1)") from None
    if args.model:
        return args.model
    if not models.data:
        raise UsageError(f"{args.base_url} lists no models; pass --model")
    return models.data[0].id


def print_summary(stats, args: argparse.Namespace) -> None:
    from adapters.training.unify import dropped_path

    print(f"\nunify summary: {stats.total} passages; {stats.kept} ({stats.kept_fraction:.0%}) "
          f"are in {args.output} (--min-kept-fraction {args.min_kept_fraction:g})")
    print(f"  this run: {stats.written} written, {stats.dropped} dropped, {stats.failed} failed"
          f"; {stats.already_done} already done (written or dropped by earlier runs)")
    if stats.drop_reasons:
        print(f"  dropped (recorded in {dropped_path(args.output)}; reruns skip them unless "
              "--retry-dropped):")
        _print_reasons(stats.drop_reasons)
    if stats.fail_reasons:
        print("  failed (not recorded; rerun the same command to retry them):")
        _print_reasons(stats.fail_reasons)


def _print_reasons(reasons, top: int = 8) -> None:
    for reason, count in reasons.most_common(top):
        print(f"    {count:>6}  {reason}")
    if len(reasons) > top:
        rest = sum(count for _, count in reasons.most_common()[top:])
        print(f"    {rest:>6}  ({len(reasons) - top} other reasons)")


def verdict(stats, args: argparse.Namespace) -> tuple[int, str]:
    """Exit status and its one-line error (empty when 0)."""
    if stats.fatal:
        return 2, (f"{args.base_url} refused the request ({stats.fatal}); check --api-key "
                   "(or OPENAI_API_KEY) and --model")
    if stats.context_exceeded:
        return 1, (f"{stats.context_exceeded} request(s) did not fit the server's context "
                   f"({stats.context_message}); restart the server with a larger "
                   "--max-model-len, or lower --question-chars/--answer-chars/"
                   "--question-max-tokens/--answer-max-tokens, then rerun the same command")
    if stats.kept_fraction < args.min_kept_fraction:
        return 1, (f"only {stats.kept} of {stats.total} passages ({stats.kept_fraction:.0%}) "
                   f"were kept, fewer than --min-kept-fraction {args.min_kept_fraction:g}; "
                   "see the reasons above")
    if stats.failed:
        return 1, (f"{stats.failed} passage(s) failed after {args.max_retries} retries; "
                   "rerun the same command to retry them")
    return 0, ""


async def _run(args: argparse.Namespace) -> int:
    import openai

    from adapters.training.readers import DataError, read_passages
    from adapters.training.unify import openai_complete, unify

    _check_usage(args)
    question_prompt = _read_prompt(args.question_prompt_file, QUESTION_PROMPT,
                                   "--question-prompt-file", language="", text="")
    answer_prompt = _read_prompt(args.answer_prompt_file, ANSWER_PROMPT, "--answer-prompt-file",
                                 language="", question="", text="")
    try:
        passages, skipped = read_passages(args.input, skip_invalid=args.skip_invalid)
    except DataError as exc:
        raise WorkFailed(f"bad input: {exc} (use --skip-invalid to skip such records)") \
            from None
    if skipped:
        print(f"skipped {skipped} malformed input record(s)")
    if not passages:
        raise UsageError(f"--input {args.input}: no passages")
    # Our own retry loop (with backoff and counting) replaces the SDK's.
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0,
                                timeout=args.timeout)
    try:
        model = await _preflight(client, args)
        options = UnifyOptions(
            model=model, concurrency=args.concurrency, max_retries=args.max_retries,
            backoff_s=args.backoff, question_chars=args.question_chars,
            answer_chars=args.answer_chars, max_question_chars=args.max_question_chars,
            banned_answer_words=tuple(args.banned_answer_word or ("参考",)),
            question_tries=args.tries, answer_tries=args.tries, language=args.language,
            question_prompt=question_prompt, answer_prompt=answer_prompt,
            temperature=args.temperature, question_max_tokens=args.question_max_tokens,
            answer_max_tokens=args.answer_max_tokens, source=args.source,
            retry_dropped=args.retry_dropped)
        stats = await unify(passages, args.output, openai_complete(client, options), options,
                            progress=not args.no_progress)
    finally:
        await client.close()
    print_summary(stats, args)
    for error in stats.errors:
        print(f"  e.g. {error}")
    code, message = verdict(stats, args)
    if code:
        return _error(message, code)
    return 0


def run(args: argparse.Namespace) -> int:
    _quiet_http_logs(args.log_level)
    try:
        return asyncio.run(_run(args))
    except UsageError as exc:
        return _error(str(exc), 2)
    except WorkFailed as exc:
        return _error(str(exc), 1)
    except OSError as exc:  # the output cannot be written
        return _error(f"{exc}", 1)
    except KeyboardInterrupt:
        print("huatuo unify: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
