"""Train a model of the zoo on a dataset in any format; writes DIR/last.pt, DIR/best.pt, logs.

    instseg train --data TRAIN --model NAME --out DIR --time-budget MIN [--val VAL] ...

The schedule length is ``--steps``, else ``--epochs``, else derived from ``--time-budget``
(counted from the command's start; the first steps and the first evaluation are timed and
the cosine schedule is sized to end at the budget); with ``--steps``/``--epochs`` the budget
is a hard stop. Defaults adapt to the data (input scale, anchors: ``instseg.models.autoconfig``)
and to the model (the zoo's recommended optimizer, lr, warm-up, clipping). ``--resume``
continues DIR/last.pt exactly (saved every ``--save-every`` minutes); a DIR that holds a run
is refused unless ``--resume`` or ``--overwrite`` says what to do. Ctrl-C saves DIR/last.pt and exits (code 130).
Multi-GPU / multi-node: ``torchrun --nproc_per_node N -m instseg train ...`` (see
``instseg.engine.distributed``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instseg.cli.common import report_skipped
from instseg.cli.train_args import add_arguments as add_arguments  # the command's arguments
from instseg.cli.train_args import argument_problem
from instseg.errors import DataError

if TYPE_CHECKING:  # the heavy modules are imported when a command runs (CLI start-up)
    from torch import nn

    from instseg.data.dataset import InstanceDataset
    from instseg.data.transforms import AugmentConfig
    from instseg.engine.config import TrainConfig
    from instseg.models.zoo import Recipe


def _usage(msg: str) -> int:
    print(f"instseg train: error: {msg}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    start = time.time()  # --time-budget counts from here: loading and model building included
    problem = argument_problem(args)
    if problem is not None:
        return _usage(problem)
    import torch

    from instseg.engine.distributed import cleanup
    from instseg.engine.rundir import check_out_dir
    from instseg.engine.train import train

    check_out_dir(args.out, args.resume, args.overwrite)  # before the data and the model

    main = int(os.environ.get("RANK", "0")) == 0
    train_set, val_set = _load_data(args)
    if main:
        report_skipped(train_set.skipped + (val_set.skipped if val_set is not None else []))
    torch.manual_seed(args.seed)  # reproducible initialisation (identical on every rank)
    model, recipe = build_for_training(args, train_set)
    config: dict[str, Any] = dict(model.config)  # type: ignore[call-overload,arg-type]
    cfg = _train_config(args, recipe, _augmentation(args, config, train_set), start)
    if main:
        _announce(args, model, cfg, len(train_set), len(val_set) if val_set is not None else 0)
    try:
        result = train(model, train_set, cfg, val_set)
    finally:
        cleanup()
    return 130 if result.reason == "interrupted" else 0


def _load_data(args: argparse.Namespace) -> tuple[InstanceDataset, InstanceDataset | None]:
    """``(train_set, val_set)`` from ``--data`` and ``--val`` (or ``--val-split``)."""
    from instseg.data.formats import load_dataset

    train_set = load_dataset(
        args.data, format=args.format, images_dir=args.images, skip_invalid=args.skip_invalid
    )
    if len(train_set) == 0 or not train_set.categories:
        raise DataError(args.data, None, "training set has no images or no categories")
    if args.val:
        val_set = load_dataset(
            args.val, format=args.format, images_dir=args.images, skip_invalid=args.skip_invalid
        )
        if val_set.label_to_cat_id != train_set.label_to_cat_id:
            raise DataError(
                args.val,
                "categories",
                f"ids {val_set.label_to_cat_id} differ from the training set's {train_set.label_to_cat_id}",
            )
        return train_set, val_set
    if args.val_split > 0:
        return train_set.split(args.val_split, seed=args.seed)
    return train_set, None


def _train_config(
    args: argparse.Namespace, recipe: Recipe | None, augment: AugmentConfig, start: float
) -> TrainConfig:
    """The run's :class:`TrainConfig`: each flag given, else the zoo recipe's value (its lr
    scaled to the global batch and used only with the recipe's optimizer), else the engine's
    default (``recipe`` None: not a zoo model)."""
    from instseg.engine.config import TrainConfig
    from instseg.engine.optim import scale_lr
    from instseg.models.zoo import Recipe

    base = recipe or Recipe()  # no lr from it: see below
    batch = args.batch_size or base.batch_size
    optimizer = args.optimizer or base.optimizer
    lr = args.lr
    if lr is None and recipe is not None and recipe.optimizer == optimizer:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        lr = scale_lr(recipe.lr, optimizer, batch * world, recipe.batch_size)
    clip = args.clip_grad if args.clip_grad is not None else base.grad_clip
    decay = args.weight_decay if args.weight_decay is not None else (
        recipe.weight_decay if recipe else None
    )
    return TrainConfig(
        out_dir=Path(args.out),
        steps=args.steps,
        epochs=args.epochs,
        time_budget_min=args.time_budget,
        batch_size=batch,
        lr=lr,
        optimizer=optimizer,
        weight_decay=decay,
        schedule=args.schedule,
        warmup_steps=args.warmup if args.warmup is not None else base.warmup_iters,
        clip_grad=clip or None,
        ema=float(args.ema) if args.ema else None,
        amp=args.amp,
        device=args.device,
        seed=args.seed,
        num_workers=args.workers,
        augment=augment,
        eval_every=args.eval_every,
        save_every_min=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress and sys.stderr.isatty(),
        clock_start=start,
    )


def _announce(
    args: argparse.Namespace, model: nn.Module, cfg: TrainConfig, n_train: int, n_val: int
) -> None:
    """Print the run's model, data and recipe; write ``OUT/train_args.json`` (rank 0)."""
    from instseg.device import resolve_device
    from instseg.engine.config import cpu_bf16_fast

    if args.amp == "bf16" and resolve_device(args.device).type == "cpu" and not cpu_bf16_fast():
        print("warning: --amp bf16: this CPU has no native bf16 (slower than fp32)")
    config = dict(model.config)  # type: ignore[call-overload,arg-type]
    print(f"model {config['name']} ({model.num_classes} classes) {json.dumps(config)}")
    given = [f for f, v in (("--batch-size", args.batch_size), ("--lr", args.lr),
                            ("--optimizer", args.optimizer)) if v is not None]  # fmt: skip
    device = resolve_device(args.device).type
    why = f"{config['name']}'s {device} training recipe" + (f", {', '.join(given)} given" if given else "")
    print(
        f"data: {n_train} train / {n_val} val images; batch {cfg.batch_size}, {cfg.optimizer}, "
        f"lr {cfg.lr if cfg.lr is not None else 'default'}, {cfg.warmup_steps} warm-up steps "
        f"({why})" + (f", weight EMA {cfg.ema}" if cfg.ema else "")
    )
    assert not isinstance(cfg.augment, str) and cfg.augment is not None
    crop = cfg.augment.crop_size
    print(f"augment: {args.augment}" + (f", random {crop[0]}x{crop[1]} crops" if crop else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_args.json").write_text(
        json.dumps(
            {k: v for k, v in vars(args).items() if not k.startswith("_")},
            indent=1,
            default=str,
        )
    )


def _augmentation(
    args: argparse.Namespace, config: dict[str, Any], train_set: InstanceDataset
) -> AugmentConfig:
    """The ``--augment`` preset with the training crop of ``--crop`` or the data-driven default."""
    from instseg.data.transforms import PRESETS
    from instseg.models.autoconfig import training_crop

    crop = training_crop(config, train_set, args.crop)
    return dataclasses.replace(PRESETS[args.augment], crop_size=(crop, crop) if crop else None)


def build_for_training(
    args: argparse.Namespace, train_set: InstanceDataset
) -> tuple[nn.Module, Recipe | None]:
    """``(model, recipe)``: from DIR/last.pt on ``--resume``, a checkpoint, or the zoo + autoconfig."""
    from instseg.device import resolve_device
    from instseg.engine.checkpoint import SHIPPED, load_checkpoint
    from instseg.models.zoo import MODELS, build_model, training_recipe

    device = resolve_device(args.device).type
    last = Path(args.out) / "last.pt"
    if args.resume and last.is_file():  # same architecture as the interrupted run
        config = load_checkpoint(last)["config"]
        if args.model in MODELS and args.model != config["name"]:
            raise DataError(
                last, "--model", f"--resume: this run trains {config['name']}, not {args.model}; "
                "pass --overwrite to replace it or use another --out",
            )  # fmt: skip
        return build_model(**config), training_recipe(config["name"], device)
    if args.init is not None:
        from instseg.inference.loading import init_model

        model, report = init_model(
            args.init, len(train_set.categories), _refit(args, train_set, device == "cpu")
        )
        print(report.summary())
        return model, training_recipe(report.name, device)
    if args.model not in MODELS and (Path(args.model).exists() or args.model in SHIPPED):
        return _fine_tune(args.model, len(train_set.categories), device)
    if args.model not in MODELS:
        raise DataError(
            None,
            "--model",
            f"unknown model '{args.model}' (see `instseg models`; shipped: "
            f"{', '.join(SHIPPED)}) and no such checkpoint",
        )
    from instseg.models.autoconfig import DatasetSizeStats, explain, suggest_for_model

    suggested = suggest_for_model(args.model, train_set, cpu=device == "cpu")
    for line in explain(DatasetSizeStats.from_dataset(train_set), suggested):
        print(line)
    overrides = {**suggested, **_model_args(args.model_arg)}
    pretrained = _pretrained(args.model, args.pretrained)
    try:
        model = build_model(args.model, len(train_set.categories), pretrained, **overrides)
    except (TypeError, ValueError) as exc:
        flag = "--pretrained" if args.pretrained and "from scratch" in str(exc) else "--model-arg"
        raise DataError(None, flag, f"cannot build {args.model}: {exc}") from None
    return model, training_recipe(args.model, device)


def _refit(
    args: argparse.Namespace, train_set: InstanceDataset, cpu: bool
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """``--init``'s config change: input size and detection budgets refitted to the training
    data (printed with the reasons), then ``--model-arg`` values."""
    from instseg.models.autoconfig import INPUT_KEYS, DatasetSizeStats, explain, refit_input

    def adapt(config: dict[str, Any]) -> dict[str, Any]:
        new = {**refit_input(config, train_set, cpu), **_model_args(args.model_arg)}
        changed = {k: (config.get(k), new.get(k)) for k in INPUT_KEYS if config.get(k) != new.get(k)}
        if changed:
            shown = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed.items())
            print(f"input refitted to this data: {shown}")
            stats = DatasetSizeStats.from_dataset(train_set)
            for line in explain(stats, {k: v for k, v in new.items() if k in INPUT_KEYS}):
                print(line)
        return new

    return adapt


def _pretrained(name: str, flag: str | None) -> str:
    """``--pretrained`` for zoo model ``name``: the flag, else ImageNet where the model has
    ImageNet weights and none otherwise; the choice is printed with its reason."""
    from instseg.models.zoo import MODELS

    arch = MODELS[name].imagenet
    choice = flag or ("imagenet" if arch else "none")
    if choice == "imagenet":
        print(f"backbone: ImageNet {arch} weights (torchvision's; --pretrained none to train from scratch)")
    elif choice == "none" and arch:
        print("backbone: from scratch (--pretrained none)")
    elif choice != "none":
        print(f"backbone: weights from {choice}")
    return choice


def _fine_tune(model_path: str, k: int, device: str) -> tuple[nn.Module, Recipe | None]:
    """A trained model (checkpoint, training folder or shipped name) to fine-tune on ``k``
    classes, in training mode, with its architecture's recipe."""
    from instseg.inference.loading import load_model
    from instseg.models.zoo import training_recipe

    model, meta = load_model(model_path)
    if int(meta["config"]["num_classes"]) != k:
        raise DataError(
            model_path,
            "num_classes",
            f"model has {meta['config']['num_classes']} classes, the training set {k} "
            "(--init re-initialises the class-dependent layers)",
        )
    return model.train(), training_recipe(meta["config"]["name"], device)


def _model_args(items: list[str] | None) -> dict[str, Any]:
    """``["input_scale=1.0", "anchor_sizes=[[8],[16]]"]`` -> dict (values parsed as JSON)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise DataError(None, "--model-arg", f"expected KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string
    return out
