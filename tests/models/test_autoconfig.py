"""Data-adaptive defaults: nuclei-like and pedestrian-like statistics give different configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.data.dataset import Category, ImageRecord, InstanceDataset, make_annotation
from instseg.models.autoconfig import DatasetSizeStats, suggest_config
from instseg.models.mask_rcnn import MaskRCNN
from instseg.models.zoo import build_model
from tests.conftest import data_path


def nuclei_like(seed: int = 0) -> DatasetSizeStats:
    """Microscopy: 256..1388 px images, ~15 px nuclei (size independent of the image), crowded."""
    rng = np.random.default_rng(seed)
    sizes = [(256, 256)] * 30 + [(520, 696)] * 10 + [(1040, 1388)] * 4
    objects = []
    for _ in sizes:
        n = int(rng.integers(10, 300))
        d = rng.lognormal(np.log(15), 0.35, n)
        objects.append([(0.8 * x * x, x, x * rng.uniform(0.8, 1.25)) for x in d])
    return DatasetSizeStats.from_arrays(sizes, objects)


def pedestrian_like(seed: int = 0) -> DatasetSizeStats:
    """Photos: ~400x550 images, 1-6 tall people of ~250x90 px each."""
    rng = np.random.default_rng(seed)
    sizes = [(int(rng.integers(300, 480)), int(rng.integers(400, 700))) for _ in range(40)]
    objects = []
    for h, _ in sizes:
        hh = rng.uniform(0.5, 0.8, int(rng.integers(1, 7))) * h
        objects.append([(0.6 * x * x / 2.7, x / 2.7, x) for x in hh])
    return DatasetSizeStats.from_arrays(sizes, objects)


def test_nuclei_vs_pedestrians() -> None:
    nuc, ped = suggest_config(nuclei_like()), suggest_config(pedestrian_like())
    # small nuclei are upsampled with a fixed scale, pedestrians are not upsampled
    assert nuc["input_scale"] >= 1.5
    assert nuc["anchor_sizes"][0][0] <= 16 and nuc["min_level"] == 2
    assert nuc["max_detections"] >= 300 and nuc["rpn_post_nms_top_n_test"] >= 3 * 300
    assert nuc["rpn_batch_size_per_image"] >= 512 and nuc["box_batch_size_per_image"] >= 512
    assert "box_batch_size_per_image" not in ped
    scale = ped.get("input_scale", ped.get("min_size", 0) / 400)
    assert scale <= 1.0
    assert ped["anchor_sizes"][0][0] >= 32 and ped["max_detections"] == 100
    assert "aspect_ratios" in ped and max(ped["aspect_ratios"]) >= 2.5  # tall people
    assert "aspect_ratios" not in nuc
    # median object lands >= 24 px at the input for nuclei
    assert nuclei_like().mask_size_p50 * nuc["input_scale"] >= 24


def test_configs_build_models_that_run() -> None:
    for stats in (nuclei_like(), pedestrian_like()):
        cfg = suggest_config(stats)
        model = build_model("maskrcnn_r18_fpn", 1, **{**cfg, "max_size": 128})
        assert isinstance(model, MaskRCNN)
        assert len(model.rpn.anchor_generator.sizes) == len(model.backbone.strides)
        img = torch.rand(3, 64, 96)
        out = model.predict([img])
        assert out[0].image_size == (64, 96)


def test_short_side_mode_when_objects_scale_with_images() -> None:
    # objects are 10% of the image whatever its resolution: resize to a fixed short side
    sizes = [(s, int(s * 1.5)) for s in (200, 400, 800, 1600) for _ in range(5)]
    objects = [[(0.01 * h * h, 0.1 * h, 0.1 * h)] * 3 for h, _ in sizes]
    cfg = suggest_config(DatasetSizeStats.from_arrays(sizes, objects))
    assert "input_scale" not in cfg and cfg["min_size"] % 32 == 0


def test_empty_dataset() -> None:
    assert suggest_config(DatasetSizeStats.from_arrays([(100, 100)], [[]])) == {}
    assert suggest_config(DatasetSizeStats.from_arrays([], [])) == {}


def test_from_dataset_uses_annotations_only(tmp_path) -> None:  # type: ignore[no-untyped-def]
    square = [[10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]]  # 20 x 20
    tall = [[50.0, 10.0, 60.0, 10.0, 60.0, 50.0, 50.0, 50.0]]  # 10 x 40
    anns = [
        make_annotation(1, 1, 7, square, 64, 80),
        make_annotation(2, 1, 7, tall, 64, 80),
        make_annotation(3, 1, 7, square, 64, 80, iscrowd=1),
    ]
    rec = ImageRecord(1, "missing.png", tmp_path / "missing.png", 64, 80, anns)  # never read
    stats = DatasetSizeStats.from_dataset(InstanceDataset([rec], [Category(7, "thing")]))
    assert stats.num_images == 1 and stats.num_instances == 2  # crowd skipped
    assert stats.image_short_p50 == 64 and stats.image_long_max == 80
    assert stats.mask_size_p50 == pytest.approx(20.0, rel=0.01)
    assert stats.aspect_p90 > 3.0 and stats.instances_per_image_max == 2


def test_suggest_for_model_builds_every_maskrcnn(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from instseg.models.autoconfig import suggest_for_model
    from instseg.models.zoo import MODELS

    tiny = [[4.0, 4.0, 12.0, 4.0, 12.0, 12.0, 4.0, 12.0]]  # 8 x 8 objects: upsampled
    anns = [make_annotation(i, 1, 1, tiny, 64, 64) for i in range(3)]
    ds = InstanceDataset([ImageRecord(1, "x.png", tmp_path / "x.png", 64, 64, anns)], [Category(1, "c")])
    for name in [n for n in MODELS if MODELS[n].family == "maskrcnn"]:
        for cpu in (False, True):
            cfg = suggest_for_model(name, ds, cpu=cpu)
            assert cfg["input_scale"] > 1.0
            model = build_model(name, 1, **cfg)
            # the torchvision layout keeps 3 anchor shapes (its checkpoints' RPN head)
            shapes = model.rpn.head.cls_logits.out_channels
            assert shapes == (3 if name.endswith("torchvision") or not cpu else 1)
    with pytest.raises(ValueError, match="unknown model"):
        suggest_for_model("nope", ds)


def test_real_pennfudan_and_stardist() -> None:
    from instseg.data.formats import load_dataset

    ped = suggest_config(DatasetSizeStats.from_dataset(load_dataset(data_path("PennFudanPed"))))
    nuc = suggest_config(DatasetSizeStats.from_dataset(load_dataset(data_path("stardist_nuclei_2d"))))
    assert ped.get("input_scale", 1.0) <= 1.0 and ped["min_level"] == 3
    assert nuc["input_scale"] > 1.0 and nuc["min_level"] == 2 and nuc["max_detections"] >= 150
    # 125 touching but hardly overlapping nuclei: stricter NMS; 1-6 pedestrians: torchvision's
    assert nuc["box_nms_thresh"] == 0.3 and "box_nms_thresh" not in ped


def test_stricter_nms_only_for_crowded_objects_that_do_not_overlap() -> None:
    def stats(step: float, n: int = 30, images: int = 4) -> DatasetSizeStats:
        boxes = [np.array([[i * step, 0.0, 10.0, 10.0] for i in range(n)])] * images
        objects = [[(80.0, 10.0, 10.0)] * n] * images
        return DatasetSizeStats.from_arrays([(64, 64 + int(n * step))] * images, objects, boxes)

    apart, overlapping = stats(11.0), stats(3.0)  # gaps / neighbours with IoU 0.54
    assert apart.overlap_fraction == 0.0 and overlapping.overlap_fraction == 1.0
    assert suggest_config(apart)["box_nms_thresh"] == 0.3
    assert "box_nms_thresh" not in suggest_config(overlapping)
    assert "box_nms_thresh" not in suggest_config(stats(11.0, n=5))  # not crowded
    # without box positions (from_arrays' default) the overlap is unknown: no change
    no_boxes = DatasetSizeStats.from_arrays([(64, 400)] * 4, [[(80.0, 10.0, 10.0)] * 30] * 4)
    assert no_boxes.overlap_fraction is None and "box_nms_thresh" not in suggest_config(no_boxes)


def test_cpu_narrows_the_cpu_variants_that_use_p2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from instseg.models.autoconfig import CPU_FPN_CHANNELS, suggest_for_model

    tiny = [[4.0, 4.0, 12.0, 4.0, 12.0, 12.0, 4.0, 12.0]]  # 8 x 8 objects: P2 needed
    anns = [make_annotation(i, 1, 1, tiny, 64, 64) for i in range(3)]
    ds = InstanceDataset([ImageRecord(1, "x.png", tmp_path / "x.png", 64, 64, anns)], [Category(1, "c")])
    for name in ("maskrcnn_r18_fpn", "maskrcnn_mnv3_fpn"):
        cpu, gpu = suggest_for_model(name, ds, cpu=True), suggest_for_model(name, ds)
        assert cpu["min_level"] == 2 and cpu["fpn_channels"] == CPU_FPN_CHANNELS
        assert "fpn_channels" not in gpu
        model = build_model(name, 1, **cpu)
        assert model.backbone.out_channels == CPU_FPN_CHANNELS
        model.eval()
        assert model.transform.input_scale == cpu["input_scale"]
        # training mode resizes by the smaller training scale, inference by the full one
        img = torch.rand(3, 64, 64)
        eval_size = model.transform([img])[0].image_sizes[0]
        model.train()
        train_size = model.transform([img])[0].image_sizes[0]
        assert train_size[0] < eval_size[0] == round(64 * cpu["input_scale"])
    assert "fpn_channels" not in suggest_for_model("maskrcnn_r50_fpn", ds, cpu=True)
    with pytest.raises(ValueError, match="train_input_scale"):
        build_model("maskrcnn_r18_fpn", 1, train_input_scale=1.0)


def test_training_crop_defaults_and_overrides() -> None:
    from instseg.data.dataset import Category, ImageRecord, InstanceDataset
    from instseg.models.autoconfig import SMALL_OBJECT_CROP, TRAIN_CROP, training_crop

    ds = InstanceDataset(
        [ImageRecord(1, "a.png", Path("a.png"), 1000, 600)], [Category(1, "x")]
    )
    # fixed-scale model: TRAIN_CROP input pixels -> image pixels
    assert training_crop({"input_scale": 2.0}, ds) == TRAIN_CROP // 2
    assert training_crop({"input_scale": 2.0}, ds, 300) == 150
    assert training_crop({"input_scale": 0.25}, ds) is None  # 2048 px > the largest image
    # short-side-resize model: no default crop; an explicit one is in image pixels
    assert training_crop({"min_size": 512}, ds) is None
    assert training_crop({"min_size": 512}, ds, 400) == 400
    assert training_crop({"input_scale": 2.0}, ds, 0) is None
    # a smaller training scale: crops of TRAIN_CROP pixels at that scale
    assert training_crop({"input_scale": 2.0, "train_input_scale": 1.0}, ds) == TRAIN_CROP
    # SOLOv2's small-object configs (position prior): smaller crops, more steps per budget
    small = {"input_scale": 2.0, "train_input_scale": 1.0, "position_prior": True}
    assert training_crop(small, ds) == SMALL_OBJECT_CROP < TRAIN_CROP
    assert training_crop(small, ds, 400) == 400
    with pytest.raises(ValueError):
        training_crop({}, ds, -1)


def test_cpu_settings_buy_cheaper_steps() -> None:
    gpu, cpu = suggest_config(nuclei_like()), suggest_config(nuclei_like(), cpu=True)
    # smaller inputs for training on a CPU; inference at the full scale
    assert cpu["train_input_scale"] < cpu["input_scale"] == gpu["input_scale"]
    assert "train_input_scale" not in gpu and cpu["max_size"] == gpu["max_size"]
    assert nuclei_like().mask_size_p50 * cpu["train_input_scale"] >= 16
    assert nuclei_like().mask_size_p5 * cpu["train_input_scale"] >= 8 * 0.95  # rounded to 0.05
    assert cpu["rpn_batch_size_per_image"] == cpu["box_batch_size_per_image"] == 256
    assert cpu["max_detections"] == gpu["max_detections"]
    # fewer RPN proposals per training image; one anchor shape for roundish nuclei
    assert cpu["rpn_pre_nms_top_n_train"] == cpu["rpn_post_nms_top_n_train"] == 1000
    assert "rpn_post_nms_top_n_train" not in gpu
    assert cpu["aspect_ratios"] == [1.0] and "aspect_ratios" not in gpu
    # objects already large enough (and tall): the CPU flag changes only the proposals
    ped_cpu = suggest_config(pedestrian_like(), cpu=True)
    assert ped_cpu.pop("rpn_pre_nms_top_n_train") == ped_cpu.pop("rpn_post_nms_top_n_train")
    assert ped_cpu == suggest_config(pedestrian_like())
    assert len(ped_cpu["aspect_ratios"]) == 3


def test_one_anchor_shape_only_for_roundish_objects() -> None:
    def stats(aspect: float) -> DatasetSizeStats:  # half square, half `aspect` (h / w)
        objs = [(100.0, 10.0, 10.0)] * 10 + [(100.0, 10.0, 10.0 * aspect)] * 10
        return DatasetSizeStats.from_arrays([(64, 64)] * 3, [objs] * 3)

    assert suggest_config(stats(1.8), cpu=True)["aspect_ratios"] == [1.0]
    assert "aspect_ratios" not in suggest_config(stats(1.8))  # GPU: torchvision's three
    assert "aspect_ratios" not in suggest_config(stats(2.2), cpu=True)  # elongated: three
    assert len(suggest_config(stats(3.0), cpu=True)["aspect_ratios"]) == 3  # data-adaptive


def large_photos(seed: int = 0) -> DatasetSizeStats:
    """2048x1536 photos of 1-4 objects a few hundred px wide, a few small ones."""
    rng = np.random.default_rng(seed)
    sizes = [(1536, 2048)] * 30
    objects = []
    for _ in sizes:
        d = rng.lognormal(np.log(300), 0.8, int(rng.integers(1, 5)))
        objects.append([(0.8 * x * x, x, x) for x in d])
    return DatasetSizeStats.from_arrays(sizes, objects)


def test_cpu_downsamples_large_photos_of_large_objects() -> None:
    from instseg.models.autoconfig import explain

    stats = large_photos()
    gpu, cpu = suggest_config(stats), suggest_config(stats, cpu=True)
    assert cpu["input_scale"] < gpu["input_scale"]  # training and inference, a step ~ its area
    assert stats.image_long_p50 * cpu["input_scale"] <= 640 < stats.image_long_p50 * gpu["input_scale"]
    assert stats.mask_size_p50 * cpu["input_scale"] >= 64 and stats.mask_size_p5 * cpu["input_scale"] >= 16
    lines = explain(stats, cpu)
    assert "640 px long side for CPU training" in lines[0]
    assert f"x{cpu['input_scale']:g}" in lines[0] and any(ln.startswith("pyramid: P") for ln in lines)
    # small objects keep their size: the floor wins over the long-side target
    tiny = DatasetSizeStats.from_arrays([(1536, 2048)] * 4, [[(400.0, 20.0, 20.0)] * 5] * 4)
    assert suggest_config(tiny, cpu=True)["input_scale"] >= 0.8
    assert explain(DatasetSizeStats.from_arrays([(8, 8)], [[]]), {})[0].startswith("settings:")


def test_images_of_one_size_get_a_fixed_scale() -> None:
    """Equal spreads (every image the same size) must not fall to short-side mode by a
    rounding difference: a fixed scale trains on crops."""
    rng = np.random.default_rng(1)  # a draw whose absolute spread rounds above the relative
    objects = [[(0.8 * d * d, d, d) for d in rng.lognormal(np.log(44), 0.15, 38)] for _ in range(40)]
    stats = DatasetSizeStats.from_arrays([(690, 628)] * 40, objects)
    assert abs(stats.abs_size_spread - stats.rel_size_spread) < 1e-9
    assert stats.abs_size_spread > stats.rel_size_spread  # the tie this test is about
    assert "input_scale" in suggest_config(stats, cpu=True)

