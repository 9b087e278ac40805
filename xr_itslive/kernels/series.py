"""The GP's banded series algebra: interval rows, band tables, the Matérn prior, joint rows.

Arrays only (numpy, scipy): see :mod:`xr_itslive.kernels.gp` for the model that uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla

from .banded import predict_pairs, selected_inverse
from .design import interval_fractions, normal_terms
from .units import DAYS_PER_YEAR


# --------------------------------------------------------------------------- interval rows
@dataclass(frozen=True)
class Rows:
    """Rows of the date-span matrix (interval averages) on a grid of ``n_cells`` cells.

    Row ``i`` holds ``first_frac`` at ``first_cell``, ``inner`` on the cells strictly between
    and ``last_frac`` at ``last_cell``; a row inside one cell is a single 1.0.
    """

    n_cells: int
    first_cell: np.ndarray
    last_cell: np.ndarray
    first_frac: np.ndarray
    last_frac: np.ndarray
    inner: np.ndarray

    @classmethod
    def intervals(cls, u1: np.ndarray, u2: np.ndarray, n_cells: int) -> Rows:
        """Intervals ``[u1, u2]`` in cell units (``0 <= u1 < u2 <= n_cells``)."""
        return cls(n_cells, *interval_fractions(u1, u2, n_cells))

    @classmethod
    def points(cls, u: np.ndarray, n_cells: int) -> Rows:
        """Point values, linear between cell centres (constant beyond the outer centres)."""
        position = np.clip(u - 0.5, 0.0, n_cells - 1.0)
        first = np.minimum(np.floor(position).astype(np.int64), max(n_cells - 2, 0))
        frac = position - first
        last = np.minimum(first + 1, n_cells - 1)
        # a two-cell row with no interior: first_frac at first, last_frac at last
        return cls(n_cells, first, last, 1.0 - frac, frac, np.zeros_like(frac))

    @property
    def span(self) -> np.ndarray:
        return self.last_cell - self.first_cell

    def matvec(self, x: np.ndarray) -> np.ndarray:
        """``A @ x`` for ``x`` of shape ``(n_cells,)`` or ``(n_cells, m)``: the interval means
        by prefix sums (:func:`xr_itslive.kernels.banded.predict_pairs`, the one implementation
        the inversion uses too)."""
        lanes = x.reshape(x.shape[0], -1)
        out = predict_pairs(
            lanes, self.first_cell, self.last_cell, self.first_frac, self.last_frac, self.inner
        )
        return out.reshape((-1,) + x.shape[1:])

    def rmatvec(self, values: np.ndarray) -> np.ndarray:
        """``Aᵀ @ values`` for ``values`` of shape ``(n_rows,)`` or ``(n_rows, m)``."""
        squeeze = values.ndim == 1
        v = values[:, None] if squeeze else values
        n = self.n_cells
        single = self.span == 0
        first_coef = np.where(single, 1.0, self.first_frac)
        last_coef = np.where(single, 0.0, self.last_frac)
        inner = self.inner
        out = np.empty((n, v.shape[1]))
        starts = np.minimum(self.first_cell + 1, self.last_cell)
        for col in range(v.shape[1]):
            vc = v[:, col]
            direct = np.bincount(self.first_cell, first_coef * vc, minlength=n)
            direct += np.bincount(self.last_cell, last_coef * vc, minlength=n)
            steps = np.bincount(starts, inner * vc, minlength=n + 1)
            steps -= np.bincount(self.last_cell, inner * vc, minlength=n + 1)
            out[:, col] = direct + np.cumsum(steps)[:n]
        return out[:, 0] if squeeze else out

    def quadratic(self, tables: BandTables) -> np.ndarray:
        """``a_iᵀ Σ a_i`` for every row from the band tables of ``Σ`` (needs span <= width)."""
        j0, j1, span = self.first_cell, self.last_cell, self.span
        e0, e1, c = self.first_frac, self.last_frac, self.inner
        band = tables.band
        gap = np.maximum(span - 1, 0)
        inner_last = np.maximum(j1 - 1, 0)
        diag_sum = tables.diag_prefix[j1] - tables.diag_prefix[np.minimum(j0 + 1, j1)]
        block = 2.0 * tables.upper_block[inner_last, np.maximum(gap - 1, 0)] - diag_sum
        block = np.where(span >= 2, block, 0.0)
        row = np.where(span >= 2, tables.row_prefix[j0, gap] - band[j0, 0], 0.0)
        column = np.where(span >= 2, tables.column_prefix[j1, gap], 0.0)
        corner = band[j0, span]
        out = (
            e0**2 * band[j0, 0]
            + e1**2 * band[j1, 0]
            + 2 * e0 * e1 * corner
            + 2 * c * e0 * row
            + 2 * c * e1 * column
            + c**2 * block
        )
        return np.where(span == 0, band[j0, 0], out)


@dataclass(frozen=True)
class BandTables:
    """Prefix sums along the band ``band[j, d] = Σ[j, j + d]`` of a symmetric matrix."""

    n_cells: int
    band: np.ndarray  # (n_cells, width + 1)
    row_prefix: np.ndarray  # Σ_{d' <= d} band[j, d']
    column_prefix: np.ndarray  # Σ_{1 <= d' <= d} band[j - d', d']
    upper_block: np.ndarray  # Σ_{0 <= d' <= d} row_prefix[j - d', d']
    diag_prefix: np.ndarray  # (n_cells + 1,)

    @classmethod
    def from_band(cls, band: np.ndarray) -> BandTables:
        n, width = band.shape
        row_prefix = np.cumsum(band, axis=1)
        rows = np.arange(n)[:, None] - np.arange(width)[None, :]
        valid = rows >= 0
        safe = np.where(valid, rows, 0)
        cols = np.broadcast_to(np.arange(width), (n, width))
        shifted = np.where(valid, band[safe, cols], 0.0)
        shifted[:, 0] = 0.0
        column_prefix = np.cumsum(shifted, axis=1)
        upper_block = np.cumsum(np.where(valid, row_prefix[safe, cols], 0.0), axis=1)
        diag_prefix = np.concatenate([[0.0], np.cumsum(band[:, 0])])
        return cls(n, band, row_prefix, column_prefix, upper_block, diag_prefix)


def banded_selected_inverse(lower_factor: np.ndarray, width: int) -> np.ndarray:
    """The band of ``(L Lᵀ)⁻¹`` up to offset ``width`` from a lower banded Cholesky factor.

    :func:`xr_itslive.kernels.banded.selected_inverse` (the one implementation) on one lane.

    Parameters
    ----------
    lower_factor
        ``(bandwidth + 1, n)`` in LAPACK lower storage, ``lower_factor[k, j] = L[j + k, j]``
        (as returned by :func:`scipy.linalg.cholesky_banded` with ``lower=True``).
    width
        Largest offset wanted, ``>= bandwidth``.

    Returns
    -------
    numpy.ndarray
        ``(n, width + 1)`` with ``out[j, d] = Σ[j, j + d]`` (zero beyond the matrix).
    """
    bandwidth = lower_factor.shape[0] - 1
    n = lower_factor.shape[1]
    width = max(int(width), bandwidth)
    flat = np.ascontiguousarray(lower_factor.T).reshape(-1, 1)  # the kernels' layout, one lane
    return np.asarray(selected_inverse(flat, n, bandwidth, width)).reshape(n, width + 1)


# --------------------------------------------------------------------------- the prior
def matern_precision(n: int, step: float, signal_std: float, length_scale: float):
    """Lower band (3, n) and log-determinant of the Matérn-3/2 SPDE precision on cells.

    ``τ (κ² - d²/dt²) g = W`` discretized by finite differences with reflecting ends:
    ``Q = step · KᵀK / (4 κ³ σ²)``, ``K = κ² I + Laplacian / step²``, which gives marginal
    variance ``σ²`` away from the ends and correlation ``(1 + κr) e^{-κr}``, ``κ = √3 / ℓ``.
    """
    kappa = np.sqrt(3.0) / length_scale
    off = -1.0 / step**2
    neighbours = np.full(n, 2.0)
    if n > 1:
        neighbours[0] = neighbours[-1] = 1.0
    else:
        neighbours[0] = 0.0
    diag_k = kappa**2 - off * neighbours
    scale = step / (4.0 * kappa**3 * signal_std**2)
    band = np.zeros((3, n))
    band[0] = scale * (diag_k**2 + off**2 * neighbours)
    band[1, :-1] = scale * off * (diag_k[:-1] + diag_k[1:])
    band[2, :-2] = scale * off**2
    k_band = np.zeros((2, n))
    k_band[0] = diag_k
    k_band[1, :-1] = off
    k_factor = sla.cholesky_banded(k_band, lower=True)
    logdet = n * np.log(scale) + 4.0 * np.sum(np.log(k_factor[0]))
    return band, logdet


def harmonic_columns(u1: np.ndarray, u2: np.ndarray, harmonics: int) -> np.ndarray:
    """Interval averages of ``[1, cos ωt, sin ωt, ...]`` over ``[u1, u2]`` days (exact)."""
    columns = [np.ones_like(u1)]
    length = u2 - u1
    instant = length <= 1e-9
    safe = np.where(instant, 1.0, length)
    for m in range(1, harmonics + 1):
        omega = 2 * np.pi * m / DAYS_PER_YEAR
        cos_avg = (np.sin(omega * u2) - np.sin(omega * u1)) / (omega * safe)
        sin_avg = (np.cos(omega * u1) - np.cos(omega * u2)) / (omega * safe)
        columns.append(np.where(instant, np.cos(omega * u1), cos_avg))
        columns.append(np.where(instant, np.sin(omega * u1), sin_avg))
    return np.stack(columns, axis=1)


# --------------------------------------------------------------------------- joint rows
@dataclass(frozen=True)
class Observation:
    """Rows over the interleaved unknowns ``[v_0, δ_0, v_1, δ_1, ...]`` (``stride`` 2).

    A pair sees the interval average of ``v`` plus ``s_i (δ[cell(t2)] - δ[cell(t1)])`` with
    ``s_i = 365.25 / dt_i``: ``δ`` is the displacement error (metres) shared by the images
    acquired in a cell (georeferencing, stable-surface shift), so pairs that share an image
    share its error. With ``stride`` 1 there is no ``δ``.
    """

    rows: Rows
    image_scale: np.ndarray
    stride: int

    def matvec(self, x: np.ndarray) -> np.ndarray:
        out = self.rows.matvec(x[:: self.stride])
        if self.stride == 2:
            images = x[1::2]
            scale = self.image_scale.reshape((-1,) + (1,) * (x.ndim - 1))
            out = out + scale * (images[self.rows.last_cell] - images[self.rows.first_cell])
        return out

    def rmatvec(self, values: np.ndarray) -> np.ndarray:
        n = self.rows.n_cells
        out = np.zeros((self.stride * n,) + values.shape[1:])
        out[:: self.stride] = self.rows.rmatvec(values)
        if self.stride == 2:
            v = values[:, None] if values.ndim == 1 else values
            images = np.empty((n, v.shape[1]))
            for col in range(v.shape[1]):
                sv = self.image_scale * v[:, col]
                images[:, col] = np.bincount(self.rows.last_cell, sv, minlength=n) - np.bincount(
                    self.rows.first_cell, sv, minlength=n
                )
            out[1::2] = images[:, 0] if values.ndim == 1 else images
        return out

    def quadratic(self, band: np.ndarray) -> np.ndarray:
        """``h_iᵀ Σ h_i`` from the band of the joint ``Σ`` (``band[j, d] = Σ[j, j + d]``)."""
        q = self.stride
        rows = self.rows
        out = rows.quadratic(BandTables.from_band(band[::q, ::q]))
        if q == 1:
            return out
        n, width = rows.n_cells, (band.shape[1] - 2) // 2
        j0, j1, span = rows.first_cell, rows.last_cell, rows.span
        e0 = np.where(span == 0, 1.0, rows.first_frac)
        e1, c, s = rows.last_frac, rows.inner, self.image_scale
        cells = np.arange(n)[:, None]
        offsets = np.arange(width + 1)[None, :]
        # forward[j, d] = Σ(v[j + d], δ[j]); backward[j, d] = Σ(v[j - d], δ[j])
        forward = np.where(
            offsets == 0, band[2 * cells, 1], band[2 * cells + 1, np.maximum(2 * offsets - 1, 0)]
        )
        back_rows = np.maximum(cells - offsets, 0)
        backward = np.where(cells >= offsets, band[2 * back_rows, 2 * offsets + 1], 0.0)
        forward_sum = np.cumsum(forward, axis=1)
        backward_sum = np.cumsum(backward, axis=1)
        gap = np.maximum(span - 1, 0)
        with_first = (
            e0 * forward[j0, 0]
            + c * (forward_sum[j0, gap] - forward_sum[j0, 0])
            + e1 * forward[j0, span] * (span > 0)
        )
        with_last = (
            e1 * backward[j1, 0]
            + c * (backward_sum[j1, gap] - backward_sum[j1, 0])
            + e0 * backward[j1, span] * (span > 0)
        )
        images = band[2 * j0 + 1, 0] + band[2 * j1 + 1, 0] - 2 * band[2 * j0 + 1, 2 * span]
        return out + s**2 * images + 2 * s * (with_last - with_first)


def build_terms(rows: Rows) -> tuple:
    """The scatter tables of ``AᵀWA`` for ``rows`` (and the bandwidth they were built for)."""
    bandwidth = max(int(rows.span.max()), 2)
    arrays = (rows.first_cell, rows.last_cell, rows.first_frac, rows.last_frac, rows.inner)
    t = normal_terms(arrays, rows.n_cells, bandwidth)
    return (t.gram_pair, t.gram_cell, t.gram_coef, t.gram_kind_starts), bandwidth


def gram_band(terms: tuple, weights: np.ndarray, n: int, bw: int) -> np.ndarray:
    """``AᵀWA`` as ``band[r, k] = G[r, r + k]`` from :class:`xr_itslive.kernels.design.NormalTerms`.

    The scatter tables' four kinds (see that class) are summed with ``bincount`` and their
    sweeps vectorized: the kernels' version serves many pixels at once, this one a single
    long series where a Python loop over cells would dominate.
    """
    pair, cell, coef, starts = terms
    width = bw + 1

    def kind(k: int) -> np.ndarray:
        lo, hi = starts[k], starts[k + 1]
        sums = np.bincount(cell[lo:hi], coef[lo:hi] * weights[pair[lo:hi]], minlength=n * width)
        return sums.reshape(n, width)

    sweep = np.flip(np.cumsum(np.flip(kind(0), axis=1), axis=1), axis=1) + kind(1)
    # T[r, k] = Σ_{m >= 0} sweep[r - m, k + m]: a reverse cumsum along anti-diagonals
    anti = np.arange(n + width - 1)[:, None]
    offsets = np.arange(width)[None, :]
    source = anti - offsets
    valid = (source >= 0) & (source < n)
    diagonals = np.where(valid, sweep[np.clip(source, 0, n - 1), offsets], 0.0)
    diagonals = np.flip(np.cumsum(np.flip(diagonals, axis=1), axis=1), axis=1)
    swept = diagonals[np.arange(n)[:, None] + offsets, offsets]
    return swept + np.cumsum(kind(2), axis=1) + kind(3)
