"""Merging the pieces of tiled inference (:mod:`.tiling`) into one instance per object.

Merge rule (objects crossing tile borders come out once, with the right mask):

1. A piece is *cut* when its mask touches an inner edge of its tile (a tile edge that is not
   an image edge); otherwise it is *complete*.
2. Two pieces from different tiles are *the same object* when (same label, unless
   ``class_agnostic``) the IoU of their masks inside the two tiles' shared region is
   >= ``merge_iou``. Both tiles see every pixel of that region, so the parts of one object
   agree there even when one tile sees only a sliver of it. Linked pieces form groups
   (connected components).
3. A group with complete pieces gives its complete pieces, best score first, dropping a
   complete piece that is the same object (rule 2) as one already kept from another tile;
   its cut pieces are dropped (another tile saw the object whole).
   A group of cut pieces only (an object larger than the overlap) gives ONE instance: the
   union of their masks, the best score and that piece's label.
4. Remaining duplicates: outputs are taken complete-first, then by score; one is dropped
   when it comes from other tiles than a kept output and either its mask IoU with it is
   >= ``merge_iou`` (same label unless ``class_agnostic``) or, for a cut-derived output,
   >= 80 % of its pixels lie inside it (any label: a fragment where a tile saw more).

Pieces of the same tile are never linked to each other (the model separated them); they
end up in one union only when cut pieces of other tiles link both. Merged outputs carry the
masks' tight boxes (the model's boxes of cut pieces describe only a part). With ``overlap`` at least the size of the largest object, every object is
complete in some tile and tiled results equal untiled ones for a translation-invariant model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from instseg.masks import crop_to_mask
from instseg.structures import Instances

__all__ = ["Box", "Piece", "merge_pieces", "pieces_of"]

Box = tuple[int, int, int, int]  # (y0, x0, y1, x1), y1/x1 exclusive
CONTAIN = 0.8


@dataclass
class Piece:
    """One instance seen by one tile: bool ``mask`` crop ``(h, w)`` at image offset ``(y0, x0)``."""

    tile: int
    label: int
    score: float
    y0: int
    x0: int
    mask: np.ndarray
    cut: bool
    tiles: frozenset[int] = field(default_factory=frozenset)

    @property
    def box(self) -> Box:
        return self.y0, self.x0, self.y0 + self.mask.shape[0], self.x0 + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())


def _count(p: Piece, r: Box) -> int:
    """Pixels of ``p`` inside region ``r``."""
    y0, x0 = max(r[0], p.y0), max(r[1], p.x0)
    y1, x1 = min(r[2], p.y0 + p.mask.shape[0]), min(r[3], p.x0 + p.mask.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0
    return int(p.mask[y0 - p.y0 : y1 - p.y0, x0 - p.x0 : x1 - p.x0].sum())


def _inter(p: Piece, q: Piece, r: Box | None = None) -> int:
    """Pixels in both ``p`` and ``q`` (inside region ``r`` when given)."""
    (py0, px0, py1, px1), (qy0, qx0, qy1, qx1) = p.box, q.box
    y0, x0, y1, x1 = max(py0, qy0), max(px0, qx0), min(py1, qy1), min(px1, qx1)
    if r is not None:
        y0, x0, y1, x1 = max(y0, r[0]), max(x0, r[1]), min(y1, r[2]), min(x1, r[3])
    if y1 <= y0 or x1 <= x0:
        return 0
    a = p.mask[y0 - py0 : y1 - py0, x0 - px0 : x1 - px0]
    b = q.mask[y0 - qy0 : y1 - qy0, x0 - qx0 : x1 - qx0]
    return int(np.count_nonzero(a & b))


def _shared_iou(p: Piece, q: Piece, tiles: Sequence[Box]) -> float:
    """Mask IoU of ``p`` and ``q`` inside the shared region of their tiles (0 if none)."""
    a, b = tiles[p.tile], tiles[q.tile]
    r = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    if r[2] <= r[0] or r[3] <= r[1]:
        return 0.0
    inter = _inter(p, q, r)
    if inter == 0:
        return 0.0
    return inter / (_count(p, r) + _count(q, r) - inter)


def pieces_of(inst: Instances, t: int, tile: Box, size: tuple[int, int]) -> list[Piece]:
    """Tile predictions -> pieces in image coordinates (masks cropped to their boxes)."""
    if len(inst) and inst.masks is None:
        raise ValueError("tiled inference needs mask predictions (the model returned boxes only)")
    ty0, tx0, ty1, tx1 = tile
    inner = (ty0 > 0, tx0 > 0, ty1 < size[0], tx1 < size[1])  # top, left, bottom, right
    out = []
    masks = inst.masks.cpu().numpy() if inst.masks is not None else np.zeros((0, 1, 1), bool)
    labels = inst.labels.cpu().tolist()
    scores = inst.scores.cpu().tolist() if inst.scores is not None else [1.0] * len(inst)
    for m, label, score in zip(masks, labels, scores):
        crop, (y0, x0) = crop_to_mask(m)
        if crop.size == 0:
            continue
        y1, x1 = y0 + crop.shape[0], x0 + crop.shape[1]
        h, w = m.shape
        cut = (
            (inner[0] and y0 == 0)
            or (inner[1] and x0 == 0)
            or (inner[2] and y1 == h)
            or (inner[3] and x1 == w)
        )
        out.append(
            Piece(t, int(label), float(score), ty0 + y0, tx0 + x0, crop, bool(cut), frozenset({t}))
        )
    return out


def _meet(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(A, B)`` bool: boxes ``a (A, 4)`` and ``b (B, 4)`` (y0, x0, y1, x1) overlap."""
    ys = np.maximum(a[:, None, 0], b[None, :, 0]) < np.minimum(a[:, None, 2], b[None, :, 2])
    return ys & (
        np.maximum(a[:, None, 1], b[None, :, 1]) < np.minimum(a[:, None, 3], b[None, :, 3])
    )


def _links(
    pieces: list[Piece], tiles: Sequence[Box], merge_iou: float, class_agnostic: bool
) -> list[tuple[int, int]]:
    """Pairs of pieces from different, overlapping tiles that are the same object (rule 2)."""
    tb = np.asarray(tiles, dtype=np.int64).reshape(-1, 4)
    by_tile: dict[int, list[int]] = {}
    for i, p in enumerate(pieces):
        by_tile.setdefault(p.tile, []).append(i)
    boxes = np.asarray([p.box for p in pieces], dtype=np.int64).reshape(-1, 4)
    labels = np.asarray([p.label for p in pieces])
    edges = []
    for a, b in zip(*np.nonzero(np.triu(_meet(tb, tb), 1))):
        if int(a) not in by_tile or int(b) not in by_tile:
            continue
        shared = np.concatenate([np.maximum(tb[a], tb[b])[:2], np.minimum(tb[a], tb[b])[2:]])
        # pieces reaching into the shared region, then pairs whose boxes meet
        ia = [i for i in by_tile[int(a)] if _meet(boxes[i : i + 1], shared[None])[0, 0]]
        ib = [i for i in by_tile[int(b)] if _meet(boxes[i : i + 1], shared[None])[0, 0]]
        if not ia or not ib:
            continue
        meet = _meet(boxes[ia], boxes[ib])
        if not class_agnostic:
            meet &= labels[ia][:, None] == labels[ib][None, :]
        for u, v in zip(*np.nonzero(meet)):
            i, j = ia[int(u)], ib[int(v)]
            if _shared_iou(pieces[i], pieces[j], tiles) >= merge_iou:
                edges.append((i, j))
    return edges


def _union(group: list[Piece]) -> Piece:
    """One piece whose mask is the union of ``group``'s masks; best score and its label."""
    y0, x0 = min(p.y0 for p in group), min(p.x0 for p in group)
    y1, x1 = max(p.box[2] for p in group), max(p.box[3] for p in group)
    m = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for p in group:
        m[p.y0 - y0 : p.y0 - y0 + p.mask.shape[0], p.x0 - x0 : p.x0 - x0 + p.mask.shape[1]] |= (
            p.mask
        )
    best = max(group, key=lambda p: p.score)
    tiles = frozenset().union(*(p.tiles for p in group))
    return Piece(best.tile, best.label, best.score, y0, x0, m, True, tiles)


def merge_pieces(
    pieces: list[Piece], tiles: Sequence[Box], merge_iou: float = 0.5, class_agnostic: bool = False
) -> list[Piece]:
    """Apply the module's merge rule to per-tile pieces -> one piece per object, best score first."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(pieces)
    if n == 0:
        return []
    edges = np.asarray(_links(pieces, tiles, merge_iou, class_agnostic), dtype=np.int64).reshape(
        -1, 2
    )
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    groups: dict[int, list[Piece]] = {}
    for i, c in enumerate(comp.tolist()):
        groups.setdefault(c, []).append(pieces[i])
    outputs: list[tuple[Piece, bool]] = []  # (piece, complete)
    for group in groups.values():
        complete = sorted((p for p in group if not p.cut), key=lambda p: -p.score)
        if not complete:
            outputs.append((_union(group) if len(group) > 1 else group[0], False))
            continue
        kept: list[Piece] = []
        for p in complete:
            if all(k.tile == p.tile or _shared_iou(p, k, tiles) < merge_iou for k in kept):
                kept.append(p)
        outputs += [(p, True) for p in kept]
    return _dedupe(outputs, merge_iou, class_agnostic)


def _dedupe(
    outputs: list[tuple[Piece, bool]], merge_iou: float, class_agnostic: bool
) -> list[Piece]:
    """Rule 4: drop outputs that duplicate a kept output from other tiles."""
    outputs.sort(key=lambda pc: (not pc[1], -pc[0].score))
    kept: list[Piece] = []
    kept_boxes = np.zeros((len(outputs), 4), dtype=np.int64)
    kept_areas: list[int] = []
    for p, complete in outputs:
        n = len(kept)
        near = np.flatnonzero(_meet(kept_boxes[:n], np.asarray([p.box]))[:, 0])
        area = p.area
        duplicate = False
        for k in near.tolist():
            q = kept[k]
            if p.tiles & q.tiles:
                continue
            inter = _inter(p, q)
            same = class_agnostic or p.label == q.label
            if (same and inter / (area + kept_areas[k] - inter) >= merge_iou) or (
                not complete and inter >= CONTAIN * area
            ):
                duplicate = True
                break
        if not duplicate:
            kept_boxes[n] = p.box
            kept_areas.append(area)
            kept.append(p)
    kept.sort(key=lambda p: -p.score)
    return kept
