"""GPU proxy of the 15-minute CPU nuclei benchmark, for choosing CPU defaults quickly.

A CPU benchmark run (``bench/train_nuclei.py``) takes 17 minutes and must run alone; this
script trains many variants of its configuration side by side on one GPU instead, each for
the number of steps that the 2-core CPU would fit in the same budget, and scores them on the
same held-out split. A variant is one line of ``--configs``::

    NAME STEPS SEED [instseg train arguments...]    e.g.
    c48 1635 0 --model-arg fpn_channels=48

``STEPS`` = the CPU run's step count x (CPU seconds per step of the base config / of the
variant), the step times measured on the CPU. Every variant starts from ``--cpu-config``
(the ``config`` of a CPU run's results.json, so the GPU trains exactly what the CPU trained:
1 image per step, AdamW 1e-3, fp32) and adds its own arguments.

    python bench/gpu_proxy_sweep.py --cpu-results runs/bench_nuclei_s5/results.json \\
        --configs sweep.txt --out runs/sweep [--data DIR] [--parallel 12]

Prints ``name steps AP AP50 F1`` per variant as each one ends and appends it to
``--out``/results.jsonl at once (a sweep killed at a time limit keeps its finished rows; each
variant's output is in ``--out``/NAME.log). Size the sweep to the lease: batch-1 steps are
bound by the CPU side, not the GPU (10 light SOLOv2 variants side by side on one H200 with
16 cores ran about 0.29 s per step each, no faster than the 2-core CPU). Not a
substitute for the CPU benchmark: GPU kernels differ numerically, and one seed's spread is
large (two seeds of the same config: 0.385 and 0.357 segm AP), so a winner is confirmed on
the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import load_split, predict_checkpoint, score  # noqa: E402

DATASET = "dsb2018_stage1_subset"


def train_one(name: str, steps: int, seed: str, extra: list[str], args: argparse.Namespace) -> dict:
    """Train one variant on ``args.device`` with the CPU run's config and score it."""
    from instseg.cli import train as train_cli
    from instseg.engine.checkpoint import load_checkpoint

    tr, va = load_split(DATASET, data=args.data)
    run = json.loads(Path(args.cpu_results).read_text())["results"][0]
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    margs: list[str] = []
    for k, v in run["config"].items():
        if k not in ("name", "num_classes"):
            margs += ["--model-arg", f"{k}={json.dumps(v)}"]
    argv = ["--data", str(tr.save_coco(out / "train.json")), "--model", run["config"]["name"],
            "--out", str(out), "--steps", str(steps), "--seed", seed, "--augment", "microscopy",
            "--no-progress", "--device", args.device, "--workers", "1", "--batch-size", "1",
            "--lr", "1e-3", "--amp", "off", *margs, *extra]  # fmt: skip
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    rc = train_cli.run(parser.parse_args(argv))
    ck = load_checkpoint(out / "last.pt")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    train_s = max((json.loads(x).get("time", 0.0) for x in lines), default=0.0)
    results = predict_checkpoint(out / "last.pt", va, device=args.device)
    return {"name": name, "rc": rc, "steps": int(ck["step"]), "seed": seed, "extra": extra,
            "train_s": train_s, "config": ck["config"], **score(va, results, f1=True)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cpu-results", required=True, help="results.json of a CPU nuclei run")
    p.add_argument("--configs", required=True, help="variants, one per line (see above)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="dataset folder (default: ../shared/data)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--parallel", type=int, default=12, help="variants trained at once")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: a config line
    args = p.parse_args(argv)
    if args.one is not None:  # child process: one variant
        name, steps, seed, *extra = shlex.split(args.one)
        row = train_one(name, int(steps), seed, extra, args)
        print("RESULT " + json.dumps(row), flush=True)
        return 0
    lines = [x for x in Path(args.configs).read_text().splitlines() if x.strip()]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, __file__, "--cpu-results", args.cpu_results, "--configs",
            args.configs, "--out", args.out, "--device", args.device]  # fmt: skip
    if args.data:
        base += ["--data", args.data]
    out = Path(args.out)
    results = out / "results.jsonl"
    results.write_text("")
    rows: list[dict] = []
    waiting = list(lines)
    running: list[tuple[str, subprocess.Popen, Path]] = []
    while waiting or running:
        while waiting and len(running) < args.parallel:
            line = waiting.pop(0)
            log = out / f"{shlex.split(line)[0]}.log"  # the child's output, kept for failures
            with open(log, "w") as f:
                proc = subprocess.Popen([*base, "--one", line], env=env, text=True,
                                        stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
            running.append((line, proc, log))
        time.sleep(2)
        for item in [x for x in running if x[1].poll() is not None]:
            running.remove(item)  # rows are written as each variant ends, in any order, so a
            line, proc, log = item  # sweep killed at a time limit keeps the finished ones
            text = log.read_text()
            found = [x for x in text.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not found:
                print(f"FAILED: {line} (see {log})\n{text[-2000:]}", file=sys.stderr, flush=True)
                continue
            r = json.loads(found[-1][len("RESULT ") :])
            rows.append(r)
            with open(results, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(f"{r['name']:10s} {r['steps']:5d} AP {r['AP']:.4f} AP50 {r['AP50']:.4f} "
                  f"F1 {r['F1']:.4f} ({r['train_s']:.0f} s training)", flush=True)  # fmt: skip
    return 0 if len(rows) == len(lines) else 1


if __name__ == "__main__":
    sys.exit(main())
