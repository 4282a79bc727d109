"""The shell examples of README.md, docs/ and k8s/README.md, read from the Markdown itself.

Every shell fence (```bash, ```sh, ```shell, ```console, ```zsh) must be preceded by a marker
line (the syntax is documented in docs/contributing.md):

    <!-- doc-test: KIND [server] [exit=N] [creates=PATH]... [prints=TEXT]... [timeout=S] -->

KIND `cpu` runs the block (tests/integration/test_docs_examples.py); every other kind (`slow`,
`serve`, `gpu`, `docker`, `cluster`, `external`) says why it is only parsed. A ```python fence
may carry a `cpu` marker too; it then runs with the venv's Python.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SHELL_LANGUAGES = frozenset({"bash", "sh", "shell", "console", "zsh"})
RUN_KINDS = frozenset({"cpu"})
# Kinds that are parsed (flags checked against --help) but not run, each with its reason.
PARSE_ONLY_KINDS = {
    "slow": "runs on a CPU but takes minutes (full training, the whole test suite)",
    "serve": "starts a server that runs until stopped",
    "gpu": "needs NVIDIA GPUs",
    "docker": "needs Docker",
    "cluster": "needs a Kubernetes cluster, or kubectl on the PATH",
    "external": "needs something from outside: downloaded weights or data, another API",
}
KINDS = RUN_KINDS | PARSE_ONLY_KINDS.keys()

# Fences and markers may be indented (a block inside a list item); the body loses the indent.
_MARKER = re.compile(r"^\s*<!--\s*doc-test:(?P<body>.*?)-->\s*$")
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
# Tools installed into .venv by `make setup`: the docs call them as `.venv/bin/NAME`, so they
# work from a fresh clone whether or not the venv is activated.
VENV_TOOLS = frozenset({"huatuo", "pytest", "pip", "pip3", "accelerate", "torchrun", "lm_eval",
                        "ruff", "lint-imports", "schemathesis", "deepspeed"})


class MarkerError(ValueError):
    """A doc-test marker that cannot be understood."""


@dataclass(frozen=True)
class Marker:
    kind: str
    server: bool = False
    exit_code: int = 0
    creates: tuple[str, ...] = ()
    prints: tuple[str, ...] = ()
    timeout: float = 60.0

    @property
    def runs(self) -> bool:
        return self.kind in RUN_KINDS


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    marker: Marker | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def parse_marker(body: str) -> Marker:
    words = shlex.split(body)
    if not words or words[0] not in KINDS:
        raise MarkerError(f"doc-test marker must start with one of {sorted(KINDS)}: {body!r}")
    kind, options = words[0], words[1:]
    values: dict = {"creates": [], "prints": []}
    for option in options:
        name, _, value = option.partition("=")
        if option == "server":
            values["server"] = True
        elif name == "exit" and value.isdigit():
            values["exit_code"] = int(value)
        elif name in ("creates", "prints") and value:
            values[name].append(value)
        elif name == "timeout" and value.replace(".", "", 1).isdigit():
            values["timeout"] = float(value)
        else:
            raise MarkerError(f"unknown doc-test option {option!r} (server, exit=N, creates=PATH, "
                              "prints=TEXT, timeout=S)")
    if kind not in RUN_KINDS and options:
        raise MarkerError(f"doc-test kind {kind!r} is parsed only: options mean nothing there")
    return Marker(kind=kind, creates=tuple(values.pop("creates")),
                  prints=tuple(values.pop("prints")), **values)


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of one Markdown file, with the marker on the line before it, if any."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            if _MARKER.match(lines[i]) and not (i + 1 < len(lines) and _FENCE.match(lines[i + 1])):
                raise MarkerError(f"{path}:{i + 1}: a doc-test marker must be the line right "
                                  "before a fence")
            i += 1
            continue
        fence, indent = match["fence"], match["indent"]
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].lstrip().startswith(fence):
            body.append(lines[i].removeprefix(indent))
            i += 1
        i += 1  # the closing fence
        marker_match = _MARKER.match(lines[start - 1]) if start else None
        marker = None
        if marker_match:
            try:
                marker = parse_marker(marker_match["body"])
            except MarkerError as exc:
                raise MarkerError(f"{path}:{start}: {exc}") from None
        blocks.append(Block(path, start + 1, match["lang"].lower(), "\n".join(body) + "\n",
                            marker))
    return blocks


def documents(root: Path) -> list[Path]:
    """README.md, every docs/*.md and k8s/README.md."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md")), root / "k8s" / "README.md"]


# --- shell parsing, for the flag checks --------------------------------------------------------

_HEREDOC = re.compile(r"<<-?\s*'?\"?(?P<tag>\w+)'?\"?")
_SEPARATORS = frozenset({"&&", "||", "|", ";", "&", "(", ")", ";;", "|&"})
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Command:
    words: list[str] = field(default_factory=list)

    @property
    def program(self) -> str:
        return self.words[0] if self.words else ""


def _without_heredocs(text: str) -> str:
    """Drop here-document bodies (YAML and the like are not shell)."""
    out: list[str] = []
    terminator: str | None = None
    for line in text.splitlines():
        if terminator is not None:
            if line.strip() == terminator:
                terminator = None
            continue
        out.append(line)
        match = _HEREDOC.search(line)
        if match:
            terminator = match["tag"]
    return "\n".join(out)


def commands(text: str) -> list[Command]:
    """The simple commands of a shell block: one source line (continuations and multi-line
    quoted strings joined) split at operators, without leading VAR=value assignments and shell
    keywords."""
    result: list[Command] = []
    pending = ""
    for line in _without_heredocs(text).replace("\\\n", " ").splitlines():
        pending = f"{pending}\n{line}" if pending else line
        try:
            tokens = _tokens(pending)
        except ValueError:  # an open quote: the string goes on on the next line
            continue
        pending = ""
        current = Command()
        for token in tokens:
            if token in _SEPARATORS:
                result.append(current)
                current = Command()
            elif current.words or not (_ASSIGNMENT.match(token) or token in _KEYWORDS):
                current.words.append(token)
        result.append(current)
    return [c for c in result if c.words and c.words[0] != "for"]


_KEYWORDS = frozenset({"do", "done", "then", "fi", "if", "while", "{", "}", "!"})


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


# --- the checks every marked block gets, run or not ---------------------------------------------

_CHOICES = re.compile(r"\{([\w,-]+)\}")
_FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w.-]*)")


def huatuo_argv(command: Command) -> list[str] | None:
    """The words after `huatuo` when this command runs the huatuo CLI (directly, with
    `python -m huatuo`, or through `accelerate launch ... -m huatuo`), else None."""
    words = command.words
    if Path(words[0]).name == "huatuo":
        return words[1:]
    for i, word in enumerate(words[:-1]):
        if word == "-m" and words[i + 1] == "huatuo":
            return words[i + 2:]
    return None


def check_huatuo_flags(argv: list[str], help_text: Callable[[list[str]], str | None]
                       ) -> list[str]:
    """Problems with one `huatuo ...` invocation: an unknown subcommand or a flag that its
    `--help` does not list. `help_text(path)` returns `huatuo <path> --help`'s output."""
    if not argv or argv[0].startswith("-"):
        return []
    path = [argv[0]]
    text = help_text(path)
    if text is None:
        return [f"huatuo has no command {argv[0]!r}"]
    rest = argv[1:]
    while rest and not rest[0].startswith("-"):
        usage = text.split("\n\n", 1)[0]
        choices = {c for group in _CHOICES.findall(usage) for c in group.split(",")}
        if rest[0] not in choices:
            break
        path.append(rest.pop(0))
        text = help_text(path)
    known = set(_FLAG.findall(text))
    problems = []
    for word in rest:
        if word.startswith("-") and word != "-" and not word.startswith("--="):
            flag = word.split("=", 1)[0]
            if flag not in known:
                problems.append(f"`huatuo {' '.join(path)}` has no flag {flag} "
                                f"(see `huatuo {' '.join(path)} --help`)")
    return problems


def make_targets_and_variables(makefile: Path) -> tuple[set[str], set[str]]:
    text = makefile.read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", text, re.MULTILINE))
    variables = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*[?:]?=", text, re.MULTILINE))
    return targets, variables


def check_make(words: list[str], makefile: Path) -> list[str]:
    targets, variables = make_targets_and_variables(makefile)
    problems = []
    for word in words[1:]:
        if _ASSIGNMENT.match(word):
            name = word.split("=", 1)[0]
            if name not in variables:
                problems.append(f"the Makefile has no variable {name}")
        elif not word.startswith("-") and word not in targets:
            problems.append(f"the Makefile has no target {word!r}")
    return problems


def activates_venv(command: Command) -> bool:
    return command.program in ("source", ".") and command.words[1:] == [".venv/bin/activate"]


def check_venv_tools(command: Command) -> list[str]:
    """Tools that `make setup` installs into .venv must be called as .venv/bin/NAME (unless the
    block activated the venv first): a fresh shell does not have them on its PATH."""
    program = command.program
    if program in VENV_TOOLS:
        return [f"`{program}` is not on a fresh clone's PATH: write `.venv/bin/{program}`"]
    if program in ("python", "python3") and command.words[1:3] != ["-m", "venv"]:
        return [f"`{program}` is the system Python: write `.venv/bin/python`"]
    return []
