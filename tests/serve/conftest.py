"""Fixtures of the server tests: a DSB image and the shipped model behind one Predictor."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import data_path

#: a 256 x 256 fluorescence image of the DSB subset with 20-odd nuclei
DSB_ID = "00071198d059ba7f5914a526d124d28e6d010c92466da21d4a04cd5413362552"


@pytest.fixture(scope="session")
def dsb_image() -> Path:
    root = data_path("dsb2018_stage1_subset")
    return root / "stage1_train" / DSB_ID / "images" / f"{DSB_ID}.png"


@pytest.fixture(scope="session")
def nuclei_predictor():  # type: ignore[no-untyped-def]
    from instseg.inference import Predictor

    return Predictor("nuclei")
