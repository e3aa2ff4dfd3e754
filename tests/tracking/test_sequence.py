"""``instseg track``: CTC result folders and tracks.csv from label images or a model; bad
frames are reported and skipped, the others all written."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.data.ctc import read_tracks
from instseg.data.io import read_label_image
from instseg.data.synthetic_nuclei import make_nuclei_sample
from tests.conftest import data_path


def sim_masks(tmp_path: Path, n: int) -> Path:
    """The first ``n`` SEG label images of Fluo-N2DH-SIM+ in a folder of their own."""
    src = data_path("ctc_tracking") / "Fluo-N2DH-SIM+" / "01_GT" / "SEG"
    folder = tmp_path / "masks"
    folder.mkdir()
    for t in range(n):
        shutil.copy(src / f"man_seg{t:03d}.tif", folder / f"man_seg{t:03d}.tif")
    (folder / "notes.txt").write_text("not a frame")  # other files are not frames
    return folder


def test_track_masks_writes_a_consistent_ctc_result(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["track", "--masks", str(sim_masks(tmp_path, 8)), "--out", str(out)]) == 0
    tracks = read_tracks(out / "ctc" / "res_track.txt")
    for t in range(8):
        label = read_label_image(out / "ctc" / f"mask{t:03d}.tif")
        for tid in set(np.unique(label).tolist()) - {0}:
            assert tracks[tid].first <= t <= tracks[tid].last  # every labelled track is listed
    with (out / "tracks.csv").open() as f:
        rows = list(csv.DictReader(f))
    again = ["track", "--masks", str(tmp_path / "masks"), "--out", str(out)]
    assert main(again) == 1  # an earlier result is never mixed with a new one
    assert main([*again, "--overwrite"]) == 0
    assert {int(r["track_id"]) for r in rows} == set(tracks)
    assert all(int(r["frames_seen"]) >= 1 and float(r["mean_area"]) > 0 for r in rows)


def test_a_bad_frame_is_reported_and_the_others_written(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    masks = sim_masks(tmp_path, 4)
    (masks / "man_seg002.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert main(["track", "--masks", str(masks), "--out", str(out)]) == 1
    assert "skipped man_seg002.tif" in capsys.readouterr().err
    written = sorted(p.name for p in (out / "ctc").glob("mask*.tif"))
    assert written == [f"mask{t:03d}.tif" for t in range(4)]
    assert read_label_image(out / "ctc" / "mask002.tif").max() == 0  # empty, right size
    assert read_label_image(out / "ctc" / "mask003.tif").shape == (690, 628)


def test_track_frames_with_the_shipped_model(tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    image = make_nuclei_sample(seed=0, size=(160, 160)).image
    for t in range(3):  # the same nuclei drifting 2 px a frame
        Image.fromarray(np.roll(image, 2 * t, axis=1)).save(frames / f"t{t:03d}.png")
    out = tmp_path / "out"
    args = ["track", str(frames), "--model", "nuclei", "--out", str(out), "--score-threshold", "0.5"]
    assert main(args) == 0
    tracks = read_tracks(out / "ctc" / "res_track.txt")
    assert len(tracks) > 5 and sum(t.first == 0 and t.last == 2 for t in tracks.values()) > 5


def test_usage_errors(tmp_path: Path) -> None:
    assert main(["track", "--out", str(tmp_path)]) == 2
    assert main(["track", str(tmp_path), "--out", str(tmp_path)]) == 2  # SOURCE without --model


def test_ctc_segments_split_gaps_as_the_challenge_wants() -> None:
    """Track 5 missing at frame 2 continues under a new label whose parent is 5; its daughter
    7 (born at frame 4) points to the last segment; every label then spans its frames."""
    from instseg.data.ctc import Track
    from instseg.tracking.sequence import ctc_segments

    labels = [np.zeros((4, 4), np.uint16) for _ in range(5)]
    for t in (0, 1, 3):
        labels[t][0, 0] = 5
    labels[4][1, 1] = 7
    rows = ctc_segments(labels, [Track(5, 0, 3, 0), Track(7, 4, 4, 5)])
    assert rows == [Track(5, 0, 1, 0), Track(8, 3, 3, 5), Track(7, 4, 4, 8)]
    assert labels[3][0, 0] == 8 and labels[0][0, 0] == 5
    for row in rows:  # the challenge's validity rule
        assert all(row.id in labels[t] for t in range(row.first, row.last + 1))
