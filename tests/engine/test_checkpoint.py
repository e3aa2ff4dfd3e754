"""Checkpoints: atomic writes, folder resolution, clear errors, RNG round trip, model loading."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from instseg.engine import checkpoint as ckpt_mod
from instseg.engine.checkpoint import (
    get_rng_state,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from instseg.errors import DataError
from instseg.inference.loading import load_model
from tests.engine import build_tiny


def _ck(model: torch.nn.Module) -> dict:  # type: ignore[type-arg]
    return {
        "model": model.state_dict(),
        "config": dict(model.config),
        "cat_ids": [1, 3],
        "rng": [get_rng_state()],
    }  # type: ignore[call-overload]


def test_atomic_save_keeps_old_file_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {}, "config": {"name": "a"}}, path)

    def broken_save(obj, f):  # type: ignore[no-untyped-def]
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"model": {}, "config": {"name": "b"}}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["config"] == {"name": "a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left


def test_resolve_prefers_best_then_last(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no best.pt or last.pt"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(DataError, match="checkpoint not found"):
        resolve_checkpoint(tmp_path / "x.pt")
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "last.pt")
    assert resolve_checkpoint(tmp_path).name == "last.pt"
    save_checkpoint({"model": {}, "config": {}}, tmp_path / "best.pt")
    assert resolve_checkpoint(tmp_path).name == "best.pt"


def test_bad_files_give_one_line_data_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00not a checkpoint")
    with pytest.raises(DataError, match=r"bad.pt: cannot read checkpoint") as e:
        load_checkpoint(bad)
    assert "\n" not in str(e.value)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="not an instseg checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_rng_round_trip_survives_weights_only_load(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint({"model": {}, "config": {}, "rng": [get_rng_state()]}, tmp_path / "c.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected


def test_load_model_rebuilds_and_checks_weights(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_tiny(num_classes=2, max_detections=7)
    save_checkpoint(_ck(model), tmp_path / "m.pt")
    loaded, meta = load_model(tmp_path / "m.pt", build=build_tiny)
    assert (
        loaded.max_detections == 7
        and meta["cat_ids"] == [1, 3]
        and "model" not in meta
        and "rng" not in meta
    )
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    other = build_tiny(num_classes=3)
    save_checkpoint(
        {"model": other.state_dict(), "config": {"name": "tiny", "num_classes": 2}},
        tmp_path / "x.pt",
    )
    with pytest.raises(DataError, match="x.pt: model: weights do not fit"):
        load_model(tmp_path / "x.pt", build=build_tiny)


def test_load_model_uses_the_zoo_by_default(tmp_path: Path) -> None:
    zoo = pytest.importorskip("instseg.models.zoo")
    name = zoo.list_models()[0]
    torch.manual_seed(0)
    model = zoo.build_model(name, num_classes=2)
    save_checkpoint({"model": model.state_dict(), "config": model.config}, tmp_path / "z.pt")
    loaded, meta = load_model(tmp_path / "z.pt", build=None)
    assert meta["config"]["name"] == name and type(loaded) is type(model)
    save_checkpoint(
        {"model": {}, "config": {"name": "no_such_model", "num_classes": 2}}, tmp_path / "last.pt"
    )
    (tmp_path / "z.pt").unlink()
    with pytest.raises(DataError, match="cannot build the model"):
        load_model(tmp_path)
