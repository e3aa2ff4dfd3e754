"""SOLOv2's optional position prior: a dynamic quadratic in coordinates relative to the cell.

Plain SOLOv2 makes the mask of cell ``c`` as ``kernel_c . F(x)``: to pick one object out of
many alike (crowded nuclei) the 1x1 kernel must find position in the mask features, which
see coordinates only through CoordConv channels normalized to the image, so the learned
positions change with the input size (random training crops vs whole test images). With
``position_prior`` the kernel branch predicts 5 more numbers per cell,
``(a_xx, a_yy, a_xy, b_x, b_y)``, and the mask logit gets

    Q_c(x) = a_xx dx^2 + a_yy dy^2 + a_xy dx dy + b_x dx + b_y dy,
    dx = (x - cx_c) / u_l,  dy = (y - cy_c) / u_l,

with ``(cy_c, cx_c)`` the cell's center and ``u_l`` a fixed pixel unit of its level: an
ellipse-shaped, shiftable bump around the cell (as CondInst's relative coordinates, but
fitting a 1x1 kernel). It is independent of the input size. ``Q_c`` is expanded into six
monomial channels ``(x^2, y^2, xy, x, y, 1)`` appended to the mask features and six matching
per-cell coefficients appended to the kernels, so a mask is still one matmul (and
post-processing does not change): ``[kernel_c, coef_c] . [F(x), m(x)]``.

Center votes (``center_votes``, optional, with or without the prior): the mask-feature head
also predicts at every pixel ``x`` an offset ``o(x)`` to the mass center of the object it
belongs to (in units of level 0's ``u_0``; trained with an L1 loss on foreground pixels), so
that each pixel *votes* for a center ``v(x) = x + u_0 o(x)``. The kernel branch predicts 3
more numbers per cell, ``(beta, d_x, d_y)``: its object's center ``c' = c + u_l d`` and a
sharpness ``softplus(beta)``, and the mask logit gets

    V_c(x) = -softplus(beta) |v(x) - c'|^2 / u_l^2,

high where pixels vote for this cell's object and low on a touching neighbour, whose pixels
vote for another center (the 1x1 kernel alone leaks into neighbours: on DSB nuclei 19% of the
best cell's mask pixels of touching nuclei lay on the neighbour). It is linear in the four
channels ``(|v|^2, v_x, v_y, 1)``, so a mask is still one matmul.

Coordinates are input pixels divided by ``REF`` (keeps the monomials near 1 in fp32);
feature pixel ``(i, j)`` of mask features at stride ``s`` has center ``s (i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "NUM_COEFS",
    "NUM_VOTE_PARAMS",
    "REF",
    "cell_geometry",
    "expand",
    "expand_votes",
    "mask_operands",
    "monomials",
    "prior_units",
    "vote_channels",
    "vote_l1",
    "vote_targets",
]

NUM_COEFS = 5  # a_xx, a_yy, a_xy, b_x, b_y
NUM_VOTE_PARAMS = 3  # beta, d_x, d_y (center votes)
REF = 64.0  # input pixels per coordinate unit of the monomials


def prior_units(scale_ranges: tuple[tuple[float, float], ...]) -> tuple[float, ...]:
    """Pixel unit ``u_l`` per level: a third of level 0's upper object size, doubling per
    level (the paper's ranges: 32, 64, 128, 256, 512 px)."""
    base = scale_ranges[0][1] / 3.0
    return tuple(base * 2.0**lv for lv in range(len(scale_ranges)))


def cell_geometry(
    grids: Sequence[tuple[int, int]],
    units: tuple[float, ...],
    padded: tuple[int, int],
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Centers ``(C, 2)`` ``(y, x)`` and units ``(C,)`` of all cells of grids ``(rows, cols)``
    per level (levels concatenated, cell ``r * cols + c``), in ``REF`` units of the padded
    input ``(Hp, Wp)``."""
    centers, scales = [], []
    for (gh, gw), u in zip(grids, units):
        ys = (torch.arange(gh, device=device, dtype=torch.float32) + 0.5) * (padded[0] / gh)
        xs = (torch.arange(gw, device=device, dtype=torch.float32) + 0.5) * (padded[1] / gw)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        centers.append(torch.stack([gy.reshape(-1), gx.reshape(-1)], 1) / REF)
        scales.append(torch.full((gh * gw,), u / REF, device=device))
    return torch.cat(centers), torch.cat(scales)


def monomials(fh: int, fw: int, stride: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(6, fh, fw)``: ``x^2, y^2, xy, x, y, 1`` at the centers of the mask-feature pixels
    (``stride`` input pixels apart)."""
    ys = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * (stride / REF)
    xs = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * (stride / REF)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x * x, y * y, x * y, x, y, torch.ones_like(x)]).to(dtype)


def expand(coefs: Tensor, centers: Tensor, units: Tensor) -> Tensor:
    """Relative-quadratic coefficients ``(..., C, 5)`` of cells with ``centers (C, 2)`` ``(y, x)``
    and ``units (C,)`` -> coefficients ``(..., C, 6)`` of :func:`monomials`."""
    axx, ayy, axy, bx, by = coefs.float().unbind(-1)
    cy, cx = centers[:, 0], centers[:, 1]
    p = 1.0 / units
    q = p * p
    return torch.stack(
        [
            axx * q,
            ayy * q,
            axy * q,
            -2 * axx * q * cx - axy * q * cy + bx * p,
            -2 * ayy * q * cy - axy * q * cx + by * p,
            q * (axx * cx * cx + ayy * cy * cy + axy * cx * cy) - p * (bx * cx + by * cy),
        ],
        -1,
    )


def _pixel_centers(fh: int, fw: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(y, x)`` grids ``(fh, fw)`` of the centers of stride-``stride`` pixels, input px."""
    ys = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * stride
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return y, x


def vote_channels(votes: Tensor, stride: int, unit0: float) -> Tensor:
    """Predicted offsets ``(B, 2, fh, fw)`` (``(o_x, o_y)`` in units of ``unit0`` input px) ->
    the four mask operands ``(B, 4, fh, fw)``: ``|v|^2, v_x, v_y, 1`` of the voted centers
    ``v = x + unit0 * o`` in ``REF`` units."""
    b, _, fh, fw = votes.shape
    y, x = _pixel_centers(fh, fw, stride, votes.device)
    o = votes.float() * (unit0 / REF)
    vx, vy = o[:, 0] + x / REF, o[:, 1] + y / REF
    chans = [vx * vx + vy * vy, vx, vy, torch.ones_like(vx)]
    return torch.stack(chans, 1).to(votes.dtype)


def expand_votes(params: Tensor, centers: Tensor, units: Tensor) -> Tensor:
    """Vote parameters ``(..., C, 3)`` ``(beta, d_x, d_y)`` of cells with ``centers (C, 2)``
    ``(y, x)`` and ``units (C,)`` (``REF`` units) -> coefficients ``(..., C, 4)`` of
    :func:`vote_channels`: ``-b q |v - c'|^2`` with ``b = softplus(beta)``, ``q = 1 / u^2``,
    ``c' = c + u d``."""
    beta, dx, dy = params.float().unbind(-1)
    cx = centers[:, 1] + units * dx
    cy = centers[:, 0] + units * dy
    bq = F.softplus(beta) / (units * units)
    return torch.stack([-bq, 2 * bq * cx, 2 * bq * cy, -bq * (cx * cx + cy * cy)], -1)


def vote_targets(soft: Tensor, stride: int, unit0: float) -> tuple[Tensor, Tensor]:
    """Soft target masks ``(N, fh, fw)`` at stride ``stride`` -> offset targets ``(2, fh, fw)``
    ``(o_x, o_y)`` from each pixel to the mass center of its object (the one with the largest
    mask value there), in units of ``unit0`` input px, and the foreground ``(fh, fw)`` bool
    (largest mask value > 0.5) where they apply. The centers are those of the pooled soft
    masks: within a fraction of a stride of the full-resolution ones."""
    n, fh, fw = soft.shape
    y, x = _pixel_centers(fh, fw, stride, soft.device)
    if n == 0:
        return soft.new_zeros(2, fh, fw), torch.zeros(fh, fw, dtype=torch.bool, device=soft.device)
    mass = soft.sum((1, 2)).clamp(min=1e-6)
    cy = (soft * y).sum((1, 2)) / mass
    cx = (soft * x).sum((1, 2)) / mass
    best, owner = soft.max(0)
    target = torch.stack([cx[owner] - x, cy[owner] - y]) / unit0
    return target, best > 0.5


def vote_l1(votes: Tensor, soft: Tensor, stride: int, unit0: float) -> tuple[Tensor, int]:
    """One image's predicted offsets ``(2, fh, fw)`` and soft target masks ``(N, fh, fw)`` ->
    the summed L1 error (both offsets) over its foreground pixels and their number."""
    target, fg = vote_targets(soft, stride, unit0)
    return (votes.float() - target).abs().sum(0)[fg].sum(), int(fg.sum())


def mask_operands(
    kernels: Tensor,
    mask_feat: Tensor,
    grids: Sequence[tuple[int, int]],
    units: tuple[float, ...],
    stride: int,
    prior: bool,
    votes: bool,
) -> tuple[Tensor, Tensor]:
    """Flat kernels ``(B, C, E')`` (``E`` weights, then 5 prior coefficients if ``prior``,
    then 3 vote parameters if ``votes``) and mask features ``(B, E[+2], h, w)`` at
    ``stride`` (the last 2 channels are the votes if ``votes``) of cells on ``grids`` with
    level ``units`` (px) -> the two sides of the mask matmul ``(B, C, E'')`` and
    ``(B, E'', h, w)``: the prior adds :func:`expand` x :func:`monomials` (6), the votes
    :func:`expand_votes` x :func:`vote_channels` (4)."""
    vote_map = None
    if votes:
        mask_feat, vote_map = mask_feat[:, :-2], mask_feat[:, -2:]
    b, e, fh, fw = mask_feat.shape
    padded = (stride * fh, stride * fw)
    centers, cell_units = cell_geometry(grids, units, padded, mask_feat.device)
    ks, fs, k = [kernels[..., :e]], [mask_feat], e
    if prior:
        ks.append(expand(kernels[..., k : k + NUM_COEFS], centers, cell_units))
        mono = monomials(fh, fw, stride, mask_feat.device, mask_feat.dtype)
        fs.append(mono[None].expand(b, -1, -1, -1))
        k += NUM_COEFS
    if vote_map is not None:
        ks.append(expand_votes(kernels[..., k:], centers, cell_units))
        fs.append(vote_channels(vote_map, stride, units[0]))
    return torch.cat([x.to(kernels.dtype) for x in ks], -1), torch.cat(fs, 1)
