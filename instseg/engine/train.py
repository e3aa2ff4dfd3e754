"""The training loop: one readable function, :func:`train`.

Per step: forward ``model.losses`` (autocast bf16/fp16 on CUDA), NaN/inf guard, backward
(GradScaler for fp16), gradient clipping, optimizer step; the learning rate comes from
:func:`instseg.engine.optim.lr_factor` (warm-up + cosine or step). Around it: tqdm progress
(losses, ETA), ``metrics.jsonl`` + ``curves.png``, periodic COCO evaluation of the validation
set keeping ``best.pt`` (best segm AP) and ``last.pt`` (always; atomic), DDP under torchrun.
With ``ema`` a moving average of the weights (:mod:`instseg.engine.ema`) is what evaluation
and checkpoints' ``model`` use; ``last.pt`` keeps the raw weights as ``model_train``.

Exact resume: data order is f(seed, epoch) (sampler) and augmentation f(seed, epoch, index)
(dataset); ``last.pt`` holds model, optimizer, scaler, every rank's RNG states, step and the
plan, so N steps + ``resume`` + N steps == 2N steps, bit for bit on CPU.

Time budget (``time_budget_min`` without ``steps``/``epochs``): the first steps are timed,
then ``total_steps = step + (budget - elapsed - reserve) / step_time`` where ``reserve`` is
the evaluations still to come (re-planned after each evaluation and every ~2% of the run
from the mean step time so far), so the cosine schedule ends at the budget
(:class:`instseg.engine.optim.BudgetPlan`). With ``steps``/``epochs``
the budget is a hard stop. A resumed run keeps the interrupted run's plan.

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

from instseg.data.dataset import InstanceDataset
from instseg.data.loader import ResumableSampler, TrainingDataset, build_loader
from instseg.data.transforms import build_transform
from instseg.engine import distributed as du
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
from instseg.engine.metrics import MetricsLog, plot_curves
from instseg.engine.optim import DEFAULT_LR, BudgetPlan, build_optimizer, lr_factor, scale_lr

__all__ = ["TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "train"]

Callback = Callable[[TrainState], None]


def _device(cfg: TrainConfig, info: du.DistInfo) -> torch.device:
    name = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and info.enabled:
        return torch.device("cuda", info.local_rank)  # one GPU per process
    return torch.device(name)


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
    info = du.init_distributed(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    device = _device(cfg, info)
    main = info.is_main
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    torch.manual_seed(cfg.seed + info.rank)  # per-rank stream for the model's own sampling
    model.to(device).train()
    ema = ModelEMA(model, cfg.ema) if cfg.ema else None  # evaluated and saved as "model"
    net = du.wrap_model(model, info)  # forward(images, targets) = model.losses(...)

    data = TrainingDataset(train_set, transform=build_transform(cfg.augment), seed=cfg.seed)
    loader = build_loader(
        data, cfg.batch_size, True, cfg.seed, cfg.num_workers, info.rank, info.world_size,
        device.type,
    )
    sampler = loader.sampler
    assert isinstance(sampler, ResumableSampler)
    steps_per_epoch = math.ceil(sampler.num_samples / cfg.batch_size)
    if steps_per_epoch == 0:
        raise ValueError(f"training set {train_set.source or ''} has no images")

    global_batch = cfg.batch_size * info.world_size
    base_lr = cfg.lr or scale_lr(DEFAULT_LR[cfg.optimizer], cfg.optimizer, global_batch, 8)
    optimizer = build_optimizer(model, cfg.optimizer, base_lr, cfg.weight_decay)
    dtype = amp_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    explicit = cfg.steps or (cfg.epochs * steps_per_epoch if cfg.epochs else None)
    if explicit is None and cfg.time_budget_min is None:
        raise ValueError("TrainConfig needs steps, epochs or time_budget_min")
    budget_s = cfg.time_budget_min * 60 if cfg.time_budget_min is not None else math.inf
    plan = BudgetPlan(explicit, budget_s, len(val_set) if val_set else 0, cfg.batch_size)
    step, best_ap, last_eval, eval_step = 0, -1.0, None, -1

    if cfg.resume and last_path.is_file():
        ck = load_checkpoint(last_path, map_location="cpu")  # load_state_dict moves to device
        model.load_state_dict(ck.get("model_train", ck["model"]))
        if ema is not None:
            ema.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        step, best_ap, last_eval = int(ck["step"]), float(ck["best_ap"]), ck["last_eval"]
        if explicit is None or explicit == ck["plan"]["total_steps"]:  # same schedule
            plan.total, plan.planned = int(ck["plan"]["total_steps"]), bool(ck["plan"]["planned"])
        base_lr = cfg.lr or float(ck["plan"]["base_lr"])
        rng = ck["rng"]
        set_rng_state(rng[info.rank] if info.rank < len(rng) else rng[0])
        if main:
            print(f"resumed from {last_path} at step {step}", flush=True)
    elif cfg.resume and main:
        print(f"no {last_path} to resume from: starting from scratch", flush=True)
    plan.start_step = start_step = step
    log = MetricsLog(out / "metrics.jsonl", resume_step=step or None) if main else None

    def eval_interval() -> int:
        return cfg.eval_every or max(steps_per_epoch, math.ceil(plan.total / 8))

    def checkpoint(full: bool) -> dict[str, Any]:
        ck = {
            "model": (ema or model).state_dict(),
            "config": dict(model.config),  # type: ignore[call-overload,arg-type]
            "class_names": train_set.class_names,
            "cat_ids": train_set.label_to_cat_id,
            "step": step,
            "epoch": step // steps_per_epoch,
            "best_ap": best_ap,
            "last_eval": last_eval,
            "plan": {"total_steps": plan.total, "planned": plan.planned, "base_lr": base_lr,
                     "steps_per_epoch": steps_per_epoch, "world_size": info.world_size},
            "train_config": cfg.to_dict(),
        }  # fmt: skip
        if full:  # what exact resume needs; every rank joins the RNG gather
            rng = du.gather_objects(get_rng_state())
            ck.update(optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), rng=rng)
            if ema is not None:  # the raw weights the optimizer continues from
                ck["model_train"] = model.state_dict()
        return ck

    def save_last() -> None:
        ck = checkpoint(full=True)
        if main:
            save_checkpoint(ck, last_path)

    def run_eval() -> None:  # rank 0 evaluates; its RNG draws must not perturb training
        nonlocal best_ap, last_eval, eval_step
        eval_step = step
        if val_set is not None and main and log is not None:
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                last_eval = evaluate_model(ema.module if ema else model, val_set, device=device)
            model.train()
            log.write({"step": step, "epoch": step // steps_per_epoch, "eval": last_eval})
            ap = float(last_eval["segm"]["AP"])
            if ap > best_ap:
                best_ap = ap
                save_checkpoint(checkpoint(full=False), best_path)
            plot_curves(log.read(), out / "curves.png")
        du.barrier()

    state = TrainState(step=step, epoch=step // steps_per_epoch, total_steps=plan.total)
    # the budget clock starts at cfg.clock_start (the CLI's start) or here
    t0 = time.perf_counter() - (time.time() - cfg.clock_start if cfg.clock_start else 0.0)
    last_save = 0.0  # on the synced clock: every rank takes the same decision (collective save)
    next_eval: int | None = None
    reason = "done"
    bar = None
    if main and cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=plan.total if plan.planned else None, initial=step, unit="step",
                   desc="train", dynamic_ncols=True)  # fmt: skip
    consistent = True  # False inside an update: a KeyboardInterrupt there leaves no step boundary
    with StopSignals() as signals:
        try:
            while step < plan.total and reason == "done":
                epoch, offset = divmod(step, steps_per_epoch)
                sampler.set_epoch(epoch, start=offset * cfg.batch_size)
                data.set_epoch(epoch)
                for images, targets in loader:
                    lr = base_lr * lr_factor(
                        step,
                        plan.total,
                        min(cfg.warmup_steps, max(1, plan.total // 10)),
                        cfg.schedule,
                    )
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    images = [im.to(device, non_blocking=True) for im in images]
                    targets = [t.to(device) for t in targets]
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        loss_dict = net(images, targets)
                    terms = torch.stack([v.float() for v in loss_dict.values()])
                    loss = terms.sum()

                    # one collective per step: mean losses, stop requests and clock of all ranks
                    flags = [float(signals.requested or state.stop), time.perf_counter() - t0]
                    flags_t = torch.tensor(flags, device=device)
                    synced = du.all_reduce_mean(
                        torch.cat([loss.detach()[None], terms.detach(), flags_t])
                    )
                    values = dict(zip(["loss", *loss_dict], synced[:-2].tolist()))
                    stop_requested, elapsed = bool(synced[-2] > 0), float(synced[-1])
                    if not all(math.isfinite(v) for v in values.values()):
                        save_last()  # the weights are still those of the last finite update
                        bad = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                        raise TrainingDiverged(
                            f"loss is not finite at step {step} ({bad}); stopped; the last good "
                            f"state (step {step}) is in {last_path}; lower --lr"
                        )

                    consistent = False
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    max_norm = cfg.clip_grad or math.inf
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                    if not torch.isfinite(grad_norm) and not scaler.is_enabled():
                        optimizer.zero_grad(set_to_none=True)
                        consistent = True
                        save_last()
                        raise TrainingDiverged(
                            f"gradient norm is {float(grad_norm)} at step {step}; stopped; the last "
                            f"good state (step {step}) is in {last_path}; lower --lr or set --clip-grad"
                        )
                    scaler.step(optimizer)  # fp16: skipped when the scaled gradients overflowed
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    step += 1
                    if ema is not None:
                        ema.update(model, step)
                    consistent = True

                    if plan.after_step(step, elapsed):  # budget run: just planned
                        next_eval = step  # evaluate now: times it (re-plan) and fails early
                        if bar is not None:
                            bar.total = plan.total
                    state.step, state.epoch, state.total_steps = step, epoch, plan.total
                    state.lr, state.losses = lr, values
                    logged = step % cfg.log_every == 0 or step in (start_step + 1, plan.total)
                    if log is not None and logged:
                        log.write({"step": step, "epoch": epoch, "lr": lr, **values,
                                   "time": round(elapsed, 3)})  # fmt: skip
                    if bar is not None:
                        short = {k.replace("loss_", ""): f"{v:.3g}" for k, v in values.items()}
                        bar.set_postfix(short, refresh=False)
                        bar.update(1)
                    for cb in callbacks:
                        cb(state)

                    if step % max(10, plan.total // 50) == 0 and plan.refresh(
                        step, elapsed, eval_interval() if val_set is not None else None
                    ):  # budget runs: step times drift; keep the schedule ending at the budget
                        if bar is not None:
                            bar.total = plan.total
                    if plan.planned and next_eval is None:  # budget runs: once the plan exists
                        next_eval = (step // eval_interval() + 1) * eval_interval()
                    if (
                        val_set is not None
                        and next_eval is not None
                        and (step >= next_eval or step >= plan.total)
                    ):
                        t_eval = time.perf_counter()
                        run_eval()
                        state.last_eval, state.best_ap = last_eval, best_ap
                        eval_s = du.broadcast_float(time.perf_counter() - t_eval, device)
                        spent = du.broadcast_float(time.perf_counter() - t0, device)
                        plan.after_eval(step, spent, eval_s, eval_interval())
                        next_eval = (step // eval_interval() + 1) * eval_interval()
                        if bar is not None:
                            bar.total = plan.total
                    # single process: stop at once; DDP: at the next step, when all ranks agree
                    if stop_requested or (not info.enabled and (signals.requested or state.stop)):
                        reason = "interrupted"
                    elif elapsed >= budget_s and step < plan.total:
                        reason = "time budget"
                    if reason != "done" or step >= plan.total:
                        break
                    if elapsed - last_save > cfg.save_every_min * 60:
                        save_last()
                        last_save = elapsed
        except KeyboardInterrupt:  # from a callback, or a second Ctrl-C
            reason = "interrupted"
            if not consistent:
                raise
        finally:
            if bar is not None:
                bar.close()
    if val_set is not None and reason == "time budget" and eval_step != step:
        run_eval()  # the budget ran out between evaluations: evaluate the final weights
    save_last()
    if log is not None:
        plot_curves(log.read(), out / "curves.png")
        ap = f"; best segm AP {best_ap:.4f}" if best_ap >= 0 else ""
        print(f"{reason} at step {step}/{plan.total}; saved {last_path}{ap}", flush=True)
    return TrainResult(
        step=step,
        total_steps=plan.total,
        reason=reason,
        best_ap=best_ap,
        last_eval=last_eval,
        last_path=last_path if main else None,
        best_path=best_path if best_path.exists() else None,
    )
