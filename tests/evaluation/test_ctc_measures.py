"""SEG equals py-ctcmetrics' on the shared CTC sequences, for the ground truth itself and for
perturbed results (objects dropped, shrunk, grown, merged, shifted)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from instseg.data.ctc import read_sequence
from instseg.data.io import read_label_image
from instseg.evaluation.ctc import seg_jaccards, seg_measure
from tests.conftest import data_path


def perturb(label: np.ndarray, seed: int) -> np.ndarray:
    """Drop, erode, dilate, merge and shift some objects of a label image."""
    rng = np.random.default_rng(seed)
    out = label.copy()
    ids = [i for i in np.unique(label).tolist() if i]
    for i in ids:
        action = rng.integers(0, 6)
        m = label == i
        if action == 0:
            out[m] = 0
        elif action == 1:
            out[m & ~ndimage.binary_erosion(m, iterations=int(rng.integers(1, 6)))] = 0
        elif action == 2:
            out[ndimage.binary_dilation(m, iterations=3) & (out == 0)] = i
        elif action == 3 and len(ids) > 1:
            out[m] = ids[0]  # merged into the first object
        elif action == 4:
            out[m] = 0
            out[np.roll(m, int(rng.integers(5, 15)), axis=1) & (out == 0)] = i
    return out


@pytest.mark.parametrize("sequence", ["Fluo-N2DH-SIM+", "Fluo-N2DH-GOWT1"])
def test_seg_equals_py_ctcmetrics(tmp_path: Path, sequence: str) -> None:
    pytest.importorskip("ctc_metrics", reason="py-ctcmetrics is a dev dependency")
    import tifffile
    from ctc_metrics.metrics import seg as ref_seg
    from ctc_metrics.utils.representations import match

    seq = read_sequence(data_path("ctc_tracking") / sequence / "01")
    frames = sorted(seq.seg)[:12]
    for seed in (0, 1):
        pairs, ref_ids, ref_ious = [], [], []
        for t in frames:
            reference = read_label_image(seq.seg[t]).astype(np.uint16)
            result = perturb(reference, seed * 1000 + t).astype(np.uint16)
            pairs.append((reference, result))
            rp, cp = tmp_path / f"ref{t}.tif", tmp_path / f"res{t}.tif"
            tifffile.imwrite(rp, reference)
            tifffile.imwrite(cp, result)
            labels_ref, _, _, _, ious = match(str(rp), str(cp))
            ref_ids.append(labels_ref)
            ref_ious.append(ious)
        want = ref_seg(ref_ids, ref_ious)
        got = seg_measure(pairs)
        assert 0.2 < got < 1.0
        assert abs(got - want) <= 1e-9, (got, want)
        assert abs(seg_measure((r, r) for r, _ in pairs) - 1.0) <= 1e-12


def test_seg_jaccards_small_cases() -> None:
    ref = np.zeros((4, 6), np.int64)
    ref[:, :3], ref[:, 3:] = 1, 2
    res = np.zeros_like(ref)
    res[:, :2] = 5  # covers 2/3 of object 1: J = 8 / 12
    res[:2, 3:] = 7  # covers half of object 2 only: no match
    ids, jac = seg_jaccards(ref, res)
    assert ids.tolist() == [1, 2] and jac.tolist() == pytest.approx([8 / 12, 0.0])
    assert seg_measure([]) == 0.0
