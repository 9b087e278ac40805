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
(``error``) when given, otherwise ``365.25 / dt_i``, so that ``error_scale`` is a
displacement error in metres (velocity error of image matching falls as ``1 / dt``).
With ``likelihood="student-t"`` (the default) the noise is Student-t (``dof`` degrees of
freedom) through its Gaussian scale mixture: a few EM rounds reweight each pair by
``(ν + 1) / (ν + E[r_i²] / σ_i²)`` and refit the hyperparameters.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.special as ss

from ..errors import EmptySelectionError, InvalidParameterError, renamed_parameters
from .series import (
    Observation,
    Rows,
    banded_selected_inverse,
    build_terms,
    gram_band,
    harmonic_columns,
    matern_precision,
)
from .units import DAYS_PER_YEAR, NS_PER_DAY

MIN_PAIRS = 10
#: The shortest Matérn length scale :func:`gp_fit` considers by default, days. Glacier flow
#: changes a point series can resolve (the spring speed-up, the phases of a surge) take one to
#: several months, while the noise of 6-18-day pairs (about 100 m/yr each on the real series
#: of ``benchmarks/bench_gp.py``) is as large as any real change. Left free, the fit explains
#: that noise as velocity changes of a few days where pairs are dense: the model's image error
#: is one per ``step``-day cell, while real images of different days and satellites in a cell
#: have errors of their own. On that series the free fit takes the 8-day floor with a signal
#: std of 218 m/yr (its daily mean below zero on 331 days in 30 episodes, down to -329 m/yr;
#: the long pairs average the wiggles out, so held-out pairs still score well); its sparse
#: years 2013-2018 alone pick 76 days. With synthetic values on the same pairs (a 90-day
#: truth, errors per image) the free fit collapses to 8 days too (daily RMSE 183 m/yr, 9.7
#: with errors per cell as the model has them); a 30-day floor gives 21.6 m/yr, 60 days
#: 12.7 m/yr (``python benchmarks/bench_gp.py --truth [--min-length-scale 30]``).
MIN_LENGTH_SCALE = 60.0
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
        return (array.astype("datetime64[ns]") - origin).astype("int64") / NS_PER_DAY
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
    return origin + np.timedelta64(int(round(days * NS_PER_DAY)), "ns")


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

    observation: Observation
    harmonics: np.ndarray  # (n_pairs, k)
    values: np.ndarray  # centred
    noise_basis: np.ndarray  # e_i: the error, or 365.25 / dt
    terms: tuple
    n_cells: int
    bandwidth: int
    step: float
    mean_prior_std: float

    @property
    def rows(self) -> Rows:
        return self.observation.rows


def _noise_variance(params: dict[str, float], noise_basis: np.ndarray) -> np.ndarray:
    """``σ_i² = noise_floor² + (error_scale · e_i)²``: the pair's noise variance."""
    return params["noise_floor"] ** 2 + (params["error_scale"] * noise_basis) ** 2


def _joint_band(problem: _Problem, weights: np.ndarray, params: dict[str, float]):
    """Lower band (LAPACK storage) of ``Q + HᵀWH`` over the interleaved unknowns, and log|Q|."""
    n, bw, q = problem.n_cells, problem.bandwidth, problem.observation.stride
    gram = gram_band(problem.terms, weights, n, bw)
    prior, logdet = matern_precision(n, problem.step, params["signal_std"], params["length_scale"])
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
    weights = scale_weights / _noise_variance(params, problem.noise_basis)
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
    """A GP fitted to interval-averaged velocities; built by :func:`~xr_itslive.gp_fit`.

    Parameters
    ----------
    params
        Fitted hyperparameters: ``signal_std`` and ``seasonal_std`` (velocity units),
        ``length_scale`` (days), ``noise_floor`` (velocity units), ``error_scale``
        (metres of displacement when no errors were given, otherwise a factor on them),
        ``mean`` (velocity units) and ``dof`` (Student-t degrees of freedom, ``inf`` with the
        Gaussian likelihood).
    log_marginal_likelihood
        At the fitted hyperparameters (given the final Student-t weights).
    outlier_weights
        Per training pair, the Student-t mixture weight (1 for a typical pair, near 0 for
        an outlier); ones with ``likelihood="gaussian"``.
    n_pairs
        Training pairs used.
    step
        Cell size of the latent grid, days.
    start, end
        Extent of the latent grid (dates, or days when fitted on days).
    uses_errors
        Whether the noise was scaled from per-pair errors (otherwise ``1 / dt``).
    bounds
        The ``(lower, upper)`` bounds the fit searched each free hyperparameter within.
    nonnegative
        Whether the fitted quantity cannot be negative (a speed): :meth:`predict` then
        conditions the posterior on it.
    """

    params: dict[str, float]
    log_marginal_likelihood: float
    outlier_weights: np.ndarray
    n_pairs: int
    step: float
    start: Any
    end: Any
    uses_errors: bool
    bounds: dict[str, tuple[float, float]]
    _origin: np.datetime64 | None = field(repr=False)
    _start_day: float = field(repr=False)
    _problem: _Problem = field(repr=False)
    _posterior: _Posterior = field(repr=False)
    _harmonics: int = field(repr=False)
    _center: float = field(repr=False)
    #: a speed fitted directly: :meth:`predict` conditions the posterior on ``v >= 0``
    nonnegative: bool = False

    def __repr__(self) -> str:
        p = self.params
        units = "× error" if self.uses_errors else "m displacement"
        start, end = (
            (np.datetime_as_string(d, "D") for d in (self.start, self.end))
            if self._origin is not None
            else (f"{self.start:g}", f"{self.end:g}")
        )
        dof = "gaussian" if not np.isfinite(p["dof"]) else f"student-t dof={p['dof']:.3g}"
        at = self.at_bounds()
        note = {name: f", at its {side} bound" for name, side in at.items()}
        return (
            f"<GaussianProcessFit: {self.n_pairs} pairs, {start}..{end}, step={self.step:g} d>\n"
            f"  mean          {p['mean']:.4g}\n"
            f"  signal_std    {p['signal_std']:.4g}  (Matérn-3/2{note.get('signal_std', '')})\n"
            f"  length_scale  {p['length_scale']:.4g} d{note.get('length_scale', '')}\n"
            f"  seasonal_std  {p['seasonal_std']:.4g}  ({self.harmonics} harmonic(s))\n"
            f"  noise_floor   {p['noise_floor']:.4g}\n"
            f"  error_scale   {p['error_scale']:.4g}  ({units})\n"
            f"  image_error_std {p['image_error_std']:.4g} m  (per-date displacement error)\n"
            f"  noise         {dof}\n"
            f"  log marginal likelihood {self.log_marginal_likelihood:.6g}"
        )

    @property
    def harmonics(self) -> int:
        """Seasonal harmonics of the fit (1: annual; 2: annual and semi-annual; 0: none)."""
        return self._harmonics

    def at_bounds(self, tolerance: float = 1e-3) -> dict[str, str]:
        """The hyperparameters the fit left at a bound of its search.

        Parameters
        ----------
        tolerance
            Relative distance to a bound that counts as being at it.

        Returns
        -------
        dict
            ``{name: "lower" or "upper"}``; empty when every fitted value is inside.
        """
        out = {}
        for name, (low, high) in self.bounds.items():
            value = self.params[name]
            if value <= low * (1 + tolerance):
                out[name] = "lower"
            elif value >= high * (1 - tolerance):
                out[name] = "upper"
        return out

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

    def _observation(self, rows: Rows, durations: np.ndarray | None) -> Observation:
        q = self._posterior.stride
        if durations is None or q == 1:
            scale = np.zeros(rows.first_cell.size)
        else:
            scale = np.where(rows.span > 0, DAYS_PER_YEAR / durations, 0.0)
        return Observation(rows, scale, q)

    def _moments(
        self, observation: Observation, harmonic_rows: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        post = self._posterior
        mean = observation.matvec(post.joint) + harmonic_rows @ post.coefficients
        span = observation.rows.span
        latent = observation.quadratic(self._band(int(span.max()) if span.size else 1))
        offset = observation.matvec(post.cross) - harmonic_rows
        low_rank = np.einsum("ij,ij->i", offset, sla.solve(post.schur, offset.T, assume_a="pos").T)
        variance = np.maximum(latent + low_rank, 0.0)
        return mean + self._center, variance

    def _noise_variance(self, img1_days, img2_days, error) -> np.ndarray:
        if self.uses_errors:
            if error is None:
                raise InvalidParameterError(
                    "this fit used per-pair errors, so the noise of new pairs needs them: pass "
                    "error=... (or noise=False for the interval average alone)"
                )
            basis = np.asarray(error, dtype=np.float64)
        else:
            basis = DAYS_PER_YEAR / (img2_days - img1_days)
        return _noise_variance(self.params, basis)

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
            Of the latent velocity (no observation noise), linear between cell centres; for a
            fit marked ``nonnegative`` (a speed, see :func:`~xr_itslive.gp_fit_series`), of
            the posterior given ``v >= 0``, so the mean is never below zero.
        """
        u = self._cell_units(times, "times")
        rows = Rows.points(u, self._problem.n_cells)
        days = u * self.step + self._start_day
        observation = self._observation(rows, None)
        mean, variance = self._moments(observation, harmonic_columns(days, days, self._harmonics))
        if self.nonnegative:  # a speed cannot be negative: the truncated normal, pointwise
            from .speed import nonnegative_summary

            mean, std, _, _ = nonnegative_summary(mean, np.sqrt(variance))
            return mean, std
        return mean, np.sqrt(variance)

    @renamed_parameters(v_error="error")
    def predict_pairs(
        self,
        img1: Any,
        img2: Any,
        error: Any = None,
        *,
        noise: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the mean velocity over each ``[img1, img2]``.

        With ``noise=True`` the standard deviation is that of a new *observed* pair (the
        interval average plus its noise, Student-t variance ``ν/(ν-2) σ²`` with the Student-t
        likelihood); use :meth:`pair_interval` for a band with the right tails.

        Parameters
        ----------
        img1, img2
            First and second acquisition dates of each pair (``datetime64``, or days when
            the fit was made on days), inside the fitted grid, ``img2 > img1``.
        error
            Per-pair errors of the new pairs (velocity units), needed with ``noise=True``
            when the fit used per-pair errors (``uses_errors``); otherwise ignored (the noise
            then grows as ``1 / dt``). (``v_error=``, the old spelling, still works for one
            release.)
        noise
            Add the observation noise to the variance (a new observed pair); False for the
            interval average of the latent velocity alone.

        Returns
        -------
        mean, std : numpy.ndarray
            Per pair.
        """
        u1 = self._cell_units(img1, "img1")
        u2 = self._cell_units(img2, "img2")
        _check_intervals(u1, u2)
        rows = Rows.intervals(u1, u2, self._problem.n_cells)
        d1, d2 = u1 * self.step + self._start_day, u2 * self.step + self._start_day
        observation = self._observation(rows, d2 - d1)
        mean, variance = self._moments(observation, harmonic_columns(d1, d2, self._harmonics))
        if noise:
            dof = self.params["dof"]
            factor = dof / (dof - 2) if np.isfinite(dof) and dof > 2 else 1.0
            variance = variance + factor * self._noise_variance(d1, d2, error)
        return mean, np.sqrt(variance)

    @renamed_parameters(v_error="error")
    def pair_interval(
        self, img1: Any, img2: Any, error: Any = None, *, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` predictive band ``(lower, upper)`` for new observed pairs.

        The predictive of a pair is its interval average (Gaussian) plus its noise
        (Gaussian, or Student-t with the Student-t likelihood); the band is that sum's exact
        quantile.

        Parameters
        ----------
        img1, img2
            First and second acquisition dates of each pair (``datetime64``, or days when
            the fit was made on days), inside the fitted grid, ``img2 > img1``.
        error
            Per-pair errors of the new pairs (velocity units); required when the fit used
            per-pair errors (``uses_errors``), ignored otherwise. (``v_error=``, the old
            spelling, still works for one release.)
        level
            Probability of the central band, in (0, 1).

        Returns
        -------
        lower, upper : numpy.ndarray
            Per pair.
        """
        if not 0 < level < 1:
            raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
        mean, latent_std = self.predict_pairs(img1, img2, noise=False)
        u1 = self._cell_units(img1, "img1") * self.step + self._start_day
        u2 = self._cell_units(img2, "img2") * self.step + self._start_day
        noise_var = self._noise_variance(u1, u2, error)
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


#: The noise models of :func:`~xr_itslive.gp_fit`.
LIKELIHOODS = ("student-t", "gaussian")


@renamed_parameters(
    v_error="error",
    robust=("likelihood", lambda value: "student-t" if value else "gaussian"),
)
def gp_fit(
    t1: Any,
    t2: Any,
    v: Any,
    error: Any = None,
    *,
    step: float = 4.0,
    harmonics: int = 1,
    likelihood: str = "student-t",
    dof: float = 4.0,
    image_errors: bool = True,
    em_rounds: int = 3,
    start: Any = None,
    end: Any = None,
    initial: dict[str, float] | None = None,
    fixed: dict[str, float] | None = None,
    bounds: dict[str, tuple[float | None, float | None]] | None = None,
    max_iterations: int = 60,
) -> GaussianProcessFit:
    """Fit a GP to velocities observed as averages over ``[t1, t2]``.

    Parameters
    ----------
    t1, t2
        First and second acquisition dates of each pair: ``datetime64`` or days (floats).
    v
        Mean velocity of each pair. NaN pairs are dropped.
    error
        Per-pair error (same units as ``v``); scaled by a fitted ``error_scale``. Without
        it the noise grows as ``1 / dt`` (a displacement error).
    step
        Cell size of the latent grid in days. Smaller is more exact and slower: the cost is
        ``O(cells · bandwidth²)`` with the bandwidth the longest pair in cells.
    harmonics
        Number of seasonal harmonics (annual, semi-annual, ...); 0 for none.
    likelihood
        ``"student-t"``: Student-t noise with ``dof`` degrees of freedom (fitted by
        ``em_rounds`` EM rounds), so that outliers are down-weighted; ``"gaussian"``:
        Gaussian noise. (``robust=True``/``False``, the old spelling, still works for one
        release.)
    dof
        Degrees of freedom of the Student-t noise (> 2).
    image_errors
        Model a displacement error per acquisition cell (``image_error_std``), shared by
        every pair with an image in that cell. Real series need it: pairs sharing an image
        share its georeferencing error, which otherwise passes for fast velocity changes.
    start, end
        The time window (dates or days), as in :func:`xr_itslive.invert`: the latent grid
        spans it and pairs reaching outside it are dropped. By default the pairs' extent
        plus one cell. :meth:`GaussianProcessFit.predict` works inside it.
    initial, fixed
        Starting values, or fixed values, for hyperparameters among ``signal_std``,
        ``length_scale``, ``seasonal_std``, ``noise_floor``, ``error_scale``,
        ``image_error_std``.
    bounds
        ``{name: (lower, upper)}`` for the search of a hyperparameter (None for the default
        of that end). Defaults: ``length_scale`` from ``MIN_LENGTH_SCALE`` (60 days, or
        two cells if larger) to ten times the grid's span; ``signal_std`` and
        ``seasonal_std`` at most the range of the central 98% of the pairs' values (a latent
        velocity whose std exceeds the range of the observations themselves is not
        physical); the others from e⁻¹² to e⁸ times the spread of the values. The fit
        reports where it stopped at a bound (:meth:`GaussianProcessFit.at_bounds`, and its
        repr): there the data alone would have gone further, and the bound is a choice.
        ``bounds={"length_scale": (2 * step, None)}`` frees the length scale as earlier
        releases did.
    em_rounds
        EM rounds of the Student-t noise (each reweights the pairs and refits).
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
    >>> fit = xr_itslive.gp_fit(t1, t2, v, likelihood="gaussian")
    >>> mean, std = fit.predict(np.array([200.0, 500.0]))
    """
    if likelihood not in LIKELIHOODS:
        raise InvalidParameterError(
            f"likelihood must be one of {list(LIKELIHOODS)}, got likelihood={likelihood!r}"
        )
    robust = likelihood == "student-t"
    origin, d1, d2, values, errors = _validate_pairs(t1, t2, v, error)
    _check_step(step, harmonics, dof, em_rounds)
    first = d1.min() - step if start is None else float(_to_days(start, origin, "start"))
    last = d2.max() + step if end is None else float(_to_days(end, origin, "end"))
    if last <= first:
        raise InvalidParameterError(
            f"start must be before end, got {_from_days(first, origin)}..{_from_days(last, origin)}"
            "; swap them or leave them as None"
        )
    # start/end mean what they mean in invert(): the time window; the latent grid spans it
    # and pairs reaching outside it are dropped.
    inside = (d1 >= first - 1e-9) & (d2 <= last + 1e-9)
    if not inside.any():
        raise EmptySelectionError(
            f"no pair lies inside start..end ({_from_days(first, origin)}.."
            f"{_from_days(last, origin)}); the pairs span {_from_days(d1.min(), origin)}.."
            f"{_from_days(d2.max(), origin)}: widen start/end or leave them as None"
        )
    if not inside.all():
        d1, d2, values = d1[inside], d2[inside], values[inside]
        errors = None if errors is None else errors[inside]
    n_cells = max(int(np.ceil((last - first) / step - 1e-9)), 3)
    u1, u2 = (d1 - first) / step, (d2 - first) / step
    rows = Rows.intervals(u1, u2, n_cells)
    terms, bandwidth = build_terms(rows)
    stride = 2 if image_errors else 1
    image_scale = np.where(rows.span > 0, DAYS_PER_YEAR / (d2 - d1), 0.0)
    observation = Observation(rows, image_scale if image_errors else np.zeros_like(u1), stride)
    center = float(np.median(values))
    spread = float(1.4826 * np.median(np.abs(values - center))) or float(np.std(values)) or 1.0
    noise_basis = errors if errors is not None else DAYS_PER_YEAR / (d2 - d1)
    problem = _Problem(
        observation=observation,
        harmonics=harmonic_columns(d1, d2, harmonics),
        values=values - center,
        noise_basis=noise_basis,
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
    search = _search_bounds(bounds, values, spread, step, last - first, start_values)
    search = {name: search[name] for name in free}
    log_bounds = [(np.log(lo), np.log(hi)) for lo, hi in search.values()]
    # a start outside the bounds (the defaults on odd data, or a user's initial=) is moved in
    theta = np.clip(
        np.log([start_values[name] for name in free]),
        [lo for lo, _ in log_bounds],
        [hi for _, hi in log_bounds],
    )
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
                    bounds=log_bounds,
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
                    problem, posterior, params, scale_weights, dof, origin, first, step,
                    harmonics, center, errors is not None, search,
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
                noise_var = _noise_variance(params, noise_basis)
                scale_weights = (dof + 1.0) / (dof + (residual**2 + latent_var) / noise_var)
        if robust:
            posterior = _posterior(problem, params, scale_weights)
    return _assemble_fit(
        problem, posterior, params, scale_weights, dof if robust else np.inf, origin, first,
        step, harmonics, center, errors is not None, search,
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
    problem, posterior, params, scale_weights, dof, origin, first, step, harmonics, center,
    uses_errors, search,
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
        bounds=dict(search),
        _origin=origin,
        _start_day=first,
        _problem=problem,
        _posterior=posterior,
        _harmonics=harmonics,
        _center=center,
    )


def _search_bounds(
    bounds: dict | None,
    values: np.ndarray,
    spread: float,
    step: float,
    span: float,
    start_values: dict[str, float],
) -> dict[str, tuple[float, float]]:
    """``(lower, upper)`` of every hyperparameter: the defaults, then the user's ``bounds``."""
    low, high = np.percentile(values, [1.0, 99.0])
    variation = float(high - low) or spread
    wide = (spread * np.exp(-12.0), spread * np.exp(8.0))
    search = {name: wide for name in PARAMETER_NAMES}
    search["length_scale"] = (max(MIN_LENGTH_SCALE, 2.0 * step), 10.0 * span)
    search["signal_std"] = (wide[0], variation)
    search["seasonal_std"] = (wide[0], variation)
    search["error_scale"] = (wide[0], 1e6 * start_values["error_scale"])
    given = dict(bounds or {})
    unknown = sorted(set(given) - set(PARAMETER_NAMES))
    if unknown:
        raise InvalidParameterError(
            f"bounds has unknown hyperparameter(s) {unknown}; valid names: {list(PARAMETER_NAMES)}"
        )
    for name, pair in given.items():
        try:
            lower, upper = pair
        except (TypeError, ValueError) as err:
            raise InvalidParameterError(
                f"bounds[{name!r}] must be a (lower, upper) pair (None for the default), got "
                f"{pair!r}"
            ) from err
        lower = search[name][0] if lower is None else float(lower)
        upper = search[name][1] if upper is None else float(upper)
        if not (np.isfinite(lower) and np.isfinite(upper) and 0 < lower < upper):
            raise InvalidParameterError(
                f"bounds[{name!r}] must satisfy 0 < lower < upper (finite), got "
                f"({lower!r}, {upper!r})"
            )
        search[name] = (lower, upper)
    if search["length_scale"][0] < 2.0 * step:
        raise InvalidParameterError(
            f"bounds['length_scale'] starts at {search['length_scale'][0]:g} days, below two "
            f"cells ({2.0 * step:g} days at step={step:g}), which the latent grid cannot "
            "represent; raise it or pass a smaller step"
        )
    return search


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


def _validate_pairs(t1, t2, v, error):
    arrays = {"t1": np.atleast_1d(np.asarray(t1)), "t2": np.atleast_1d(np.asarray(t2))}
    arrays["v"] = np.atleast_1d(np.asarray(v, dtype=np.float64))
    if error is not None:
        arrays["error"] = np.atleast_1d(np.asarray(error, dtype=np.float64))
    lengths = {name: a.shape for name, a in arrays.items()}
    if len(set(lengths.values())) != 1 or any(len(s) != 1 for s in lengths.values()):
        raise InvalidParameterError(
            f"t1, t2, v (and error) must be 1-D arrays of one length, got shapes {lengths}"
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
    if error is not None:
        e = arrays["error"]
        keep &= np.isfinite(e)
        if np.any(e[keep] <= 0):
            raise InvalidParameterError(
                f"error must be > 0, found {int(np.sum(e[keep] <= 0))} value(s) <= 0; drop "
                "those pairs or pass error=None"
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
        origin = origin + np.timedelta64(int(shift * NS_PER_DAY), "ns")
        d1, d2 = d1 - shift, d2 - shift
    return origin, d1[keep], d2[keep], arrays["v"][keep], errors
