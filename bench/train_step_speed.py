"""CPU training-step speed: our GroupNorm and Dice kernels vs PyTorch's autograd of the same math.

Three parts, each timing the reference and ours in this process (2 threads by default):

1. GroupNorm forward + backward on channels-last activations of the shapes the light
   SOLOv2 sees: ``nn.GroupNorm`` vs our channels-last function (``group_norm_channels_last``;
   the last column says which one :class:`instseg.models.common.group_norm.GroupNorm` picks).
2. SOLOv2's Dice loss on ``P`` positive cells of ``M`` mask pixels, forward + backward:
   ``losses.dice_loss(sigmoid(logits), targets[index])`` vs :func:`dice.dice_loss_logits`.
3. Whole training steps of ``solov2_light_mnv3`` with the nuclei data's autoconfig on random
   ``--crop`` px crops of the DSB training split (``--augment microscopy``): the same initial
   weights and samples with the references patched in ("reference") or not ("ours"),
   alternating in ``--rounds`` rounds so that machine drift hits both.

    python bench/train_step_speed.py [--threads 2] [--steps 30] [--rounds 3] [--crop 384]

Prints ms per call / per step, and the ratio reference / ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from instseg.models.common.group_norm import (  # noqa: E402
    MAX_GROUP_CHANNELS,
    MIN_PIXELS,
    GroupNorm,
    group_norm_channels_last,
)
from instseg.models.solov2 import losses  # noqa: E402
from instseg.models.solov2 import model as solov2_module  # noqa: E402
from instseg.models.solov2.losses import dice_loss_logits  # noqa: E402

GN_SHAPES = [(16, 192, 192, 8), (64, 192, 192, 32), (64, 112, 112, 32), (24, 96, 96, 8),
             (72, 96, 96, 8), (64, 56, 56, 32), (240, 24, 24, 16)]  # fmt: skip


def _time(fn: Callable[[], None], reps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps * 1000


def _gn_step(module: Callable[[Tensor], Tensor], x: Tensor, grad: Tensor) -> None:
    module(x).backward(grad)


def _dice_step(fn: Callable[..., Tensor], logits: Tensor, targets: Tensor, index: Tensor) -> None:
    fn(logits, targets, index).mean().backward()


def bench_group_norm(reps: int) -> None:
    print("GroupNorm, channels-last, forward + backward (ms)")
    print(f"{'C x H x W / groups':>22} | {'nn.GroupNorm':>12} | {'ours':>8} | ratio | GroupNorm uses")
    for c, h, w, g in GN_SHAPES:
        x = torch.randn(1, c, h, w).contiguous(memory_format=torch.channels_last)
        grad = torch.randn_like(x)
        times = []
        ours = functools.partial(group_norm_channels_last, groups=g, weight=torch.ones(c, requires_grad=True), bias=torch.zeros(c, requires_grad=True))
        for module in (nn.GroupNorm(g, c), ours):
            xr = x.clone().requires_grad_(True)
            times.append(_time(functools.partial(_gn_step, module, xr, grad), reps))
        used = c <= MAX_GROUP_CHANNELS * g and h * w >= MIN_PIXELS
        print(f"{f'{c} x {h} x {w} / {g}':>22} | {times[0]:12.2f} | {times[1]:8.2f} | {times[0] / times[1]:.2f}x | {'ours' if used else 'native'}")


def _dice_reference(logits: Tensor, targets: Tensor, index: Tensor) -> Tensor:
    probs = torch.sigmoid(logits)
    return losses.dice_loss(probs, targets[index])


def bench_dice(reps: int) -> None:
    print("\nDice loss of P cells x M pixels (O objects), forward + backward (ms)")
    print(f"{'P x M (O)':>18} | {'autograd':>9} | {'ours':>8} | ratio")
    for p, m, o in ((64, 96 * 96, 20), (250, 112 * 112, 60), (400, 112 * 112, 100)):
        logits = (torch.randn(p, m) * 3).requires_grad_(True)
        targets = torch.rand(o, m)
        index = torch.randint(0, o, (p,))
        times = []
        for fn in (_dice_reference, dice_loss_logits):
            times.append(_time(functools.partial(_dice_step, fn, logits, targets, index), reps))
        print(f"{f'{p} x {m} ({o})':>18} | {times[0]:9.2f} | {times[1]:8.2f} | {times[0] / times[1]:.2f}x")


def _native_group_norm(self: nn.GroupNorm, x: Tensor) -> Tensor:
    return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def bench_steps(steps: int, rounds: int, crop: int) -> None:
    from bench.common import load_split
    from instseg.data.loader import TrainingDataset
    from instseg.data.transforms import PRESETS, build_transform
    from instseg.models.autoconfig import suggest_for_model
    from instseg.models.zoo import build_model

    train, _ = load_split("dsb2018_stage1_subset")
    cfg = suggest_for_model("solov2_light_mnv3", train, cpu=True)
    scale = float(cfg.get("train_input_scale") or cfg.get("input_scale") or 1.0)
    aug = dataclasses.replace(PRESETS["microscopy"], crop_size=(round(crop / scale),) * 2)
    data = TrainingDataset(train, transform=build_transform(aug), seed=0)
    samples = [data[i % len(data)] for i in range(steps + 2)]
    models = {}
    for variant in ("reference", "ours"):
        torch.manual_seed(0)
        model = build_model("solov2_light_mnv3", 1, **cfg).train()
        models[variant] = (model, torch.optim.AdamW(model.parameters(), 6e-4))
    ours_forward, ours_dice = GroupNorm.forward, solov2_module.dice_loss_logits

    def run(variant: str) -> float:
        ref = variant == "reference"
        GroupNorm.forward = _native_group_norm if ref else ours_forward  # type: ignore[method-assign]
        solov2_module.dice_loss_logits = _dice_reference if ref else ours_dice  # type: ignore[assignment]
        model, opt = models[variant]
        start = 0.0
        for i, (image, target) in enumerate(samples):
            if i == 2:
                start = time.perf_counter()
            loss = sum(model.losses([image], [target]).values())
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
        return (time.perf_counter() - start) / steps * 1000

    results: dict[str, list[float]] = {"reference": [], "ours": []}
    for r in range(rounds):
        for variant in ("reference", "ours") if r % 2 == 0 else ("ours", "reference"):
            results[variant].append(run(variant))
    GroupNorm.forward, solov2_module.dice_loss_logits = ours_forward, ours_dice  # type: ignore[method-assign]
    ref, ours = statistics.mean(results["reference"]), statistics.mean(results["ours"])
    print(f"\nsolov2_light_mnv3 training steps on {crop} px nuclei crops, {steps} steps x {rounds} rounds")
    print(f"reference (nn.GroupNorm, autograd Dice): {[round(t) for t in results['reference']]} ms/step, mean {ref:.0f}")
    print(f"ours:                                    {[round(t) for t in results['ours']]} ms/step, mean {ours:.0f}")
    print(f"ratio reference / ours: {ref / ours:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=20, help="calls per op timing")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crop", type=int, default=384, help="crop side, model-input px")
    parser.add_argument("--skip-steps", action="store_true", help="only the op timings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_group_norm(args.reps)
    bench_dice(args.reps)
    if not args.skip_steps:
        bench_steps(args.steps, args.rounds, args.crop)


if __name__ == "__main__":
    main()
