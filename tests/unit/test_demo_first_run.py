"""`huatuo demo`'s first run: the training's output goes to a log file, two lines to the user."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.server_process import ROOT


def test_first_run_prints_two_lines_and_logs_the_training(tmp_path: Path) -> None:
    # A subprocess: the demo redirects file descriptors 1 and 2, which pytest captures too.
    script = textwrap.dedent("""
        import json, os, sys
        from pathlib import Path
        from huatuo import demo

        def fake_training(cache_dir):
            model = demo.trained_demo_dir(cache_dir)
            if (model / "config.json").exists():
                return model
            print("\\rprogress 1/200", end="")
            print("a training warning", file=sys.stderr)
            os.system("echo from a child process")
            model.mkdir(parents=True)
            (model / "config.json").write_text("{}")
            (model / "train_metrics.json").write_text(
                json.dumps({"seconds": 44.6, "tokens_per_s": 12345.6}))
            return model

        demo.ensure_trained_demo_model = fake_training
        print(demo._trained_model(Path(sys.argv[1]), "info"))
        print(demo._trained_model(Path(sys.argv[1]), "info"))  # cached: nothing printed
    """)
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", script, str(cache)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("First run: training the demo model"), lines
    assert lines[1].startswith("Trained in 45 s (12,346 tokens/s); loss curve: "), lines
    model = Path(lines[2])
    assert lines[2:] == [str(model), str(model)] and done.stderr == ""
    log = Path(lines[0].split("Training log: ")[1])
    assert log.exists() and log.parent == cache
    assert log.read_text().split() == ["progress", "1/200a", "training", "warning", "from", "a",
                                       "child", "process"]
    assert json.loads((model / "train_metrics.json").read_text())["seconds"] == 44.6
