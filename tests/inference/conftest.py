"""Inference fixtures: one local Ray cluster for the whole test session (when a test asks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A local Ray on 2 CPUs (no dashboard), started once and shut down at the end."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'instseg[ray]')")
    pytest.importorskip("ray.data", reason="Ray Data is not installed")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
