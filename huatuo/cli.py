"""The `huatuo` console script: one entry point, one module per subcommand.

Each subcommand module is imported only when it is used (so `huatuo bench` never pays for
importing vLLM) and exposes `add_arguments(parser)` and `run(args) -> int`.

Exit codes, for every subcommand: 0 done, 1 the work failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

EXIT_USAGE = 2


def _serve() -> ModuleType:
    from huatuo import serve

    return serve


def _demo() -> ModuleType:
    from huatuo import demo

    return demo


def _convert() -> ModuleType:
    from adapters.checkpoint import cli

    return cli


def _unify() -> ModuleType:
    from adapters.training import unify_cli

    return unify_cli


def _train() -> ModuleType:
    from adapters.training import cli

    return cli


def _eval() -> ModuleType:
    from evaluation import cli

    return cli


def _figures() -> ModuleType:
    from huatuo import refresh_figures

    return refresh_figures


def _bench() -> ModuleType:
    from loadtests import cli

    return cli


@dataclass(frozen=True)
class Command:
    load: Callable[[], ModuleType]
    description: str


COMMANDS: dict[str, Command] = {
    "serve": Command(_serve, "Serve a HuatuoGPT2 checkpoint over the OpenAI API (vLLM engine)."),
    "demo": Command(_demo, "Train the tiny demo model once, then serve it with examples."),
    "convert": Command(_convert, "Convert a published HuatuoGPT2 checkpoint (Baichuan2 / Yi) "
                       "to Llama layout."),
    "unify": Command(_unify, "Rewrite medical passages into question/answer pairs through an "
                     "LLM endpoint."),
    "train": Command(_train, "One-stage medical adaptation: priority sampling, packing, "
                     "training, export."),
    "bench": Command(_bench, "Load-test an OpenAI-compatible server; compare with vLLM's."),
    "eval": Command(_eval, "Medical evaluation through any OpenAI-compatible API."),
    "figures": Command(_figures, "Render the recorded benchmark results into README.md and "
                       "docs/."),
}


def _usage() -> str:
    lines = ["usage: huatuo <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {command.description}" for name, command in COMMANDS.items()]
    lines += ["", "Run 'huatuo <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_USAGE
    if argv[0] in ("-V", "--version"):
        from server import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"huatuo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return EXIT_USAGE
    command = COMMANDS[name]
    module = command.load()
    parser = argparse.ArgumentParser(prog=f"huatuo {name}", description=command.description)
    module.add_arguments(parser)
    try:
        return int(module.run(parser.parse_args(rest)) or 0)
    except KeyboardInterrupt:
        print(f"huatuo {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
