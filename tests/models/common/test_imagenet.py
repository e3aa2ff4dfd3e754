"""ImageNet weights: loaded by hash from torchvision's cache with the network off, a weights
file given by path, and one-line errors when the weights are missing, corrupt or foreign."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision.models._api
from torchvision.models import mobilenet_v2

from instseg.models.common import imagenet
from instseg.models.common.backbones import mobilenet_v2_fpn
from instseg.models.common.imagenet import MissingWeights, load_pretrained, weights_file


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download attempt fails, as on a machine without network."""

    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network is off")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)


def test_imagenet_weights_load_by_hash_from_the_cache_offline(offline: None) -> None:
    """The README's set-up (scripts/fetch_weights.py) placed torchvision's own file; the
    backbone's body then holds exactly its tensors, BatchNorm statistics included."""
    file = weights_file("mobilenet_v2")
    assert file.is_file(), f"{file} missing: run `python scripts/fetch_weights.py` (set-up)"
    assert imagenet.sha256_of(file) == imagenet.IMAGENET["mobilenet_v2"].sha256
    want = torch.load(file, map_location="cpu", weights_only=True)
    body = mobilenet_v2_fpn("imagenet").body.state_dict()
    for key in ("0.0.weight", "3.conv.1.0.weight", "17.conv.2.weight"):
        torch.testing.assert_close(body[key], want[f"features.{key}"], rtol=0, atol=0)
    bn = "3.conv.0.1.running_var"  # a FrozenBatchNorm2d buffer: ImageNet statistics kept
    torch.testing.assert_close(body[bn], want[f"features.{bn}"], rtol=0, atol=0)


def test_missing_weights_say_where_and_how(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MissingWeights) as err:
        mobilenet_v2_fpn("imagenet")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and str(tmp_path) in msg
    assert "fetch_weights.py" in msg and "--pretrained none" in msg and "download failed" in msg
    corrupt = weights_file("mobilenet_v2")
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not the weights")
    with pytest.raises(MissingWeights, match="sha256"):
        mobilenet_v2_fpn("imagenet")
    mobilenet_v2_fpn("none")  # from scratch needs no file


def test_a_weights_file_loads_by_path_and_foreign_ones_fail(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = mobilenet_v2()
    plain = tmp_path / "mnv2.pth"
    torch.save(source.state_dict(), plain)
    wrapped = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "step": 3}, wrapped)
    for path in (plain, wrapped):
        body = mobilenet_v2_fpn(str(path), norm="bn").body.state_dict()
        torch.testing.assert_close(body["5.conv.1.0.weight"], source.features[5].conv[1][0].weight)
    foreign = tmp_path / "r18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    with pytest.raises(MissingWeights, match=r"r18\.pth: not mobilenet_v2 weights"):
        load_pretrained(mobilenet_v2(), "mobilenet_v2", str(foreign))
    with pytest.raises(MissingWeights, match="not found"):
        mobilenet_v2_fpn(str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(MissingWeights, match="cannot read weights"):
        mobilenet_v2_fpn(str(tmp_path / "junk.pth"))


def test_mobilenet_v2_pyramid() -> None:
    net = mobilenet_v2_fpn("none", min_level=2, fpn_channels=32).eval()
    assert net.strides == [4, 8, 16, 32, 64]
    with torch.no_grad():
        out = net(torch.rand(1, 3, 128, 192))
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 32, 128 // s, 192 // s) for s in net.strides
    ]


def test_trainable_layers_freeze_the_bottom_stages_as_torchvision_counts() -> None:
    def first_trainable(n: int) -> int:
        body = mobilenet_v2_fpn("none", trainable_layers=n).body
        blocks = [int(name.split(".")[0]) for name, p in body.named_parameters() if p.requires_grad]
        return min(blocks, default=-1)

    # stages start at the stem and at each stride-2 block: 0, 2, 4, 7, 14 (and the expansion)
    assert [first_trainable(n) for n in (6, 5, 4, 3, 2)] == [0, 2, 4, 7, 14]
    assert first_trainable(0) == first_trainable(1) == -1  # the whole body frozen
    with pytest.raises(ValueError, match=r"trainable_layers must be in \[0, 6\]"):
        mobilenet_v2_fpn("none", trainable_layers=7)


def test_solov2_mnv2_loads_the_imagenet_body(offline: None) -> None:
    from instseg.models.zoo import build_model

    want = torch.load(weights_file("mobilenet_v2"), map_location="cpu", weights_only=True)
    model = build_model("solov2_mnv2", 3, "imagenet", min_size=64, max_size=96)
    got = model.backbone.body.state_dict()
    torch.testing.assert_close(got["7.conv.0.0.weight"], want["features.7.conv.0.0.weight"])
    assert model.config == {"name": "solov2_mnv2", "num_classes": 3, "min_size": 64, "max_size": 96}


def test_a_torchvision_resnet50_file_initialises_the_torchvision_layout(
    offline: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ResNet-50 ImageNet file a user has (here: a torchvision ResNet-50 saved here) loads
    into maskrcnn_r50_fpn_torchvision's backbone by path, or from torchvision's cache when its
    name's hash prefix matches; with neither, one line says where to put it."""
    from torchvision.models import resnet50

    from instseg.models.zoo import build_model

    torch.manual_seed(0)
    source = resnet50()
    file = tmp_path / "r50.pth"
    torch.save(source.state_dict(), file)
    model = build_model("maskrcnn_r50_fpn_torchvision", 2, str(file), min_size=64, max_size=96)
    body = model.backbone.body.state_dict()
    torch.testing.assert_close(body["layer3.2.conv2.weight"], source.layer3[2].conv2.weight)
    torch.testing.assert_close(body["bn1.running_mean"], source.bn1.running_mean)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeights) as err:
        build_model("maskrcnn_r50_fpn_torchvision", 2, "imagenet")
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "resnet50-" in msg and "--pretrained FILE" in msg
    cached = weights_file("resnet50")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(file.read_bytes())  # not torchvision's file: its hash prefix differs
    with pytest.raises(MissingWeights, match="sha256 is not"):
        build_model("maskrcnn_r50_fpn_torchvision", 2, "imagenet")
