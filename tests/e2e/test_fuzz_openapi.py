"""Schemathesis fuzzes the live server from its own OpenAPI schema: no 5xx, ever.

A bounded run for the suite; for a longer one:
    .venv/bin/schemathesis run http://127.0.0.1:8000/openapi.json \
        --checks not_a_server_error --max-examples 2000 --generation-deterministic
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server_process import ServerProcess

pytestmark = pytest.mark.e2e
MAX_EXAMPLES = 40


def test_schemathesis_finds_no_server_errors(server: ServerProcess) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "run", f"{server.base_url}/openapi.json",
         "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
         "--generation-deterministic", "--request-timeout", "60", "--workers", "1"],
        capture_output=True, text=True, timeout=900,
    )
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    match = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert match and int(match[1]) > 0 and match[1] == match[2], result.stdout[-3000:]
