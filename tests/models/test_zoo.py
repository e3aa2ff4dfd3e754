"""The zoo: listing order, build_model, configs."""

from __future__ import annotations

import json

import pytest
import torch

from instseg.models import zoo
from instseg.models.zoo import MODELS, build_model, list_models


def test_list_models_grouped_recommended_first() -> None:
    names = list_models()
    assert sorted(names) == sorted(MODELS)
    families = [MODELS[n].family for n in names]
    # families are contiguous, maskrcnn first
    assert families[0] == "maskrcnn"
    seen: list[str] = []
    for fam in families:
        if not seen or seen[-1] != fam:
            assert fam not in seen, f"family {fam} split in {names}"
            seen.append(fam)
    for fam in seen:
        members = [n for n in names if MODELS[n].family == fam]
        recommended = [n for n in members if MODELS[n].recommended]
        assert len(recommended) == 1, (fam, recommended)
        assert members[0] == recommended[0]
    assert names[0] == "maskrcnn_mnv2_fpn"
    for n in ("maskrcnn_r50_fpn", "maskrcnn_mnv3_fpn", "maskrcnn_r50_fpn_torchvision"):
        assert n in names


def test_list_models_order_does_not_depend_on_dict_order(monkeypatch: pytest.MonkeyPatch) -> None:
    shuffled = dict(reversed(list(MODELS.items())))
    monkeypatch.setattr(zoo, "MODELS", shuffled)
    names = zoo.list_models()
    assert names[0] == "maskrcnn_mnv2_fpn"
    fams = [MODELS[n].family for n in names]
    assert fams == sorted(fams, key=lambda f: f != "maskrcnn")  # maskrcnn block first


def test_specs_document_hyperparameters() -> None:
    for name, spec in MODELS.items():
        assert spec.description and callable(spec.builder)
        assert spec.recipe.optimizer in ("adamw", "sgd") and spec.recipe.lr > 0, name


@pytest.mark.parametrize("name", [n for n in MODELS if MODELS[n].family == "maskrcnn"])
def test_build_every_maskrcnn(name: str) -> None:
    model = build_model(name, 3, min_size=64, max_size=96, max_detections=5)
    assert model.num_classes == 3
    config = json.loads(json.dumps(model.config))
    assert config == {
        "name": name, "num_classes": 3, "min_size": 64, "max_size": 96, "max_detections": 5,
    }  # fmt: skip
    assert callable(model.losses) and callable(model.predict)
    out = model.predict([torch.rand(3, 50, 70)])
    assert len(out) == 1 and out[0].image_size == (50, 70)


def test_build_model_errors() -> None:
    with pytest.raises(ValueError, match="unknown model 'nope'.*maskrcnn_r18_fpn"):
        build_model("nope", 2)
    with pytest.raises(TypeError, match="no_such_option"):
        build_model("maskrcnn_r18_fpn", 2, no_such_option=1)
    with pytest.raises(TypeError, match="JSON"):
        build_model("maskrcnn_r18_fpn", 2, min_size=64, image_mean=torch.zeros(3))


def test_gn_variants_have_no_batchnorm() -> None:
    model = build_model("maskrcnn_mnv3_fpn", 2)
    kinds = {type(m).__name__ for m in model.modules()}
    assert "GroupNorm" in kinds
    assert not {"BatchNorm2d", "FrozenBatchNorm2d"} & kinds


def test_training_recipe_merges_the_device_entry() -> None:
    from instseg.models.zoo import training_recipe

    cpu, gpu = training_recipe("maskrcnn_r18_fpn", "cpu"), training_recipe("maskrcnn_r18_fpn", "cuda:1")
    assert cpu is not None and gpu is not None
    assert cpu.batch_size == 1 and gpu.batch_size == 8
    assert cpu.cpu == {} and gpu.cuda == {} and cpu.optimizer == gpu.optimizer
    solo = training_recipe("solov2_r18_fpn", "cpu")
    assert solo is not None and solo.lr < cpu.lr and solo.batch_size == 1  # saturating Dice
    assert training_recipe("not_in_the_zoo") is None


def test_pretrained_weights_only_where_the_model_has_them() -> None:
    with pytest.raises(ValueError, match="trains from scratch.*maskrcnn_mnv2_fpn, .*solov2_mnv2"):
        build_model("maskrcnn_r18_fpn", 2, pretrained="imagenet")
    pretrained = {"maskrcnn_mnv2_fpn": "mobilenet_v2", "solov2_mnv2": "mobilenet_v2",
                  "maskrcnn_r50_fpn_torchvision": "resnet50"}  # fmt: skip
    for name, arch in pretrained.items():
        model = build_model(name, 2, "none", min_size=64, max_size=96)
        assert model.config == {"name": name, "num_classes": 2, "min_size": 64, "max_size": 96}
        assert MODELS[name].imagenet == arch
    assert all(spec.imagenet is None for n, spec in MODELS.items() if n not in pretrained)
