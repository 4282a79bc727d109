"""The docs' shell examples, read from README.md, docs/ and k8s/README.md, parsed and run.

Every shell fence carries a `<!-- doc-test: KIND ... -->` marker (docs/contributing.md). All
marked blocks are parsed: each `huatuo ...` flag must be in that subcommand's `--help`, each
`make` target and variable in the Makefile, and tools of the venv are called as `.venv/bin/X`.
`cpu` blocks also run, as written, with bash (`set -e -o pipefail`) in a copy of this tree (a
fresh clone after `make setup`: `.venv` linked, nothing on the PATH from it), each within its
timeout; `server` ones against one shared `huatuo serve` of the demo model, whose port replaces
the docs' `127.0.0.1:8000`. The marker's exit code, files and printed lines must match.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from huatuo import cli
from tests.support.doc_examples import (
    PARSE_ONLY_KINDS,
    SHELL_LANGUAGES,
    Block,
    activates_venv,
    check_huatuo_flags,
    check_make,
    check_venv_tools,
    commands,
    documents,
    huatuo_argv,
    read_blocks,
)
from tests.support.server_process import ROOT, ServerProcess, free_port

BLOCKS = [block for path in documents(ROOT) if path.exists() for block in read_blocks(path)]
MARKED = [b for b in BLOCKS if b.marker is not None]
SHELL = [b for b in MARKED if b.language in SHELL_LANGUAGES]
RUN = [b for b in MARKED if b.marker.runs]
DOCS_ADDRESS = re.compile(r"(?:127\.0\.0\.1|localhost):8000")


def _id(block: Block) -> str:
    return f"{block.path.relative_to(ROOT)}:{block.line}"


def test_every_shell_block_is_marked() -> None:
    unmarked = [_id(b) for b in BLOCKS if b.language in SHELL_LANGUAGES and b.marker is None]
    assert not unmarked, (
        "shell blocks without a `<!-- doc-test: KIND -->` marker on the line before the fence "
        f"(docs/contributing.md): {unmarked}")
    assert RUN, "no block is marked to run"


@cache
def _help(path: tuple[str, ...]) -> str | None:
    """`huatuo <path> --help`, in process (the same parser the console script builds)."""
    if path[0] not in cli.COMMANDS:
        return None
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main([*path, "--help"])
        except SystemExit:
            pass
    return out.getvalue()


@pytest.mark.parametrize("block", SHELL, ids=_id)
def test_block_parses(block: Block) -> None:
    """Flags, make targets and venv paths of every marked block, whatever its kind."""
    problems = []
    activated = False
    for command in commands(block.text):
        activated = activated or activates_venv(command)
        if not activated:
            problems += check_venv_tools(command)
        argv = huatuo_argv(command)
        if argv is not None:
            problems += check_huatuo_flags(argv, lambda p: _help(tuple(p)))
        if command.program == "make":
            problems += check_make(command.words, ROOT / "Makefile")
    kind = block.marker.kind
    assert not problems, f"{_id(block)} ({kind}: {PARSE_ONLY_KINDS.get(kind, 'runs')}): {problems}"


def _tree_files() -> list[str]:
    """The files of a fresh clone: tracked ones and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of this tree as a fresh clone after `make setup`: the venv is linked in."""
    root = tmp_path_factory.mktemp("clone") / "huatuo-serve"
    for name in _tree_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    (root / ".venv").symlink_to((ROOT / ".venv").resolve())
    return root


@pytest.fixture(scope="module")
def docs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """What `make demo` runs, without its training: `huatuo demo --untrained` serves the
    embedded demo model as `huatuo-demo` (fp32)."""
    cache_dir = tmp_path_factory.mktemp("cache")
    port = free_port()
    env = {**os.environ, "HUATUO_CACHE_DIR": str(cache_dir), "VLLM_CPU_KVCACHE_SPACE": "1"}
    proc = ServerProcess([sys.executable, "-m", "huatuo", "demo", "--untrained", "--host",
                          "127.0.0.1", "--port", str(port)], cache_dir / "demo.log", port=port,
                         env=env, name="huatuo demo").start_ready()
    yield proc
    proc.stop()


@pytest.mark.e2e
def test_demo_start_is_quiet_and_ends_with_the_examples(docs_server: ServerProcess) -> None:
    """`make demo`'s output before it serves: no progress-bar fragments, no INFO lines of
    vLLM's start-up, and the address, page and examples are the last lines."""
    log = docs_server.log_text()
    last = "Stop the server with Ctrl+C."
    assert last in log, f"no examples printed once ready:\n{log}"
    # Printed from the server's start-up hook: nothing comes between it and the first request.
    before_ready = log[:log.index(last) + len(last)]
    lines = before_ready.splitlines()
    assert "\r" not in before_ready, "progress bars written into a non-terminal"
    assert not [line for line in lines if re.search(r"\bINFO\b.*\[\w+\.py:\d+\]", line)], (
        f"vLLM INFO lines at --log-level info:\n{before_ready}")
    ready = next(i for i, line in enumerate(lines) if line.startswith("Ready: "))
    assert f"http://127.0.0.1:{docs_server.port}/" in "\n".join(lines[ready:]), before_ready
    print(f"huatuo demo --untrained printed {len(lines)} lines before it served")


def _fresh_shell_env(clone: Path, tmp: Path) -> dict[str, str]:
    """A new terminal's environment: no venv on the PATH, our caches in tmp."""
    venv_bins = {str(ROOT / ".venv" / "bin"), str((ROOT / ".venv").resolve() / "bin"),
                 str(Path(sys.executable).parent)}
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in venv_bins]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "OPENAI_BASE_URL",
                                                             "OPENAI_API_KEY")}
    # The venv's editable install points at the original tree; make it import the copy.
    return {**env, "PATH": os.pathsep.join(path), "PYTHONPATH": str(clone),
            "HUATUO_CACHE_DIR": str(tmp / "cache"), "VLLM_CPU_KVCACHE_SPACE": "1"}


@pytest.mark.e2e
@pytest.mark.parametrize("block", RUN, ids=_id)
def test_block_runs(block: Block, clone: Path, tmp_path: Path,
                    request: pytest.FixtureRequest) -> None:
    marker = block.marker
    env = _fresh_shell_env(clone, tmp_path)
    text = block.text
    if marker.server:
        server: ServerProcess = request.getfixturevalue("docs_server")
        text = DOCS_ADDRESS.sub(f"127.0.0.1:{server.port}", text)
        env["OPENAI_BASE_URL"] = f"{server.base_url}/v1"
    if block.language in SHELL_LANGUAGES:
        argv, stdin = ["bash", "-e", "-o", "pipefail", "-c", text], None
    elif block.language == "python":
        argv, stdin = [str(clone / ".venv" / "bin" / "python"), "-"], text
    else:
        pytest.fail(f"{_id(block)}: cannot run a ```{block.language} block")
    try:
        done = subprocess.run(argv, cwd=clone, env=env, input=stdin, capture_output=True,
                              text=True, timeout=marker.timeout, start_new_session=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{_id(block)} ran past its {marker.timeout:.0f} s (timeout=S in its marker)")
    output = done.stdout + done.stderr
    where = f"{_id(block)} (exit {done.returncode}); output:\n{output[-3000:]}"
    assert done.returncode == marker.exit_code, f"expected exit {marker.exit_code}: {where}"
    for name in marker.creates:
        assert (clone / name).exists(), f"did not create {name}: {where}"
    for line in marker.prints:
        assert line in output, f"did not print {line!r}: {where}"
