"""The FastAPI application of ``instseg serve``: the HTTP API and the web page.

    GET  /                 the web page (package files, works offline)
    GET  /healthz          200 once the model is loaded
    GET  /v1/model         name, classes, score cut-off, object size, model card, limits
    POST /v1/predict       multipart field ``file``; query ``score_threshold`` (default: the
                           model's stored cut-off) and ``format`` (json | coco | labels.png |
                           overlay.png); see :mod:`.encode`
    GET  /docs             OpenAPI docs (Swagger UI from the package, no CDN)

Errors are JSON ``{"detail": "one line"}``: 413 upload or image too large, 415 not an image,
400 corrupt image, 422 bad query or form, 401 missing/wrong API key, 503 queue full (with
``Retry-After``), 504 time-out. Requests never name files on the server.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from instseg.data.io import ImageTooLargeError, NotAnImageError, decode_image
from instseg.errors import DataError
from instseg.inference.predictor import Predictor
from instseg.serve.encode import png_bytes, render
from instseg.serve.worker import ModelWorker, QueueFull

__all__ = ["ServeSettings", "create_app"]

STATIC = Path(str(resources.files("instseg") / "serve" / "static"))


@dataclass
class ServeSettings:
    """Limits of a server. ``api_key``: when set, every ``/v1`` request must send it as the
    ``X-API-Key`` header (or ``Authorization: Bearer KEY``)."""

    max_upload_mb: float = 32.0
    max_pixels: int = 50_000_000
    max_queue: int = 16
    timeout_s: float = 60.0
    api_key: str | None = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _upload_limit(app: FastAPI, max_bytes: int) -> None:
    """Refuse a request whose declared body is larger than ``max_bytes`` (413) before it is
    read; a body without a length is measured after reading (:func:`_read_upload`)."""

    @app.middleware("http")
    async def limit(request: Request, call_next: Any) -> Any:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > max_bytes:
            mb = max_bytes / 2**20
            detail = f"upload of {int(size) / 2**20:.1f} MiB is over the {mb:g} MiB limit"
            return JSONResponse({"detail": detail}, status_code=413)
        return await call_next(request)


async def _read_upload(file: UploadFile, max_bytes: int) -> bytes:
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise HTTPException(413, f"{file.filename}: upload is over the {max_bytes / 2**20:g} MiB limit")
    return data


def _decode(data: bytes, name: str, max_pixels: int) -> Any:
    try:
        return decode_image(data, name, max_pixels)
    except ImageTooLargeError as err:
        raise HTTPException(413, _one_line(str(err))) from None
    except NotAnImageError as err:
        raise HTTPException(415, _one_line(str(err))) from None
    except DataError as err:
        raise HTTPException(400, _one_line(str(err))) from None


def _key_check(key: str | None) -> Any:
    def check(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key") or ""
        auth = request.headers.get("authorization") or ""
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        if not secrets.compare_digest(given.encode(), key.encode()):
            raise HTTPException(401, "missing or wrong API key (send it as the X-API-Key header)")

    return check


def model_info(predictor: Predictor, name: str, card: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /v1/model`` answers (without the limits)."""
    return {
        "name": name,
        "classes": list(predictor.class_names),
        "category_ids": list(predictor.cat_ids),
        "score_cutoff": predictor.score_cutoff,
        "object_size": predictor.learnt_size,
        "card": card,
    }


def create_app(
    predictor: Predictor,
    name: str = "model",
    card: dict[str, Any] | None = None,
    settings: ServeSettings | None = None,
) -> FastAPI:
    """The application serving ``predictor`` (loaded once, run by one :class:`ModelWorker`).
    ``name`` and ``card`` describe the model in ``GET /v1/model``."""
    cfg = settings or ServeSettings()
    max_bytes = int(cfg.max_upload_mb * 2**20)
    worker = ModelWorker(predictor, cfg.max_queue)
    info = model_info(predictor, name, card or {})
    limits = {k: v for k, v in asdict(cfg).items() if k != "api_key"}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        worker.close()

    app = FastAPI(title="instseg", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.worker = worker  # tests fill its queue
    _upload_limit(app, max_bytes)
    authorised = [Depends(_key_check(cfg.api_key))]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": _one_line("; ".join(parts))}, status_code=422)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": name, "waiting": worker.waiting, "served": worker.served}

    @app.get("/v1/model", dependencies=authorised)
    def model() -> dict[str, Any]:
        return {**info, "limits": limits}

    @app.post("/v1/predict", dependencies=authorised)
    async def predict(
        file: UploadFile = File(..., description="the image (PNG, JPEG, TIFF, BMP, WebP, GIF)"),
        score_threshold: float | None = Query(None, ge=0.0, le=1.0),
        format: Literal["json", "coco", "labels.png", "overlay.png"] = Query("json"),
        include_image: bool = Query(False, description="json: add the image as the model saw it (RGB PNG, base64) as image_png"),
    ) -> Response:
        name_ = file.filename or "upload"
        image = _decode(await _read_upload(file, max_bytes), name_, cfg.max_pixels)
        start = time.perf_counter()
        try:
            future = worker.submit(image)
        except QueueFull as full:
            raise HTTPException(503, str(full), headers={"Retry-After": str(full.retry_after)}) from None
        try:
            inst = await asyncio.wait_for(asyncio.wrap_future(future), cfg.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise HTTPException(504, f"{name_}: no answer within {cfg.timeout_s:g} s") from None
        except Exception as exc:
            raise HTTPException(500, _one_line(f"{name_}: {type(exc).__name__}: {exc}")) from None
        cut = score_threshold if score_threshold is not None else predictor.score_cutoff
        if cut is not None:
            inst = inst.filter(score_threshold=cut)
        body, media = await run_in_threadpool(
            render, format, inst, image, predictor.class_names, predictor.cat_ids
        )
        if isinstance(body, bytes):
            return Response(body, media_type=media)
        if format == "coco":
            return JSONResponse(body)
        h, w = image.shape[:2]
        return JSONResponse({
            "image": {"file_name": name_, "height": h, "width": w},
            "model": name,
            "score_threshold": cut,
            "count": len(body),
            "instances": body,
            "seconds": round(time.perf_counter() - start, 4),
            **({"image_png": base64.b64encode(png_bytes(image)).decode()} if include_image else {}),
        })  # fmt: skip

    _pages(app)
    return app


def _pages(app: FastAPI) -> None:
    """The web page, its files and the OpenAPI docs (the Swagger UI files that the
    ``fastapi-offline`` package of the serve extra carries, so /docs works offline too)."""
    import fastapi_offline

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    swagger = Path(fastapi_offline.__file__).parent / "static"
    app.mount("/docs-files", StaticFiles(directory=swagger), name="docs-files")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="instseg API",
            swagger_js_url="/docs-files/swagger-ui-bundle.js",
            swagger_css_url="/docs-files/swagger-ui.css",
            swagger_favicon_url="/static/favicon.svg",
        )
