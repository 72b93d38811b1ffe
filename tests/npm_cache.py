"""``npm ci`` of a pinned package set into a cache shared by test runs (the test IdP, Claude Code).

The install lands in ``~/.cache/orgwarden-tests/<name>-<hash of package.json + package-lock.json>/``
once per lock file; concurrent runs (xdist workers, two checkouts) wait on a file lock, and a
half-done install (no ``.installed`` marker) is started over.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path


def npm_ci(source: Path, name: str, what: str, unavailable: Callable[[str], None], *, scripts: bool) -> Path:
    """The cache directory holding ``source``'s packages installed; ``unavailable`` (which skips or
    fails the test) is called when node/npm is missing or the install fails. ``scripts``: whether
    install scripts may run (Claude Code's postinstall puts its native binary in place)."""
    npm = shutil.which("npm")
    if shutil.which("node") is None or npm is None:
        unavailable(f"node/npm not found on PATH: cannot install {what}")
    assert npm is not None
    lock = (source / "package-lock.json").read_bytes() + (source / "package.json").read_bytes()
    key = hashlib.sha256(lock).hexdigest()[:16]
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orgwarden-tests"
    target = cache_root / f"{name}-{key}"
    done = target / ".installed"
    if done.exists():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with open(cache_root / f"{name}-{key}.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for file in ("package.json", "package-lock.json"):
                shutil.copy(source / file, target / file)
            command = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
            if not scripts:
                command.insert(2, "--ignore-scripts")
            try:
                result = subprocess.run(command, cwd=target, capture_output=True, text=True, timeout=600, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                unavailable(f"npm ci of {what} failed: {exc}")
                raise
            if result.returncode != 0:
                unavailable(f"npm ci of {what} failed:\n{result.stderr[-2000:]}")
            done.touch()
    return target
