"""The real Claude Code CLI for the offline agentic test, installed by the tests themselves.

``npm ci`` of ``tests/claude_code/package-lock.json`` (``@anthropic-ai/claude-code``, pinned; a native
binary shipped through its platform ``optionalDependencies`` and put in place by its postinstall
script) into ``~/.cache/orgwarden-tests/claude-code-<hash of the lock file>/``, once per lock file;
concurrent runs wait on a file lock. If node/npm is missing or the install fails (npm cannot reach
the registry), the test is skipped with a loud message; with
``ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.npm_cache import npm_ci

SOURCE = Path(__file__).resolve().parent
REQUIRE = os.environ.get("ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE") == "1"


def _unavailable(message: str) -> None:
    if REQUIRE:
        pytest.fail(f"{message} (ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1: the Claude Code CLI is required)")
    sys.stderr.write(f"\n\n*** {message}; the Claude Code test will be SKIPPED ***\n\n")
    pytest.skip(message)


def _install() -> Path:
    what = "the Claude Code CLI (npm @anthropic-ai/claude-code)"
    return npm_ci(SOURCE, "claude-code", what, _unavailable, scripts=True) / "node_modules" / ".bin" / "claude"


@pytest.fixture(scope="session")
def claude_code() -> Path:
    """The ``claude`` executable of the pinned version, checked to run."""
    binary = _install()
    try:
        version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError as exc:
        pytest.fail(f"the installed Claude Code CLI does not run: {exc}")
    assert version.returncode == 0, f"claude --version failed:\n{version.stdout}\n{version.stderr}"
    return binary
