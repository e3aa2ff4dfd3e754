"""DDP on CPU (gloo): two processes train a tiny model; both end with the same weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from instseg.engine import distributed as du

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from instseg.engine.train import TrainConfig, train
    from tests.engine import build_tiny, make_shapes_dataset

    data = make_shapes_dataset(Path(root) / "data", n_images=6) if rank == 0 else None
    du.init_distributed("cpu")
    du.barrier()  # rank 0 wrote the images
    if data is None:
        data = make_shapes_dataset(
            Path(root) / f"data{rank}", n_images=6
        )  # same content (same seed)
    torch.manual_seed(0)
    model = build_tiny(num_classes=2, max_detections=5)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[int] = []
    cfg = TrainConfig(
        out_dir=Path(root) / "out",
        steps=3,
        batch_size=1,
        num_workers=0,
        progress=False,
        lr=1e-3,
        log_every=1,
    )
    res = train(
        model, data, cfg, val_set=data.subset([0, 1]), callbacks=[lambda s: seen.append(s.step)]
    )
    torch.save(
        {
            "state": model.state_dict(),
            "init": init,
            "steps": seen,
            "reason": res.reason,
            "last": str(res.last_path),
        },
        Path(root) / f"rank{rank}.pt",
    )
    du.cleanup()


def test_two_cpu_processes_train_in_sync(tmp_path: Path) -> None:
    mp.start_processes(
        _worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert r0["steps"] == r1["steps"] == [1, 2, 3] and r0["reason"] == r1["reason"] == "done"
    changed = [k for k in r0["state"] if not torch.equal(r0["state"][k], r0["init"][k])]
    assert changed  # trained
    for k in r0["state"]:  # gradients were averaged: identical weights on both ranks
        assert torch.equal(r0["state"][k], r1["state"][k]), k
    assert r0["last"].endswith("last.pt") and r1["last"] == "None"  # rank 0 alone writes
    from instseg.engine.checkpoint import load_checkpoint
    from instseg.inference.loading import load_model
    from tests.engine import build_tiny

    ck = load_checkpoint(tmp_path / "out" / "last.pt")
    assert ck["plan"]["world_size"] == 2 and len(ck["rng"]) == 2 and ck["step"] == 3
    model, meta = load_model(tmp_path / "out", build=build_tiny)
    for k, v in model.state_dict().items():
        assert torch.equal(v, r0["state"][k]), k
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len([x for x in lines if '"eval"' in x]) >= 1 and len(lines) >= 3
