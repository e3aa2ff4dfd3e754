"""The HTTP API (FastAPI's TestClient): every endpoint, every bad input, and the same
instances as ``instseg predict`` on the same image."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from pycocotools import mask as mask_utils

from instseg.cli.main import main
from instseg.inference import Predictor
from instseg.masks import from_polygons
from instseg.serve import ServeSettings, create_app
from instseg.structures import Instances

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def client(nuclei_predictor: Predictor) -> Iterator[TestClient]:
    app = create_app(nuclei_predictor, "nuclei", {"data": "test"}, ServeSettings(max_upload_mb=2, max_pixels=2_000_000))
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, data: bytes, name: str = "x.png", **params: Any) -> Any:
    return client.post("/v1/predict", params=params, files={"file": (name, data, "application/octet-stream")})


def test_health_model_page_and_offline_docs(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["name"] == "nuclei" and info["classes"] == ["nucleus"] and info["category_ids"] == [1]
    assert info["score_cutoff"] == pytest.approx(0.4) and info["card"] == {"data": "test"}
    assert info["limits"]["max_pixels"] == 2_000_000 and "api_key" not in info["limits"]
    page = client.get("/").text
    assert "instance-table" in page and "http" not in page.replace("http-equiv", "")  # nothing remote
    for f in ("app.js", "rle.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    docs = client.get("/docs").text
    assert "cdn" not in docs.lower() and "/docs-files/swagger-ui-bundle.js" in docs
    assert client.get("/docs-files/swagger-ui-bundle.js").status_code == 200
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_json_instances_are_consistent(client: TestClient, dsb_image: Path) -> None:
    res = _post(client, dsb_image.read_bytes(), dsb_image.name)
    assert res.status_code == 200
    body = res.json()
    assert body["image"] == {"file_name": dsb_image.name, "height": 256, "width": 256}
    insts = body["instances"]
    assert body["count"] == len(insts) > 5 and body["score_threshold"] == pytest.approx(0.4)
    assert [d["id"] for d in insts] == list(range(1, len(insts) + 1))
    scores = [d["score"] for d in insts]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.4
    for d in insts:
        m = mask_utils.decode(d["rle"]).astype(bool)
        assert int(m.sum()) == d["area"] > 0
        ys, xs = np.nonzero(m)
        assert d["mask_bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        poly = mask_utils.decode(from_polygons(d["polygons"], 256, 256)).astype(bool)
        assert (poly & m).sum() / (poly | m).sum() > 0.95  # outer contours: holes only in the RLE
        assert d["class"] == "nucleus" and d["category_id"] == 1 and len(d["box"]) == 4
    lower = _post(client, dsb_image.read_bytes(), score_threshold=0.1).json()
    assert lower["count"] >= body["count"] and min(d["score"] for d in lower["instances"]) >= 0.1


def test_same_instances_as_instseg_predict(client: TestClient, dsb_image: Path, tmp_path: Path) -> None:
    assert main(["predict", str(dsb_image), "--model", "nuclei", "--out", str(tmp_path / "p")]) == 0
    cli = json.loads((tmp_path / "p" / "results.json").read_text())
    for s in (0.1, 0.4, 0.8):
        api = _post(client, dsb_image.read_bytes(), format="coco", score_threshold=s).json()
        want = [r for r in cli if r["score"] >= s]
        assert len(api) == len(want) > 0
        for a, b in zip(api, want):
            assert a["segmentation"] == b["segmentation"] and a["bbox"] == b["bbox"]
            assert a["score"] == b["score"] and a["category_id"] == b["category_id"]
    labels = np.asarray(Image.open(tmp_path / "p" / "labels" / f"{dsb_image.stem}.png"))
    served = np.asarray(Image.open(io.BytesIO(_post(client, dsb_image.read_bytes(), format="labels.png").content)))
    assert served.dtype == np.uint16 and np.array_equal(served, labels)  # both at the model's cut-off


def test_overlay_png(client: TestClient, dsb_image: Path) -> None:
    res = _post(client, dsb_image.read_bytes(), format="overlay.png")
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    img = np.asarray(Image.open(io.BytesIO(res.content)))
    raw = np.asarray(Image.open(dsb_image).convert("RGB"))
    assert img.shape == raw.shape and not np.array_equal(img, raw)
    with_image = _post(client, dsb_image.read_bytes(), include_image=True).json()
    import base64

    shown = np.asarray(Image.open(io.BytesIO(base64.b64decode(with_image["image_png"]))))
    assert np.array_equal(shown, raw)


def _png(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_inputs_get_one_line_4xx_and_the_server_goes_on(client: TestClient, dsb_image: Path) -> None:
    good = dsb_image.read_bytes()
    cases = [
        (_post(client, b"just some text", "notes.png"), 415, "notes.png: not an image"),
        (_post(client, good[: len(good) // 2], "half.png"), 400, "half.png: cannot read image"),
        (_post(client, b"", "empty.png"), 400, "empty.png: file is empty"),
        (_post(client, _png(1500, 1500), "big.png"), 413, "big.png: image has 2,250,000 pixels"),
        (_post(client, good + b"\0" * (2 * 2**20), "huge.png"), 413, "over the 2 MiB limit"),
        (client.post("/v1/predict", data={"x": "1"}), 422, "body.file: Field required"),
        (_post(client, good, score_threshold=2), 422, "score_threshold"),
        (_post(client, good, format="gif"), 422, "format"),
    ]
    for res, code, text in cases:
        assert res.status_code == code, res.text
        detail = res.json()["detail"]
        assert text in detail and "\n" not in detail
    assert _post(client, good).status_code == 200


class _Blocking(torch.nn.Module):
    """A model whose predict waits for ``go`` (or raises ``error``): queue and time-out tests."""

    num_classes = 1

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.error: Exception | None = None

    def predict(self, images: list[torch.Tensor]) -> list[Instances]:
        self.go.wait(10)
        if self.error is not None:
            raise self.error
        return [Instances(image_size=tuple(im.shape[-2:]), boxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long),
                          scores=torch.zeros(0), masks=torch.zeros(0, *im.shape[-2:], dtype=torch.bool)) for im in images]  # fmt: skip


def test_full_queue_503_timeout_504_model_error_500() -> None:
    model = _Blocking()
    app = create_app(Predictor(model), "blocking", settings=ServeSettings(max_queue=1, timeout_s=0.3))
    img = np.zeros((8, 8, 3), np.uint8)
    with TestClient(app) as c:
        running = app.state.worker.submit(img)  # the model thread takes it and waits
        while app.state.worker.waiting:
            pass
        queued = app.state.worker.submit(img)
        res = _post(c, _png(8, 8))
        assert res.status_code == 503 and int(res.headers["retry-after"]) >= 1
        assert "queue is full" in res.json()["detail"]
        model.go.set()
        running.result(5), queued.result(5)
        model.go.clear()
        res = _post(c, _png(8, 8), "slow.png")
        assert res.status_code == 504 and res.json()["detail"] == "slow.png: no answer within 0.3 s"
        model.go.set()
        assert _post(c, _png(8, 8)).json()["count"] == 0
        model.error = RuntimeError("out of memory\nsomewhere")
        res = _post(c, _png(8, 8), "oom.png")
        assert res.status_code == 500 and res.json()["detail"] == "oom.png: RuntimeError: out of memory somewhere"


def test_api_key(nuclei_predictor: Predictor, dsb_image: Path) -> None:
    app = create_app(nuclei_predictor, "nuclei", settings=ServeSettings(api_key="s3cret"))
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert _post(c, dsb_image.read_bytes()).status_code == 401


def test_cli_refuses_network_binding_without_a_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("INSTSEG_API_KEY", raising=False)
    assert main(["serve", "--model", "nuclei", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("instseg serve: error: --host 0.0.0.0 exposes") and "INSTSEG_API_KEY" in err
