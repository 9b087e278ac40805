"""Annual and seasonal composites: ITS_LIVE's model fitted to the pairs, batched over pixels.

Arrays only. For one pixel and one component the model is one mean velocity per calendar
year plus one annual sinusoid, ``u(t) = m_k + a sin 2πt + b cos 2πt`` (t in decimal years,
each calendar year exactly one unit long), and pair ``i`` observes its mean over
``[t1_i, t2_i]``::

    v_i ≈ Σ_k f_ik m_k + a S_i + b C_i

with ``f_ik`` the fraction of the pair's interval inside year ``k`` (the rows of
:func:`~xr_itslive.kernels.design.interval_fractions` on one-year cells) and ``S_i``, ``C_i``
the means of ``sin 2πt`` and ``cos 2πt`` over the interval. This is ITS_LIVE's fit in
displacement space (``d_i = v_i Δ_i``, rows ``M_ik = f_ik Δ_i`` and the integrated
sinusoid, rows scaled by ``1 / (σ_i Δ_i)``) with every row divided by ``Δ_i``: the same
least-squares problem, with weights ``1 / σ_i²`` on velocities.

The unknowns of a pixel are the years it has pairs in and ``a``, ``b`` (at most ~45); its
normal matrix is small and dense. Both engines follow the same steps for every pixel and
component, so that they agree to round-off:

1. **valid** pairs: a finite value and a finite weight > 0 (``w = 1/σ²``, or 1).
2. **too few**: a year overlapped by fewer than ``min_year_obs`` of the pairs left is
   dropped with every pair that overlaps it (a pair overlapping an unknown that cannot be
   estimated cannot be modelled), repeated until every year left has enough; the count a
   year had when it was dropped is kept for ``count``.
3. **fit**: weighted least squares by Cholesky of the normal matrix, unknowns ordered years
   then ``a``, ``b``. A pivot below ``rel_tol`` × its diagonal on a year means the years are
   not separable: the pixel is NaN. On ``a`` or ``b`` (e.g. only whole-year pairs, which
   average the sinusoid out) that unknown alone is dropped and the years are still solved.
   A pixel needs at least ``min_obs`` pairs and more pairs than unknowns.
4. **robust** (optional): iteratively reweighted least squares as in the inversion
   (:func:`xr_itslive.kernels.banded.reweight`): residuals standardized by ``sqrt(w)`` and
   scaled by 1.4826 × their median magnitude, Tukey's biweight (rejects beyond ``tuning``
   robust standard deviations) or Huber's weights, ``iterations`` refits.
5. **annual means** ``m_k`` of the years with at least ``min_year_obs`` pairs of non-zero
   weight whose dates inside the year span at least ``min_year_coverage`` of it (from the
   earliest to the latest: :data:`MIN_YEAR_COVERAGE`, half a year; the first and last
   years of a record are often seen for a few weeks only). Their error is ITS_LIVE's
   ``1 / sqrt(Σ_i M_ik w_i)`` (times the residual scale ``σ̂`` when the pairs carry no
   errors, ``scale_errors``); their standard deviation the least-squares one,
   ``s sqrt((N⁻¹)_kk)`` (``_inverse_diagonal``), with ``s = σ̂`` when the pairs carry
   no errors and ``s = max(σ̂, 1)`` when they do: the pairs' errors are a floor, widened
   where the residuals scatter more than they say, never narrowed below them.
   ITS_LIVE's error is not the spread of the estimate: it gives pair ``i`` the weight
   ``f_ik Δ_i / σ_i²`` in year ``k`` where the least squares has ``f_ik² / σ_i²``, and
   leaves out the correlation with the neighbouring years and the sinusoid. Where the
   pairs' errors are their noise (the synthetic cubes of the tests) it is about twice the
   std for years of short pairs; on real cubes, whose residuals scatter more than the
   errors say, 0.6-0.9 of it; and a third of it for a year seen through small parts of long
   pairs (the bundled demo cube's 1986: ITS_LIVE's 5-7 m/yr against 17-21 m/yr). The std
   is the one the speed's significance, its bias correction and the line fit use.
6. **climatology**: the same fit redone (no new reweighting, the final weights kept) with
   the pairs whose mid-date falls inside the window, after step 2 again; its ``a``, ``b`` and
   their covariance ``σ̂² (N⁻¹)_ab`` (``σ̂²`` the weighted residual variance).

:func:`finish_composite` turns these into the published variables (line fit of the annual
means weighted by ``1 / std²``, amplitude, phase and errors) and :func:`speed_composite` into
the speed's, written once for every namespace.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from .banded import reweight
from .compiled import select_kth
from .design import interval_fractions
from .namespace import get_namespace
from .pipeline import DEFAULT_TUNING, ROBUST_KINDS
from .speed import speed_from_components
from .units import DAYS_PER_YEAR

#: Scale from the median absolute residual to a standard deviation (Gaussian noise).
MAD_TO_STD = 1.4826
_JIT = {"nogil": True, "cache": True}
#: The smallest part of a year its pairs must span for its mean to be reported. A year seen
#: for two months (the first year of a record that starts in late October) is estimated
#: through the small parts of the pairs that reach into it: on the bundled demo cube 16-21
#: pairs overlap 1986, nearly all of them reaching on into 1987, and its vx came out -55 to
#: -92 m/yr on ice whose v0 is 0.6-1.5 m/yr, about three of its least-squares stds away on
#: every pixel (an error shared by the pairs of those few images, which independent pair
#: errors cannot show). Under half a year, the mean is mostly the climatological sinusoid's
#: extrapolation of one season.
MIN_YEAR_COVERAGE = 0.5
#: Per-pixel outputs of the engines (pixels first), before :func:`finish_composite`.
RAW_NAMES = (
    "mean", "error", "std", "count", "sin", "cos", "cov_ss", "cov_sc", "cov_cc",
    "count0", "window", "rejected", "n_obs",
)  # fmt: skip


@dataclass(frozen=True)
class CompositeOptions:
    """What every pixel of a composite shares (see the module docstring for the steps).

    Parameters
    ----------
    min_obs
        Fewest pairs a fit (the whole series, or the climatology window) needs.
    min_year_obs
        Fewest pairs overlapping a year for it to be estimated.
    robust
        None, ``"tukey"`` or ``"huber"``.
    iterations
        Reweighting iterations of the robust fit.
    tuning
        Robust tuning constant (default 4.685 Tukey, 1.345 Huber).
    scale_errors
        Multiply the annual means' errors by the residual scale ``σ̂`` (pairs without errors).
    rel_tol
        Relative pivot tolerance of the Cholesky factorization.
    min_year_coverage
        Smallest part of a year (0-1) that the pairs seen in it must span for its mean to be
        reported (step 5).
    """

    min_obs: int = 30
    min_year_obs: int = 3
    robust: str | None = "tukey"
    iterations: int = 2
    tuning: float | None = None
    scale_errors: bool = False
    rel_tol: float = 1e-10
    min_year_coverage: float = MIN_YEAR_COVERAGE

    @property
    def robust_tuning(self) -> float:
        """The tuning constant in use."""
        return self.tuning if self.tuning is not None else DEFAULT_TUNING[self.robust]


@dataclass(frozen=True)
class CompositeDesign:
    """The rows every pixel shares: where each pair falls in the years, and the window.

    Parameters
    ----------
    first_year, last_year
        Index of the first and last year each pair overlaps (``int64``).
    first_frac, last_frac, inner
        Fractions of each pair's interval in its first, last and every inner year
        (:func:`~xr_itslive.kernels.design.interval_fractions`).
    span
        Each pair's length ``Δ`` in years.
    start, end
        Each pair's ends in years after the start of the first year (clipped to the years).
    sin_mean, cos_mean
        Means of ``sin 2πt`` and ``cos 2πt`` over each pair's interval.
    in_window
        Whether each pair's mid-date lies in the climatology window.
    year_offset
        Per year, its middle minus the centre date, in years: the abscissa of the line fit.
    window_year
        Per year, whether it is a climatology year.
    """

    first_year: np.ndarray
    last_year: np.ndarray
    first_frac: np.ndarray
    last_frac: np.ndarray
    inner: np.ndarray
    span: np.ndarray
    sin_mean: np.ndarray
    cos_mean: np.ndarray
    in_window: np.ndarray
    year_offset: np.ndarray
    window_year: np.ndarray
    start: np.ndarray
    end: np.ndarray

    @property
    def n_years(self) -> int:
        """Years of the output."""
        return int(self.year_offset.size)

    @property
    def n_pairs(self) -> int:
        """Pairs (rows)."""
        return int(self.first_year.size)

    @property
    def max_span(self) -> int:
        """Most years a pair overlaps, minus one (the band of the years' block)."""
        return int((self.last_year - self.first_year).max()) if self.n_pairs else 0

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """The per-pair arrays, in the order the compiled kernel takes them."""
        return (
            self.first_year, self.last_year, self.first_frac, self.last_frac, self.inner,
            self.span, self.sin_mean, self.cos_mean, self.in_window,
        )  # fmt: skip

    def compiled_rows(self) -> tuple[np.ndarray, ...]:
        """``(first_year, width, fractions, span, sin_mean, cos_mean, in_window)`` for the
        numba engine: ``width`` years per pair and ``fractions[i, j] = f_i,first+j``
        ``(n_pairs, max_span + 1)``."""
        width = self.last_year - self.first_year + 1
        j = np.arange(self.max_span + 1)[None, :]
        last = (width - 1)[:, None]
        fractions = np.where(j < last, self.inner[:, None], 0.0)
        fractions = np.where(j == last, self.last_frac[:, None], fractions)
        fractions = np.where(j == 0, self.first_frac[:, None], fractions)
        return tuple(
            np.ascontiguousarray(a)
            for a in (self.first_year, width, fractions, self.span, self.sin_mean,
                      self.cos_mean, self.in_window)
        )  # fmt: skip

    def fractions(self, xp: Any = np) -> Any:
        """The dense ``(n_pairs, n_years)`` matrix of ``f_ik`` in namespace ``xp``."""
        first = xp.asarray(self.first_year)[:, None]
        last = xp.asarray(self.last_year)[:, None]
        years = xp.arange(self.n_years, dtype=first.dtype)[None, :]
        inner = xp.where((years > first) & (years < last), xp.asarray(self.inner)[:, None], 0.0)
        out = xp.where(years == last, xp.asarray(self.last_frac)[:, None], inner)
        return xp.where(years == first, xp.asarray(self.first_frac)[:, None], out)


def composite_design(
    t1: np.ndarray,
    t2: np.ndarray,
    first_year: int,
    n_years: int,
    window: tuple[int, int],
    center: float,
) -> CompositeDesign:
    """The shared rows of pairs ``[t1, t2]`` (decimal years, ``t2 > t1``) on the years
    ``first_year .. first_year + n_years - 1``.

    Parameters
    ----------
    t1, t2
        Pair ends in decimal years (a calendar year is one unit), inside the years.
    first_year, n_years
        The years of the output.
    window
        First and last climatology year (inclusive); a pair belongs to it when its mid-date
        (``(t1 + t2) / 2``) does.
    center
        The line fit's centre date, decimal years.

    Returns
    -------
    CompositeDesign
    """
    t1 = np.asarray(t1, dtype=np.float64)
    t2 = np.asarray(t2, dtype=np.float64)
    u1 = np.clip(t1 - first_year, 0.0, n_years)
    u2 = np.clip(t2 - first_year, 0.0, n_years)
    first, last, first_frac, last_frac, inner = interval_fractions(u1, u2, n_years)
    span = t2 - t1
    # cos A - cos B = 2 sin((A+B)/2) sin((B-A)/2): the product form keeps short pairs exact
    shrink = np.sinc(span)  # sin(πΔ) / (πΔ)
    sin_mean = np.sin(np.pi * (t1 + t2)) * shrink
    cos_mean = np.cos(np.pi * (t1 + t2)) * shrink
    mid = 0.5 * (t1 + t2)
    in_window = (mid >= window[0]) & (mid < window[1] + 1)
    years = first_year + np.arange(n_years)
    return CompositeDesign(
        first_year=first.astype(np.int64),
        last_year=last.astype(np.int64),
        first_frac=first_frac,
        last_frac=last_frac,
        inner=inner,
        span=span,
        sin_mean=sin_mean,
        cos_mean=cos_mean,
        in_window=in_window,
        year_offset=years + 0.5 - float(center),
        window_year=(years >= window[0]) & (years <= window[1]),
        start=u1,
        end=u2,
    )


# --------------------------------------------------------------------------- numba engine
#
# A pixel at a time: its valid observations are first compacted (in the chunk's memory order,
# one sequential pass), then every step runs over that pixel's pairs only, with the year
# fractions of each pair read from the shared (n_pairs, max_span + 1) table.


@numba.njit(**_JIT)
def _valid(v, wi):
    return (abs(v) < np.inf) and (wi > 0) and (wi < np.inf)  # False for NaN


@numba.njit(**_JIT)
def _pair_weight(weights, use_weights, per_pixel, p, i):
    if not use_weights:
        return 1.0
    return weights[p if per_pixel else 0, i]


@numba.njit(**_JIT)
def _count_valid(values, weights, use_weights, pairs_inner, fill):
    """``fill[p]``: valid observations of pixel ``p`` (a finite value and weight > 0), the
    array read in its memory order."""
    n_pix, n_pairs = values.shape
    per_pixel = use_weights and weights.shape[0] > 1
    if pairs_inner:
        for p in range(n_pix):
            total = 0
            for i in range(n_pairs):
                wi = _pair_weight(weights, use_weights, per_pixel, p, i)
                total += _valid(np.float64(values[p, i]), wi)
            fill[p] = total
        return
    for p in range(n_pix):
        fill[p] = 0
    for i in range(n_pairs):
        if per_pixel:
            for p in range(n_pix):
                fill[p] += _valid(np.float64(values[p, i]), weights[p, i])
            continue
        wi = weights[0, i] if use_weights else 1.0
        if not _valid(0.0, wi):  # a pair without weight: nothing of it is valid
            continue
        for p in range(n_pix):  # one pair across the pixels, contiguous: vectorizes
            fill[p] += abs(np.float64(values[p, i])) < np.inf


@numba.njit(**_JIT)
def _compact(values, weights, use_weights, pairs_inner, offsets, idx, y, w0):
    """Step 1: the valid observations of every pixel as CSR rows (``offsets``, filled by
    the caller from :func:`_count_valid`): pairs ``idx``, values ``y``, weights ``w0``."""
    n_pix, n_pairs = values.shape
    per_pixel = use_weights and weights.shape[0] > 1
    fill = offsets[:-1].copy()
    if pairs_inner:
        for p in range(n_pix):
            m = fill[p]
            for i in range(n_pairs):
                v = np.float64(values[p, i])
                wi = _pair_weight(weights, use_weights, per_pixel, p, i)
                if _valid(v, wi):
                    idx[m] = i
                    y[m] = v
                    w0[m] = wi
                    m += 1
        return
    active = np.flatnonzero(offsets[1:] > offsets[:-1])  # pixels with data (often half)
    for i in range(n_pairs):
        shared = 1.0 if not use_weights else (0.0 if per_pixel else weights[0, i])
        if not per_pixel and not _valid(0.0, shared):
            continue
        for p in active:
            v = np.float64(values[p, i])
            wi = weights[p, i] if per_pixel else shared
            if _valid(v, wi):
                m = fill[p]
                idx[m] = i
                y[m] = v
                w0[m] = wi
                fill[p] = m + 1


@numba.njit(**_JIT)
def _prune(idx, n, used, first, width, n_years, min_year_obs, counts, dropped, sparse):
    """Step 2: drop years with too few pairs and the pairs overlapping them, until none is
    left; ``counts`` ends with each year's pairs among ``used``, ``dropped`` with the count
    of each year when it was dropped (untouched otherwise)."""
    for _ in range(n_years + 1):
        for k in range(n_years):
            counts[k] = 0
        for u in range(n):
            if used[u]:
                i = idx[u]
                for k in range(first[i], first[i] + width[i]):
                    counts[k] += 1
        found = False
        for k in range(n_years):
            sparse[k] = (counts[k] > 0) and (counts[k] < min_year_obs)
            if sparse[k]:
                dropped[k] = counts[k]
                found = True
        if not found:
            return
        for u in range(n):
            if used[u]:
                i = idx[u]
                for k in range(first[i], first[i] + width[i]):
                    if sparse[k]:
                        used[u] = False
                        break


@numba.njit(**_JIT)
def _assemble(idx, n, y, w, geometry, n_years, normal, rhs, counts):
    """Normal matrix (upper triangle), right-hand side and per-year counts of the pairs
    with ``w > 0``."""
    first, width, fracs, _span, sin_mean, cos_mean, _window = geometry
    q = n_years + 2
    sa = n_years
    sb = n_years + 1
    for r in range(q):
        rhs[r] = 0.0
        for c in range(q):
            normal[r, c] = 0.0
    for k in range(n_years):
        counts[k] = 0
    # the sinusoid's block in registers: every pair adds to it
    ss = 0.0
    sc = 0.0
    cc = 0.0
    rs = 0.0
    rc = 0.0
    for u in range(n):
        wu = w[u]
        if not wu > 0:
            continue
        i = idx[u]
        yu = y[u]
        s = sin_mean[i]
        c = cos_mean[i]
        j0 = first[i]
        length = width[i]
        ws = wu * s
        wc = wu * c
        if length == 1:  # most pairs lie inside one year: its fraction is 1
            counts[j0] += 1
            normal[j0, j0] += wu
            normal[j0, sa] += ws
            normal[j0, sb] += wc
            rhs[j0] += wu * yu
        else:
            for a in range(length):
                k = j0 + a
                fa = fracs[i, a]
                wf = wu * fa
                counts[k] += 1
                for b in range(a, length):
                    normal[k, j0 + b] += wf * fracs[i, b]
                normal[k, sa] += fa * ws
                normal[k, sb] += fa * wc
                rhs[k] += wf * yu
        ws = wu * s
        wc = wu * c
        ss += ws * s
        sc += ws * c
        cc += wc * c
        rs += ws * yu
        rc += wc * yu
    normal[sa, sa] = ss
    normal[sa, sb] = sc
    normal[sb, sb] = cc
    rhs[sa] = rs
    rhs[sb] = rc


@numba.njit(**_JIT)
def _factor(normal, q, n_years, present, rel_tol, lower):
    """Step 3's Cholesky ``N = L Lᵀ`` over the present unknowns (upper triangle of ``normal``
    read); absent ones get an identity row. Drops ``a``/``b`` on a small pivot (``present``
    updated); returns True when a year's pivot is small (the pixel is singular)."""
    singular = False
    for j in range(q):
        for r in range(q):
            lower[r, j] = 0.0
        if not present[j]:
            lower[j, j] = 1.0
            continue
        pivot = normal[j, j]
        for k in range(j):
            pivot -= lower[j, k] * lower[j, k]
        if not pivot > rel_tol * normal[j, j]:
            if j < n_years:
                singular = True
            else:
                present[j] = False
            lower[j, j] = 1.0
            continue
        root = math.sqrt(pivot)
        lower[j, j] = root
        for r in range(j + 1, q):
            if not present[r]:
                continue
            value = normal[j, r]
            for k in range(j):
                value -= lower[r, k] * lower[j, k]
            lower[r, j] = value / root
    return singular


@numba.njit(**_JIT)
def _solve(lower, rhs, present, q, x):
    """``L Lᵀ x = rhs``; absent unknowns come out 0."""
    for j in range(q):
        if not present[j]:
            x[j] = 0.0
            continue
        value = rhs[j]
        for k in range(j):
            value -= lower[j, k] * x[k]
        x[j] = value / lower[j, j]
    for j in range(q - 1, -1, -1):
        if not present[j]:
            x[j] = 0.0
            continue
        value = x[j]
        for r in range(j + 1, q):
            value -= lower[r, j] * x[r]
        x[j] = value / lower[j, j]


@numba.njit(**_JIT)
def _inverse_diagonal(lower, present, q, n_years, column, out):
    """``out[k] = (N⁻¹)_kk`` for the years (``N = L Lᵀ`` over the present unknowns).

    ``(N⁻¹)_kk = |L⁻¹ e_k|²``: one forward solve from row ``k`` on (``L⁻¹`` is lower
    triangular), ``q³ / 6`` operations for all years, a few microseconds for 45 unknowns.
    Absent unknowns have an identity row in ``L`` and take no part."""
    for k in range(n_years):
        if not present[k]:
            out[k] = np.nan
            continue
        total = 0.0
        for j in range(k, q):
            if not present[j]:
                column[j] = 0.0
                continue
            value = 1.0 if j == k else 0.0
            for m in range(k, j):
                value -= lower[j, m] * column[m]
            column[j] = value / lower[j, j]
            total += column[j] * column[j]
        out[k] = total


@numba.njit(inline="always", **_JIT)
def _predict(i, x, geometry, n_years):
    first, width, fracs, _span, sin_mean, cos_mean, _window = geometry
    value = x[n_years] * sin_mean[i] + x[n_years + 1] * cos_mean[i]
    j0 = first[i]
    length = width[i]
    if length == 1:
        return value + x[j0]
    for a in range(length):
        value += fracs[i, a] * x[j0 + a]
    return value


@numba.njit(**_JIT)
def _fit(idx, n, y, w, geometry, n_years, rel_tol, normal, rhs, counts, present, lower, x, resid):
    """Assemble, factor and solve; ``resid`` gets every pair's residual (the reweighting reads
    them); returns (singular, unknowns present, weighted RSS)."""
    q = n_years + 2
    _assemble(idx, n, y, w, geometry, n_years, normal, rhs, counts)
    for k in range(n_years):
        present[k] = counts[k] > 0
    present[n_years] = True
    present[n_years + 1] = True
    singular = _factor(normal, q, n_years, present, rel_tol, lower)
    _solve(lower, rhs, present, q, x)
    rss = 0.0
    for u in range(n):
        r = y[u] - _predict(idx[u], x, geometry, n_years)
        resid[u] = r
        rss += w[u] * r * r
    p = 0
    for j in range(q):
        if present[j]:
            p += 1
    return singular, p, rss


@numba.njit(**_JIT)
def _median(a, n):
    """The median of ``a[:n]`` (reordered), the mean of the two middle values for even n."""
    k = n // 2
    upper = select_kth(a, n, k)
    if n % 2:
        return upper
    lower = a[0]
    for i in range(1, k):
        lower = max(lower, a[i])
    return 0.5 * (lower + upper)


@numba.njit(**_JIT)
def _composite_range(
    offsets, idx_all, y_all, w_all, geometry, pair_start, pair_end, n_years, min_obs,
    min_year_obs, min_coverage, kind, iterations, tuning, scale_errors, rel_tol, start, stop,
    mean, error, std, count, sin, cos, cov_ss, cov_sc, cov_cc, count0, window, rejected, n_obs,
):  # fmt: skip
    """Steps 2-6 for pixels ``start .. stop`` of the compacted observations."""
    first, width, fracs, span, _s, _c, in_window = geometry
    q = n_years + 2
    longest = 0
    for p in range(start, stop):
        longest = max(longest, offsets[p + 1] - offsets[p])
    w = np.empty(longest)
    wc = np.empty(longest)
    used = np.empty(longest, dtype=np.bool_)
    used_c = np.empty(longest, dtype=np.bool_)
    outlier = np.empty(longest, dtype=np.bool_)
    z = np.empty(longest)
    magnitude = np.empty(longest)
    counts = np.empty(n_years, dtype=np.int64)
    dropped = np.empty(n_years, dtype=np.int64)
    sparse = np.empty(n_years, dtype=np.bool_)
    present = np.empty(q, dtype=np.bool_)
    normal = np.empty((q, q))
    lower = np.empty((q, q))
    rhs = np.empty(q)
    x = np.empty(q)
    unit = np.empty(q)
    column = np.empty(q)
    support = np.empty(n_years)
    inverse = np.empty(n_years)
    seen_from = np.empty(n_years)
    seen_to = np.empty(n_years)
    nan = np.nan
    for p in range(start, stop):
        o = offsets[p]
        n = offsets[p + 1] - o
        idx = idx_all[o : o + n]
        y = y_all[o : o + n]
        w0 = w_all[o : o + n]
        n_obs[p] = n
        n_window = 0
        for u in range(n):
            used[u] = True
            outlier[u] = False
            if in_window[idx[u]]:
                n_window += 1
        window[p] = n_window
        for k in range(n_years):
            dropped[k] = 0
            mean[p, k] = nan
            error[p, k] = nan
            std[p, k] = nan
            count[p, k] = 0
        sin[p] = nan
        cos[p] = nan
        cov_ss[p] = nan
        cov_sc[p] = nan
        cov_cc[p] = nan
        count0[p] = 0
        rejected[p] = 0
        # step 2
        _prune(idx, n, used, first, width, n_years, min_year_obs, counts, dropped, sparse)
        n_used = 0
        n_present = 0
        for u in range(n):
            if used[u]:
                n_used += 1
        for k in range(n_years):
            if counts[k] > 0:
                n_present += 1
            count[p, k] = counts[k] if counts[k] > 0 else dropped[k]
        if n_used < min_obs or n_used <= n_present + 2:
            continue
        # step 3
        for u in range(n):
            w[u] = w0[u] if used[u] else 0.0
        singular, n_unknowns, rss = _fit(
            idx, n, y, w, geometry, n_years, rel_tol, normal, rhs, counts, present, lower, x, z
        )
        # step 4
        if kind > 0 and not singular:
            for _ in range(iterations):
                m = 0
                for u in range(n):  # z: the last fit's residuals, standardized here
                    if used[u]:
                        z[u] *= math.sqrt(w0[u])
                        magnitude[m] = abs(z[u])
                        m += 1
                scale = MAD_TO_STD * _median(magnitude, m) if m > 0 else 1.0
                if not scale > 0:
                    scale = 1e-12
                inv = 1.0 / (tuning * scale)
                for u in range(n):
                    if not used[u]:
                        continue
                    t = z[u] * inv
                    at = abs(t)
                    if kind == 1:  # Huber
                        factor = 1.0 if at <= 1.0 else 1.0 / at
                    else:  # Tukey biweight
                        factor = (1.0 - t * t) ** 2 if at < 1.0 else 0.0
                    w[u] = w0[u] * factor
                    outlier[u] = at > 1.0
                singular, n_unknowns, rss = _fit(
                    idx, n, y, w, geometry, n_years, rel_tol, normal, rhs, counts, present,
                    lower, x, z,
                )  # fmt: skip
                if singular:
                    break
        if singular:
            continue
        # step 5
        n_eff = 0
        for k in range(n_years):
            support[k] = 0.0
            seen_from[k] = 1.0
            seen_to[k] = 0.0
        for u in range(n):
            if w[u] > 0:
                n_eff += 1
                i = idx[u]
                scaled = span[i] * w[u]
                for a in range(width[i]):
                    k = first[i] + a
                    support[k] += fracs[i, a] * scaled
                    # the part of year k between the pairs' earliest and latest dates in it
                    seen_from[k] = min(seen_from[k], max(pair_start[i] - k, 0.0))
                    seen_to[k] = max(seen_to[k], min(pair_end[i] - k, 1.0))
        dof = n_eff - n_unknowns
        sigma = math.sqrt(rss / dof) if dof >= 1 else nan
        # the std's scale: sigma-hat without errors, else the errors as a floor (NaN: 1)
        spread = sigma if scale_errors else (sigma if sigma > 1.0 else 1.0)
        _inverse_diagonal(lower, present, q, n_years, column, inverse)
        for k in range(n_years):
            if counts[k] > 0:
                count[p, k] = counts[k]
            covered = seen_to[k] - seen_from[k] >= min_coverage
            if present[k] and counts[k] >= min_year_obs and covered:
                mean[p, k] = x[k]
                error[p, k] = (sigma if scale_errors else 1.0) / math.sqrt(support[k])
                std[p, k] = spread * math.sqrt(inverse[k])
        for u in range(n):
            if outlier[u] and used[u] and in_window[idx[u]]:
                rejected[p] += 1
        # step 6
        for u in range(n):
            used_c[u] = (w[u] > 0) and in_window[idx[u]]
        _prune(idx, n, used_c, first, width, n_years, min_year_obs, counts, dropped, sparse)
        n_c = 0
        n_present = 0
        for u in range(n):
            if used_c[u]:
                n_c += 1
                wc[u] = w[u]
            else:
                wc[u] = 0.0
        for k in range(n_years):
            if counts[k] > 0:
                n_present += 1
        count0[p] = n_c
        if n_c < min_obs or n_c <= n_present + 2:
            continue
        singular, n_unknowns, rss = _fit(
            idx, n, y, wc, geometry, n_years, rel_tol, normal, rhs, counts, present, lower, x, z
        )
        if singular or not (present[n_years] and present[n_years + 1]):
            continue
        dof = n_c - n_unknowns
        if dof < 1:
            continue
        sigma2 = rss / dof
        sin[p] = x[n_years]
        cos[p] = x[n_years + 1]
        for j in range(q):
            unit[j] = 0.0
        unit[n_years] = 1.0
        _solve(lower, unit, present, q, column)
        cov_ss[p] = sigma2 * column[n_years]
        cov_sc[p] = sigma2 * column[n_years + 1]
        unit[n_years] = 0.0
        unit[n_years + 1] = 1.0
        _solve(lower, unit, present, q, column)
        cov_cc[p] = sigma2 * column[n_years + 1]


def _empty_raw(n_pixels: int, n_years: int) -> dict[str, np.ndarray]:
    out = {
        "mean": np.empty((n_pixels, n_years)),
        "error": np.empty((n_pixels, n_years)),
        "std": np.empty((n_pixels, n_years)),
        "count": np.empty((n_pixels, n_years), dtype=np.int64),
    }
    for name in ("sin", "cos", "cov_ss", "cov_sc", "cov_cc"):
        out[name] = np.empty(n_pixels)
    for name in ("count0", "window", "rejected", "n_obs"):
        out[name] = np.empty(n_pixels, dtype=np.int64)
    return out


def composite_pixels_compiled(
    values: np.ndarray,
    weights: np.ndarray | None,
    design: CompositeDesign,
    options: CompositeOptions,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Steps 1-6 of the module docstring for every pixel (numba; pixels first).

    Parameters
    ----------
    values
        ``(n_pixels, n_pairs)`` velocities, NaN where missing, in any memory layout (a
        transposed view of a ``(mid_date, pixel)`` chunk is read in its own order).
    weights
        None (all 1), ``(1, n_pairs)`` or ``(n_pixels, n_pairs)``: ``1 / σ²``.
    design, options
        The shared rows and settings.
    threads
        Threads over pixel ranges (the kernel releases the GIL).

    Returns
    -------
    dict
        The arrays of :data:`RAW_NAMES`, pixels first: ``mean``, ``error`` (ITS_LIVE's),
        ``std`` (the least-squares standard deviation), ``count`` ``(n_pixels, n_years)``;
        the climatology fit's ``sin``, ``cos`` and covariance ``cov_ss``, ``cov_sc``,
        ``cov_cc``; ``count0`` (its pairs), ``window`` (valid pairs
        with their mid-date in the window), ``rejected`` (of those, rejected by the robust
        fit), ``n_obs`` (valid pairs).
    """
    values = np.asarray(values)
    n_pixels, n_pairs = values.shape
    use_weights = weights is not None
    if weights is None:
        weights = np.ones((1, 1))
    else:
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        if weights.shape[0] not in (1, n_pixels) or weights.shape[1] != n_pairs:
            raise ValueError(
                f"weights of shape {weights.shape} do not match values {values.shape}; "
                "pass (n_pixels, n_pairs) or (1, n_pairs)"
            )
        if weights.shape[0] > 1 and weights.strides[0] < weights.strides[1]:
            weights = np.ascontiguousarray(weights)
    out = _empty_raw(n_pixels, design.n_years)
    kind = ROBUST_KINDS[options.robust] if options.robust else 0
    tuning = options.robust_tuning if options.robust else 1.0
    pairs_inner = n_pairs <= 1 or values.strides[1] <= values.strides[0]
    fill = np.empty(n_pixels, dtype=np.int64)
    _count_valid(values, weights, use_weights, pairs_inner, fill)
    offsets = np.concatenate([[0], np.cumsum(fill)]).astype(np.int64)
    total = int(offsets[-1])
    idx = np.empty(total, dtype=np.int64)
    y = np.empty(total)
    w0 = np.empty(total)
    _compact(values, weights, use_weights, pairs_inner, offsets, idx, y, w0)
    geometry = design.compiled_rows()
    pair_start = np.ascontiguousarray(design.start, dtype=np.float64)
    pair_end = np.ascontiguousarray(design.end, dtype=np.float64)

    def run(start: int, stop: int) -> None:
        _composite_range(
            offsets, idx, y, w0, geometry, pair_start, pair_end, design.n_years,
            int(options.min_obs), int(options.min_year_obs), float(options.min_year_coverage),
            kind, int(options.iterations), float(tuning),
            bool(options.scale_errors), float(options.rel_tol), start, stop,
            *(out[name] for name in RAW_NAMES),
        )  # fmt: skip

    edges = np.unique(np.linspace(0, n_pixels, max(1, min(threads, n_pixels)) + 1).astype(int))
    if edges.size <= 2:
        run(0, n_pixels)
    else:
        with ThreadPoolExecutor(edges.size - 1) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return out


# --------------------------------------------------------------------------- array engine


class _Rows:
    """The design as arrays of one namespace, with the products assembly needs."""

    def __init__(self, xp: Any, design: CompositeDesign) -> None:
        self.xp = xp
        self.n_years = design.n_years
        self.fractions = design.fractions(xp)  # (n, Y)
        first = xp.asarray(design.first_year)[:, None]
        last = xp.asarray(design.last_year)[:, None]
        years = xp.arange(self.n_years, dtype=first.dtype)[None, :]
        self.touch = xp.astype((years >= first) & (years <= last), xp.float64)
        self.sin = xp.asarray(design.sin_mean)
        self.cos = xp.asarray(design.cos_mean)
        self.span = xp.asarray(design.span)
        self.in_window = xp.asarray(design.in_window)
        f = self.fractions
        self.bands = [f[:, : self.n_years - d] * f[:, d:] for d in range(design.max_span + 1)]
        self.f_sin = f * self.sin[:, None]
        self.f_cos = f * self.cos[:, None]
        self.trig = xp.stack([self.sin * self.sin, self.sin * self.cos, self.cos * self.cos])
        self.support = xp.permute_dims(f * self.span[:, None], (1, 0))  # (Y, n): M_ik
        self.start = xp.asarray(design.start)
        self.end = xp.asarray(design.end)


def _t(xp: Any, a: Any) -> Any:
    return xp.permute_dims(a, (1, 0))


def _prune_array(rows: _Rows, used: Any, min_year_obs: int) -> tuple[Any, Any]:
    """Step 2 for pixels on the last axis: ``(used, dropped)``, ``dropped`` (Y, P) the count
    of each year when it was dropped (0 otherwise)."""
    xp = rows.xp
    touch_t = _t(xp, rows.touch)
    dropped = xp.zeros((rows.n_years, used.shape[1]), dtype=xp.float64)
    for _ in range(rows.n_years + 1):
        counts = xp.matmul(touch_t, xp.astype(used, xp.float64))
        sparse = (counts > 0.5) & (counts < min_year_obs - 0.5)
        if not bool(xp.any(sparse)):
            break
        dropped = xp.where(sparse, counts, dropped)
        hit = xp.matmul(rows.touch, xp.astype(sparse, xp.float64)) > 0.5
        used = used & ~hit
    return used, dropped


def _fit_array(rows: _Rows, y: Any, w: Any, rel_tol: float) -> dict[str, Any]:
    """Steps 3 for all pixels: assembly by matrix products of the shared rows, Cholesky and
    solves with the pixels on the last axis."""
    xp = rows.xp
    n_years = rows.n_years
    q = n_years + 2
    n_pix = w.shape[1]
    wy = xp.where(w > 0, w * y, 0.0)
    normal = xp.zeros((q, q, n_pix), dtype=xp.float64)
    for d, band in enumerate(rows.bands):
        block = xp.matmul(_t(xp, band), w)  # (Y - d, P): N[k, k + d]
        for k in range(n_years - d):
            normal[k, k + d, :] = block[k, :]
            normal[k + d, k, :] = block[k, :]
    for col, products in ((n_years, rows.f_sin), (n_years + 1, rows.f_cos)):
        block = xp.matmul(_t(xp, products), w)
        normal[:n_years, col, :] = block
        normal[col, :n_years, :] = block
    trig = xp.matmul(rows.trig, w)
    normal[n_years, n_years, :] = trig[0, :]
    normal[n_years, n_years + 1, :] = trig[1, :]
    normal[n_years + 1, n_years, :] = trig[1, :]
    normal[n_years + 1, n_years + 1, :] = trig[2, :]
    rhs = xp.concat(
        [
            xp.matmul(_t(xp, rows.fractions), wy),
            xp.matmul(rows.sin[None, :], wy),
            xp.matmul(rows.cos[None, :], wy),
        ],
        axis=0,
    )
    counts = xp.matmul(_t(xp, rows.touch), xp.astype(w > 0, xp.float64))  # (Y, P)
    present = xp.concat([counts > 0.5, xp.ones((2, n_pix), dtype=xp.bool)], axis=0)

    lower = xp.zeros((q, q, n_pix), dtype=xp.float64)
    singular = xp.zeros((n_pix,), dtype=xp.bool)
    for j in range(q):
        column = normal[j:, j, :]
        if j:
            column = column - xp.sum(lower[j:, :j, :] * lower[j : j + 1, :j, :], axis=1)
        pivot = column[0, :]
        ok = present[j, :] & (pivot > rel_tol * normal[j, j, :])
        if j < n_years:
            singular = singular | (present[j, :] & ~ok)
        else:
            present[j, :] = ok
        root = xp.where(ok, xp.sqrt(xp.where(ok, pivot, 1.0)), 1.0)
        below = xp.where(ok[None, :] & present[j:, :], column / root[None, :], 0.0)
        lower[j + 1 :, j, :] = below[1:, :]
        lower[j, j, :] = root
    x = _solve_array(xp, lower, rhs, present)
    pred = _predict_array(rows, x)
    residual = xp.where(w > 0, y - pred, 0.0)
    rss = xp.sum(w * residual * residual, axis=0)
    n_unknowns = xp.sum(xp.astype(present, xp.int64), axis=0)
    return {
        "x": x, "lower": lower, "present": present, "singular": singular, "counts": counts,
        "rss": rss, "n_unknowns": n_unknowns, "pred": pred,
    }  # fmt: skip


def _solve_array(xp: Any, lower: Any, rhs: Any, present: Any) -> Any:
    q = lower.shape[0]
    x = xp.zeros(rhs.shape, dtype=xp.float64)
    for j in range(q):
        value = rhs[j, :]
        if j:
            value = value - xp.sum(lower[j, :j, :] * x[:j, :], axis=0)
        x[j, :] = xp.where(present[j, :], value / lower[j, j, :], 0.0)
    for j in range(q - 1, -1, -1):
        value = x[j, :]
        if j < q - 1:
            value = value - xp.sum(lower[j + 1 :, j, :] * x[j + 1 :, :], axis=0)
        x[j, :] = xp.where(present[j, :], value / lower[j, j, :], 0.0)
    return x


def _inverse_diagonal_array(xp: Any, lower: Any, present: Any, n_years: int) -> Any:
    """``(N⁻¹)_kk`` of the years, ``(n_years, P)``: as ``_inverse_diagonal``, with
    ``L⁻¹`` built a row at a time for all pixels (``q`` steps, none per pixel)."""
    q = lower.shape[0]
    n_pix = lower.shape[2]
    inverse = xp.zeros((q, q, n_pix), dtype=xp.float64)  # L⁻¹, rows j, columns k
    for j in range(q):
        value = xp.zeros((q, n_pix), dtype=xp.float64)
        value[j, :] = 1.0
        if j:
            value = value - xp.sum(lower[j, :j, None, :] * inverse[:j, :, :], axis=0)
        inverse[j, :, :] = xp.where(present[j : j + 1, :], value / lower[j, j, :][None, :], 0.0)
    return xp.sum(inverse[:, :n_years, :] * inverse[:, :n_years, :], axis=0)


def _coverage_array(rows: _Rows, w: Any) -> Any:
    """Per year ``(Y, P)``: the part of it between the earliest and the latest date of the
    pairs of weight > 0 seen in it (as the numba engine's step 5), a year at a time."""
    xp = rows.xp
    used = w > 0
    out = []
    for k in range(rows.n_years):
        seen = used & (rows.touch[:, k : k + 1] > 0.5)
        since = xp.where(rows.start > k, rows.start - k, 0.0)[:, None]
        until = xp.where(rows.end - k < 1.0, rows.end - k, 1.0)[:, None]
        # -max(-x): min is not among the namespace names every kernel may use (exact)
        earliest = -xp.max(xp.where(seen, -since, -1.0), axis=0)
        latest = xp.max(xp.where(seen, until, 0.0), axis=0)
        out.append(latest - earliest)
    return xp.stack(out, axis=0)


def _predict_array(rows: _Rows, x: Any) -> Any:
    xp = rows.xp
    n_years = rows.n_years
    pred = xp.matmul(rows.fractions, x[:n_years, :])
    return (
        pred
        + rows.sin[:, None] * x[n_years : n_years + 1, :]
        + rows.cos[:, None] * x[n_years + 1 :, :]
    )


def composite_pixels(
    values: Any,
    weights: Any,
    design: CompositeDesign,
    options: CompositeOptions,
) -> dict[str, Any]:
    """Steps 1-6 of the module docstring for all pixels at once, in any array namespace.

    Parameters
    ----------
    values
        ``(n_pairs, n_pixels)`` velocities, NaN where missing (numpy, CuPy or another
        array-API namespace).
    weights
        None (all 1), ``(n_pairs, 1)`` or ``(n_pairs, n_pixels)``: ``1 / σ²``.
    design, options
        The shared rows and settings.

    Returns
    -------
    dict
        As :func:`composite_pixels_compiled`, pixels first, in the namespace of ``values``.
    """
    xp = get_namespace(values)
    rows = _Rows(xp, design)
    n_years = rows.n_years
    q = n_years + 2
    values = xp.astype(values, xp.float64)
    n_pix = values.shape[1]
    prior = xp.ones(values.shape, dtype=xp.float64)
    if weights is not None:
        prior = prior * xp.astype(weights, xp.float64)
    finite = (xp.abs(values) < xp.inf) & (prior > 0) & (prior < xp.inf)
    y = xp.where(finite, values, 0.0)
    prior = xp.where(finite, prior, 0.0)
    in_window = rows.in_window[:, None]
    n_obs = xp.sum(xp.astype(finite, xp.int64), axis=0)
    window = xp.sum(xp.astype(finite & in_window, xp.int64), axis=0)

    used, dropped = _prune_array(rows, finite, options.min_year_obs)
    w0 = xp.where(used, prior, 0.0)
    counts = xp.matmul(_t(xp, rows.touch), xp.astype(used, xp.float64))
    n_used = xp.sum(xp.astype(used, xp.int64), axis=0)
    n_present = xp.sum(xp.astype(counts > 0.5, xp.int64), axis=0)
    solved = (n_used >= options.min_obs) & (n_used > n_present + 2)
    year_count = xp.where(counts > 0.5, counts, dropped)

    fit = _fit_array(rows, y, w0, options.rel_tol)
    w = w0
    outlier = xp.zeros(values.shape, dtype=xp.bool)
    # a pixel that turns singular stays unsolved (the numba engine stops it there)
    failed = fit["singular"]
    if options.robust:
        for _ in range(options.iterations):
            w, _wy, outlier = reweight(y, fit["pred"], w0, options.robust, options.robust_tuning)
            w = xp.where(failed[None, :], w0, w)
            fit = _fit_array(rows, y, w, options.rel_tol)
            failed = failed | fit["singular"]
    solved = solved & ~failed
    x = fit["x"]
    present = fit["present"]
    counts = fit["counts"]
    year_count = xp.where(solved[None, :] & (counts > 0.5), counts, year_count)
    n_eff = xp.sum(xp.astype(w > 0, xp.int64), axis=0)
    dof = n_eff - fit["n_unknowns"]
    sigma = xp.where(dof >= 1, xp.sqrt(fit["rss"] / xp.astype(xp.maximum(dof, 1), xp.float64)),
                     xp.nan)  # fmt: skip
    support = xp.matmul(rows.support, w)
    scale = sigma[None, :] if options.scale_errors else 1.0
    covered = _coverage_array(rows, w) >= options.min_year_coverage
    estimable = solved[None, :] & present[:n_years, :] & (counts > options.min_year_obs - 0.5)
    estimable = estimable & covered
    mean = xp.where(estimable, x[:n_years, :], xp.nan)
    error = xp.where(estimable, scale / xp.sqrt(xp.where(estimable, support, 1.0)), xp.nan)
    # the std's scale: sigma-hat without errors, else the errors as a floor (NaN: 1)
    spread = sigma if options.scale_errors else xp.where(sigma > 1.0, sigma, 1.0)
    inverse = _inverse_diagonal_array(xp, fit["lower"], present, n_years)
    std = xp.where(estimable, spread[None, :] * xp.sqrt(xp.where(estimable, inverse, 1.0)),
                   xp.nan)  # fmt: skip
    rejected = xp.sum(xp.astype(outlier & used & in_window, xp.int64), axis=0)
    rejected = xp.where(solved, rejected, 0)

    # step 6: the climatology window, the final weights kept
    used_c, _ = _prune_array(rows, (w > 0) & in_window & solved[None, :], options.min_year_obs)
    wc = xp.where(used_c, w, 0.0)
    clim = _fit_array(rows, y, wc, options.rel_tol)
    n_c = xp.sum(xp.astype(used_c, xp.int64), axis=0)
    n_present_c = xp.sum(xp.astype(clim["counts"] > 0.5, xp.int64), axis=0)
    dof_c = n_c - clim["n_unknowns"]
    ok_c = (
        solved & (n_c >= options.min_obs) & (n_c > n_present_c + 2) & ~clim["singular"]
        & clim["present"][n_years, :] & clim["present"][n_years + 1, :] & (dof_c >= 1)
    )  # fmt: skip
    sigma2 = clim["rss"] / xp.astype(xp.maximum(dof_c, 1), xp.float64)
    unit = xp.zeros((q, n_pix), dtype=xp.float64)
    unit[n_years, :] = 1.0
    col_s = _solve_array(xp, clim["lower"], unit, clim["present"])
    unit = xp.zeros((q, n_pix), dtype=xp.float64)
    unit[n_years + 1, :] = 1.0
    col_c = _solve_array(xp, clim["lower"], unit, clim["present"])
    nan = xp.nan
    return {
        "mean": _t(xp, mean),
        "error": _t(xp, error),
        "std": _t(xp, std),
        "count": _t(xp, xp.astype(year_count, xp.int64)),
        "sin": xp.where(ok_c, clim["x"][n_years, :], nan),
        "cos": xp.where(ok_c, clim["x"][n_years + 1, :], nan),
        "cov_ss": xp.where(ok_c, sigma2 * col_s[n_years, :], nan),
        "cov_sc": xp.where(ok_c, sigma2 * col_s[n_years + 1, :], nan),
        "cov_cc": xp.where(ok_c, sigma2 * col_c[n_years + 1, :], nan),
        "count0": xp.where(solved, n_c, 0),
        "window": window,
        "rejected": rejected,
        "n_obs": n_obs,
    }


# --------------------------------------------------------------------------- outputs


def line_fit(mean: Any, error: Any, design: CompositeDesign) -> dict[str, Any]:
    """The climatology's weighted line through the annual means (pixels first, ``(P, Y)``).

    Weights ``1 / error²`` over the window's years with a mean; abscissa: year middle minus
    centre date. With means on both sides of the centre date: intercept ``offset`` (the
    velocity at the centre date), ``slope`` (per year) and their formal errors; with means
    on one side only, as ITS_LIVE does, the weighted mean and its error, slope NaN. The
    annual means are taken as independent (their correlation, small between years of short
    pairs, is left out).

    Parameters
    ----------
    mean, error
        Annual means and their standard deviations, ``(n_pixels, n_years)``
        (:func:`finish_composite` passes the least-squares ``std``).
    design
        Its ``year_offset`` and ``window_year``.

    Returns
    -------
    dict
        ``offset``, ``offset_error``, ``slope``, ``slope_error``, each ``(n_pixels,)``.
    """
    xp = get_namespace(mean)
    offset_x = xp.asarray(design.year_offset)[None, :]
    use = xp.asarray(design.window_year)[None, :] & (xp.abs(mean) < xp.inf) & (error > 0)
    use = use & (xp.abs(error) < xp.inf)
    w = xp.where(use, 1.0 / xp.where(use, error * error, 1.0), 0.0)
    m = xp.where(use, mean, 0.0)
    s0 = xp.sum(w, axis=1)
    s1 = xp.sum(w * offset_x, axis=1)
    s2 = xp.sum(w * offset_x * offset_x, axis=1)
    t0 = xp.sum(w * m, axis=1)
    t1 = xp.sum(w * offset_x * m, axis=1)
    before = xp.any(use & (offset_x < 0), axis=1)
    after = xp.any(use & (offset_x >= 0), axis=1)
    both = before & after
    any_year = s0 > 0
    det = s0 * s2 - s1 * s1
    det = xp.where(both & (det > 0), det, 1.0)
    s0_safe = xp.where(any_year, s0, 1.0)
    nan = xp.nan
    offset = xp.where(both, (s2 * t0 - s1 * t1) / det, t0 / s0_safe)
    offset_var = xp.where(both, s2 / det, 1.0 / s0_safe)
    return {
        "offset": xp.where(any_year, offset, nan),
        "offset_error": xp.where(any_year, xp.sqrt(offset_var), nan),
        "slope": xp.where(both, (s0 * t1 - s1 * t0) / det, nan),
        "slope_error": xp.where(both, xp.sqrt(s0 / det), nan),
    }


def amplitude_phase(sin: Any, cos: Any, cov_ss: Any, cov_sc: Any, cov_cc: Any) -> dict[str, Any]:
    """Amplitude and day of the maximum of ``a sin 2πt + b cos 2πt``, with errors.

    ``amplitude = hypot(a, b)`` (half the peak-to-peak range), ``phase = 365.25 · ((0.25 −
    atan2(b, a) / 2π) mod 1)`` days after January 1 (ITS_LIVE's convention), errors by
    first-order propagation of the covariance.

    Parameters
    ----------
    sin, cos
        ``a`` and ``b``.
    cov_ss, cov_sc, cov_cc
        Their covariance.

    Returns
    -------
    dict
        ``amp``, ``amp_error``, ``phase``, ``phase_error`` (days).
    """
    xp = get_namespace(sin)
    power = sin * sin + cos * cos
    amp = xp.sqrt(power)
    turns = 0.25 - xp.atan2(cos, sin) / (2 * math.pi)
    phase = DAYS_PER_YEAR * (turns - xp.floor(turns))
    ok = power > 0
    safe = xp.where(ok, power, 1.0)
    amp_var = (sin * sin * cov_ss + 2 * sin * cos * cov_sc + cos * cos * cov_cc) / safe
    phase_var = (cos * cos * cov_ss - 2 * sin * cos * cov_sc + sin * sin * cov_cc) / (safe * safe)
    nan = xp.nan
    return {
        "amp": amp,
        "amp_error": xp.where(ok, xp.sqrt(xp.maximum(amp_var, 0.0)), nan),
        "phase": xp.where(ok, phase, nan),
        "phase_error": xp.where(
            ok, DAYS_PER_YEAR / (2 * math.pi) * xp.sqrt(xp.maximum(phase_var, 0.0)), nan
        ),
    }


def finish_composite(raw: dict[str, Any], design: CompositeDesign) -> dict[str, Any]:
    """One component's published variables from an engine's output (pixels first).

    The line through the annual means is weighted by ``1 / std²``, the least-squares
    variances, not by ITS_LIVE's ``1 / error²`` (which the production code uses): the ratio
    of ITS_LIVE's error to the std depends on the pairs' lengths (a year seen through small
    parts of long pairs gets a third of its std), so its weights favour the years the data
    say least about. With the std the line is the weighted least-squares fit to means of
    known variance, and ``offset_error``, ``slope_error`` are its formal errors.

    Parameters
    ----------
    raw
        The output of :func:`composite_pixels_compiled` or :func:`composite_pixels`.
    design
        The shared rows.

    Returns
    -------
    dict
        ``mean``, ``error``, ``std``, ``count`` ``(P, Y)``; ``offset``, ``offset_error``,
        ``slope``, ``slope_error``, ``amp``, ``amp_error``, ``phase``, ``phase_error``,
        ``count0``, ``outlier_percent`` ``(P,)``; and ``sin``, ``cos``, ``cov_*`` (kept for
        the speed).
    """
    xp = get_namespace(raw["mean"])
    out = dict(raw)
    out.update(line_fit(raw["mean"], raw["std"], design))
    out.update(amplitude_phase(raw["sin"], raw["cos"], raw["cov_ss"], raw["cov_sc"],
                               raw["cov_cc"]))  # fmt: skip
    window = xp.astype(raw["window"], xp.float64)
    fitted = raw["count0"] > 0
    out["outlier_percent"] = xp.where(
        fitted & (window > 0),
        100.0 * xp.astype(raw["rejected"], xp.float64) / xp.where(window > 0, window, 1.0),
        xp.nan,
    )
    return out


def speed_composite(vx: dict[str, Any], vy: dict[str, Any]) -> dict[str, Any]:
    """The speed's variables from the two components' :func:`finish_composite` outputs.

    ``v`` per year and ``v0`` are magnitudes of the component means, errors by first-order
    propagation (ITS_LIVE's ``sqrt((σx vx)² + (σy vy)²) / v``), through
    :func:`xr_itslive.kernels.speed.speed_from_components`: ``error`` from the components'
    ITS_LIVE errors, ``std`` from their least-squares stds, and from those stds too the
    annual speed corrected for the noise bias (``debiased``) and whether the annual vector
    differs from zero at 95% (``significant``): a test is only as honest as the spread it
    divides by. The trend and the seasonal cycle are the components' projected onto the mean
    flow direction ``(vx0, vy0) / v0`` (the sinusoids' coefficients are projected, their
    covariance as independent components).

    Parameters
    ----------
    vx, vy
        :func:`finish_composite` of ``vx`` and of ``vy``.

    Returns
    -------
    dict
        ``mean``, ``error``, ``std``, ``debiased``, ``significant`` ``(P, Y)``; ``offset``,
        ``offset_error``, ``slope``, ``slope_error``, ``amp``, ``amp_error``, ``phase``,
        ``phase_error`` ``(P,)``.
    """
    xp = get_namespace(vx["mean"])
    nan = xp.nan

    def magnitude(x, y, ex, ey):
        # the one speed primitive of the package (also the inversion's v, v_std ...)
        speed = speed_from_components(x, y, ex, ey)
        return speed["v"], speed["v_std"], speed

    out = {}
    out["mean"], out["error"], _ = magnitude(vx["mean"], vy["mean"], vx["error"], vy["error"])
    # the annual speed of slow ice is biased up by the components' noise: give the corrected
    # value and the test of the vector against zero with it (see kernels/speed.py), both by
    # the least-squares stds (ITS_LIVE's errors can be a third of them: a confident speed
    # out of noise)
    _, out["std"], annual = magnitude(vx["mean"], vy["mean"], vx["std"], vy["std"])
    out["debiased"], out["significant"] = annual["v_debiased"], annual["v_significant"]
    v0, v0_error, _ = magnitude(vx["offset"], vy["offset"], vx["offset_error"], vy["offset_error"])
    out["offset"], out["offset_error"] = v0, v0_error
    safe = xp.where(v0 > 0, v0, 1.0)
    ux = xp.where(v0 > 0, vx["offset"] / safe, nan)
    uy = xp.where(v0 > 0, vy["offset"] / safe, nan)
    out["slope"] = ux * vx["slope"] + uy * vy["slope"]
    out["slope_error"] = xp.sqrt((ux * vx["slope_error"]) ** 2 + (uy * vy["slope_error"]) ** 2)
    out.update(
        amplitude_phase(
            ux * vx["sin"] + uy * vy["sin"],
            ux * vx["cos"] + uy * vy["cos"],
            ux * ux * vx["cov_ss"] + uy * uy * vy["cov_ss"],
            ux * ux * vx["cov_sc"] + uy * uy * vy["cov_sc"],
            ux * ux * vx["cov_cc"] + uy * uy * vy["cov_cc"],
        )
    )
    return out
