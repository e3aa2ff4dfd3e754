"""The training loop on a tiny Mask R-CNN: outputs, exact resume, NaN guard, time budget, signals."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from instseg.engine.checkpoint import load_checkpoint
from instseg.engine.train import TrainConfig, TrainingDiverged, TrainState, train
from instseg.inference.loading import load_model
from tests.engine import build_tiny, make_shapes_dataset


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # type: ignore[no-untyped-def]
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the CI box has 2 shared cores: no oversubscription
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), n_images=6)


def _cfg(out: Path, **kw) -> TrainConfig:  # type: ignore[no-untyped-def]
    base = dict(
        out_dir=out,
        steps=4,
        batch_size=2,
        num_workers=0,
        progress=False,
        log_every=1,
        lr=1e-3,
        warmup_steps=2,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def _model(seed: int = 0):  # type: ignore[no-untyped-def]
    torch.manual_seed(seed)
    return build_tiny(num_classes=2, max_detections=5)


def test_train_writes_checkpoints_logs_and_evaluates(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    train_set, val_set = shapes.subset([0, 1, 2, 3]), shapes.subset([4, 5])
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[int] = []
    res = train(
        model,
        train_set,
        _cfg(tmp_path, eval_every=2),
        val_set,
        callbacks=[lambda s: seen.append(s.step)],
    )
    assert res.reason == "done" and res.step == 4 and seen == [1, 2, 3, 4]
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    evals = [x for x in lines if "eval" in x]
    assert [x["step"] for x in steps] == [1, 2, 3, 4] and all(
        math.isfinite(x["loss"]) for x in steps
    )
    assert [x["step"] for x in evals] == [2, 4]
    assert set(evals[0]["eval"]["segm"]) >= {"AP", "AP50", "AR100"} and "bbox" in evals[0]["eval"]
    assert steps[0]["lr"] < steps[2]["lr"]  # warm-up
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["step"] == 4 and ck["cat_ids"] == [1, 3] and ck["class_names"] == ["class1", "class3"]
    assert {"optimizer", "scaler", "rng", "plan"} <= set(ck)
    assert "optimizer" not in load_checkpoint(tmp_path / "best.pt")
    loaded, meta = load_model(tmp_path / "last.pt", build=build_tiny)  # a folder prefers best.pt
    assert meta["step"] == 4 and not loaded.training
    assert load_model(tmp_path, build=build_tiny)[1]["path"].endswith("best.pt")
    img = [torch.rand(3, 64, 80)]
    a, b = model.predict(img)[0], loaded.predict(img)[0]
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)  # type: ignore[arg-type]


def _stop_at(n: int):  # type: ignore[no-untyped-def]
    def cb(state: TrainState) -> None:
        if state.step == n:
            raise KeyboardInterrupt

    return cb


@pytest.mark.parametrize("augment", ["lsj"])
def test_resume_is_bit_exact(shapes, tmp_path: Path, augment: str) -> None:  # type: ignore[no-untyped-def]
    torch.use_deterministic_algorithms(True)
    try:
        full = _model()
        r = train(full, shapes, _cfg(tmp_path / "full", steps=5, augment=augment))
        assert r.step == 5
        part = _model()
        # 5 steps over 6 images, batch 2: 3 steps / epoch; interrupt at step 2 = mid-epoch 0
        r1 = train(
            part, shapes, _cfg(tmp_path / "part", steps=5, augment=augment), callbacks=[_stop_at(2)]
        )
        assert (
            r1.reason == "interrupted"
            and load_checkpoint(tmp_path / "part" / "last.pt")["step"] == 2
        )
        torch.manual_seed(999)  # the global RNG state before resuming must not matter
        resumed = _model(seed=1)  # different init: weights come from the checkpoint
        r2 = train(resumed, shapes, _cfg(tmp_path / "part", steps=5, augment=augment, resume=True))
        assert r2.step == 5 and r2.reason == "done"
    finally:
        torch.use_deterministic_algorithms(False)
    sa, sb = full.state_dict(), resumed.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    la = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in la] == [x["loss"] for x in lb]  # same losses at every step


class _NanAt(torch.nn.Module):
    """Wraps a model; its loss becomes NaN from step ``n`` (counted in calls to ``losses``)."""

    def __init__(self, inner: torch.nn.Module, n: int) -> None:
        super().__init__()
        self.inner, self.n, self.calls = inner, n, 0
        self.num_classes, self.config = inner.num_classes, inner.config

    def losses(self, images, targets):  # type: ignore[no-untyped-def]
        out = self.inner.losses(images, targets)
        self.calls += 1
        if self.calls > self.n:
            out["loss_mask"] = out["loss_mask"] * float("nan")
        return out


def test_nan_guard_stops_and_keeps_last_good_state(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = _NanAt(_model(), n=2)
    with pytest.raises(TrainingDiverged, match=r"not finite at step 2 .*loss_mask=nan.*last.pt"):
        train(model, shapes, _cfg(tmp_path, steps=6))
    ck = load_checkpoint(tmp_path / "last.pt")
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_sigterm_saves_last_and_returns(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def cb(state: TrainState) -> None:
        if state.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    old = signal.getsignal(signal.SIGTERM)
    res = train(_model(), shapes, _cfg(tmp_path, steps=6), callbacks=[cb])
    assert res.reason == "interrupted" and res.step == 1
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 1
    assert signal.getsignal(signal.SIGTERM) == old  # handler restored


def test_time_budget_plans_the_schedule(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import time

    t = time.perf_counter()
    cfg = _cfg(
        tmp_path,
        steps=None,
        time_budget_min=5 / 60,
        warmup_steps=1,
        eval_every=100,
        clock_start=time.time(),
    )
    res = train(_model(), shapes.subset([0, 1, 2, 3]), cfg, val_set=shapes.subset([4, 5]))
    took = time.perf_counter() - t
    assert res.reason in ("done", "time budget")
    assert res.step >= 2 and res.total_steps < 10**6 and res.step <= res.total_steps  # planned
    assert took < 5 + 12  # budget plus (generous: shared CI cores) slack for the last eval + save
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    evals = [x["step"] for x in lines if "eval" in x]
    assert steps[-1]["time"] < 5 + 3  # no step starts after the budget (clock of the last step)
    # one evaluation right after planning (times it), one at the end
    assert evals == sorted(set(evals)) and 1 <= len(evals) <= 2 and evals[-1] == res.step
    if res.reason == "done":  # the planned schedule ended within the budget: cosine at its end
        assert res.step == res.total_steps
        assert steps[-1]["lr"] == min(x["lr"] for x in steps[1:])  # decayed to the last step


def test_budget_plan_arithmetic() -> None:
    from instseg.engine.optim import BudgetPlan, lr_factor

    plan = BudgetPlan(None, budget_s=100.0, eval_images=10, batch_size=2)
    clock, step = 10.0, 0  # 10 s of start-up (loading, model building) before the first step
    while not plan.planned:
        clock += 2.0 if step == 0 else 0.5  # the first step pays warm-up costs
        step += 1
        plan.after_step(step, clock)
    assert step == 1 + BudgetPlan.MEASURE_STEPS
    # guess reserve: min(8 evals * 10 images * 0.25 s, 30% of the 85.5 s left) = 20 s
    assert plan.total == step + int((100 - clock - 20) / 0.5)
    clock += 3.0  # the first evaluation takes 3 s
    plan.after_eval(step, clock, eval_s=3.0, interval=40)
    evals_left = -(-(plan.total - step) // 40)
    end = clock + (plan.total - step) * 0.5 + evals_left * 3.0
    assert 100 - 0.5 - 3.0 <= end <= 100  # the schedule ends at the budget
    explicit = BudgetPlan(50, budget_s=float("inf"), eval_images=0, batch_size=2)
    assert explicit.planned and explicit.total == 50 and not explicit.after_step(1, 1.0)
    assert lr_factor(0, 100, 10) < 0.01 and lr_factor(10, 100, 10) == 1.0
    assert lr_factor(99, 100, 10) < 0.02 and lr_factor(70, 100, 0, "step") == 0.1


def test_budget_plan_refresh_follows_slower_steps() -> None:
    from instseg.engine.optim import BudgetPlan

    plan = BudgetPlan(None, budget_s=100.0, eval_images=0, batch_size=2)
    clock, step = 0.0, 0
    while not plan.planned:  # planned from 0.5 s steps
        clock += 0.5
        step += 1
        plan.after_step(step, clock)
    first_total = plan.total
    assert first_total == step + int((100 - clock) / 0.5)
    for _ in range(20):  # the steps become twice as slow
        clock += 1.0
        step += 1
    assert plan.refresh(step, clock, interval=None)
    mean_step = (clock - plan.t_first) / (step - 1)
    assert plan.total == step + int((100 - clock) / mean_step) < first_total
    assert not plan.refresh(step, clock, interval=None)  # nothing new: unchanged
    explicit = BudgetPlan(50, budget_s=100.0, eval_images=0, batch_size=2)
    assert not explicit.refresh(30, 90.0, interval=None) and explicit.total == 50


def test_save_every_writes_last_with_its_step(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert TrainConfig(out_dir=tmp_path).save_every_min == 5.0  # the default
    saved: list[int] = []

    def cb(state: TrainState) -> None:  # last.pt as it is on disk during the run
        last = tmp_path / "last.pt"
        saved.append(load_checkpoint(last)["step"] if last.exists() else -1)

    train(_model(), shapes.subset([0, 1]), _cfg(tmp_path, save_every_min=1e-9), callbacks=[cb])
    assert saved == [-1, 1, 2, 3]  # saved after every step (the callback runs before the save)
    quiet = tmp_path / "quiet"
    saved.clear()
    train(_model(), shapes.subset([0, 1]), _cfg(quiet, save_every_min=60.0),
          callbacks=[lambda s: saved.append(int((quiet / "last.pt").exists()))])  # fmt: skip
    assert saved == [0, 0, 0, 0] and load_checkpoint(quiet / "last.pt")["step"] == 4


def test_out_dir_rules(shapes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from instseg.engine.rundir import RunDirError

    data = shapes.subset([0, 1])
    with pytest.raises(RunDirError, match=f"looked for {tmp_path / 'last.pt'}"):
        train(_model(), data, _cfg(tmp_path, steps=1, resume=True))
    train(_model(), data, _cfg(tmp_path, steps=1))
    (tmp_path / ".last.pt.999.tmp").write_bytes(b"half a checkpoint")
    with pytest.raises(RunDirError, match="already holds a training run"):
        train(_model(), data, _cfg(tmp_path, steps=1))
    with pytest.raises(RunDirError, match="trained on other data"):
        train(_model(), shapes.subset([2, 3]), _cfg(tmp_path, steps=2, resume=True))
    with pytest.raises(RunDirError, match=r"run of tiny \(2 classes\), not tiny \(3 classes\)"):
        train(build_tiny(num_classes=3), data, _cfg(tmp_path, steps=2, resume=True))
    res = train(_model(), data, _cfg(tmp_path, steps=2, resume=True))
    assert res.step == 2 and not (tmp_path / ".last.pt.999.tmp").exists()
    res = train(_model(), data, _cfg(tmp_path, steps=1, overwrite=True))
    assert res.step == 1 and load_checkpoint(tmp_path / "last.pt")["step"] == 1
