"""Prometheus multiprocess mode for ``workers > 1``, prepared by the parent before workers start.

A scrape reaches one worker. With several workers, each one's counters alone would be a random
fraction of the whole, so every worker writes its metrics to memory-mapped files in one directory
(prometheus-client's multiprocess mode) and the worker that answers ``/metrics`` adds them all up.
prometheus-client chooses its mode when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``:
``prepare`` sets it, and empties the directory of a previous run, before any worker imports it.
This module does not import prometheus-client itself, so the serving command can call it first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from orgwarden.config import Settings
from orgwarden.errors import ConfigError

ENV: Final = "PROMETHEUS_MULTIPROC_DIR"


def directory(settings: Settings) -> Path:
    """``<data_dir>/prometheus/<port>``: one per instance on a host (two instances never share a port)."""
    return settings.data_dir / "prometheus" / str(settings.port)


def prepare(settings: Settings) -> None:
    """For ``workers > 1``: an empty metrics directory, named in ``PROMETHEUS_MULTIPROC_DIR`` for the
    workers to inherit. Call it in the parent process before starting the workers (with one worker it
    does nothing: the process's own metrics are the whole). ``ConfigError`` if it cannot be written."""
    if settings.workers <= 1 or not settings.metrics_enabled:
        return
    path = directory(settings)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in [*path.glob("*.db"), *path.glob("requests-*.json")]:  # the last run's: not this run's
            stale.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot prepare the metrics directory {path} for {settings.workers} workers: {exc.strerror}"
            " (set ORGWARDEN_DATA_DIR to a writable directory, or ORGWARDEN_METRICS_ENABLED=false)"
        ) from None
    os.environ[ENV] = str(path)


def active() -> Path | None:
    """The directory this process shares its metrics through, when ``prepare`` set one."""
    value = os.environ.get(ENV)
    return Path(value) if value else None
