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

Coordinates are input pixels divided by ``REF`` (keeps the monomials near 1 in fp32);
feature pixel ``(i, j)`` of mask features at stride ``s`` has center ``s (i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["NUM_COEFS", "REF", "cell_geometry", "expand", "monomials", "prior_units"]

NUM_COEFS = 5  # a_xx, a_yy, a_xy, b_x, b_y
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
