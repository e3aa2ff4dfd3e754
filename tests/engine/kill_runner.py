"""Run ``instseg`` (the tiny test model in the zoo) with checkpoint saves that can be killed
half-way: used by ``test_kill.py`` in a subprocess.

Every save of ``last.pt`` prints ``PAUSE write <step>`` after writing half of the temp file
and ``PAUSE rename <step>`` before the rename, each followed by a pause of
``$KILL_PAUSE_S`` seconds (default 0.3), so that the test can SIGKILL the process inside the
write; ``SAVED <step>`` follows a completed save. Nothing here is part of instseg.

    python tests/engine/kill_runner.py train --data ... --model tiny --out DIR ...
"""

from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from instseg.engine import checkpoint  # noqa: E402
from instseg.models import zoo  # noqa: E402
from tests.engine import build_tiny  # noqa: E402

PAUSE_S = float(os.environ.get("KILL_PAUSE_S", "0.3"))
_real_save, _real_replace = torch.save, os.replace


def _say(text: str) -> None:
    print(text, flush=True)


def _slow_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
    """``torch.save`` into a checkpoint temp file in two halves, pausing between them."""
    name = getattr(f, "name", "")
    if not (isinstance(name, str) and name.endswith(".tmp") and isinstance(obj, dict)):
        return _real_save(obj, f, *args, **kwargs)
    buf = io.BytesIO()
    _real_save(obj, buf, *args, **kwargs)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    _say(f"PAUSE write {obj.get('step')}")
    time.sleep(PAUSE_S)
    f.write(data[len(data) // 2 :])
    _say(f"WROTE {obj.get('step')}")


def _slow_replace(src: Any, dst: Any) -> None:
    if str(src).endswith(".tmp") and str(dst).endswith("last.pt"):
        _say("PAUSE rename")
        time.sleep(PAUSE_S)
        _real_replace(src, dst)
        _say("SAVED")
        return
    _real_replace(src, dst)


checkpoint.torch.save = _slow_save  # type: ignore[assignment]
checkpoint.os.replace = _slow_replace  # type: ignore[assignment]
zoo.MODELS["tiny"] = zoo.ModelSpec(
    lambda k, **o: build_tiny("tiny", k, **o),
    "test",
    "tiny",
    recipe=zoo.Recipe(lr=1e-3, batch_size=2),
)

if __name__ == "__main__":
    torch.set_num_threads(1)
    from instseg.cli.main import main

    sys.exit(main(sys.argv[1:]))
