"""Mixed precision settings: the autocast dtype per device, CPU bf16 training steps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from instseg.engine.config import amp_dtype
from instseg.engine.train import TrainConfig, train
from tests.engine import build_tiny, make_shapes_dataset


def test_amp_dtype_per_device() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype("bf16", cpu) is torch.bfloat16
    assert amp_dtype("auto", cpu) is None and amp_dtype("fp16", cpu) is None
    assert amp_dtype("off", cpu) is None and amp_dtype("off", torch.device("cuda")) is None


def test_cpu_bf16_training_keeps_fp32_weights(tmp_path: Path) -> None:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ds = make_shapes_dataset(tmp_path / "data", n_images=2)
        torch.manual_seed(0)
        model = build_tiny(num_classes=2, max_detections=5)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = TrainConfig(out_dir=tmp_path / "out", steps=2, batch_size=2, num_workers=0,
                          progress=False, lr=1e-3, amp="bf16", device="cpu")  # fmt: skip
        res = train(model, ds, cfg)
    finally:
        torch.set_num_threads(n)
    assert res.step == 2
    state = model.state_dict()
    assert all(v.dtype == before[k].dtype for k, v in state.items())
    assert any(not torch.equal(before[k], v) for k, v in state.items())
    logged = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(x["loss"]) for x in logged if "loss" in x)
