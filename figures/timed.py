"""Time a command and record how long it took, for figures such as the test suite's duration.

    python3 -m figures.timed make_test --summary '[0-9]+ passed' -- make test

Runs the command (its output passes through), then records `docs/results/<name>.json` with the
wall time (inline figures `seconds` and `minutes`) and, with `--summary`, the last output line
matching the pattern (inline `summary`, e.g. pytest's "602 passed"). Stdlib only: it runs before
the venv exists. Exits with the command's status; a failed command records nothing.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time

from figures.record import write_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m figures.timed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="result name (docs/results/NAME.json)")
    parser.add_argument("--summary", metavar="REGEX",
                        help="record the last output line's match of this pattern")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the command to time after --")
    split = argv.index("--")
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    pattern = re.compile(args.summary) if args.summary else None
    summary = ""
    start = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, errors="replace") as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if pattern and (found := pattern.search(line)):
                summary = found.group(0).strip()
    seconds = time.monotonic() - start
    if process.returncode != 0:
        print(f"figures.timed: {shlex.join(command)} exited {process.returncode}; "
              "nothing recorded", file=sys.stderr)
        return process.returncode
    inline = {"seconds": f"{seconds:.0f}", "minutes": f"{seconds / 60:.0f}"}
    if summary:
        inline["summary"] = summary
    text = f"`{shlex.join(command)}`: {seconds / 60:.1f} minutes" + (f" ({summary})" if summary
                                                                     else "")
    path = write_result(args.name, text, inline=inline, data={"seconds": round(seconds, 1)},
                        command=shlex.join(command))
    print(f"figures.timed: {seconds:.0f} s, recorded in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
