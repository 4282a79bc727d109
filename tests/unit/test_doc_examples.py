"""The docs test's Markdown and shell parsing (tests/support/doc_examples.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.doc_examples import (
    MarkerError,
    check_huatuo_flags,
    check_make,
    check_venv_tools,
    commands,
    huatuo_argv,
    parse_marker,
    read_blocks,
)


def test_marker_options() -> None:
    marker = parse_marker(' cpu server exit=2 creates=a/b creates=c prints="x y" timeout=90 ')
    assert (marker.kind, marker.server, marker.exit_code, marker.creates, marker.prints,
            marker.timeout) == ("cpu", True, 2, ("a/b", "c"), ("x y",), 90.0)
    assert not parse_marker("gpu").runs


@pytest.mark.parametrize("body", ["", "laptop", "cpu exit=two", "cpu colour=red", "gpu server"])
def test_bad_markers_are_errors(body: str) -> None:
    with pytest.raises(MarkerError):
        parse_marker(body)


def test_blocks_carry_the_marker_of_the_line_before(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("text\n<!-- doc-test: slow -->\n```bash\nmake test\n```\n\n```sh\nls\n```\n")
    marked, unmarked = read_blocks(doc)
    assert (marked.language, marked.line, marked.marker.kind, marked.text) == (
        "bash", 3, "slow", "make test\n")
    assert unmarked.marker is None
    doc.write_text("<!-- doc-test: cpu -->\n\n```bash\nls\n```\n")
    with pytest.raises(MarkerError, match="right before a fence"):
        read_blocks(doc)


def test_commands_split_operators_continuations_heredocs_and_quotes() -> None:
    text = ("A=1 .venv/bin/huatuo serve --port 8000 &  # comment\n"
            "curl -s http://x -d '{\n  \"a\": 1\n}' | grep a\n"
            "cat > k.yaml <<'EOF'\nkind: X --not-a-flag\nEOF\n"
            "for t in a b; do\n  .venv/bin/huatuo eval mcq \\\n    --data $t\ndone\n")
    assert [c.words[:3] for c in commands(text)] == [
        [".venv/bin/huatuo", "serve", "--port"], ["curl", "-s", "http://x"], ["grep", "a"],
        ["cat", ">", "k.yaml"], [".venv/bin/huatuo", "eval", "mcq"]]


def _help(path: list[str]) -> str | None:
    return {("eval",): "usage: huatuo eval [-h] {mcq,compare}\n\n",
            ("eval", "mcq"): "usage: huatuo eval mcq [-h] --data DATA [--shots N]\n"}.get(
        tuple(path))


def test_flags_are_checked_against_the_subcommands_help() -> None:
    ok = huatuo_argv(commands(".venv/bin/huatuo eval mcq --data x --shots=3")[0])
    assert check_huatuo_flags(ok, _help) == []
    bad = huatuo_argv(commands(".venv/bin/huatuo eval mcq --data x --shot 3")[0])
    assert check_huatuo_flags(bad, _help) == [
        "`huatuo eval mcq` has no flag --shot (see `huatuo eval mcq --help`)"]
    assert check_huatuo_flags(["evaluate"], _help) == ["huatuo has no command 'evaluate'"]
    via_accelerate = commands("accelerate launch --config_file a.yaml -m huatuo eval mcq -x")[0]
    assert huatuo_argv(via_accelerate) == ["eval", "mcq", "-x"]


def test_make_targets_and_variables(tmp_path: Path) -> None:
    makefile = tmp_path / "Makefile"
    makefile.write_text("PORT ?= 8000\nHOST := x\n.PHONY: demo\ndemo: setup\n\techo\nsetup:\n")
    assert check_make(["make", "demo", "PORT=9000"], makefile) == []
    assert check_make(["make", "demos", "PROT=1"], makefile) == [
        "the Makefile has no target 'demos'", "the Makefile has no variable PROT"]


def test_venv_tools_are_called_by_path() -> None:
    assert check_venv_tools(commands("huatuo serve")[0])
    assert check_venv_tools(commands("python -m huatuo serve")[0])
    assert not check_venv_tools(commands(".venv/bin/huatuo serve")[0])
    assert not check_venv_tools(commands("python3 -m venv .venv")[0])
