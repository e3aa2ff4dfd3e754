"""The training folder's rules: never resume silently, never train over another run.

* ``resume`` and no ``DIR/last.pt``: an error that names the file looked for.
* no ``resume`` and ``DIR`` holds a run (``last.pt`` or ``best.pt``): refused unless
  ``overwrite``, which deletes that run's files (checkpoints, log, curves, stray temp files).
* ``resume`` of a run of another model (name, number of classes) or on other data (see
  :func:`data_fingerprint`): refused; ``overwrite`` starts afresh instead.
* stray checkpoint temp files (``.last.pt.<pid>.tmp``, left by a process killed while
  saving) are never loaded; they are removed when a run starts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from instseg.data.dataset import InstanceDataset
from instseg.errors import InstsegError

__all__ = [
    "RunDirError",
    "check_out_dir",
    "check_same_run",
    "data_fingerprint",
    "remove_stray_temps",
]

#: the files a training run writes into its folder (``--overwrite`` deletes these)
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png")


class RunDirError(InstsegError):
    """The output folder does not fit ``resume`` / ``overwrite`` (one line: what to pass)."""


def data_fingerprint(dataset: InstanceDataset) -> dict[str, Any]:
    """What identifies a training set: image count, category ids and a digest of the image
    file names with their instance counts (not the source path: a moved folder is the same
    data)."""
    h = hashlib.sha1()
    for rec in dataset.images:
        h.update(f"{rec.file_name}\0{len(rec.annotations)}\n".encode("utf-8", "replace"))
    return {
        "images": len(dataset.images),
        "cat_ids": list(dataset.label_to_cat_id),
        "digest": h.hexdigest()[:16],
    }


def check_out_dir(out: str | Path, resume: bool, overwrite: bool) -> None:
    """Before anything is built: RunDirError when ``out`` does not fit ``resume``/``overwrite``."""
    out = Path(out)
    if resume and overwrite:
        raise RunDirError(
            "--resume and --overwrite exclude each other: continue the run or replace it"
        )
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: output path exists and is not a folder")
    last = out / "last.pt"
    if resume and not last.is_file():
        raise RunDirError(
            f"--resume: no checkpoint to continue (looked for {last}); "
            "train without --resume to start a new run"
        )
    if not resume and not overwrite:
        held = [n for n in ("last.pt", "best.pt") if (out / n).is_file()]
        if held:
            raise RunDirError(
                f"{out} already holds a training run ({', '.join(held)}); pass --resume to "
                "continue it, --overwrite to replace it, or another --out"
            )


def clear_run(out: Path) -> None:
    """``overwrite``: delete an earlier run's files (only those a run writes)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    remove_stray_temps(out)


def remove_stray_temps(out: Path) -> list[Path]:
    """Delete checkpoint temp files left by a killed save -> the deleted paths."""
    found = sorted(out.glob(".*.pt.*.tmp")) if out.is_dir() else []
    for p in found:
        p.unlink(missing_ok=True)
    return found


def check_same_run(
    ckpt: dict[str, Any], path: Path, config: dict[str, Any], fingerprint: dict[str, Any]
) -> None:
    """RunDirError when checkpoint ``ckpt`` (at ``path``) belongs to another model or data."""
    old = ckpt.get("config", {})
    for key in ("name", "num_classes"):
        if key in old and key in config and old[key] != config[key]:
            raise RunDirError(
                f"--resume: {path} is a run of {old.get('name')} ({old.get('num_classes')} "
                f"classes), not {config.get('name')} ({config.get('num_classes')} classes); "
                "pass --overwrite to replace it or use another --out"
            )
    before = ckpt.get("data")
    if isinstance(before, dict) and before != fingerprint:
        shown = ", ".join(
            f"{k} {before.get(k)} -> {fingerprint.get(k)}"
            for k in fingerprint if before.get(k) != fingerprint.get(k)
        )  # fmt: skip
        raise RunDirError(
            f"--resume: {path} was trained on other data ({shown}); pass --overwrite to "
            "replace the run or use another --out"
        )
