"""Namespace-generic kernels (numpy, cupy, array-API): pixels on the last axis.

Layout: the upper band of each pixel's normal matrix is stored as ``band[r * (bw + 1) + k, p]
= G_p[r, r + k]``, pixels last so that every operation runs across pixels (contiguous on the
CPU, coalesced on the GPU). The Python loops run over cells and band offsets, never over
pixels.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._namespace import get_namespace

# Kinds of scatter terms (see xr_itslive.design.NormalTerms).
SWEEP_POINTS, SWEEP, ROW_CUMSUM, DIRECT = 0, 1, 2, 3
RHS_CUMSUM, RHS_DIRECT = 0, 1


def _cumsum(xp: ModuleType, x: Any, axis: int) -> Any:
    cumulative_sum = getattr(xp, "cumulative_sum", None)
    if cumulative_sum is not None:
        return cumulative_sum(x, axis=axis)
    return xp.cumsum(x, axis=axis)


def _segment_sums(xp, values, pair, cell, coef, n_out):
    """``out[c, p] = Σ_t coef[t] * values[pair[t], p]`` over terms with ``cell[t] == c``.

    Terms are sorted by cell; a cumulative sum over terms and a gather at the cell
    boundaries replace a scatter-add (which the array API lacks).
    """
    n_pix = values.shape[1]
    if pair.shape[0] == 0:
        return xp.zeros((n_out, n_pix), dtype=values.dtype)
    contrib = xp.take(values, pair, axis=0) * coef[:, None]
    running = xp.concat([xp.zeros((1, n_pix), dtype=values.dtype), _cumsum(xp, contrib, 0)])
    # boundaries[c] = number of terms with cell < c, computed on the host once per call.
    bounds = xp.searchsorted(cell, xp.arange(n_out + 1, dtype=cell.dtype))
    return xp.take(running, bounds[1:], axis=0) - xp.take(running, bounds[:-1], axis=0)


def assemble_normal_equations(weights, weighted_values, terms, n_cells: int, bandwidth: int):
    """Batched ``AᵀWA`` (upper band) and ``AᵀWy`` for pixels on the last axis.

    Parameters
    ----------
    weights, weighted_values
        ``(n_pairs, n_pixels)``: the weight of each observation (0 where missing) and the
        weight times the value (0 where missing).
    terms
        ``(gram_pair, gram_cell, gram_coef, gram_kind_starts, rhs_pair, rhs_cell, rhs_coef,
        rhs_kind_starts)`` from :func:`xr_itslive.design.normal_terms`, as arrays of the
        namespace of ``weights`` (starts as Python ints).
    """
    xp = get_namespace(weights)
    gp, gc, gv, gs, rp, rc, rv, rs = terms
    width = bandwidth + 1
    size = n_cells * width
    n_pix = weights.shape[1]

    def kind(k, pair, cell, coef, starts, values, n_out):
        lo, hi = starts[k], starts[k + 1]
        return _segment_sums(xp, values, pair[lo:hi], cell[lo:hi], coef[lo:hi], n_out)

    shape3 = (n_cells, width, n_pix)
    # Interior blocks: reverse cumulative sum along the band ...
    points = xp.reshape(kind(SWEEP_POINTS, gp, gc, gv, gs, weights, size), shape3)
    sweep = xp.flip(_cumsum(xp, xp.flip(points, axis=1), 1), axis=1)
    sweep = sweep + xp.reshape(kind(SWEEP, gp, gc, gv, gs, weights, size), shape3)
    # ... then the diagonal sweep T[r, k] += T[r - 1, k + 1], one cell at a time.
    for r in range(1, n_cells):
        sweep[r, :-1, :] = sweep[r, :-1, :] + sweep[r - 1, 1:, :]
    rows = _cumsum(xp, xp.reshape(kind(ROW_CUMSUM, gp, gc, gv, gs, weights, size), shape3), 1)
    direct = xp.reshape(kind(DIRECT, gp, gc, gv, gs, weights, size), shape3)
    gram = xp.reshape(sweep + rows + direct, (size, n_pix))

    rhs = _cumsum(xp, kind(RHS_CUMSUM, rp, rc, rv, rs, weighted_values, n_cells), 0)
    rhs = rhs + kind(RHS_DIRECT, rp, rc, rv, rs, weighted_values, n_cells)
    return gram, rhs


def banded_cholesky(band, n_cells: int, bandwidth: int, rel_tol: float = 1e-11):
    """In-place banded Cholesky ``G = L Lᵀ`` of every pixel; returns ``(factor, singular)``.

    On return ``band[j * (bw + 1) + k, p] = L_p[j + k, j]``. A pixel whose pivot falls below
    ``rel_tol`` × its largest diagonal entry is flagged singular (its columns are decoupled
    so that the other pixels are unaffected and no NaN spreads).
    """
    xp = get_namespace(band)
    width = bandwidth + 1
    diag = band[::width, :]
    tol = rel_tol * xp.max(diag, axis=0)
    singular = xp.zeros(band.shape[1], dtype=xp.bool)
    for j in range(n_cells):
        base = j * width
        pivot = band[base, :]
        bad = ~(pivot > tol)
        singular = singular | bad
        root = xp.where(bad, xp.asarray(float("inf"), dtype=band.dtype), xp.sqrt(xp.abs(pivot)))
        band[base, :] = root
        kmax = min(bandwidth, n_cells - 1 - j)
        if kmax == 0:
            continue
        col = band[base + 1 : base + 1 + kmax, :] / root
        band[base + 1 : base + 1 + kmax, :] = col
        # G[j+k, j+l] -= L[j+k, j] L[j+l, j] for 1 <= k <= l: contiguous in l in this layout.
        for k in range(1, kmax + 1):
            start = base + k * bandwidth + k
            band[start : start + kmax - k + 1, :] = (
                band[start : start + kmax - k + 1, :] - col[k - 1 : k, :] * col[k - 1 :, :]
            )
    return band, singular


def banded_solve(factor, rhs, n_cells: int, bandwidth: int):
    """Solve ``L Lᵀ x = rhs`` for every pixel from :func:`banded_cholesky`'s factor."""
    xp = get_namespace(factor)
    width = bandwidth + 1
    z = xp.asarray(rhs, copy=True)
    for j in range(n_cells):
        base = j * width
        z[j, :] = z[j, :] / factor[base, :]
        kmax = min(bandwidth, n_cells - 1 - j)
        if kmax:
            z[j + 1 : j + 1 + kmax, :] = (
                z[j + 1 : j + 1 + kmax, :] - factor[base + 1 : base + 1 + kmax, :] * z[j : j + 1, :]
            )
    for j in range(n_cells - 1, -1, -1):
        base = j * width
        kmax = min(bandwidth, n_cells - 1 - j)
        acc = z[j, :]
        if kmax:
            acc = acc - xp.sum(
                factor[base + 1 : base + 1 + kmax, :] * z[j + 1 : j + 1 + kmax, :], axis=0
            )
        z[j, :] = acc / factor[base, :]
    return z


def solve_pixels(
    values, weights, terms, regularization, n_cells: int, bandwidth: int, min_obs: int
):
    """Regularized least squares for a batch of pixels, pixels on the last axis.

    Parameters
    ----------
    values
        ``(n_pairs, n_pixels)`` observations, NaN where missing.
    weights
        ``(n_pairs, n_pixels)`` or ``(n_pairs, 1)`` observation weights, or None for ones.
    terms
        Scatter tables (see :func:`assemble_normal_equations`).
    regularization
        ``(n_cells * (bandwidth + 1), 1)`` upper band of the smoothness term.
    min_obs
        Pixels with fewer valid observations come out NaN.

    Returns
    -------
    solution : ``(n_cells, n_pixels)`` float64, NaN for unsolvable pixels
    n_obs : ``(n_pixels,)`` number of valid observations
    """
    xp = get_namespace(values)
    values = xp.astype(values, xp.float64)
    valid = ~xp.isnan(values)
    w = xp.astype(valid, xp.float64)
    if weights is not None:
        w = w * xp.where(valid, xp.astype(weights, xp.float64), 0.0)
    wy = xp.where(valid, w * values, 0.0)
    n_obs = xp.sum(xp.astype(valid & (w > 0), xp.int64), axis=0)
    gram, rhs = assemble_normal_equations(w, wy, terms, n_cells, bandwidth)
    gram = gram + regularization
    factor, singular = banded_cholesky(gram, n_cells, bandwidth)
    solution = banded_solve(factor, rhs, n_cells, bandwidth)
    unsolved = singular | (n_obs < min_obs)
    solution = xp.where(unsolved[None, :], xp.asarray(float("nan"), dtype=solution.dtype), solution)
    return solution, n_obs
