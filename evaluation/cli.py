"""`huatuo eval`: medical evaluation of any OpenAI-compatible server.

    huatuo eval mcq --base-url http://127.0.0.1:8000 --data evaluation/data/sample_cmb.jsonl \\
        --output-dir runs/cmb
    huatuo eval compare runs/a runs/b
    huatuo eval judge pairwise --pairs evaluation/data/sample_pairwise.jsonl \\
        --judge-base-url https://api.openai.com --judge-model gpt-4o --output-dir runs/pw
    huatuo eval judge rubric --data evaluation/data/sample_rubric.jsonl \\
        --base-url http://127.0.0.1:8000 --judge-base-url ... --output-dir runs/hb

Exit codes: 0 every question answered; 1 some could not be (after retries) or the server is
not reachable; 2 bad usage (missing file, unknown format, refused key); 130 interrupted
(answers so far are cached: rerun the same command to resume). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from evaluation import data as data_mod
from evaluation import prompts
from evaluation.interrupt import run_interruptibly

DEFAULT_BASE_URL = "http://127.0.0.1:8000"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Every option shows its default, unless its help already explains it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _Defaults(prog, max_help_position=32)


def _add_server(p: argparse.ArgumentParser, default_url: str | None = DEFAULT_BASE_URL,
                what: str = "the server under test") -> None:
    p.add_argument("--base-url", default=default_url,
                   help=f"Root URL of {what} (a trailing /v1 is accepted).")
    p.add_argument("--api-key", default=None,
                   help=f"API key of {what} (default: env OPENAI_API_KEY, else none).")
    p.add_argument("--model", default=None,
                   help=f"Model name at {what} (default: the first of /v1/models).")


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", type=Path, required=True,
                   help="Where results, predictions and the answer cache go (a rerun with the "
                        "same directory resumes).")
    p.add_argument("--concurrency", type=_positive_int, default=8,
                   help="Requests in flight at once.")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="Only the first N questions/rows.")
    p.add_argument("--seed", type=int, default=0,
                   help="Seed sent with every request (and of the bootstrap).")
    p.add_argument("--max-retries", type=int, default=6,
                   help="Retries of a request after 429/5xx/connection errors (exponential "
                        "backoff, honouring Retry-After).")
    p.add_argument("--timeout", type=float, default=600.0, help="Seconds per request.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = _formatter
    sub = parser.add_subparsers(dest="eval_command", metavar="{mcq,compare,judge}")
    sub.required = True

    mcq = sub.add_parser("mcq", formatter_class=_formatter,
                         help="Multiple-choice accuracy (CMB, CMExam, MedQA, upstream eval_qa).",
                         description="Multiple-choice accuracy through an OpenAI-compatible "
                                     "API, with answer extraction or log-likelihood scoring.")
    _add_server(mcq)
    mcq.add_argument("--data", type=Path, required=True, help="Question file.")
    mcq.add_argument("--format", dest="fmt", choices=data_mod.FORMATS, default=None,
                     help="Data format (default: detected from the file).")
    mcq.add_argument("--profile", choices=prompts.PROFILES, default="huatuo",
                     help="Prompt: huatuo (upstream's eval prompt), cmb (CMB answer-only, "
                          "optional few-shot), en (MedQA style).")
    mcq.add_argument("--mode", choices=("generate", "loglik"), default="generate",
                     help="generate: chat completion + answer extraction; loglik: option "
                          "letters scored by log-probability through /v1/completions "
                          "(multi-answer questions are skipped).")
    mcq.add_argument("--dev", type=Path, default=None,
                     help="Few-shot examples (e.g. CMB's dev file), sent as earlier turns.")
    mcq.add_argument("--shots", type=int, default=5, help="Few-shot examples per question "
                                                          "(with --dev).")
    g = mcq.add_argument_group("sampling (generate mode)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 is greedy.")
    g.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling.")
    g.add_argument("--max-tokens", type=_positive_int, default=512,
                   help="Room for an explanation before the answer.")
    _add_run_options(mcq)

    cmp_ = sub.add_parser("compare", formatter_class=_formatter,
                          help="Paired comparison of two mcq runs (McNemar exact test).",
                          description="Accuracy difference per group and an exact McNemar test "
                                      "between two 'huatuo eval mcq' output dirs.")
    cmp_.add_argument("run_a", type=Path, metavar="RUN_A", help="Output dir of the first run.")
    cmp_.add_argument("run_b", type=Path, metavar="RUN_B", help="Output dir of the second run.")
    cmp_.add_argument("--alpha", type=float, default=0.05, help="Significance level.")
    cmp_.add_argument("--output", type=Path, default=None,
                      help="Also write the Markdown table here (and JSON next to it).")

    judge = sub.add_parser("judge", formatter_class=_formatter,
                           help="Open-ended quality graded by an LLM judge.",
                           description="Pairwise (win/tie/loss, both orders) or HealthBench-"
                                       "style rubric grading by an OpenAI-compatible judge.")
    jsub = judge.add_subparsers(dest="judge_command", metavar="{pairwise,rubric}")
    jsub.required = True
    pw = jsub.add_parser("pairwise", formatter_class=_formatter,
                         help="Answer A vs answer B, judged in both orders.")
    pw.add_argument("--pairs", type=Path, default=None,
                    help="JSONL of {id, question, answer_a, answer_b}.")
    pw.add_argument("--a", type=Path, default=None,
                    help="Or: answers of model A ({id, question, answer|model_output}).")
    pw.add_argument("--b", type=Path, default=None, help="... and of model B.")
    rb = jsub.add_parser("rubric", formatter_class=_formatter,
                         help="HealthBench rows: {prompt: messages, rubrics: [...]}.")
    rb.add_argument("--data", type=Path, required=True, help="Rubric rows (JSONL).")
    _add_server(rb, default_url=None, what="the model under test (when rows carry no answer)")
    rb.add_argument("--max-tokens", type=_positive_int, default=1024,
                    help="max_tokens of the model under test.")
    rb.add_argument("--temperature", type=float, default=0.0,
                    help="Temperature of the model under test.")
    for p in (pw, rb):
        p.add_argument("--judge-base-url", required=True, help="Root URL of the judge server.")
        p.add_argument("--judge-api-key", default=None,
                       help="API key of the judge (default: env OPENAI_API_KEY, else none).")
        p.add_argument("--judge-model", default=None,
                       help="Judge model (default: the first of the judge's /v1/models).")
        p.add_argument("--judge-retries", type=_positive_int, default=3,
                       help="Tries per judgement when the judge's answer cannot be parsed.")
        p.add_argument("--judge-max-tokens", type=_positive_int, default=1024,
                       help="max_tokens of each judge answer.")
        _add_run_options(p)


def _error(message: str) -> None:
    print(f"huatuo eval: error: {message}", file=sys.stderr)


def _key(value: str | None) -> str | None:
    return value if value is not None else (os.environ.get("OPENAI_API_KEY") or None)


def run(args: argparse.Namespace) -> int:
    from evaluation.client import Unreachable, UsageError
    from evaluation.compare import CompareError
    from evaluation.judge import JudgeDataError

    try:
        if args.eval_command == "mcq":
            return _run_mcq(args)
        if args.eval_command == "compare":
            return _run_compare(args)
        return _run_judge(args)
    except KeyboardInterrupt:
        _error("interrupted; every answer received so far is cached in the output dir: rerun "
               "the same command to resume")
        return 130
    except Unreachable as exc:
        _error(str(exc))
        return 1
    except (UsageError, data_mod.DataError, CompareError, JudgeDataError) as exc:
        _error(str(exc))
        return 2
    except OSError as exc:
        _error(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
        return 2


def _run_mcq(args: argparse.Namespace) -> int:
    from evaluation.mcq import McqConfig, run_async, summary_line

    if args.dev is not None and not args.dev.is_file():
        raise data_mod.DataError(f"dev file not found: {args.dev}")
    cfg = McqConfig(
        base_url=args.base_url, data=args.data, output_dir=args.output_dir,
        api_key=_key(args.api_key), model=args.model, fmt=args.fmt, profile=args.profile,
        mode=args.mode, dev=args.dev, shots=args.shots, concurrency=args.concurrency,
        limit=args.limit, seed=args.seed, temperature=args.temperature, top_p=args.top_p,
        max_tokens=args.max_tokens, max_retries=args.max_retries, timeout=args.timeout)
    outcome = run_interruptibly(run_async(cfg))
    print(summary_line(outcome.results))
    print(f"results: {args.output_dir / 'results.json'}  report: "
          f"{args.output_dir / 'report.md'}")
    if outcome.unanswered:
        first = next(iter(outcome.errors.values()), "")
        _error(f"{outcome.unanswered} question(s) could not be answered (first error: "
               f"{first[:300]}); rerun the same command to retry only those")
        return 1
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    import json

    from evaluation.compare import compare

    md, data = compare(args.run_a, args.run_b, args.alpha)
    print(md)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(md, encoding="utf-8")
        args.output.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    return 0


def _run_judge(args: argparse.Namespace) -> int:
    from evaluation import judge

    cfg = judge.JudgeConfig(
        judge_base_url=args.judge_base_url, judge_model=args.judge_model,
        judge_api_key=_key(args.judge_api_key), output_dir=args.output_dir,
        judge_retries=args.judge_retries, concurrency=args.concurrency,
        max_retries=args.max_retries, seed=args.seed, limit=args.limit,
        judge_max_tokens=args.judge_max_tokens, timeout=args.timeout)
    if args.judge_command == "pairwise":
        items = judge.load_pairs(args.pairs, args.a, args.b)
        results = run_interruptibly(judge.run_pairwise(cfg, items))
        print(f"win {results['win']} / tie {results['tie']} / loss {results['loss']} "
              f"(n={results['n']}, failures {results['failures']})")
    else:
        cfg.base_url, cfg.api_key, cfg.model = args.base_url, _key(args.api_key), args.model
        cfg.max_tokens, cfg.temperature = args.max_tokens, args.temperature
        rows = judge.load_rubric_rows(args.data)
        results = run_interruptibly(judge.run_rubric(cfg, rows))
        score = "n/a" if results["score"] is None else f"{100 * results['score']:.1f}%"
        ci = results["ci95"]
        print(f"rubric score {score}" + (f" (95% CI {100 * ci[0]:.1f}-{100 * ci[1]:.1f})"
                                         if ci else "")
              + f", n={results['n']}, failures {results['failures']}")
    print(f"results: {args.output_dir / 'results.json'}")
    return 1 if results["failures"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="huatuo eval", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
