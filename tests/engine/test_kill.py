"""SIGKILL a training run at random moments, inside checkpoint writes too, and resume.

``kill_runner.py`` runs ``instseg train`` (the tiny model) in a subprocess whose checkpoint
saves pause half-way through the temp file and before the rename. The run saves ``last.pt``
every ``--save-every 0.005`` minutes (0.3 s). Run A is killed inside a save; run B resumes it
and is killed at a random time; run C resumes again and finishes. Checked: every resume starts
from the last complete save (step > 0), the stray temp file of the killed save is never
loaded (and is removed), and C's final weights equal those of an uninterrupted run resumed
from A's checkpoint (deterministic CPU training, one thread, fixed seed).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from instseg.engine.checkpoint import load_checkpoint
from instseg.errors import DataError
from tests.engine import REPO_ROOT, make_shapes_dataset

RUNNER = Path(__file__).with_name("kill_runner.py")
STEPS = 10


def _cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(RUNNER), "train", "--data", str(data), "--model", "tiny",
            "--out", str(out), "--steps", str(STEPS), "--workers", "0", "--warmup", "1",
            "--seed", "3", "--no-progress", "--save-every", "0.005", *extra]  # fmt: skip


def _env(pause: float) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "KILL_PAUSE_S": str(pause),
            "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip


class _Run:
    """The runner in a subprocess; a thread collects its stdout lines."""

    def __init__(self, cmd: list[str], pause: float, log: Path) -> None:
        self.lines: list[str] = []
        self.log = log
        with open(log, "w") as err:  # stderr to a file: no pipe to fill up
            self.proc = subprocess.Popen(cmd, env=_env(pause), stdout=subprocess.PIPE,
                                         stderr=err, text=True, cwd=REPO_ROOT)  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_for(self, prefix: str, nth: int = 1, timeout: float = 60) -> None:
        """Until the ``nth`` line starting with ``prefix`` (AssertionError on timeout/exit)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if sum(x.startswith(prefix) for x in list(self.lines)) >= nth:
                return
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.005)
        raise AssertionError(
            f"no {prefix!r} #{nth}: {self.lines[-5:]} {self.log.read_text()[-2000:]}"
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)

    def finish(self, timeout: float = 120) -> None:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        assert self.proc.returncode == 0, self.log.read_text()[-3000:]

    def resumed_step(self, out: Path) -> int:
        found = [re.search(r"resumed from (.*) at step (\d+)", x) for x in self.lines]
        match = next(m for m in found if m is not None)
        assert match.group(1) == str(out / "last.pt")
        return int(match.group(2))


def test_sigkill_anywhere_then_resume_continues_exactly(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    note = f"(random seed {seed})"
    data = make_shapes_dataset(tmp_path / "images", n_images=4, size=(48, 56)).save_coco(
        tmp_path / "train.json"
    )
    out, ref = tmp_path / "run", tmp_path / "ref"
    # A: killed inside its 2nd-4th save, half-way through the temp file or before the rename
    kind = rng.choice(["PAUSE write", "PAUSE rename"])
    a = _Run(_cmd(data, out), 0.3, tmp_path / "a.log")
    a.wait_for(kind, rng.randint(2, 4))
    a.kill()
    stray = list(out.glob(".last.pt.*.tmp"))
    assert len(stray) == 1, f"{kind}: {stray} {note}"
    if kind == "PAUSE write":  # half a checkpoint: loading it would fail
        with pytest.raises(DataError, match="cannot read checkpoint"):
            load_checkpoint(stray[0])
    step_a = load_checkpoint(out / "last.pt")["step"]  # the last complete save
    assert 0 < step_a < STEPS, note
    ref.mkdir()
    shutil.copy(out / "last.pt", ref / "last.pt")
    # B: resumes from A's last complete save, never the temp file; killed at a random time
    b = _Run(_cmd(data, out, "--resume"), 0.15, tmp_path / "b.log")
    b.wait_for("resumed from")
    assert b.resumed_step(out) == step_a, note
    assert not stray[0].exists(), note  # the killed save's temp file is removed, not loaded
    time.sleep(rng.uniform(0.0, 1.5))
    b.kill()
    step_b = load_checkpoint(out / "last.pt")["step"]  # whatever B saved, complete
    assert step_a <= step_b <= STEPS, note
    # C resumes and finishes; beside it, the reference: A's checkpoint resumed without kills
    c = _Run(_cmd(data, out, "--resume"), 0.0, tmp_path / "c.log")
    r = _Run(_cmd(data, ref, "--resume", "--save-every", "100"), 0.0, tmp_path / "r.log")
    c.finish()
    r.finish()
    assert c.resumed_step(out) == step_b and r.resumed_step(ref) == step_a, note
    final, expected = load_checkpoint(out / "last.pt"), load_checkpoint(ref / "last.pt")
    assert final["step"] == expected["step"] == STEPS, note
    assert final["model"].keys() == expected["model"].keys()
    for k, v in expected["model"].items():
        assert torch.equal(final["model"][k], v), f"{k} differs {note}"
    assert not list(out.glob(".*.tmp")), note
