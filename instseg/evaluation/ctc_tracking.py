"""Cell Tracking Challenge DET and TRA measures (Matula et al. 2015, "AOGM"), equal to
py-ctcmetrics.

Both compare two acyclic oriented graphs. Their vertices are the objects of every frame (the
reference TRA markers, the result masks); a result object *matches* a reference marker when it
covers more than half of it (:func:`~instseg.evaluation.ctc.match_frame`, re-exported here;
so a marker has at most one match, while one result object may match several markers). Edges join an object to the same label in the next frame (a track link)
and a parent's object in its last frame to each daughter's object in its first frame, as the
track table says (a parent link, also across gaps). Counts:

* NS: for each result object matching ``k > 1`` markers, ``k - 1`` splits;
* FN: markers without a match; FP: result objects matching none;
* edges are compared through the result objects that match exactly one marker, the others'
  edges are ignored: ED result edges without a reference edge between the matched markers,
  EA reference edges without such a result edge, EC edges in both with another kind
  (track link vs parent link).

``AOGM_D = 5 NS + 10 FN + 1 FP`` and ``DET = 1 - min(AOGM_D, AOGM_D0) / AOGM_D0`` with
``AOGM_D0 = 10 * markers``; ``AOGM = AOGM_D + 1 ED + 1.5 EA + 1 EC`` and ``TRA`` likewise with
``AOGM_0 = 10 * markers + 1.5 * reference edges``.

:func:`det_measure` / :func:`tra_measure` take label images frame by frame; the folder-level
:func:`~instseg.evaluation.ctc_folders.ctc_measures` reads a CTC ``NN_GT`` / ``NN_RES`` pair.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from instseg.data.ctc import Track
from instseg.evaluation.ctc import FrameMatch, match_frame

__all__ = [
    "AOGMCounts",
    "FrameMatch",
    "aogm_counts",
    "check_result_tracks",
    "det_measure",
    "match_frame",
    "tra_measure",
]

W_NS, W_FN, W_FP, W_ED, W_EA, W_EC = 5.0, 10.0, 1.0, 1.0, 1.5, 1.0


@dataclass(frozen=True)
class AOGMCounts:
    """Graph-correction counts and graph sizes (``vertices`` / ``edges`` of the reference)."""

    ns: int
    fn: int
    fp: int
    ed: int
    ea: int
    ec: int
    vertices: int
    edges: int

    @property
    def aogm_d(self) -> float:
        """Weighted detection errors."""
        return W_NS * self.ns + W_FN * self.fn + W_FP * self.fp

    @property
    def aogm(self) -> float:
        """Weighted detection and linking errors."""
        return self.aogm_d + W_ED * self.ed + W_EA * self.ea + W_EC * self.ec

    @property
    def aogm_0(self) -> float:
        """Cost of building the reference graph from nothing."""
        return W_FN * self.vertices + W_EA * self.edges

    @property
    def det(self) -> float:
        """DET in [0, 1]; ValueError without reference markers."""
        return _normalised(self.aogm_d, W_FN * self.vertices)

    @property
    def tra(self) -> float:
        """TRA in [0, 1]; ValueError without reference markers."""
        return _normalised(self.aogm, self.aogm_0)

    def as_dict(self) -> dict[str, float]:
        """``NS, FN, FP, ED, EA, EC, AOGM, AOGM_0`` (CTC names)."""
        names = ("NS", "FN", "FP", "ED", "EA", "EC")
        counts = (self.ns, self.fn, self.fp, self.ed, self.ea, self.ec)
        return {**dict(zip(names, counts)), "AOGM": self.aogm, "AOGM_0": self.aogm_0}


def _normalised(cost: float, cost_0: float) -> float:
    if cost_0 <= 0:
        raise ValueError("no reference markers: DET and TRA are undefined")
    return 1.0 - min(cost, cost_0) / cost_0


@dataclass(frozen=True)
class _Vertices:
    """All objects of a sequence, frame after frame (ids ascending within a frame)."""

    frame: np.ndarray
    label: np.ndarray
    n_frames: int

    @classmethod
    def of(cls, ids_per_frame: Sequence[np.ndarray]) -> _Vertices:
        frame = np.repeat(np.arange(len(ids_per_frame)), [len(ids) for ids in ids_per_frame])
        label = np.concatenate([np.zeros(0, np.int64), *ids_per_frame]).astype(np.int64)
        return cls(frame, label, len(ids_per_frame))

    def keys(self, frame: np.ndarray, label: np.ndarray) -> np.ndarray:
        return label * (self.n_frames + 1) + frame

    def find(
        self, frame: Sequence[int] | np.ndarray, label: Sequence[int] | np.ndarray
    ) -> np.ndarray:
        """Index of the vertex ``(frame, label)`` for each query, -1 where there is none."""
        frame, label = np.asarray(frame, np.int64), np.asarray(label, np.int64)
        query = self.keys(frame, label)
        own = self.keys(self.frame, self.label)
        if len(own) == 0:
            return np.full(len(query), -1, np.int64)
        order = np.argsort(own)
        pos = order[np.minimum(np.searchsorted(own, query, sorter=order), len(own) - 1)]
        inside = (frame >= 0) & (frame <= self.n_frames)  # keys are unique only there
        return np.where(inside & (own[pos] == query), pos, -1)


def _parent_links(
    vertices: _Vertices, tracks: Mapping[int, Track]
) -> tuple[np.ndarray, np.ndarray]:
    """``(source, target)`` vertex of each parent link: the parent's object in its last frame,
    the daughter's in its first. ValueError when the table's parent or an object is missing."""
    children = [tr for tr in tracks.values() if tr.parent]
    for child in children:
        if child.parent not in tracks:
            raise ValueError(f"track {child.id}: parent {child.parent} is not in the track table")
    parents = [tracks[c.parent] for c in children]
    src = vertices.find([p.last for p in parents], [p.id for p in parents])
    dst = vertices.find([c.first for c in children], [c.id for c in children])
    for i in np.flatnonzero((src < 0) | (dst < 0))[:1]:
        tr, t = (parents[i], parents[i].last) if src[i] < 0 else (children[i], children[i].first)
        raise ValueError(
            f"parent link {parents[i].id} -> {children[i].id}: track {tr.id} has no object in frame {t}"
        )
    return src, dst


def _edges(
    vertices: _Vertices, tracks: Mapping[int, Track] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(source, target, is_parent_link)`` of a graph: track links join a label's objects in
    consecutive frames (none across a gap), parent links come from the track table."""
    if tracks is None:  # no track table, no edges (as py-ctcmetrics)
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, bool)
    nxt = vertices.find(vertices.frame + 1, vertices.label)
    p_src, p_dst = _parent_links(vertices, tracks)
    is_parent = np.r_[np.zeros(np.count_nonzero(nxt >= 0), bool), np.ones(len(p_src), bool)]
    return np.r_[np.flatnonzero(nxt >= 0), p_src], np.r_[nxt[nxt >= 0], p_dst], is_parent


def _detection(matches: Sequence[FrameMatch], res: _Vertices) -> tuple[np.ndarray, np.ndarray]:
    """Per reference vertex the index of its matching result vertex (-1 = none), and per
    result vertex how many reference vertices it matches."""
    starts = np.cumsum([0] + [len(m.result) for m in matches])
    hit = [np.searchsorted(m.result, m.matched) + start for m, start in zip(matches, starts)]
    ref_to_res = np.concatenate([np.zeros(0, np.int64), *hit])
    matched = np.concatenate([np.zeros(0, np.int64), *(m.matched for m in matches)])
    ref_to_res = np.where(matched != 0, ref_to_res, -1)
    return ref_to_res, np.bincount(ref_to_res[ref_to_res >= 0], minlength=len(res.label))


def aogm_counts(
    matches: Sequence[FrameMatch],
    ref_tracks: Mapping[int, Track] | None = None,
    res_tracks: Mapping[int, Track] | None = None,
) -> AOGMCounts:
    """AOGM counts of a whole sequence from its frames' detection tests (frame ``t`` =
    ``matches[t]``) and the reference / result track tables (``None``: a graph without
    edges; DET needs none). ValueError for a parent link whose objects are missing."""
    ref = _Vertices.of([m.reference for m in matches])
    res = _Vertices.of([m.result for m in matches])
    ref_to_res, hits = _detection(matches, res)
    tp = int(np.count_nonzero(ref_to_res >= 0))
    res_to_ref = np.full(len(res.label), -1, np.int64)
    unique = ref_to_res >= 0
    unique[unique] = hits[ref_to_res[unique]] == 1
    res_to_ref[ref_to_res[unique]] = np.flatnonzero(unique)
    r_src, r_dst, r_parent = _edges(ref, ref_tracks)
    c_src, c_dst, c_parent = _edges(res, res_tracks)
    keep = (res_to_ref[c_src] >= 0) & (res_to_ref[c_dst] >= 0)  # both ends matched uniquely
    n_ref = max(len(ref.label), 1)
    ref_keys = r_src * n_ref + r_dst
    res_keys = res_to_ref[c_src[keep]] * n_ref + res_to_ref[c_dst[keep]]
    common, i_ref, i_res = np.intersect1d(
        ref_keys, res_keys, assume_unique=True, return_indices=True
    )
    return AOGMCounts(
        ns=int(np.sum(np.maximum(hits - 1, 0))),
        fn=len(ref.label) - tp,
        fp=int(np.count_nonzero(hits == 0)),
        ed=len(res_keys) - len(common),
        ea=len(ref_keys) - len(common),
        ec=int(np.count_nonzero(r_parent[i_ref] != c_parent[keep][i_res])),
        vertices=len(ref.label),
        edges=len(ref_keys),
    )


def check_result_tracks(matches: Sequence[FrameMatch], tracks: Mapping[int, Track]) -> None:
    """ValueError (one line) unless the result's track table agrees with its masks as the CTC
    requires: each track's label in every frame ``first..last`` and nowhere else, a parent
    listed in the table and ending before its daughter starts."""
    n = len(matches)
    for tr in tracks.values():
        if tr.first > tr.last or tr.last >= n:
            raise ValueError(f"track {tr.id}: frames {tr.first}..{tr.last} outside 0..{n - 1}")
        if tr.parent and tr.parent not in tracks:
            raise ValueError(f"track {tr.id}: parent {tr.parent} is not in the track table")
        if tr.parent and tracks[tr.parent].last >= tr.first:
            end = tracks[tr.parent].last
            raise ValueError(
                f"track {tr.id} starts in frame {tr.first}, before its parent {tr.parent} ends ({end})"
            )
    have = _Vertices.of([m.result for m in matches])
    rows = list(tracks.values())
    want = _Vertices(
        np.concatenate([np.zeros(0, np.int64), *(np.arange(tr.first, tr.last + 1) for tr in rows)]),
        np.repeat(
            np.array([tr.id for tr in rows], np.int64), [tr.last - tr.first + 1 for tr in rows]
        ),
        n,
    )
    missing = have.find(want.frame, want.label) < 0
    if missing.any():
        i = int(np.argmax(missing))
        raise ValueError(f"track {want.label[i]} has no object in frame {want.frame[i]}")
    extra = want.find(have.frame, have.label) < 0
    if extra.any():
        i = int(np.argmax(extra))
        t, label = have.frame[i], have.label[i]
        raise ValueError(f"frame {t} has object {label}, which the track table does not list there")


def det_measure(frames: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """DET over ``(reference markers, result masks)`` label images of every frame, in order."""
    return aogm_counts([match_frame(ref, res) for ref, res in frames]).det


def tra_measure(
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    ref_tracks: Mapping[int, Track],
    res_tracks: Mapping[int, Track],
) -> float:
    """TRA over ``(reference markers, result masks)`` label images of every frame, in order,
    with both track tables (``{id: Track}``, see :func:`instseg.data.ctc.read_tracks`).
    ValueError when the result's table disagrees with its masks."""
    matches = [match_frame(ref, res) for ref, res in frames]
    check_result_tracks(matches, res_tracks)
    return aogm_counts(matches, ref_tracks, res_tracks).tra
