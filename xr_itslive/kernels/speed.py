"""Speed from velocity components: the magnitude, its standard deviation, and its noise bias.

Arrays only (numpy, CuPy or any array-API namespace; scipy for the Gaussian-process bands).

ITS_LIVE reports speed as ``v = sqrt(vx² + vy²)`` of the component estimates. The magnitude
of noisy components is biased high: with ``v̂x = vx + εx``, ``v̂y = vy + εy`` (independent,
zero-mean, standard deviations ``σx``, ``σy``),

    E[v̂²] = v² + σx² + σy²,

so where the speed is not large against ``σ``, ``v̂`` is mostly noise (for ``v = 0`` and
``σx = σy = σ``, ``v̂`` is Rayleigh: mean ``1.25 σ``, never zero). Slow ice, the margins of a
glacier and short cells are where this shows.
:func:`~xr_itslive.kernels.speed.speed_from_components` keeps ``v`` as the magnitude (what
ITS_LIVE and the components' users expect) and adds, when the components' standard
deviations are known,

* ``v_std``: first-order (delta-method) propagation, ``sqrt((vx σx)² + (vy σy)²) / v``. It
  describes the spread of ``v̂`` only where ``v ≳ 3 σ``; near zero the distribution of ``v̂``
  is Rice, not Gaussian (for ``v = 0`` its spread is ``0.66 σ`` around ``1.25 σ``), and
  ``v_std`` tends to the direction-averaged ``sqrt((σx² + σy²) / 2)``;
* ``v_debiased``: ``sqrt(max(v̂² - σx² - σy², 0))``, whose square is unbiased for ``v²``:
  the estimate to average (over cells, years or pixels) when the ice is slow. It is not
  unbiased for ``v`` itself near zero (for ``v = 0`` its mean is ``0.46 σ``, against
  ``1.25 σ`` for ``v̂``), and it is 0 where the noise explains all of ``v̂``;
* ``v_significant``: whether the vector differs from zero at ``level``
  (``(vx/σx)² + (vy/σy)² > χ²₂(level) = -2 ln(1 - level)``, 5.99 at 95%): the flag to read
  a single cell or a map by. Where it is False, ``v`` is noise, whatever its value.

Both rely on ``σx``, ``σy`` being the components' real errors. The inversion's ``*_std`` are
posterior standard deviations, a little above the sampling spread of a regularized estimate,
so that both lean to the safe side (a little low, a little rarely significant). A composite's
are the least-squares standard deviations of its annual means (not ITS_LIVE's ``*_error``,
which can be a third of them for a year seen through small parts of long pairs: see
:mod:`xr_itslive.kernels.composite`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from .namespace import get_namespace

__all__ = [
    "chi2_2_quantile",
    "nonnegative_summary",
    "speed_band",
    "speed_from_components",
]


def chi2_2_quantile(level: float) -> float:
    """The ``level`` quantile of the χ² distribution with 2 degrees of freedom.

    Parameters
    ----------
    level
        Probability in (0, 1).

    Returns
    -------
    float
        ``-2 ln(1 - level)`` (5.99 at 0.95).
    """
    return -2.0 * math.log1p(-level)


def speed_from_components(
    vx: Any, vy: Any, vx_std: Any = None, vy_std: Any = None, *, level: float = 0.95
) -> dict[str, Any]:
    """Speed and, with the components' standard deviations, its std, bias correction and test.

    Parameters
    ----------
    vx, vy
        Component estimates (any shape, broadcasting; NaN where missing).
    vx_std, vy_std
        Their standard deviations (same units), or None.
    level
        Probability of the significance test of ``v_significant``, in (0, 1).

    Returns
    -------
    dict
        ``v``, the magnitude; with ``vx_std`` and ``vy_std`` also ``v_std`` (first order),
        ``v_debiased`` (``sqrt(max(v² - σx² - σy², 0))``) and ``v_significant`` (bool: the
        vector differs from zero at ``level``; False where anything is NaN). See the module
        docstring for what each means and where it fails.

    Examples
    --------
    >>> import numpy as np
    >>> out = speed_from_components(np.array([3.0, 0.5]), np.array([4.0, 0.5]),
    ...                             np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    >>> [round(float(x), 3) for x in out["v"]], [bool(x) for x in out["v_significant"]]
    ([5.0, 0.707], [True, False])
    """
    xp = get_namespace(vx, vy)
    # hypot where the namespace has it: no overflow, and the inversion's v as it always was
    v = xp.hypot(vx, vy) if hasattr(xp, "hypot") else xp.sqrt(vx * vx + vy * vy)
    out = {"v": v}
    if vx_std is None or vy_std is None:
        return out
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    var_x, var_y = vx_std * vx_std, vy_std * vy_std
    safe = xp.where(v > 0, v, 1.0)
    first_order = xp.sqrt(vx * vx * var_x + vy * vy * var_y) / safe
    # At v̂ = 0 exactly the direction, and so the first-order std, is undefined: take its
    # average over directions (the limit in the isotropic case).
    out["v_std"] = xp.where(v > 0, first_order, xp.sqrt((var_x + var_y) / 2))
    out["v_debiased"] = xp.sqrt(xp.clip(v * v - var_x - var_y, 0.0, None))
    # The χ² test of the vector against zero; a zero std (a degenerate cell) tests nothing.
    positive = (vx_std > 0) & (vy_std > 0)
    score = vx * vx / xp.where(positive, var_x, 1.0) + vy * vy / xp.where(positive, var_y, 1.0)
    out["v_significant"] = positive & (score > chi2_2_quantile(level))
    return out


def speed_band(
    vx: np.ndarray,
    vy: np.ndarray,
    vx_std: np.ndarray,
    vy_std: np.ndarray,
    *,
    level: float = 0.95,
    draws: int = 2000,
    seed: int = 0,
    block: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` band of the speed ``|v|`` when ``(vx, vy)`` are independent Gaussians.

    The band is the equal-tailed interval of ``|v|`` under ``N(vx, vx_std²) × N(vy, vy_std²)``
    (``draws`` fixed normal draws, the same for every entry, so that the result is
    deterministic), except where the vector is not significant at ``level`` (the origin
    inside the ``level`` ellipse): there it is one-sided, ``[0, |v| quantile at level]``.
    The band is never below zero, its lower end is 0 exactly where the vector is not
    significant, and it always contains the magnitude of the means.

    Parameters
    ----------
    vx, vy, vx_std, vy_std
        1-D arrays of one length (numpy): the components' means and standard deviations.
    level
        Probability of the band, in (0, 1).
    draws
        Monte Carlo draws per entry (the quantiles' error is about ``σ / sqrt(draws)``).
    seed
        Seed of the draws.
    block
        Entries per vectorized block (memory ``block × draws`` doubles).

    Returns
    -------
    lower, upper : numpy.ndarray
        NaN where any input is NaN.
    """
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    arrays = [np.asarray(a, dtype=np.float64).ravel() for a in (vx, vy, vx_std, vy_std)]
    mx, my, sx, sy = np.broadcast_arrays(*arrays)
    rng = np.random.default_rng(seed)
    zx, zy = rng.standard_normal((2, draws))
    lower = np.full(mx.shape, np.nan)
    upper = np.full(mx.shape, np.nan)
    tails = (0.5 - level / 2, 0.5 + level / 2)
    threshold = chi2_2_quantile(level)
    for start in range(0, mx.size, block):
        part = slice(start, start + block)
        x = mx[part, None] + sx[part, None] * zx[None, :]
        y = my[part, None] + sy[part, None] * zy[None, :]
        speeds = np.sqrt(x * x + y * y)
        low, high, one_sided = np.quantile(speeds, [*tails, level], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (mx[part] / sx[part]) ** 2 + (my[part] / sy[part]) ** 2
        significant = score > threshold
        lower[part] = np.where(significant, low, 0.0)
        upper[part] = np.where(significant, high, one_sided)
    bad = ~np.isfinite(mx + my + sx + sy)
    lower[bad] = upper[bad] = np.nan
    # Draws can miss the exact magnitude in the far tails of a wide posterior; keep it inside.
    magnitude = np.hypot(mx, my)
    lower = np.minimum(lower, magnitude)
    upper = np.maximum(upper, magnitude)
    return lower, upper


def nonnegative_summary(
    mean: np.ndarray, std: np.ndarray, *, level: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, std and central band of ``N(mean, std²)`` conditioned on being ``>= 0``.

    For a Gaussian posterior of a quantity that cannot be negative (a speed fitted directly),
    the posterior given that knowledge, taken pointwise: a truncated normal. Where
    ``mean ≫ std`` nothing changes; near and below zero the mean stays positive and the band
    starts at or above zero.

    Parameters
    ----------
    mean, std
        Of the Gaussian (numpy arrays, broadcasting; ``std > 0``).
    level
        Probability of the central band, in (0, 1).

    Returns
    -------
    mean, std, lower, upper : numpy.ndarray
        Of the truncated normal.
    """
    import scipy.special as ss

    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    safe_std = np.where(std > 0, std, 1.0)
    ratio = mean / safe_std
    # Far below zero (beyond 30 std) the truncated normal is an exponential of rate |ratio|/std
    # to double precision, and the Gaussian's tail mass underflows: use that limit there.
    far = ratio < -30.0
    r = np.where(far, -30.0, ratio)
    mass = ss.ndtr(r)  # P(N >= 0), accurate in the lower tail
    hazard = np.exp(-0.5 * r**2 - 0.5 * np.log(2 * np.pi) - ss.log_ndtr(r))
    scale = safe_std / np.maximum(-ratio, 30.0)  # the exponential's mean, where far
    out_mean = np.where(far, scale, mean + safe_std * hazard)
    variance = safe_std**2 * (1.0 - hazard * (hazard + r))
    out_std = np.where(far, scale, np.sqrt(np.maximum(variance, 0.0)))

    def quantile(p: float) -> np.ndarray:
        # upper-tail form: P(X > q) = (1 - p) P(N >= 0) keeps precision when mass is tiny
        gaussian = np.maximum(mean - safe_std * ss.ndtri((1.0 - p) * mass), 0.0)
        return np.where(far, -np.log1p(-p) * scale, gaussian)

    lower, upper = quantile(0.5 - level / 2), quantile(0.5 + level / 2)
    degenerate = ~(std > 0)
    out_mean = np.where(degenerate, np.maximum(mean, 0.0), out_mean)
    out_std = np.where(degenerate, 0.0, out_std)
    lower = np.where(degenerate, out_mean, lower)
    upper = np.where(degenerate, out_mean, upper)
    return out_mean, out_std, lower, upper
