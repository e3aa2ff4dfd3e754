"""Training settings, the state callbacks see, the result, and the runtime helpers of the loop."""

from __future__ import annotations

import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from instseg.data.transforms import AugmentConfig
from instseg.errors import InstsegError

__all__ = [
    "StopSignals",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "amp_dtype",
    "cpu_bf16_fast",
]


class TrainingDiverged(InstsegError):
    """The loss or the gradient became NaN/inf; the message says where and what was kept."""


@dataclass
class TrainConfig:
    """Training settings. ``steps`` > ``epochs`` > ``time_budget_min`` decide the schedule length."""

    out_dir: str | Path
    steps: int | None = None
    epochs: int | None = None
    time_budget_min: float | None = None
    batch_size: int = 2  # per process
    lr: float | None = None  # default: optim.DEFAULT_LR[optimizer] scaled to the global batch
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float | None = None
    schedule: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 200  # capped at a tenth of the run
    clip_grad: float | None = 10.0
    ema: float | None = None  # decay of the weights' moving average (None: off); see engine.ema
    amp: str = "auto"  # CUDA: auto (bf16 if supported, else fp16) | bf16 | fp16 | off; CPU: bf16
    device: str | None = None  # default: cuda if available
    seed: int = 0
    num_workers: int | None = None
    augment: str | AugmentConfig | None = "default"
    eval_every: int | None = None  # steps; default: each epoch, at most ~8 evaluations
    log_every: int = 10
    save_every_min: float = 5.0  # minutes between saves of last.pt (with its step)
    resume: bool = False  # continue out_dir/last.pt exactly; an error when there is none
    overwrite: bool = False  # replace a run already in out_dir (else it is refused)
    progress: bool = True
    clock_start: float | None = None  # time.time() the budget counts from (default: train())

    def to_dict(self) -> dict[str, Any]:
        """JSON-/``weights_only``-safe copy (stored in checkpoints)."""
        out = {}
        for k, v in vars(self).items():
            out[k] = (
                asdict(v) if isinstance(v, AugmentConfig) else str(v) if isinstance(v, Path) else v
            )
        return out


@dataclass
class TrainState:
    """What callbacks see after each step; a callback may set ``stop = True``."""

    step: int
    epoch: int
    total_steps: int
    lr: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)
    last_eval: dict[str, Any] | None = None
    best_ap: float = -1.0
    stop: bool = False


@dataclass
class TrainResult:
    step: int
    total_steps: int
    reason: str  # done | interrupted | time budget
    best_ap: float
    last_eval: dict[str, Any] | None
    last_path: Path | None  # None on ranks > 0
    best_path: Path | None


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``--amp`` on ``device`` (None: full precision).

    CUDA: ``auto`` = bf16 where supported, else fp16. CPU: only ``bf16`` turns autocast on
    (oneDNN bf16 convolutions are faster with AVX512-BF16/AMX, see :func:`cpu_bf16_fast`, and
    slower without; experimental: a 15-minute nuclei run diverged in the box regression at
    step 706, ``runs/bench_nuclei_bf16``); ``auto``/``fp16`` stay in fp32.
    """
    if amp == "off":
        return None
    if device.type == "cpu":
        return torch.bfloat16 if amp == "bf16" else None
    if device.type != "cuda":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def cpu_bf16_fast() -> bool:
    """True when oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class StopSignals:
    """SIGINT/SIGTERM set ``requested`` (finish the step, save, return); a 2nd SIGINT aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
