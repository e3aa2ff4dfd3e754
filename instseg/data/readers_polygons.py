"""Polygon dataset readers: YOLO segmentation labels (``yolo``) and VIA 1.x/2.x JSON (``via``).

Polygons are kept as COCO polygons in absolute pixel coordinates (no rasterization here).

YOLO: ``images/<sub>/<stem>.<ext>`` pairs with ``labels/<sub>/<stem>.txt``; each line is
``class x1 y1 ... xn yn`` normalized to [0, 1]. An image without a label file has no
instances; a label file without an image is warned about and skipped. Category ids are the
YOLO class indices. Names come from ``names`` (a list, a ``.yaml`` with ``names:``, or a text
file with one name per line), else from ``data.yaml`` / a single ``*.yaml`` in SRC; with names
every listed class is declared, without them classes 0..max(seen) are declared and named by
their index ("0", "1", ...).

VIA: ``{"<key>": {"filename", "regions": {..} or [..]}}`` (or a VIA 2 project with
``_via_img_metadata``). Shapes: polygon, rect; circle and ellipse become 32-gons. The class
is the first non-empty region attribute among ``class``, ``label``, ``name``, ``category``,
``type`` (a string, or a checkbox dict with one ticked key); regions without one get
``class_name`` (default "object"). Category ids are 1..K in sorted name order.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from instseg.data.coco import read_json
from instseg.data.coco_checks import check_polygon_extent
from instseg.data.dataset import Category, InstanceDataset
from instseg.data.readers_common import (
    DEFAULT_CLASS,
    DatasetBuilder,
    checked_size,
    image_files,
    warn_orphan,
)
from instseg.errors import DataError

CLASS_KEYS = ("class", "label", "name", "category", "type")
#: tolerance of YOLO coordinates outside [0, 1] (rounding in converters); beyond it is an error
YOLO_TOLERANCE = 1e-3
#: polygons with a smaller area (pixels^2) are "zero area" (collinear points, up to rounding)
MIN_AREA = 1e-6


def polygon_area(flat: list[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, x2, y2, ...]`` polygon."""
    xs, ys = flat[0::2], flat[1::2]
    n = len(xs)
    return 0.5 * abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n)))


# -- YOLO ---------------------------------------------------------------------------------------
def yolo_folders(root: Path) -> tuple[Path, Path] | None:
    """``(images, labels)`` folders of a YOLO dataset, or None."""
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return root / "images", root / "labels"
    return None


def _names_from_yaml(path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(path, None, f"cannot read YAML ({type(exc).__name__})") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise DataError(path, "names", "class indices must be 0..n-1")
        return [str(names[i]) for i in range(len(names))]
    if not isinstance(names, list):
        raise DataError(path, "names", "expected a list or an {index: name} mapping")
    return [str(n) for n in names]


def load_names(names: list[str] | str | Path | None, root: Path) -> list[str] | None:
    """Class names of a YOLO dataset (see module docstring), or None."""
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    if names is None:
        yamls = sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))
        data_yaml = [p for p in yamls if p.stem == "data"]
        found = data_yaml or (yamls if len(yamls) == 1 else [])
        return _names_from_yaml(found[0]) if found else None
    path = Path(names)
    if not path.is_file():
        raise DataError(path, None, "names file not found")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _names_from_yaml(path)
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, None, f"cannot read names ({type(exc).__name__})") from None


def parse_yolo_line(line: str, width: int, height: int, n_names: int | None) -> tuple[int, list[float]] | str:
    """``(class, polygon in absolute pixels)`` of one YOLO segment line, or why it is bad."""
    tokens = line.split()
    try:
        cls = int(tokens[0])
    except ValueError:
        return f"class index {tokens[0]!r} is not an integer"
    if cls < 0 or (n_names is not None and cls >= n_names):
        return f"class index {cls} is out of range" + (f" (0..{n_names - 1})" if n_names else "")
    try:
        coords = [float(t) for t in tokens[1:]]
    except ValueError:
        bad = next(t for t in tokens[1:] if not _is_float(t))
        return f"coordinate {bad!r} is not a number"
    if len(coords) % 2:
        return f"odd number of coordinates ({len(coords)})"
    if len(coords) < 6:
        hint = " (a detection box 'class cx cy w h' has no mask)" if len(coords) == 4 else ""
        return f"{_n_points(len(coords) // 2)} (needs at least 3){hint}"
    if not all(math.isfinite(v) and -YOLO_TOLERANCE <= v <= 1 + YOLO_TOLERANCE for v in coords):
        return "coordinates are not normalized to [0, 1]"
    poly = [min(max(v, 0.0), 1.0) * (width if k % 2 == 0 else height) for k, v in enumerate(coords)]
    if polygon_area(poly) <= MIN_AREA:
        return "polygon has zero area"
    return cls, poly


def _n_points(n: int) -> str:
    return f"polygon has {n} point" + ("" if n == 1 else "s")


def _is_float(t: str) -> bool:
    try:
        float(t)
    except ValueError:
        return False
    return True


def read_yolo(
    root: Path,
    names: list[str] | str | Path | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
) -> InstanceDataset:
    """YOLO segmentation dataset -> polygons in absolute pixels (see module docstring)."""
    folders = yolo_folders(root)
    if folders is None:
        raise DataError(root, None, "a YOLO dataset needs images/ and labels/ folders")
    img_dir, lbl_dir = folders
    class_names = load_names(names, root)
    n_names = len(class_names) if class_names is not None else None
    images = image_files(img_dir, recursive=True)
    keys = {(p.parent.relative_to(img_dir), p.stem) for p in images}
    label_of: dict[tuple[Path, str], Path] = {}
    for lbl in sorted(lbl_dir.rglob("*.txt")):
        key = (lbl.parent.relative_to(lbl_dir), lbl.stem)
        if key in keys:
            label_of[key] = lbl
        else:
            warn_orphan(lbl, "label file without an image, skipped")
    b = DatasetBuilder(root, skip_invalid)
    used: set[int] = set()
    for img in images:
        item = f"image {img.relative_to(root).as_posix()}"
        txt = label_of.get((img.parent.relative_to(img_dir), img.stem))
        try:
            h, w = checked_size(img, check_images)
            lines = txt.read_text(encoding="utf-8").splitlines() if txt is not None else []
        except DataError as err:
            b.fail(err.file, item, err.message)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            b.fail(txt, item, f"cannot read label file ({type(exc).__name__})")
            continue
        rec = b.add_image(img, root, h, w)
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parsed = parse_yolo_line(line, w, h, n_names)
            if isinstance(parsed, str):
                b.fail(txt, f"line {lineno}", parsed)
                continue
            used.add(parsed[0])
            b.add_annotation(rec, parsed[0], [parsed[1]])
    if class_names is not None:
        cats = [Category(i, n) for i, n in enumerate(class_names)]
    else:
        cats = [Category(i, str(i)) for i in range(max(used) + 1)] if used else []
    return b.finish(cats)


# -- VIA ----------------------------------------------------------------------------------------
def is_via(data: Any) -> bool:
    """True for a parsed VIA 1.x export or VIA 2.x project."""
    if isinstance(data, dict) and "_via_img_metadata" in data:
        return True
    return (
        isinstance(data, dict)
        and len(data) > 0
        and all(isinstance(v, dict) and "filename" in v for v in data.values())
    )


def _ellipse(cx: float, cy: float, rx: float, ry: float, theta: float = 0.0, n: int = 32) -> list[float]:
    c, s = math.cos(theta), math.sin(theta)
    out: list[float] = []
    for k in range(n):
        a = 2 * math.pi * k / n
        x, y = rx * math.cos(a), ry * math.sin(a)
        out += [cx + c * x - s * y, cy + s * x + c * y]
    return out


def via_polygon(shape: Any) -> list[float] | str:
    """Flat absolute-pixel polygon of a VIA ``shape_attributes`` dict, or why it is bad."""
    if not isinstance(shape, dict):
        return "shape_attributes is not an object"
    kind = shape.get("name")
    try:
        if kind in ("polygon", "polyline"):
            xs, ys = shape.get("all_points_x"), shape.get("all_points_y")
            if not isinstance(xs, list) or not isinstance(ys, list) or len(xs) != len(ys):
                return "all_points_x and all_points_y must be lists of equal length"
            poly = [float(v) for xy in zip(xs, ys) for v in xy]
        elif kind == "rect":
            x, y, w, h = (float(shape[k]) for k in ("x", "y", "width", "height"))
            if w < 0 or h < 0:
                return f"rect has negative {'width' if w < 0 else 'height'} {min(w, h):g}"
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
        elif kind == "circle":
            r = float(shape["r"])
            if r < 0:
                return f"circle has negative radius {r:g}"
            poly = _ellipse(float(shape["cx"]), float(shape["cy"]), r, r)
        elif kind == "ellipse":
            cx, cy, rx, ry = (float(shape[k]) for k in ("cx", "cy", "rx", "ry"))
            if rx < 0 or ry < 0:
                return f"ellipse has a negative radius ({rx:g}, {ry:g})"
            poly = _ellipse(cx, cy, rx, ry, float(shape.get("theta", 0)))
        else:
            return f"unsupported shape {kind!r} (polygon, rect, circle, ellipse)"
    except (KeyError, TypeError, ValueError) as exc:
        return f"bad {kind} attributes ({type(exc).__name__}: {exc})"
    if len(poly) < 6:
        return f"{_n_points(len(poly) // 2)} (needs at least 3)"
    if not all(math.isfinite(v) for v in poly):
        return "polygon has non-finite coordinates"
    if polygon_area(poly) <= MIN_AREA:
        return "polygon has zero area"
    return poly


def via_class(attrs: Any) -> str | None:
    """Class name from VIA ``region_attributes`` (first of :data:`CLASS_KEYS`), or None."""
    if not isinstance(attrs, dict):
        return None
    for key in CLASS_KEYS:
        value = attrs.get(key)
        if isinstance(value, dict):  # checkbox/dropdown: {"balloon": true}
            ticked = [k for k, v in value.items() if v]
            value = ticked[0] if len(ticked) == 1 else None
        if value not in (None, ""):
            return str(value)
    return None


def read_via(
    path: Path,
    images_dir: str | Path | None = None,
    class_name: str | None = None,
    skip_invalid: bool = False,
    check_images: bool = False,
) -> InstanceDataset:
    """VIA JSON -> polygons; ``filename`` resolves against ``images_dir`` or the JSON's folder."""
    data = read_json(path)
    if not is_via(data):
        raise DataError(path, None, "not a VIA file: expected {key: {'filename', 'regions'}}")
    entries = data.get("_via_img_metadata", data)
    if not isinstance(entries, dict):
        raise DataError(path, "_via_img_metadata", f"must be an object, got {type(entries).__name__}")
    root = Path(images_dir) if images_dir is not None else path.parent
    default = class_name or DEFAULT_CLASS
    b = DatasetBuilder(path, skip_invalid)
    found: list[tuple[Any, str, list[float]]] = []  # (record, class name, polygon)
    seen: set[str] = set()
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "filename" not in entry:
            b.fail(path, f"entry {key}", "VIA entry needs 'filename'")
            continue
        fname = str(entry["filename"])
        item = f"image {fname}"
        if fname in seen:
            b.fail(path, item, "image listed twice")
            continue
        seen.add(fname)
        regions = entry.get("regions", [])
        if isinstance(regions, dict):
            regions = list(regions.items())
        elif isinstance(regions, list):
            regions = [(str(i), r) for i, r in enumerate(regions)]
        else:
            b.fail(path, item, "regions must be an object or a list")
            continue
        try:
            h, w = checked_size(root / fname, check_images)
        except DataError as err:
            b.fail(err.file, item, err.message)
            continue
        rec = b.add_image(root / fname, root, h, w)
        for rid, region in regions:
            shape = region.get("shape_attributes") if isinstance(region, dict) else None
            poly = via_polygon(shape)
            if not isinstance(poly, str) and check_polygon_extent(poly, h, w):
                poly = f"polygon {check_polygon_extent(poly, h, w)}"
            if isinstance(poly, str):
                b.fail(path, f"{item} region {rid}", poly)
                continue
            found.append((rec, via_class(region.get("region_attributes")) or default, poly))
    names = sorted({name for _, name, _ in found}) or [default]
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    for rec, name, poly in found:
        b.add_annotation(rec, cat_id[name], [poly])
    return b.finish([Category(cat_id[n], n) for n in names])
