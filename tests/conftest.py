"""Shared fixtures: the read-only datasets in ../shared/data (or $INSTSEG_DATA)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("INSTSEG_DATA", REPO.parent / "shared" / "data"))


def data_path(name: str) -> Path:
    """Path of a shared dataset folder; skips the test with a clear reason when absent."""
    p = DATA / name
    if not p.exists():
        pytest.skip(f"shared dataset {name} not found at {p} (set INSTSEG_DATA to its parent)")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data folder not found at {DATA} (set INSTSEG_DATA)")
    return DATA


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a module (the CI box has 2 shared cores: no oversubscription);
    use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
