"""The real Claude Code CLI for the offline agentic test, installed by the tests themselves.

``npm ci`` of ``tests/claude_code/package-lock.json`` (``@anthropic-ai/claude-code``, pinned; a native
binary shipped through its platform ``optionalDependencies`` and put in place by its postinstall
script) into ``~/.cache/orgwarden-tests/claude-code-<hash of the lock file>/``, once per lock file;
concurrent runs wait on a file lock. If node/npm is missing or the install fails (npm cannot reach
the registry), the test is skipped with a loud message; with
``ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1`` (set by ``.ci/run``) it fails instead.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent
REQUIRE = os.environ.get("ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE") == "1"


def _unavailable(message: str) -> None:
    if REQUIRE:
        pytest.fail(f"{message} (ORGWARDEN_TEST_REQUIRE_CLAUDE_CODE=1: the Claude Code CLI is required)")
    sys.stderr.write(f"\n\n*** {message}; the Claude Code test will be SKIPPED ***\n\n")
    pytest.skip(message)


def _install() -> Path:
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        _unavailable("node/npm not found on PATH: cannot install the Claude Code CLI (npm @anthropic-ai/claude-code)")
    assert npm is not None
    lock = (SOURCE / "package-lock.json").read_bytes() + (SOURCE / "package.json").read_bytes()
    key = hashlib.sha256(lock).hexdigest()[:16]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orgwarden-tests"
    target = cache_root / f"claude-code-{key}"
    done = target / ".installed"
    if not done.exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        with open(cache_root / f"claude-code-{key}.lock", "w") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            if not done.exists():
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for name in ("package.json", "package-lock.json"):
                    shutil.copy(SOURCE / name, target / name)
                try:  # scripts run: the postinstall copies the platform's binary over bin/claude.exe
                    result = subprocess.run(
                        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                        cwd=target,
                        capture_output=True,
                        text=True,
                        timeout=600,
                        check=False,
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    _unavailable(f"npm ci of the Claude Code CLI failed: {exc}")
                if result.returncode != 0:
                    _unavailable(f"npm ci of the Claude Code CLI failed:\n{result.stderr[-2000:]}")
                done.touch()
    return target / "node_modules" / ".bin" / "claude"


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
