"""The CTC reader: both shared sequences as SOURCE.md describes them; bad tables and gaps are
one-line errors naming the file and the line / frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from instseg.data.ctc import label_instances, read_sequence, read_tracks
from instseg.errors import DataError
from tests.conftest import data_path


def test_shared_sequences_match_their_description() -> None:
    sim = read_sequence(data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01")
    assert (len(sim), len(sim.tra), len(sim.seg), len(sim.tracks)) == (65, 65, 65, 95)
    assert sum(1 for t in sim.tracks.values() if t.parent) == 59
    first = sim.instances(0)
    assert first is not None and first.image_size == (690, 628)
    assert set(first.track_ids.tolist()) <= set(sim.tracks)  # type: ignore[union-attr]
    assert sim.image(0).shape == (690, 628, 3)  # LZW 16-bit TIFF read and stretched
    gowt = read_sequence(data_path("ctc_tracking") / "Fluo-N2DH-GOWT1" / "01")
    assert (len(gowt), len(gowt.tra), len(gowt.seg), len(gowt.tracks)) == (92, 92, 30, 27)
    assert gowt.instances(1, "SEG") is None and gowt.instances(33, "SEG") is not None


def test_label_instances_keeps_the_values_as_track_ids() -> None:
    label = np.zeros((5, 6), np.int64)
    label[1:3, 1:3], label[3:, 4:] = 7, 2
    inst = label_instances(label)
    assert inst.track_ids.tolist() == [2, 7]  # type: ignore[union-attr]
    assert inst.masks is not None and inst.masks.sum().item() == 4 + 4
    assert len(label_instances(np.zeros((4, 4), np.int64))) == 0


def test_bad_track_files_and_gaps_are_one_line(tmp_path: Path) -> None:
    table = tmp_path / "man_track.txt"
    table.write_text("1 0 4 0\n2 5 3 1\n")
    with pytest.raises(DataError, match=r"man_track.txt: line 2: expected"):
        read_tracks(table)
    table.write_text("1 0 4 0\n1 5 6 0\n")
    with pytest.raises(DataError, match="listed twice"):
        read_tracks(table)
    seq = tmp_path / "01"
    seq.mkdir()
    from PIL import Image

    for t in (0, 1, 3):
        Image.new("L", (8, 8)).save(seq / f"t{t:03d}.tif")
    with pytest.raises(DataError, match="t002.tif: frame missing"):
        read_sequence(seq)
