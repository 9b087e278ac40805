"""Gaussian-process regression of a point series of image-pair velocities.

Each ITS_LIVE observation is the *mean* velocity between two acquisition dates, so the GP is
observed through interval averages, not through point values at ``mid_date``::

    y_i = (1 / (t2_i - t1_i)) ∫_{t1_i}^{t2_i} v(t) dt + ε_i

The latent velocity is ``v(t) = μ + g(t) + s(t)``:

* ``g``, a Matérn-3/2 process (variance ``signal_std²``, length scale ``length_scale`` days),
  lives on a regular grid of ``step``-day cells as a Gauss-Markov random field: the
  stochastic-PDE form ``(κ² - d²/dt²) g = white noise`` has a *banded* precision (bandwidth
  2), so with the date-span matrix ``A`` (exact cell fractions of each interval) the
  posterior precision ``Q + AᵀWA`` is banded with the longest pair as bandwidth;
* ``s``, annual (and optionally semi-annual) harmonics with Gaussian coefficients of standard
  deviation ``seasonal_std``; their interval averages are exact;
* ``μ``, a constant with a wide Gaussian prior.

The constant and harmonics add a few dense columns, handled by a Schur complement. One
evaluation of the log marginal likelihood is a banded Cholesky (``O(cells · bandwidth²)``)
plus ``O(pairs)`` work, so the hyperparameters are fitted on every pair by
``scipy.optimize``. Posterior variances come from a selected inverse of the banded
precision (Takahashi's recursion, ``O(cells · bandwidth²)``, no dense inverse) and prefix
sums along its band, so the variance of any interval average costs ``O(1)``.

Noise: ``σ_i² = noise_floor² + (error_scale · e_i)²`` where ``e_i`` is the pair's error
(``v_error``) when given, otherwise ``365.25 / dt_i``, so that ``error_scale`` is a
displacement error in metres (velocity error of image matching falls as ``1 / dt``).
With ``robust=True`` the noise is Student-t (``dof`` degrees of freedom) through its
Gaussian scale mixture: a few EM rounds reweight each pair by
``(ν + 1) / (ν + E[r_i²] / σ_i²)`` and refit the hyperparameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.special as ss
import xarray as xr

from . import design
from .errors import (
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
)

__all__ = ["GaussianProcessFit", "gp_fit", "gp_fit_series", "gp_regress"]

DAYS_PER_YEAR = 365.25
_NS_PER_DAY = 86400 * 10**9
MIN_PAIRS = 10
PAIR_DIM = "mid_date"
TIME_DIM = "time"
PARAMETER_NAMES = (
    "signal_std",
    "length_scale",
    "seasonal_std",
    "noise_floor",
    "error_scale",
    "image_error_std",
)


# --------------------------------------------------------------------------- time handling
def _to_days(values: Any, origin: np.datetime64 | None, name: str) -> np.ndarray:
    """Dates (datetime64) or numbers of days as float days since ``origin``."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.datetime64):
        if origin is None:
            raise InvalidParameterError(
                f"{name} holds dates but the fit was made on numbers of days; pass {name} "
                "as days too"
            )
        return (array.astype("datetime64[ns]") - origin).astype("int64") / _NS_PER_DAY
    if array.dtype.kind in "iuf":
        if origin is not None:
            raise InvalidParameterError(
                f"{name} holds numbers ({array.dtype}) but the fit was made on dates; pass "
                f"{name} as numpy.datetime64 values"
            )
        return array.astype(np.float64)
    raise InvalidParameterError(
        f"{name} must be numpy.datetime64 dates or numbers of days, got dtype {array.dtype}"
    )


def _from_days(days: float, origin: np.datetime64 | None) -> Any:
    if origin is None:
        return float(days)
    return origin + np.timedelta64(int(round(days * _NS_PER_DAY)), "ns")


# --------------------------------------------------------------------------- interval rows
@dataclass(frozen=True)
class _Rows:
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
    def intervals(cls, u1: np.ndarray, u2: np.ndarray, n_cells: int) -> _Rows:
        """Intervals ``[u1, u2]`` in cell units (``0 <= u1 < u2 <= n_cells``)."""
        length = u2 - u1
        first = np.minimum(np.floor(u1).astype(np.int64), n_cells - 1)
        last = np.clip(np.ceil(u2).astype(np.int64) - 1, first, n_cells - 1)
        single = first == last
        with np.errstate(divide="ignore", invalid="ignore"):
            first_frac = np.where(single, 1.0, (first + 1 - u1) / length)
            last_frac = np.where(single, 0.0, (u2 - last) / length)
            inner = np.where(single, 0.0, 1.0 / length)
        return cls(n_cells, first, last, first_frac, last_frac, inner)

    @classmethod
    def points(cls, u: np.ndarray, n_cells: int) -> _Rows:
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
        """``A @ x`` for ``x`` of shape ``(n_cells,)`` or ``(n_cells, m)``."""
        prefix = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
        interior = prefix[self.last_cell] - prefix[np.minimum(self.first_cell + 1, self.last_cell)]
        shape = (-1,) + (1,) * (x.ndim - 1)
        single = (self.span == 0).reshape(shape)
        out = (
            self.first_frac.reshape(shape) * x[self.first_cell]
            + self.last_frac.reshape(shape) * x[self.last_cell]
            + self.inner.reshape(shape) * interior
        )
        return np.where(single, x[self.first_cell], out)

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

    def quadratic(self, tables: _BandTables) -> np.ndarray:
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
class _BandTables:
    """Prefix sums along the band ``band[j, d] = Σ[j, j + d]`` of a symmetric matrix."""

    n_cells: int
    band: np.ndarray  # (n_cells, width + 1)
    row_prefix: np.ndarray  # Σ_{d' <= d} band[j, d']
    column_prefix: np.ndarray  # Σ_{1 <= d' <= d} band[j - d', d']
    upper_block: np.ndarray  # Σ_{0 <= d' <= d} row_prefix[j - d', d']
    diag_prefix: np.ndarray  # (n_cells + 1,)

    @classmethod
    def from_band(cls, band: np.ndarray) -> _BandTables:
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

    Notes
    -----
    Takahashi's recursion ``Σ[j, i] = (δ_ij / L_jj - Σ_k L_kj Σ[k, i]) / L_jj`` from the last
    row up, keeping a dense ``(width + 1)²`` window: ``O(n · width · bandwidth)``.
    """
    bandwidth = lower_factor.shape[0] - 1
    n = lower_factor.shape[1]
    width = max(int(width), bandwidth)
    pad = width + 1
    # Padded copies so that the window may run past the last row (zeros there).
    factor = np.zeros((bandwidth + 1, n + pad))
    factor[:, :n] = lower_factor
    window = np.zeros((pad, pad))
    out = np.zeros((n, pad))
    for j in range(n - 1, -1, -1):
        # window holds Σ[j+1 : j+1+pad, j+1 : j+1+pad]; shift it down by one
        window[1:, 1:] = window[:-1, :-1]
        window[0, :] = 0.0
        window[:, 0] = 0.0
        diagonal = factor[0, j]
        column = factor[1:, j]  # L[j+1 : j+1+bandwidth, j]
        # Σ[j, j+1 : j+1+width] = -(column · Σ[j+1 : j+1+bandwidth, j+1 : j+1+width]) / L_jj
        row = -(column @ window[1 : bandwidth + 1, 1:]) / diagonal
        window[0, 1:] = row
        window[1:, 0] = row
        window[0, 0] = (1.0 / diagonal - column @ row[:bandwidth]) / diagonal
        out[j] = window[0]
    return out


# --------------------------------------------------------------------------- the prior
def _matern_precision(n: int, step: float, signal_std: float, length_scale: float):
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


def _harmonic_columns(u1: np.ndarray, u2: np.ndarray, harmonics: int) -> np.ndarray:
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
class _Observation:
    """Rows over the interleaved unknowns ``[v_0, δ_0, v_1, δ_1, ...]`` (``stride`` 2).

    A pair sees the interval average of ``v`` plus ``s_i (δ[cell(t2)] - δ[cell(t1)])`` with
    ``s_i = 365.25 / dt_i``: ``δ`` is the displacement error (metres) shared by the images
    acquired in a cell (georeferencing, stable-surface shift), so pairs that share an image
    share its error. With ``stride`` 1 there is no ``δ``.
    """

    rows: _Rows
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
        out = rows.quadratic(_BandTables.from_band(band[::q, ::q]))
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


# --------------------------------------------------------------------------- the fit
@dataclass
class _Posterior:
    factor: np.ndarray  # lower band of chol(P11), P11 = Q + HᵀWH over the joint unknowns
    cross: np.ndarray  # U = P11⁻¹ P12, (stride * n_cells, k)
    schur: np.ndarray  # S = P22 - P12ᵀ U, (k, k)
    joint: np.ndarray  # posterior mean of the interleaved [v, δ]
    coefficients: np.ndarray  # posterior mean of [μ, harmonics]
    log_likelihood: float
    stride: int
    band: np.ndarray | None = None  # selected inverse of P11, filled on demand

    @property
    def cells(self) -> np.ndarray:
        return self.joint[:: self.stride]


@dataclass
class _Problem:
    """Everything about the training pairs that does not depend on the hyperparameters."""

    observation: _Observation
    harmonics: np.ndarray  # (n_pairs, k)
    values: np.ndarray  # centred
    noise_basis: np.ndarray  # e_i: the error, or 365.25 / dt
    durations: np.ndarray  # dt in days
    terms: tuple
    n_cells: int
    bandwidth: int
    step: float
    mean_prior_std: float

    @property
    def rows(self) -> _Rows:
        return self.observation.rows


def _build_terms(rows: _Rows, step: float) -> tuple:
    grid = design.TimeGrid(start=np.datetime64(0, "ns"), step=step, n_cells=rows.n_cells)
    geometry = design.PairGeometry(
        grid=grid,
        kept=np.ones(rows.first_cell.size, bool),
        first_cell=rows.first_cell,
        last_cell=rows.last_cell,
        first_frac=rows.first_frac,
        last_frac=rows.last_frac,
        inner=rows.inner,
        bandwidth=max(int(rows.span.max()), 2),
    )
    t = design.normal_terms(geometry)
    return (t.gram_pair, t.gram_cell, t.gram_coef, t.gram_kind_starts), geometry.bandwidth


def _gram_band(terms: tuple, weights: np.ndarray, n: int, bw: int) -> np.ndarray:
    """``AᵀWA`` as ``band[r, k] = G[r, r + k]`` from :class:`xr_itslive.design.NormalTerms`.

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


def _noise_variance(
    params: dict[str, float], noise_basis: np.ndarray, days: np.ndarray
) -> np.ndarray:
    return params["noise_floor"] ** 2 + (params["error_scale"] * noise_basis) ** 2


def _joint_band(problem: _Problem, weights: np.ndarray, params: dict[str, float]):
    """Lower band (LAPACK storage) of ``Q + HᵀWH`` over the interleaved unknowns, and log|Q|."""
    n, bw, q = problem.n_cells, problem.bandwidth, problem.observation.stride
    gram = _gram_band(problem.terms, weights, n, bw)
    prior, logdet = _matern_precision(n, problem.step, params["signal_std"], params["length_scale"])
    lower = np.zeros((q * (bw + 1), q * n))
    lower[0 : q * (bw + 1) : q, ::q] = gram.T
    for k in range(3):
        lower[q * k, ::q] += prior[k]
    if q == 1:
        return lower, logdet
    rows = problem.rows
    j0, j1, span = rows.first_cell, rows.last_cell, rows.span
    ws = weights * problem.observation.image_scale
    ws2 = ws * problem.observation.image_scale
    image_precision = params["image_error_std"] ** -2
    lower[0, 1::2] = (
        image_precision + np.bincount(j0, ws2, minlength=n) + np.bincount(j1, ws2, minlength=n)
    )
    flat = lower.reshape(-1)
    cols = q * n
    multi = span >= 1
    flat += np.bincount(
        (2 * span[multi]) * cols + 2 * j0[multi] + 1, -ws2[multi], minlength=flat.size
    )
    wide = span >= 2
    size = n * (bw + 1)

    def band_of(direct_index, direct_value, step_index, step_value):
        direct = np.bincount(direct_index, direct_value, minlength=size)
        steps = np.bincount(step_index, step_value, minlength=size)
        return direct.reshape(n, bw + 1) + np.cumsum(steps.reshape(n, bw + 1), axis=1)

    e0, e1, c = rows.first_frac, rows.last_frac, rows.inner
    width = bw + 1
    # Σ_i (-w s A_i[j0 + d]) at [j0, d]: v[j0 + d] against δ[j0]
    forward = band_of(
        np.concatenate([j0[multi] * width, j0[multi] * width + span[multi]]),
        np.concatenate([-ws[multi] * e0[multi], -ws[multi] * e1[multi]]),
        np.concatenate([j0[wide] * width + 1, j0[wide] * width + span[wide]]),
        np.concatenate([-ws[wide] * c[wide], ws[wide] * c[wide]]),
    )
    # Σ_i (w s A_i[j1 - d]) at [j1, d]: v[j1 - d] against δ[j1]
    backward = band_of(
        np.concatenate([j1[multi] * width, j1[multi] * width + span[multi]]),
        np.concatenate([ws[multi] * e1[multi], ws[multi] * e0[multi]]),
        np.concatenate([j1[wide] * width + 1, j1[wide] * width + span[wide]]),
        np.concatenate([ws[wide] * c[wide], -ws[wide] * c[wide]]),
    )
    lower[1, 0::2] += forward[:, 0]
    lower[1 : 2 * bw : 2, 1::2] += forward[:, 1:].T
    cells = np.arange(n)[:, None]
    d = np.arange(width)[None, :]
    valid = cells >= d
    np.add.at(
        lower,
        (np.broadcast_to(2 * d + 1, valid.shape)[valid], 2 * (cells - d)[valid]),
        backward[valid],
    )
    return lower, logdet + n * np.log(image_precision)


def _posterior(problem: _Problem, params: dict[str, float], scale_weights: np.ndarray):
    """Factor the posterior precision and return it with the log marginal likelihood.

    ``scale_weights`` are the Student-t mixture weights (ones for Gaussian noise).
    """
    weights = scale_weights / _noise_variance(params, problem.noise_basis, problem.durations)
    lower, prior_logdet = _joint_band(problem, weights, params)
    try:
        factor = sla.cholesky_banded(lower, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    y = problem.values
    h = problem.harmonics
    k = h.shape[1]
    prior_coef = np.full(k, params["seasonal_std"] ** -2)
    prior_coef[0] = problem.mean_prior_std**-2
    weighted = np.column_stack([weights * y, weights[:, None] * h])
    projected = problem.observation.rmatvec(weighted)  # [Hᵀ W y, Hᵀ W B]
    solved = sla.cho_solve_banded((factor, True), projected, check_finite=False)
    joint_part, cross = solved[:, 0], solved[:, 1:]
    p22 = np.diag(prior_coef) + h.T @ weighted[:, 1:]
    schur = p22 - projected[:, 1:].T @ cross
    rhs2 = h.T @ weighted[:, 0] - projected[:, 1:].T @ joint_part
    try:
        schur_factor = sla.cho_factor(schur)
    except np.linalg.LinAlgError:
        return None
    coefficients = sla.cho_solve(schur_factor, rhs2)
    joint = joint_part - cross @ coefficients
    quad = projected[:, 0] @ joint + (h.T @ weighted[:, 0]) @ coefficients
    logdet_post = 2 * np.sum(np.log(factor[0])) + 2 * np.sum(np.log(np.diag(schur_factor[0])))
    logdet_prior = prior_logdet + np.sum(np.log(prior_coef))
    log_likelihood = 0.5 * (
        -np.sum(weights * y**2)
        + quad
        + logdet_prior
        - logdet_post
        + np.sum(np.log(weights))
        - y.size * np.log(2 * np.pi)
    )
    return _Posterior(
        factor, cross, schur, joint, coefficients, float(log_likelihood),
        problem.observation.stride,
    )  # fmt: skip


def _to_params(theta: np.ndarray, free: Sequence[str], fixed: dict[str, float]):
    params = dict(fixed)
    params.update({name: float(np.exp(value)) for name, value in zip(free, theta, strict=True)})
    return params


@dataclass(repr=False)
class GaussianProcessFit:
    """A GP fitted to interval-averaged velocities; see :func:`gp_fit`.

    Attributes
    ----------
    params
        Fitted hyperparameters: ``signal_std`` and ``seasonal_std`` (velocity units),
        ``length_scale`` (days), ``noise_floor`` (velocity units), ``error_scale``
        (metres of displacement when no errors were given, otherwise a factor on them),
        ``mean`` (velocity units) and ``dof`` (Student-t degrees of freedom, ``inf`` when
        not robust).
    log_marginal_likelihood
        At the fitted hyperparameters (given the final robust weights).
    outlier_weights
        Per training pair, the Student-t mixture weight (1 for a typical pair, near 0 for
        an outlier); ones when ``robust=False``.
    """

    params: dict[str, float]
    log_marginal_likelihood: float
    outlier_weights: np.ndarray
    n_pairs: int
    step: float
    start: Any
    end: Any
    uses_errors: bool
    _origin: np.datetime64 | None = field(repr=False)
    _start_day: float = field(repr=False)
    _problem: _Problem = field(repr=False)
    _posterior: _Posterior = field(repr=False)
    _harmonics: int = field(repr=False)
    _center: float = field(repr=False)

    def __repr__(self) -> str:
        p = self.params
        units = "× error" if self.uses_errors else "m displacement"
        start, end = (
            (np.datetime_as_string(d, "D") for d in (self.start, self.end))
            if self._origin is not None
            else (f"{self.start:g}", f"{self.end:g}")
        )
        dof = "gaussian" if not np.isfinite(p["dof"]) else f"student-t dof={p['dof']:.3g}"
        return (
            f"<GaussianProcessFit: {self.n_pairs} pairs, {start}..{end}, step={self.step:g} d>\n"
            f"  mean          {p['mean']:.4g}\n"
            f"  signal_std    {p['signal_std']:.4g}  (Matérn-3/2)\n"
            f"  length_scale  {p['length_scale']:.4g} d\n"
            f"  seasonal_std  {p['seasonal_std']:.4g}  ({self._harmonics} harmonic(s))\n"
            f"  noise_floor   {p['noise_floor']:.4g}\n"
            f"  error_scale   {p['error_scale']:.4g}  ({units})\n"
            f"  image_error_std {p['image_error_std']:.4g} m  (per-date displacement error)\n"
            f"  noise         {dof}\n"
            f"  log marginal likelihood {self.log_marginal_likelihood:.6g}"
        )

    # -- helpers
    def _cell_units(self, times: Any, name: str) -> np.ndarray:
        days = np.atleast_1d(_to_days(times, self._origin, name)) - self._start_day
        limit = self._problem.n_cells * self.step
        outside = (days < -1e-9) | (days > limit + 1e-9) | ~np.isfinite(days)
        if outside.any():
            bad = np.atleast_1d(np.asarray(times))[outside][0]
            raise InvalidParameterError(
                f"{name} has {int(outside.sum())} value(s) outside the fitted grid "
                f"{self.start}..{self.end} (first: {bad}); refit with gp_fit(..., start=, end=) "
                "covering them"
            )
        return np.clip(days, 0.0, limit) / self.step

    def _band(self, span: int) -> np.ndarray:
        post = self._posterior
        q = post.stride
        width = max(q * span + q - 1, post.factor.shape[0] - 1, 2)
        if post.band is None or post.band.shape[1] - 1 < width:
            with _single_threaded_blas():
                post.band = banded_selected_inverse(post.factor, width)
        return post.band

    def _observation(self, rows: _Rows, durations: np.ndarray | None) -> _Observation:
        q = self._posterior.stride
        if durations is None or q == 1:
            scale = np.zeros(rows.first_cell.size)
        else:
            scale = np.where(rows.span > 0, DAYS_PER_YEAR / durations, 0.0)
        return _Observation(rows, scale, q)

    def _moments(
        self, observation: _Observation, harmonic_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        post = self._posterior
        mean = observation.matvec(post.joint) + harmonic_rows @ post.coefficients
        span = observation.rows.span
        latent = observation.quadratic(self._band(int(span.max()) if span.size else 1))
        offset = observation.matvec(post.cross) - harmonic_rows
        low_rank = np.einsum("ij,ij->i", offset, sla.solve(post.schur, offset.T, assume_a="pos").T)
        variance = np.maximum(latent + low_rank, 0.0)
        return mean + self._center, variance

    def _noise_variance(self, img1_days, img2_days, v_error) -> np.ndarray:
        if self.uses_errors:
            if v_error is None:
                raise InvalidParameterError(
                    "this fit used per-pair errors, so the noise of new pairs needs them: pass "
                    "v_error=... (or noise=False for the interval average alone)"
                )
            basis = np.asarray(v_error, dtype=np.float64)
        else:
            basis = DAYS_PER_YEAR / (img2_days - img1_days)
        return _noise_variance(self.params, basis, img2_days - img1_days)

    # -- public
    def predict(self, times: Any) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the velocity at ``times``.

        Parameters
        ----------
        times
            Dates (``datetime64``) or days, as the fit was given, inside the fitted grid.

        Returns
        -------
        mean, std : numpy.ndarray
            Of the latent velocity (no observation noise), linear between cell centres.
        """
        u = self._cell_units(times, "times")
        rows = _Rows.points(u, self._problem.n_cells)
        days = u * self.step + self._start_day
        observation = self._observation(rows, None)
        mean, variance = self._moments(observation, _harmonic_columns(days, days, self._harmonics))
        return mean, np.sqrt(variance)

    def predict_pairs(
        self,
        img1: Any,
        img2: Any,
        v_error: Any = None,
        *,
        noise: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the mean velocity over each ``[img1, img2]``.

        With ``noise=True`` the standard deviation is that of a new *observed* pair (the
        interval average plus its noise, Student-t variance ``ν/(ν-2) σ²`` when robust);
        use :meth:`pair_interval` for a band with the right tails.
        """
        u1 = self._cell_units(img1, "img1")
        u2 = self._cell_units(img2, "img2")
        _check_intervals(u1, u2)
        rows = _Rows.intervals(u1, u2, self._problem.n_cells)
        d1, d2 = u1 * self.step + self._start_day, u2 * self.step + self._start_day
        observation = self._observation(rows, d2 - d1)
        mean, variance = self._moments(observation, _harmonic_columns(d1, d2, self._harmonics))
        if noise:
            dof = self.params["dof"]
            factor = dof / (dof - 2) if np.isfinite(dof) and dof > 2 else 1.0
            variance = variance + factor * self._noise_variance(d1, d2, v_error)
        return mean, np.sqrt(variance)

    def pair_interval(
        self, img1: Any, img2: Any, v_error: Any = None, *, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` predictive band ``(lower, upper)`` for new observed pairs.

        The predictive of a pair is its interval average (Gaussian) plus its noise
        (Gaussian, or Student-t when robust); the band is that sum's exact quantile.
        """
        if not 0 < level < 1:
            raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
        mean, latent_std = self.predict_pairs(img1, img2, noise=False)
        u1 = self._cell_units(img1, "img1") * self.step + self._start_day
        u2 = self._cell_units(img2, "img2") * self.step + self._start_day
        noise_var = self._noise_variance(u1, u2, v_error)
        half = _mixture_quantile(latent_std**2, noise_var, self.params["dof"], 0.5 + level / 2)
        return mean - half, mean + half


def _mixture_quantile(latent_var, noise_var, dof: float, prob: float, nodes: int = 64):
    """Quantile of ``N(0, latent_var) + t_dof(0, noise_var)`` (zero-mean, symmetric)."""
    latent_var = np.asarray(latent_var, dtype=np.float64)
    noise_var = np.asarray(noise_var, dtype=np.float64)
    z = ss.ndtri(prob)
    if not np.isfinite(dof):
        return z * np.sqrt(latent_var + noise_var)
    # Student-t = N(0, σ²/λ), λ ~ Gamma(ν/2, rate ν/2): average the normal CDF over λ at
    # equal-probability nodes, and bisect on the quantile.
    lam = ss.gammaincinv(dof / 2, (np.arange(nodes) + 0.5) / nodes) / (dof / 2)
    scales = np.sqrt(latent_var[:, None] + noise_var[:, None] / lam[None, :])
    low = np.zeros_like(latent_var)
    high = z * scales.max(axis=1) * 2 + 1e-12
    for _ in range(60):
        mid = 0.5 * (low + high)
        cdf = ss.ndtr(mid[:, None] / scales).mean(axis=1)
        below = cdf < prob
        low = np.where(below, mid, low)
        high = np.where(below, high, mid)
    return 0.5 * (low + high)


def _check_intervals(d1: np.ndarray, d2: np.ndarray) -> None:
    bad = ~(d2 > d1)
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        raise InvalidParameterError(
            f"{int(bad.sum())} pair(s) have img2 <= img1 (first at index {index}); every "
            "pair needs its second acquisition date after its first: swap or drop them"
        )


def gp_fit(
    t1: Any,
    t2: Any,
    v: Any,
    v_error: Any = None,
    *,
    step: float = 4.0,
    harmonics: int = 1,
    robust: bool = True,
    dof: float = 4.0,
    image_errors: bool = True,
    em_rounds: int = 3,
    start: Any = None,
    end: Any = None,
    initial: dict[str, float] | None = None,
    fixed: dict[str, float] | None = None,
    max_iterations: int = 60,
) -> GaussianProcessFit:
    """Fit a GP to velocities observed as averages over ``[t1, t2]``.

    Parameters
    ----------
    t1, t2
        First and second acquisition dates of each pair: ``datetime64`` or days (floats).
    v
        Mean velocity of each pair. NaN pairs are dropped.
    v_error
        Per-pair error (same units as ``v``); scaled by a fitted ``error_scale``. Without
        it the noise grows as ``1 / dt`` (a displacement error).
    step
        Cell size of the latent grid in days. Smaller is more exact and slower: the cost is
        ``O(cells · bandwidth²)`` with the bandwidth the longest pair in cells.
    harmonics
        Number of seasonal harmonics (annual, semi-annual, ...); 0 for none.
    robust
        Student-t noise with ``dof`` degrees of freedom (fitted by ``em_rounds`` EM rounds)
        instead of Gaussian noise: outliers are down-weighted.
    image_errors
        Model a displacement error per acquisition cell (``image_error_std``), shared by
        every pair with an image in that cell. Real series need it: pairs sharing an image
        share its georeferencing error, which otherwise passes for fast velocity changes.
    start, end
        Extent of the latent grid (dates or days); by default the pairs' extent plus one
        cell. :meth:`GaussianProcessFit.predict` works inside it.
    initial, fixed
        Starting values, or fixed values, for hyperparameters among ``signal_std``,
        ``length_scale``, ``seasonal_std``, ``noise_floor``, ``error_scale``.
    max_iterations
        Of L-BFGS-B on the log marginal likelihood, per EM round.

    Returns
    -------
    GaussianProcessFit
        With ``.predict(times) -> (mean, std)``, ``.predict_pairs`` and ``.pair_interval``.

    Examples
    --------
    >>> import numpy as np, xr_itslive
    >>> rng = np.random.default_rng(0)
    >>> t1 = np.sort(rng.uniform(0, 1000, 300)); t2 = t1 + rng.uniform(5, 100, 300)
    >>> v = 100 + 0.01 * (t1 + t2) + rng.normal(0, 5, 300)
    >>> fit = xr_itslive.gp_fit(t1, t2, v, robust=False)
    >>> mean, std = fit.predict(np.array([200.0, 500.0]))
    """
    origin, d1, d2, values, errors = _validate_pairs(t1, t2, v, v_error)
    _check_step(step, harmonics, dof, em_rounds)
    first = d1.min() - step if start is None else float(_to_days(start, origin, "start"))
    last = d2.max() + step if end is None else float(_to_days(end, origin, "end"))
    if last <= first or d1.min() < first - 1e-9 or d2.max() > last + 1e-9:
        raise InvalidParameterError(
            f"start..end ({_from_days(first, origin)}..{_from_days(last, origin)}) must "
            f"cover every pair ({_from_days(d1.min(), origin)}..{_from_days(d2.max(), origin)})"
            "; widen them or leave them as None"
        )
    n_cells = max(int(np.ceil((last - first) / step - 1e-9)), 3)
    u1, u2 = (d1 - first) / step, (d2 - first) / step
    rows = _Rows.intervals(u1, u2, n_cells)
    terms, bandwidth = _build_terms(rows, step)
    stride = 2 if image_errors else 1
    image_scale = np.where(rows.span > 0, DAYS_PER_YEAR / (d2 - d1), 0.0)
    observation = _Observation(rows, image_scale if image_errors else np.zeros_like(u1), stride)
    center = float(np.median(values))
    spread = float(1.4826 * np.median(np.abs(values - center))) or float(np.std(values)) or 1.0
    noise_basis = errors if errors is not None else DAYS_PER_YEAR / (d2 - d1)
    problem = _Problem(
        observation=observation,
        harmonics=_harmonic_columns(d1, d2, harmonics),
        values=values - center,
        noise_basis=noise_basis,
        durations=d2 - d1,
        terms=terms,
        n_cells=n_cells,
        bandwidth=bandwidth,
        step=float(step),
        mean_prior_std=10.0 * spread + 10.0 * abs(center),
    )
    fixed = dict(fixed or {})
    _check_names(fixed, "fixed")
    if harmonics == 0:
        fixed.setdefault("seasonal_std", 1.0)  # unused: no harmonic columns
    if not image_errors:
        fixed.setdefault("image_error_std", 1.0)  # unused: no per-date unknowns
    start_values = {
        "signal_std": spread,
        "length_scale": max(30.0 * step, 60.0),
        "seasonal_std": 0.3 * spread,
        "noise_floor": 0.3 * spread,
        "error_scale": 0.3 * spread / float(np.median(noise_basis)),
        "image_error_std": 0.1 * spread * float(np.median(d2 - d1)) / DAYS_PER_YEAR,
    }
    start_values.update(_check_names(dict(initial or {}), "initial"))
    free = [name for name in PARAMETER_NAMES if name not in fixed]
    lower_bounds = {"length_scale": np.log(2.0 * step)}
    upper_bounds = {"length_scale": np.log(10.0 * (last - first))}
    bounds = [
        (lower_bounds.get(name, np.log(spread) - 12), upper_bounds.get(name, np.log(spread) + 8))
        for name in free
    ]
    bounds = [
        (lo, np.log(1e6 * start_values["error_scale"])) if name == "error_scale" else (lo, hi)
        for (lo, hi), name in zip(bounds, free, strict=True)
    ]
    theta = np.log([start_values[name] for name in free])
    scale_weights = np.ones(values.size)
    rounds = em_rounds if robust else 1

    def objective(theta_now: np.ndarray) -> float:
        post = _posterior(problem, _to_params(theta_now, free, fixed), scale_weights)
        # per pair, so that L-BFGS-B's first step (of unit gradient length) stays moderate
        return 1e10 if post is None else -post.log_likelihood / values.size

    import scipy.optimize as so  # here, not at import: it costs ~0.1 s to load

    posterior = None
    with _single_threaded_blas():
        for round_index in range(rounds):
            if free:
                # later EM rounds start next to the optimum: a few iterations refine it
                iterations = max_iterations if round_index == 0 else max(max_iterations // 4, 5)
                result = so.minimize(
                    objective,
                    theta,
                    method="L-BFGS-B",
                    bounds=bounds,
                    options={"maxiter": iterations, "ftol": 1e-7},
                )
                theta = result.x
            params = _to_params(theta, free, fixed)
            posterior = _posterior(problem, params, scale_weights)
            if posterior is None:
                raise InvalidParameterError(
                    "the posterior precision is not positive definite at the fitted "
                    f"hyperparameters {params}; check the data or pass fixed=..."
                )
            if robust:
                fit = _assemble_fit(
                    problem, posterior, params, scale_weights, dof, origin, first, last, step,
                    harmonics, center, errors is not None,
                )  # fmt: skip
                residual = (
                    values
                    - center
                    - (
                        observation.matvec(posterior.joint)
                        + problem.harmonics @ posterior.coefficients
                    )
                )
                _, latent_var = fit._moments(observation, problem.harmonics)
                noise_var = _noise_variance(params, noise_basis, d2 - d1)
                scale_weights = (dof + 1.0) / (dof + (residual**2 + latent_var) / noise_var)
        if robust:
            posterior = _posterior(problem, params, scale_weights)
    return _assemble_fit(
        problem, posterior, params, scale_weights, dof if robust else np.inf, origin, first,
        last, step, harmonics, center, errors is not None,
    )  # fmt: skip


def _single_threaded_blas():
    """Limit BLAS to one thread: banded solves this size gain nothing from threads, and on a
    busy machine multithreaded BLAS spins (measured here: 12 ms per evaluation became
    25-1500 ms with two threads while other processes ran)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _assemble_fit(
    problem, posterior, params, scale_weights, dof, origin, first, last, step, harmonics,
    center, uses_errors,
) -> GaussianProcessFit:  # fmt: skip
    full = dict(params)
    full["mean"] = center + float(posterior.coefficients[0])
    full["dof"] = float(dof)
    return GaussianProcessFit(
        params=full,
        log_marginal_likelihood=posterior.log_likelihood,
        outlier_weights=scale_weights,
        n_pairs=problem.values.size,
        step=float(step),
        start=_from_days(first, origin),
        end=_from_days(first + problem.n_cells * step, origin),
        uses_errors=uses_errors,
        _origin=origin,
        _start_day=first,
        _problem=problem,
        _posterior=posterior,
        _harmonics=harmonics,
        _center=center,
    )


def _check_names(values: dict[str, float], name: str) -> dict[str, float]:
    unknown = sorted(set(values) - set(PARAMETER_NAMES))
    if unknown:
        raise InvalidParameterError(
            f"{name} has unknown hyperparameter(s) {unknown}; valid names: {list(PARAMETER_NAMES)}"
        )
    bad = {k: v for k, v in values.items() if not (np.isfinite(v) and v > 0)}
    if bad:
        raise InvalidParameterError(f"{name} values must be positive and finite, got {bad}")
    return values


def _check_step(step: float, harmonics: int, dof: float, em_rounds: int) -> None:
    if not (np.isfinite(step) and step > 0):
        raise InvalidParameterError(f"step must be a positive number of days, got step={step!r}")
    if int(harmonics) != harmonics or harmonics < 0:
        raise InvalidParameterError(
            f"harmonics must be a whole number >= 0, got harmonics={harmonics!r}"
        )
    if not dof > 2:
        raise InvalidParameterError(
            f"dof must be > 2 (finite noise variance), got dof={dof!r}; e.g. dof=4"
        )
    if int(em_rounds) != em_rounds or em_rounds < 1:
        raise InvalidParameterError(f"em_rounds must be an integer >= 1, got {em_rounds!r}")


def _validate_pairs(t1, t2, v, v_error):
    arrays = {"t1": np.atleast_1d(np.asarray(t1)), "t2": np.atleast_1d(np.asarray(t2))}
    arrays["v"] = np.atleast_1d(np.asarray(v, dtype=np.float64))
    if v_error is not None:
        arrays["v_error"] = np.atleast_1d(np.asarray(v_error, dtype=np.float64))
    lengths = {name: a.shape for name, a in arrays.items()}
    if len(set(lengths.values())) != 1 or any(len(s) != 1 for s in lengths.values()):
        raise InvalidParameterError(
            f"t1, t2, v (and v_error) must be 1-D arrays of one length, got shapes {lengths}"
        )
    is_date = [np.issubdtype(arrays[k].dtype, np.datetime64) for k in ("t1", "t2")]
    if is_date[0] != is_date[1]:
        raise InvalidParameterError(
            "t1 and t2 must both be dates (datetime64) or both numbers of days, got "
            f"{arrays['t1'].dtype} and {arrays['t2'].dtype}"
        )
    origin = None
    if is_date[0]:
        origin = np.datetime64("1970-01-01", "ns")
        missing = np.isnat(arrays["t1"]) | np.isnat(arrays["t2"])
    else:
        missing = ~(
            np.isfinite(arrays["t1"].astype(float)) & np.isfinite(arrays["t2"].astype(float))
        )
    d1 = _to_days(arrays["t1"], origin, "t1")
    d2 = _to_days(arrays["t2"], origin, "t2")
    d1 = np.where(missing, 0.0, d1)
    d2 = np.where(missing, 1.0, d2)
    _check_intervals(d1, d2)
    keep = ~missing & np.isfinite(arrays["v"])
    errors = None
    if v_error is not None:
        e = arrays["v_error"]
        keep &= np.isfinite(e)
        if np.any(e[keep] <= 0):
            raise InvalidParameterError(
                f"v_error must be > 0, found {int(np.sum(e[keep] <= 0))} value(s) <= 0; drop "
                "those pairs or pass v_error=None"
            )
        errors = e[keep]
    if keep.sum() < MIN_PAIRS:
        raise EmptySelectionError(
            f"a GP fit needs at least {MIN_PAIRS} pairs with finite values, got "
            f"{int(keep.sum())} (of {keep.size}); select a longer period or another pixel"
        )
    if origin is not None:
        # days since the first acquisition keep the floats small
        shift = np.floor(d1[keep].min())
        origin = origin + np.timedelta64(int(shift * _NS_PER_DAY), "ns")
        d1, d2 = d1 - shift, d2 - shift
    return origin, d1[keep], d2[keep], arrays["v"][keep], errors


# --------------------------------------------------------------------------- xarray layer
def _series_arrays(ds: Any, variable: Hashable, error: Hashable | None | str):
    """``(img1, img2, values, errors)`` of a point series, with clear errors for anything else
    (shared by the GP and :func:`xr_itslive.plot_series`)."""
    if not isinstance(ds, xr.Dataset):
        raise NotAnITSLiveCubeError(
            f"expected an xarray.Dataset point series, got {type(ds).__name__}; select one "
            "pixel of a cube, e.g. cube.sel(x=..., y=..., method='nearest')"
        )
    if variable not in ds.data_vars:
        raise MissingVariableError(
            f"variable {variable!r} not found; the dataset has {sorted(map(str, ds.data_vars))}. "
            "Pass variable=... naming the velocity"
        )
    da = ds[variable]
    extra = [d for d in da.dims if d != PAIR_DIM]
    if PAIR_DIM not in da.dims or any(da.sizes[d] != 1 for d in extra):
        raise NotAnITSLiveCubeError(
            f"{variable!r} has dims {dict(da.sizes)}; one point series along "
            f"{PAIR_DIM!r} is needed: select a pixel first, e.g. ds.isel(x=0, y=0)"
        )
    for coord in ("acquisition_date_img1", "acquisition_date_img2"):
        if coord not in ds.variables:
            raise NotAnITSLiveCubeError(
                f"coordinate {coord!r} not found; an ITS_LIVE series has acquisition_date_img1 "
                "and acquisition_date_img2 along mid_date"
            )
    values = (
        np.asarray(da.squeeze(extra, drop=True).values, dtype=np.float64)
        if extra
        else (np.asarray(da.values, dtype=np.float64))
    )
    if error == "auto":
        error = f"{variable}_error" if f"{variable}_error" in ds.variables else None
    errors = None
    if error is not None:
        if error not in ds.variables:
            raise MissingVariableError(
                f"error variable {error!r} not found; the dataset has "
                f"{sorted(map(str, ds.data_vars))}. Pass error=None to fit the noise from dt"
            )
        errors = np.asarray(ds[error].squeeze(drop=True).values, dtype=np.float64)
        errors = np.where(errors > 0, errors, np.nan)
    img1 = np.asarray(ds["acquisition_date_img1"].values)
    img2 = np.asarray(ds["acquisition_date_img2"].values)
    return img1, img2, values, errors


def gp_fit_series(
    ds: xr.Dataset, variable: Hashable = "v", *, error: Hashable | None = "auto", **kwargs
) -> GaussianProcessFit:
    """Fit :func:`gp_fit` to one point series (a Dataset along ``mid_date``).

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube (``acquisition_date_img1/2`` along ``mid_date``).
    variable
        The velocity variable.
    error
        The per-pair error variable; ``"auto"`` uses ``f"{variable}_error"`` when present,
        ``None`` fits a ``1 / dt`` noise instead.
    **kwargs
        Passed to :func:`gp_fit`.
    """
    img1, img2, values, errors = _series_arrays(ds, variable, error)
    return gp_fit(img1, img2, values, errors, **kwargs)


def gp_regress(
    ds: xr.Dataset,
    variable: Hashable = "v",
    *,
    times: Any = None,
    freq: str = "6D",
    error: Hashable | None = "auto",
    **kwargs,
) -> xr.Dataset:
    """GP regression of a point series onto a time axis.

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube along ``mid_date``.
    variable, error
        See :func:`gp_fit_series`.
    times
        Dates to predict at; by default every ``freq`` (a pandas frequency such as
        ``"6D"``) across the pairs' extent.
    **kwargs
        Passed to :func:`gp_fit`.

    Returns
    -------
    xarray.Dataset
        ``{variable}`` (posterior mean) and ``{variable}_std`` along ``time``; the fitted
        hyperparameters in the attributes (``gp_*``).

    Examples
    --------
    >>> series = cube.isel(x=1, y=1)  # doctest: +SKIP
    >>> result = xr_itslive.gp_regress(series, "v")  # doctest: +SKIP
    """
    fit = gp_fit_series(ds, variable, error=error, **kwargs)
    if times is None:
        first = np.datetime64(fit.start, "D") + np.timedelta64(1, "D")
        last = np.datetime64(fit.end, "D") - np.timedelta64(1, "D")
        import pandas as pd

        try:
            times = pd.date_range(first, last, freq=freq).to_numpy("datetime64[ns]")
        except ValueError as err:
            raise InvalidParameterError(
                f"freq={freq!r} is not a pandas frequency; pass e.g. freq='6D' or times=..."
            ) from err
    times = np.asarray(times, dtype="datetime64[ns]")
    mean, std = fit.predict(times)
    attrs = {f"gp_{k}": float(v) for k, v in fit.params.items()}
    attrs.update(
        gp_step_days=fit.step,
        gp_harmonics=fit._harmonics,
        gp_n_pairs=fit.n_pairs,
        gp_log_marginal_likelihood=fit.log_marginal_likelihood,
        gp_uses_errors=int(fit.uses_errors),
    )
    units = ds[variable].attrs.get("units")
    var_attrs = {"units": units} if units else {}
    return xr.Dataset(
        {
            str(variable): (TIME_DIM, mean, {**var_attrs, "long_name": "GP posterior mean"}),
            f"{variable}_std": (TIME_DIM, std, {**var_attrs, "long_name": "GP posterior std"}),
        },
        coords={TIME_DIM: times},
        attrs=attrs,
    )
