"""`huatuo unify`: rewrite medical passages into question/answer pairs through an LLM endpoint.

    huatuo unify --input adapters/training/data/passages.jsonl --output unified.jsonl \\
        --base-url http://127.0.0.1:8000/v1 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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


async def _first_model(client) -> str:
    models = await client.models.list()
    if not models.data:
        raise RuntimeError("the endpoint lists no models; pass --model")
    return models.data[0].id


async def _run(args: argparse.Namespace) -> int:
    import openai

    from adapters.training.readers import DataError, read_passages
    from adapters.training.unify import openai_complete, unify

    try:
        passages, skipped = read_passages(args.input, skip_invalid=args.skip_invalid)
    except DataError as exc:
        print(f"huatuo unify: bad input: {exc}\n(use --skip-invalid to skip such records)")
        return 1
    if skipped:
        print(f"skipped {skipped} malformed input record(s)")
    # Our own retry loop (with backoff and counting) replaces the SDK's.
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0,
                                timeout=args.timeout)
    try:
        model = args.model or await _first_model(client)
        options = UnifyOptions(
            model=model, concurrency=args.concurrency, max_retries=args.max_retries,
            backoff_s=args.backoff, question_chars=args.question_chars,
            answer_chars=args.answer_chars, max_question_chars=args.max_question_chars,
            banned_answer_words=tuple(args.banned_answer_word or ("参考",)),
            question_tries=args.tries, answer_tries=args.tries, language=args.language,
            question_prompt=(args.question_prompt_file.read_text()
                             if args.question_prompt_file else QUESTION_PROMPT),
            answer_prompt=(args.answer_prompt_file.read_text()
                           if args.answer_prompt_file else ANSWER_PROMPT),
            temperature=args.temperature, question_max_tokens=args.question_max_tokens,
            answer_max_tokens=args.answer_max_tokens, source=args.source,
            retry_dropped=args.retry_dropped)
        stats = await unify(passages, args.output, openai_complete(client, options), options,
                            progress=not args.no_progress)
    finally:
        await client.close()
    print(f"unify: {stats.total} passages: {stats.already_done} already done, "
          f"{stats.written} written, {stats.dropped} dropped by the filters, "
          f"{stats.failed} failed -> {args.output}")
    for error in stats.errors:
        print(f"  failed: {error}")
    if stats.failed:
        print("Some requests failed after retries; rerun the same command to retry them.")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume")
        return 130
