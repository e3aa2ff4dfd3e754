"""Serve a model over HTTP: an API and a web page to look at, correct and export instances.

    instseg serve --model nuclei [--host 127.0.0.1] [--port 8000]

Open http://127.0.0.1:8000/ for the page, /docs for the API. The model is loaded once; the
server answers ``GET /healthz`` once it is. Binding beyond this machine (``--host 0.0.0.0``)
needs an API key in the environment variable ``INSTSEG_API_KEY`` (clients send it as the
``X-API-Key`` header). Needs ``pip install 'instseg[serve]'``.
"""

from __future__ import annotations

import argparse
from typing import Any

from instseg.cli.common import add_object_size_argument

LOOPBACK = ("127.0.0.1", "localhost", "::1")
KEY_VARIABLE = "INSTSEG_API_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, metavar="MODEL",
        help="checkpoint file, training folder, shipped model name (nuclei) or a .onnx file",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for the model")
    p.add_argument(
        "--score-threshold", type=float, default=None,
        help="the API's default score cut-off (default: the model's stored one); requests "
        "may ask for any other with ?score_threshold=",
    )  # fmt: skip
    add_object_size_argument(p)
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=32.0, help="largest upload (413 past it; default 32)")
    g.add_argument("--max-pixels", type=int, default=50_000_000, help="largest image in pixels (413 past it)")
    g.add_argument(
        "--max-queue", type=int, default=16,
        help="images waiting for the model at most; more get 503 with Retry-After (default 16)",
    )  # fmt: skip
    g.add_argument("--timeout", type=float, default=60.0, help="seconds a request may wait (504 past it)")


def _card(model: str) -> dict[str, Any]:
    """The model card stored in a checkpoint (empty for .onnx files and cards-less ones)."""
    if model.lower().endswith(".onnx"):
        return {}
    from instseg.engine.checkpoint import load_checkpoint, resolve_checkpoint

    card = load_checkpoint(resolve_checkpoint(model)).get("card")
    return dict(card) if isinstance(card, dict) else {}


def _settings(args: argparse.Namespace) -> Any:
    import os

    from instseg.serve import ServeSettings

    return ServeSettings(
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        api_key=os.environ.get(KEY_VARIABLE) or None,
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from instseg.cli.common import check_object_size_arg, usage_error

    try:
        import uvicorn

        from instseg.serve import create_app
    except ImportError as err:
        return usage_error("serve", f"needs the serve extra ({err.name} is missing): pip install 'instseg[serve]'")
    bad = check_object_size_arg(args, "serve")
    if bad is not None:
        return bad
    settings = _settings(args)
    if args.host not in LOOPBACK and settings.api_key is None:
        return usage_error(
            "serve", f"--host {args.host} exposes the model beyond this machine: set "
            f"{KEY_VARIABLE} (clients send it as the X-API-Key header)",
        )  # fmt: skip
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    from instseg.cli.common import cutoff_line
    from instseg.inference import Predictor

    predictor = Predictor(
        args.model, device=args.device, score_threshold=args.score_threshold,
        threads=args.threads, object_size=args.object_size,
        log=lambda line: print(line, file=sys.stderr),
    )  # fmt: skip
    print(cutoff_line(predictor), file=sys.stderr)
    app = create_app(predictor, str(args.model), _card(str(args.model)), settings)
    print(f"instseg serve: http://{args.host}:{args.port}/ (API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
