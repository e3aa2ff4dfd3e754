"""The generated fluorescence-nuclei sample: deterministic, exact and DSB-like."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from instseg.data.synthetic_nuclei import make_nuclei_sample


def test_same_seed_same_sample_other_seed_differs() -> None:
    a, b, c = make_nuclei_sample(3), make_nuclei_sample(3), make_nuclei_sample(4)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)


def test_ground_truth_is_consistent() -> None:
    s = make_nuclei_sample(0)
    h, w = s.labels.shape
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8 and (h, w) == (320, 320)
    assert (s.image[..., 0] == s.image[..., 1]).all() and (s.image[..., 0] == s.image[..., 2]).all()
    n = len(s.instances)
    assert 30 <= n <= 80
    assert s.labels.dtype == np.int32 and set(np.unique(s.labels)) == set(range(n + 1))
    masks = s.instances.masks
    assert masks is not None
    assert np.array_equal(s.instances.to_label_image(), s.labels)
    assert (masks.numpy().sum(0) <= 1).all()  # disjoint
    assert (s.instances.labels == 0).all()


def test_nuclei_look_like_fluorescence_nuclei() -> None:
    for seed in range(3):
        s = make_nuclei_sample(seed)
        gray = s.image[..., 0].astype(float)
        fg = s.labels > 0
        assert gray[fg].mean() > gray[~fg].mean() + 60  # bright nuclei, dark background
        assert gray[~fg].mean() < 30 and gray[~fg].std() > 1  # noisy background
        areas = np.bincount(s.labels.ravel())[1:]
        diameters = 2 * np.sqrt(areas / np.pi)
        assert np.median(diameters) > 10 and diameters.max() <= 32
        # some nuclei touch: a label next to a different label
        lab = s.labels
        right = (lab[:, :-1] > 0) & (lab[:, 1:] > 0) & (lab[:, :-1] != lab[:, 1:])
        down = (lab[:-1] > 0) & (lab[1:] > 0) & (lab[:-1] != lab[1:])
        assert right.any() or down.any()
        # each nucleus is one connected piece
        for i in (1, len(areas)):
            assert ndimage.label(lab == i)[1] == 1


def test_size_and_count_arguments() -> None:
    s = make_nuclei_sample(1, size=(128, 192), n_nuclei=12)
    assert s.image.shape == (128, 192, 3) and 1 <= len(s.instances) <= 12
