"""The arguments of ``instseg train`` (see :mod:`instseg.cli.train`): data, schedule, recipe,
augmentation and run options, and the check of their values."""

from __future__ import annotations

import argparse

from instseg.cli.common import add_format_arguments

__all__ = ["add_arguments", "argument_problem"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_data_arguments(p)
    _add_schedule_arguments(p)
    _add_recipe_arguments(p)
    _add_augment_arguments(p)
    _add_run_arguments(p)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--model``, ``--out``, ``--val``, ``--val-split``."""
    p.add_argument(
        "--data",
        required=True,
        metavar="TRAIN",
        help="training set (any format `instseg convert` reads)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="zoo name (`instseg models`), or a checkpoint to fine-tune on the same classes",
    )
    p.add_argument(
        "--init",
        default=None,
        metavar="CHECKPOINT",
        help="start from this checkpoint (a training folder, the shipped nuclei model or "
        "torchvision Mask R-CNN weights) on the training set's classes: its architecture, "
        "every weight that fits, the class-dependent head layers re-initialised",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument(
        "--val", default=None, metavar="VAL", help="validation set (segm AP picks best.pt)"
    )
    p.add_argument(
        "--val-split",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of TRAIN as validation when --val is absent",
    )


def _add_schedule_arguments(p: argparse.ArgumentParser) -> None:
    """Schedule length and shape: ``--time-budget``, ``--epochs``/``--steps``, ``--schedule``,
    ``--warmup``, ``--eval-every``."""
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="MIN",
        help="wall-clock budget in minutes",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None, help="schedule length in epochs")
    length.add_argument(
        "--steps", type=int, default=None, help="schedule length in optimizer steps"
    )
    p.add_argument("--schedule", choices=("cosine", "step", "constant"), default="cosine")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        metavar="STEPS",
        help="linear warm-up steps (capped at 10%% of the run)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="validation interval (default: per epoch, <= 8 times)",
    )


def _add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """Optimisation: batch size, lr, optimizer, weight decay, clipping, EMA, mixed precision."""
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per step per process (default: the model's recipe)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help="base learning rate (default: the recipe's, scaled by batch size)",
    )
    p.add_argument(
        "--optimizer", choices=("adamw", "sgd"), default=None, help="default: the model's recipe"
    )
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--clip-grad", type=float, default=None, help="max gradient norm (0: off)")
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="DECAY",
        help="evaluate and save a moving average of the weights (e.g. 0.999; 0: off; "
        "default: the model's recipe)",
    )
    p.add_argument(
        "--amp",
        choices=("auto", "bf16", "fp16", "off"),
        default="auto",
        help="mixed precision: CUDA auto = bf16 (else fp16); CPU: fp32 unless bf16 (faster "
        "with AVX512-BF16/AMX, but box regression can overflow: experimental)",
    )


def _add_augment_arguments(p: argparse.ArgumentParser) -> None:
    """``--augment``, ``--crop``, ``--pretrained`` and ``--model-arg`` (model settings)."""
    p.add_argument(
        "--pretrained",
        default=None,
        metavar="imagenet|none|FILE",
        help="backbone weights of a zoo model that has them (see `instseg models -v`): "
        "ImageNet (the default for those), none (from scratch) or a weights file",
    )
    p.add_argument(
        "--augment",
        choices=("default", "lsj", "microscopy", "none"),
        default="default",
        help="augmentation preset (microscopy: both flips, scale 0.7-1.4)",
    )
    p.add_argument(
        "--crop",
        type=int,
        default=None,
        metavar="PX",
        help="train on random crops of about PX x PX model-input pixels (0: whole images; "
        "default: 512 for fixed-scale models, 320 for SOLOv2 on small objects; see "
        "instseg.models.autoconfig.training_crop)",
    )
    p.add_argument(
        "--model-arg",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="override a model setting (repeatable; VALUE is JSON), e.g. input_scale=1.0 or "
        "anchor_sizes='[[8],[16],[32],[64],[128]]'; wins over the data-adaptive defaults "
        "and over an --init checkpoint's settings",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Resume, seed, device, workers, input format and progress."""
    p.add_argument(
        "--resume", action="store_true",
        help="continue DIR/last.pt exactly (an error when DIR holds none, or holds a run of "
        "another model or other data)",
    )  # fmt: skip
    p.add_argument(
        "--overwrite", action="store_true",
        help="replace the run already in DIR (without it, or --resume, such a DIR is refused)",
    )  # fmt: skip
    p.add_argument(
        "--save-every", type=float, default=5.0, metavar="MINUTES",
        help="save DIR/last.pt (with its step) this often; --resume continues from it "
        "(default 5)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="data loader workers per process (default: 0 when training on a CPU with <= 4 "
        "cores, else 1 per 8 cores; GPU: cores - 1, <= 4)",
    )
    add_format_arguments(p)
    p.add_argument(
        "--skip-invalid",
        action="store_true",
        help="skip bad items with a warning instead of stopping",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def argument_problem(args: argparse.Namespace) -> str | None:
    """Why the schedule / size arguments are unusable, or None."""
    if args.time_budget is None and args.epochs is None and args.steps is None:
        return "give --time-budget MIN, --epochs N or --steps N"
    if (args.model is None) == (args.init is None):
        return "give --model NAME or --init CHECKPOINT (one of them)"
    for name in ("time_budget", "epochs", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return f"--{name.replace('_', '-')} must be positive"
    if not 0.0 <= args.val_split < 1.0:
        return "--val-split must be in [0, 1)"
    if not args.save_every > 0:
        return "--save-every must be positive (minutes)"
    return None
