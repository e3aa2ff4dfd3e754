"""Weight EMA: the averaging formula, integer buffers, and exact resume inside the loop."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from instseg.engine.checkpoint import load_checkpoint
from instseg.engine.ema import ModelEMA
from instseg.engine.train import TrainConfig, TrainState, train
from instseg.inference.loading import load_model
from tests.engine import build_tiny, make_shapes_dataset


def test_ema_follows_the_formula_and_copies_integer_buffers() -> None:
    net = nn.BatchNorm1d(3)  # float weight/bias/stats + int64 num_batches_tracked
    ema = ModelEMA(net, decay=0.5)
    assert ema.decay_at(1) == pytest.approx(0.1) and ema.decay_at(1000) == 0.5
    expected = net.weight.detach().clone()
    for step in (1, 2, 3):
        with torch.no_grad():
            net.weight.add_(1.0)
        net.num_batches_tracked += 1
        ema.update(net, step)
        d = ema.decay_at(step)
        expected = d * expected + (1 - d) * net.weight.detach()
    assert torch.allclose(ema.module.weight, expected)
    assert not torch.equal(ema.module.weight, net.weight)
    assert int(ema.module.num_batches_tracked) == 3
    assert not ema.module.training and not ema.module.weight.requires_grad
    with pytest.raises(ValueError, match="decay"):
        ModelEMA(net, decay=1.0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_images=6)


def _cfg(out: Path, **kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = dict(out_dir=out, steps=5, batch_size=2, num_workers=0, progress=False, lr=1e-3,
                warmup_steps=2, ema=0.9, augment="none")  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _model(seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return build_tiny(num_classes=2, max_detections=5)


def _stop_at_2(state: TrainState) -> None:
    if state.step == 2:
        raise KeyboardInterrupt


def test_ema_checkpoint_and_exact_resume(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        full = _model()
        train(full, shapes, _cfg(tmp_path / "full"))
        r1 = train(_model(), shapes, _cfg(tmp_path / "part"), callbacks=[_stop_at_2])
        assert r1.reason == "interrupted"
        resumed = _model(seed=1)
        r2 = train(resumed, shapes, _cfg(tmp_path / "part", resume=True))
        assert r2.step == 5
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(n)
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    for key in ("model", "model_train"):
        for k, v in a[key].items():
            assert torch.equal(v, b[key][k]), (key, k)
    raw = full.state_dict()
    assert all(torch.equal(raw[k], v) for k, v in a["model_train"].items())
    assert any(not torch.equal(raw[k], v) for k, v in a["model"].items())  # averaged
    loaded, meta = load_model(tmp_path / "full", build=build_tiny)  # the averaged weights
    assert "model_train" not in meta
    assert all(torch.equal(v, a["model"][k]) for k, v in loaded.state_dict().items())
