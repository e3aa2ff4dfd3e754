"""A Predictor feeding a tracker: its cut-off starts tracks, lower scores continue them, and
``--object-size auto`` rescales frames whose objects are larger than the model learnt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from instseg.cli.main import main
from instseg.data.ctc import read_tracks
from instseg.data.synthetic_nuclei import make_nuclei_sample
from instseg.inference import Predictor
from instseg.tracking.run import detector, track, tracker_for


@pytest.fixture(scope="module")
def nuclei() -> Predictor:
    return Predictor("nuclei", device="cpu")


def test_the_tracker_starts_at_the_models_cutoff_and_sees_lower_scores(nuclei: Predictor) -> None:
    assert nuclei.score_cutoff is not None
    tracker = tracker_for(nuclei)
    assert tracker.config.high_score == nuclei.score_cutoff and tracker.config.low_score <= 0.1
    image = make_nuclei_sample(seed=1, size=(160, 160)).image
    everything = detector(nuclei, 0.0)(image)
    assert everything.scores is not None and everything.scores.min() < nuclei.score_cutoff
    assert len(nuclei(image)) == int((everything.scores >= nuclei.score_cutoff).sum())
    frames = [np.roll(image, 2 * t, axis=1) for t in range(3)]
    tracked = list(track(frames, nuclei))
    assert all(t.track_ids is not None for t in tracked)
    assert len(set(tracked[0].track_ids.tolist()) & set(tracked[2].track_ids.tolist())) > 5  # type: ignore[union-attr]


def test_track_with_object_size_auto_on_larger_nuclei(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    image = Image.fromarray(make_nuclei_sample(seed=0, size=(120, 120)).image).resize((360, 360), Image.BILINEAR)
    for t in range(3):
        Image.fromarray(np.roll(np.asarray(image), 3 * t, axis=1)).save(frames / f"t{t:03d}.png")
    out = tmp_path / "out"
    args = ["track", str(frames), "--model", "nuclei", "--out", str(out), "--object-size", "auto", "--outputs", "ctc"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "tracks start at score" in err and "calibrated cut-off" in err
    scaled = [line for line in err.splitlines() if line.startswith("object size auto:")]
    assert scaled and "images scaled x0." in scaled[0], err  # 3x larger nuclei: shrunk
    tracks = read_tracks(out / "ctc" / "res_track.txt")
    assert sum(t.first == 0 and t.last == 2 for t in tracks.values()) > 5


def test_bad_object_size_is_a_usage_error(tmp_path: Path) -> None:
    args = ["track", str(tmp_path), "--model", "nuclei", "--out", str(tmp_path / "o"), "--object-size", "-3"]
    assert main(args) == 2
