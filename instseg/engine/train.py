"""The training loop, :func:`train`: setup, step, evaluate, checkpoint.

Per step: forward ``model.losses`` (autocast bf16/fp16 on CUDA), NaN/inf guard, backward
(GradScaler for fp16), gradient clipping, optimizer step; the learning rate comes from
:func:`instseg.engine.optim.lr_factor` (warm-up + cosine or step). Around it: tqdm progress
(losses, ETA), ``metrics.jsonl`` + ``curves.png``, periodic COCO evaluation of the validation
set keeping ``best.pt`` (best segm AP) and ``last.pt`` (always; atomic), DDP under torchrun.
Every checkpoint stores the ``object_size`` the model learns from the training set, and
``score_cutoff``, the F1@0.5-best cut-off of the evaluation of its weights
(:mod:`instseg.engine.learnt`). With ``ema`` a moving average of the weights
(:mod:`instseg.engine.ema`) is what evaluation and checkpoints' ``model`` use; ``last.pt``
keeps the raw weights as ``model_train``.

Exact resume: data order is f(seed, epoch) (sampler) and augmentation f(seed, epoch, index)
(dataset); ``last.pt`` holds model, optimizer, scaler, every rank's RNG states, step and the
plan, so N steps + ``resume`` + N steps == 2N steps, bit for bit on CPU.

Time budget (``time_budget_min`` without ``steps``/``epochs``): the first steps are timed,
then ``total_steps = step + (budget - elapsed - reserve) / step_time`` where ``reserve`` is
the evaluations still to come (re-planned after each evaluation and every ~2% of the run
from the mean step time so far), so the cosine schedule ends at the budget
(:class:`instseg.engine.optim.BudgetPlan`). With ``steps``/``epochs``
the budget is a hard stop. A resumed run keeps the interrupted run's plan.

Periodic saves: ``last.pt`` (with its ``step``) every ``save_every_min`` minutes (default 5),
atomically, so a killed run resumes from its last complete save; the folder's rules (no
silent resume, no training over another run, ``overwrite``) are in :mod:`instseg.engine.rundir`.

Ctrl-C / SIGTERM: the current step finishes, ``last.pt`` is saved, ``train`` returns with
``reason == "interrupted"`` (a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from instseg.data.dataset import InstanceDataset
from instseg.data.loader import ResumableSampler, TrainingDataset, build_loader
from instseg.data.transforms import build_transform
from instseg.device import resolve_device
from instseg.engine import distributed as du
from instseg.engine import rundir
from instseg.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from instseg.engine.config import (
    StopSignals,
    TrainConfig,
    TrainingDiverged,
    TrainResult,
    TrainState,
    amp_dtype,
)
from instseg.engine.ema import ModelEMA
from instseg.engine.evaluate import evaluate_model
from instseg.engine.learnt import learnt_object_size
from instseg.engine.metrics import MetricsLog, plot_curves
from instseg.engine.optim import DEFAULT_LR, BudgetPlan, build_optimizer, lr_factor, scale_lr

__all__ = ["TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "train"]

Callback = Callable[[TrainState], None]


def train(
    model: nn.Module,
    train_set: InstanceDataset,
    cfg: TrainConfig,
    val_set: InstanceDataset | None = None,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train ``model`` (``losses``/``predict``/``config`` contract) on ``train_set``.

    Writes ``cfg.out_dir``/{last.pt, best.pt (with ``val_set``), metrics.jsonl, curves.png}
    on rank 0. ``callbacks`` run after every step with a :class:`TrainState`.
    """
    if val_set is not None and len(val_set) == 0:
        val_set = None
    rundir.check_out_dir(cfg.out_dir, cfg.resume, cfg.overwrite)  # see instseg.engine.rundir
    run = _Run(model, train_set, cfg, val_set)
    if cfg.resume:
        run.resume()
    run.start()
    reason = run.loop(callbacks)
    return run.finish(reason)


class _Run:
    """One training run: what :func:`train` sets up, and the loop's state between steps."""

    def __init__(
        self, model: nn.Module, data: InstanceDataset, cfg: TrainConfig, val: InstanceDataset | None
    ) -> None:
        self.model, self.train_set, self.cfg, self.val_set = model, data, cfg, val
        dev = resolve_device(cfg.device)
        self.info = du.init_distributed(dev.type)
        if dev.type == "cuda" and self.info.enabled:
            dev = torch.device("cuda", self.info.local_rank)  # one GPU per process
        self.device = dev
        self.main = self.info.is_main
        config = dict(getattr(model, "config", {}) or {})
        self.object_size = learnt_object_size(config, data)  # stored in every checkpoint
        self.out = Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.fingerprint = rundir.data_fingerprint(data)  # stored in checkpoints: resume checks it
        if self.main:
            if cfg.overwrite:
                rundir.clear_run(self.out)
            rundir.remove_stray_temps(self.out)  # a save killed before its rename: never loaded
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        torch.manual_seed(cfg.seed + self.info.rank)  # per-rank stream for the model's sampling
        model.to(self.device).train()
        self.ema = ModelEMA(model, cfg.ema) if cfg.ema else None  # evaluated, saved as "model"
        self.net = du.wrap_model(model, self.info)  # forward(images, targets) = model.losses(...)
        self._build_data()
        self._build_optimization()

    def _build_data(self) -> None:
        cfg, info = self.cfg, self.info
        self.data = TrainingDataset(
            self.train_set, transform=build_transform(cfg.augment), seed=cfg.seed
        )
        self.loader = build_loader(
            self.data, cfg.batch_size, True, cfg.seed, cfg.num_workers, info.rank,
            info.world_size, self.device.type,
        )  # fmt: skip
        sampler = self.loader.sampler
        assert isinstance(sampler, ResumableSampler)
        self.sampler = sampler
        self.steps_per_epoch = math.ceil(sampler.num_samples / cfg.batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(f"training set {self.train_set.source or ''} has no images")

    def _build_optimization(self) -> None:
        """Optimizer, grad scaler, autocast dtype and the schedule's plan."""
        cfg = self.cfg
        global_batch = cfg.batch_size * self.info.world_size
        self.base_lr = cfg.lr or scale_lr(DEFAULT_LR[cfg.optimizer], cfg.optimizer, global_batch, 8)
        self.optimizer = build_optimizer(self.model, cfg.optimizer, self.base_lr, cfg.weight_decay)
        self.dtype = amp_dtype(cfg.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        explicit = cfg.steps or (cfg.epochs * self.steps_per_epoch if cfg.epochs else None)
        if explicit is None and cfg.time_budget_min is None:
            raise ValueError("TrainConfig needs steps, epochs or time_budget_min")
        self.explicit = explicit
        self.budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min is not None else math.inf
        n_val = len(self.val_set) if self.val_set else 0
        self.plan = BudgetPlan(explicit, self.budget_s, n_val, cfg.batch_size)
        self.step, self.best_ap, self.eval_step = 0, -1.0, -1
        self.last_eval: dict[str, Any] | None = None

    def resume(self) -> None:
        """Continue ``last.pt`` exactly (weights, optimizer, scaler, RNG, step, plan)."""
        if not self.last_path.is_file():
            raise rundir.RunDirError(f"--resume: no checkpoint (looked for {self.last_path})")
        ck = load_checkpoint(self.last_path, map_location="cpu")  # load_state_dict moves it
        config = dict(getattr(self.model, "config", {}) or {})
        rundir.check_same_run(ck, self.last_path, config, self.fingerprint)
        self.model.load_state_dict(ck.get("model_train", ck["model"]))
        if self.ema is not None:
            self.ema.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scaler.load_state_dict(ck["scaler"])
        self.step, self.best_ap, self.last_eval = (
            int(ck["step"]),
            float(ck["best_ap"]),
            ck["last_eval"],
        )
        plan = ck["plan"]
        if self.explicit is None or self.explicit == plan["total_steps"]:  # same schedule
            self.plan.total, self.plan.planned = int(plan["total_steps"]), bool(plan["planned"])
        self.base_lr = self.cfg.lr or float(plan["base_lr"])
        rng = ck["rng"]
        set_rng_state(rng[self.info.rank] if self.info.rank < len(rng) else rng[0])
        if self.main:
            print(f"resumed from {self.last_path} at step {self.step}", flush=True)

    def start(self) -> None:
        """Metrics log, callback state, budget clock and progress bar, from the current step."""
        cfg, step = self.cfg, self.step
        self.plan.start_step = self.start_step = step
        self.log = (
            MetricsLog(self.out / "metrics.jsonl", resume_step=step or None) if self.main else None
        )
        self.state = TrainState(
            step=step, epoch=step // self.steps_per_epoch, total_steps=self.plan.total
        )
        # the budget clock starts at cfg.clock_start (the CLI's start) or here
        self.t0 = time.perf_counter() - (time.time() - cfg.clock_start if cfg.clock_start else 0.0)
        self.last_save = 0.0  # on the synced clock: every rank decides alike (collective save)
        self.next_eval: int | None = None
        self.bar: Any = None
        if self.main and cfg.progress:
            self.bar = tqdm(total=self.plan.total if self.plan.planned else None, initial=step,
                            unit="step", desc="train", dynamic_ncols=True)  # fmt: skip
        self.consistent = True  # False inside an update: Ctrl-C there leaves no step boundary

    # -- the loop ----------------------------------------------------------------------------
    def loop(self, callbacks: Sequence[Callback]) -> str:
        """Run steps until the plan's end, the budget or a stop request -> the reason."""
        reason, self.callbacks = "done", callbacks
        with StopSignals() as signals:
            try:
                while self.step < self.plan.total and reason == "done":
                    reason = self._epoch(signals)
            except KeyboardInterrupt:  # from a callback, or a second Ctrl-C
                reason = "interrupted"
                if not self.consistent:
                    raise
            finally:
                if self.bar is not None:
                    self.bar.close()
        return reason

    def _epoch(self, signals: StopSignals) -> str:
        """Steps over the (rest of the) current epoch -> ``"done"`` or why the run stops."""
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        self.sampler.set_epoch(epoch, start=offset * self.cfg.batch_size)
        self.data.set_epoch(epoch)
        for images, targets in self.loader:
            lr = self._set_lr()
            values, stop_requested, elapsed = self._train_step(images, targets, signals)
            self._record(epoch, lr, values, elapsed)
            self._evaluate_if_due(elapsed)
            # single process: stop at once; DDP: at the next step, when all ranks agree
            if stop_requested or (not self.info.enabled and (signals.requested or self.state.stop)):
                return "interrupted"
            if elapsed >= self.budget_s and self.step < self.plan.total:
                return "time budget"
            if self.step >= self.plan.total:
                break
            if elapsed - self.last_save >= self.cfg.save_every_min * 60:
                self.save_last()
                self.last_save = elapsed
        return "done"

    def _set_lr(self) -> float:
        """The schedule's learning rate at the current step, set on every parameter group."""
        total = self.plan.total
        warmup = min(self.cfg.warmup_steps, max(1, total // 10))
        lr = self.base_lr * lr_factor(self.step, total, warmup, self.cfg.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _train_step(
        self, images: list[torch.Tensor], targets: list[Any], signals: StopSignals
    ) -> tuple[dict[str, float], bool, float]:
        """Forward, synced losses, NaN guard, update -> (mean losses, stop requested, elapsed s)."""
        device = self.device
        images = [im.to(device, non_blocking=True) for im in images]
        targets = [t.to(device) for t in targets]
        with torch.autocast(device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss_dict = self.net(images, targets)
        terms = torch.stack([v.float() for v in loss_dict.values()])
        loss = terms.sum()
        # one collective per step: mean losses, stop requests and clock of all ranks
        flags = [float(signals.requested or self.state.stop), time.perf_counter() - self.t0]
        synced = du.all_reduce_mean(
            torch.cat([loss.detach()[None], terms.detach(), torch.tensor(flags, device=device)])
        )
        values = dict(zip(["loss", *loss_dict], synced[:-2].tolist()))
        if not all(math.isfinite(v) for v in values.values()):
            self.save_last()  # the weights are still those of the last finite update
            bad = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
            raise TrainingDiverged(
                f"loss is not finite at step {self.step} ({bad}); stopped; the last good "
                f"state (step {self.step}) is in {self.last_path}; lower --lr"
            )
        self._update(loss)
        return values, bool(synced[-2] > 0), float(synced[-1])

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, clip, optimizer step (fp16: skipped on overflow), EMA; ``step += 1``."""
        self.consistent = False
        scaler, optimizer = self.scaler, self.optimizer
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        max_norm = self.cfg.clip_grad or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if not torch.isfinite(grad_norm) and not scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            self.consistent = True
            self.save_last()
            raise TrainingDiverged(
                f"gradient norm is {float(grad_norm)} at step {self.step}; stopped; the last "
                f"good state (step {self.step}) is in {self.last_path}; lower --lr or set --clip-grad"
            )
        scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.consistent = True

    def _record(self, epoch: int, lr: float, values: dict[str, float], elapsed: float) -> None:
        """After an update: plan a budget run, update the state, log, progress, callbacks."""
        step, plan, state = self.step, self.plan, self.state
        if plan.after_step(step, elapsed):  # budget run: just planned
            self.next_eval = step  # evaluate now: times it (re-plan) and fails early
            self._sync_bar()
        state.step, state.epoch, state.total_steps = step, epoch, plan.total
        state.lr, state.losses = lr, values
        logged = step % self.cfg.log_every == 0 or step in (self.start_step + 1, plan.total)
        if self.log is not None and logged:
            self.log.write({"step": step, "epoch": epoch, "lr": lr, **values,
                            "time": round(elapsed, 3)})  # fmt: skip
        if self.bar is not None:
            short = {k.replace("loss_", ""): f"{v:.3g}" for k, v in values.items()}
            self.bar.set_postfix(short, refresh=False)
            self.bar.update(1)
        for cb in self.callbacks:
            cb(state)

    def _sync_bar(self) -> None:
        if self.bar is not None:
            self.bar.total = self.plan.total

    def _eval_interval(self) -> int:
        return self.cfg.eval_every or max(self.steps_per_epoch, math.ceil(self.plan.total / 8))

    def _evaluate_if_due(self, elapsed: float) -> None:
        """Re-plan budget runs now and then; evaluate (and re-plan) when an evaluation is due."""
        step, plan, val = self.step, self.plan, self.val_set is not None
        if step % max(10, plan.total // 50) == 0 and plan.refresh(
            step, elapsed, self._eval_interval() if val else None
        ):  # budget runs: step times drift; keep the schedule ending at the budget
            self._sync_bar()
        if plan.planned and self.next_eval is None:  # budget runs: once the plan exists
            self.next_eval = (step // self._eval_interval() + 1) * self._eval_interval()
        if not val or self.next_eval is None or (step < self.next_eval and step < plan.total):
            return
        t_eval = time.perf_counter()
        self.run_eval()
        self.state.last_eval, self.state.best_ap = self.last_eval, self.best_ap
        eval_s = du.broadcast_float(time.perf_counter() - t_eval, self.device)
        spent = du.broadcast_float(time.perf_counter() - self.t0, self.device)
        plan.after_eval(step, spent, eval_s, self._eval_interval())
        self.next_eval = (step // self._eval_interval() + 1) * self._eval_interval()
        self._sync_bar()

    # -- evaluation and checkpoints ----------------------------------------------------------
    def run_eval(self) -> None:
        """Rank 0 evaluates (its RNG draws must not perturb training), keeps ``best.pt``."""
        self.eval_step = self.step
        if self.val_set is not None and self.main and self.log is not None:
            device = self.device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                model = self.ema.module if self.ema else self.model
                self.last_eval = evaluate_model(model, self.val_set, device=device,
                                                score_cutoff=True)  # fmt: skip
            self.model.train()
            self.log.write({"step": self.step, "epoch": self.step // self.steps_per_epoch,
                            "eval": self.last_eval})  # fmt: skip
            ap = float(self.last_eval["segm"]["AP"])
            if ap > self.best_ap:
                self.best_ap = ap
                save_checkpoint(self.checkpoint(full=False), self.best_path)
            plot_curves(self.log.read(), self.out / "curves.png")
        du.barrier()

    def checkpoint(self, full: bool) -> dict[str, Any]:
        """The checkpoint dict (see :mod:`instseg.engine.checkpoint`); ``full`` adds what exact
        resume needs (every rank joins the RNG gather)."""
        plan = {"total_steps": self.plan.total, "planned": self.plan.planned,
                "base_lr": self.base_lr, "steps_per_epoch": self.steps_per_epoch,
                "world_size": self.info.world_size}  # fmt: skip
        ck = {
            "model": (self.ema or self.model).state_dict(),
            "config": dict(self.model.config),  # type: ignore[call-overload,arg-type]
            "class_names": self.train_set.class_names,
            "cat_ids": self.train_set.label_to_cat_id,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "best_ap": self.best_ap,
            "last_eval": self.last_eval,
            "plan": plan,
            "train_config": self.cfg.to_dict(),
            "object_size": self.object_size,
            "data": self.fingerprint,
        }
        if self.last_eval is not None and self.eval_step == self.step:  # chosen on these weights
            ck["score_cutoff"] = self.last_eval.get("score_cutoff")
        if full:
            rng = du.gather_objects(get_rng_state())
            ck.update(
                optimizer=self.optimizer.state_dict(), scaler=self.scaler.state_dict(), rng=rng
            )
            if self.ema is not None:  # the raw weights the optimizer continues from
                ck["model_train"] = self.model.state_dict()
        return ck

    def save_last(self) -> None:
        ck = self.checkpoint(full=True)
        if self.main:
            save_checkpoint(ck, self.last_path)

    def finish(self, reason: str) -> TrainResult:
        """Evaluate weights the budget cut off, save ``last.pt``, plot, report."""
        if self.val_set is not None and reason == "time budget" and self.eval_step != self.step:
            self.run_eval()  # the budget ran out between evaluations: evaluate the final weights
        self.save_last()
        if self.log is not None:
            plot_curves(self.log.read(), self.out / "curves.png")
            ap = f"; best segm AP {self.best_ap:.4f}" if self.best_ap >= 0 else ""
            print(f"{reason} at step {self.step}/{self.plan.total}; saved {self.last_path}{ap}",
                  flush=True)  # fmt: skip
        return TrainResult(
            step=self.step,
            total_steps=self.plan.total,
            reason=reason,
            best_ap=self.best_ap,
            last_eval=self.last_eval,
            last_path=self.last_path if self.main else None,
            best_path=self.best_path if self.best_path.exists() else None,
        )
