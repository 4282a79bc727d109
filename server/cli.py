"""The `huatuo` console script: one entry point, one module per subcommand.

Subcommand modules are imported only when used, so `huatuo bench` never pays for importing vLLM.
Each module exposes `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("server.main", "Serve a HuatuoGPT2 checkpoint over the OpenAI API (vLLM engine)."),
    "convert": ("adapters.checkpoint.cli",
                "Convert a published HuatuoGPT2 checkpoint (Baichuan2 / Yi) to Llama layout."),
    "unify": ("adapters.training.unify_cli",
              "Rewrite medical passages into question/answer pairs through an LLM endpoint."),
    "train": ("adapters.training.cli",
              "One-stage medical adaptation: priority sampling, packing, training, export."),
    "bench": ("loadtests.cli", "Load-test an OpenAI-compatible server; compare with vLLM's."),
    "eval": ("evaluation.cli", "Medical evaluation through any OpenAI-compatible API."),
}


def _usage() -> str:
    lines = ["usage: huatuo <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "Run 'huatuo <command> --help' for the options of a command."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from server import __version__

        print(__version__)
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"huatuo: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, description = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"huatuo {name}", description=description)
    module.add_arguments(parser)
    return int(module.run(parser.parse_args(rest)) or 0)


if __name__ == "__main__":
    sys.exit(main())
