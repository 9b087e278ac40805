"""The inversion of a batch of pixels, written once over a small set of primitives.

``ops`` supplies the primitives for one backend: :class:`.compiled.CompiledOps` (numba,
blocks of pixels on the CPU) or :class:`.banded.ArrayOps` (numpy, cupy or any array-API
namespace, all pixels of a chunk at once). Arrays are ``(rows, lanes)``: one lane a pixel.
A backend may also offer fused primitives, used where present: ``assemble_factor(w, wy,
lam2)`` (``factor(*assemble(w, wy), lam2)`` in one pass, for fits whose normal matrix is
not needed afterwards) and ``reweight_fit(y, x, w0, kind, tuning)`` (``reweight`` from the
fit ``x`` itself, without its predictions in memory).

Steps: weighted least squares; optional robust reweighting (IRLS with Huber or Tukey
weights on residuals standardized by the prior weights and scaled by 1.4826·MAD); optional
choice of λ per pixel by generalized cross-validation; optional posterior standard
deviations ``sqrt(diag(G⁻¹) · σ̂²)`` from the selected inverse, ``σ̂² = RSS_w / (n - edf)``
with ``edf = trace(G⁻¹ AᵀWA) = n_cells - trace(G⁻¹ λ²R)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

ROBUST_KINDS = {"huber": 1, "tukey": 2}
#: Fewest residual degrees of freedom (pairs minus the fit's effective parameters) from which
#: the noise scale, and so ``*_std``, is estimated; below it ``*_std`` is NaN.
MIN_RESIDUAL_DOF = 1.0
DEFAULT_TUNING = {"huber": 1.345, "tukey": 4.685}


@dataclass(frozen=True)
class Options:
    """What to compute for every pixel (shared by all pixels of a cube).

    Parameters
    ----------
    min_obs
        Fewest pairs with a weight for a pixel to be solved.
    lams
        The smoothness weight, or several candidates from which GCV picks one per pixel.
    robust
        ``None``, ``"huber"`` or ``"tukey"``: the IRLS reweighting.
    iterations
        Reweightings after the first fit (with ``robust``).
    tuning
        The reweighting's tuning constant (default: 1.345 Huber, 4.685 Tukey).
    uncertainty
        Compute each cell's standard deviation.
    outliers
        With ``robust``, return the outlier flags.
    """

    min_obs: int = 5
    lams: tuple[float, ...] = (10.0,)
    robust: str | None = None
    iterations: int = 2
    tuning: float | None = None
    uncertainty: bool = False
    #: with ``robust``, return the (n_pixels, n_pairs) outlier flags (a chunk-sized array that
    #: the inversion builds only when the caller keeps it: ``return_outliers``)
    outliers: bool = True

    @property
    def auto_lam(self) -> bool:
        return len(self.lams) > 1

    @property
    def initial_lam(self) -> float:
        if not self.auto_lam:
            return self.lams[0]
        positive = [lam for lam in self.lams if lam > 0]
        return math.exp(sum(map(math.log, positive)) / len(positive)) if positive else 0.0

    @property
    def robust_tuning(self) -> float:
        return self.tuning if self.tuning is not None else DEFAULT_TUNING[self.robust]


def run_pipeline(ops: Any, y: Any, w0: Any, wy0: Any, counts: Any, options: Options) -> dict:
    """Solve one batch; returns ``solution`` (cells, lanes) and the optional outputs.

    Parameters
    ----------
    ops
        The engine's primitives (:class:`~xr_itslive.kernels.banded.ArrayOps` or the numba
        engine's), built for this batch's pairs.
    y, w0, wy0
        ``(n_pairs, lanes)``: values (NaN where missing), initial weights (0 where missing)
        and weights times values.
    counts
        ``(lanes,)``: each pixel's number of pairs with a weight.
    options
        What to compute.

    Returns
    -------
    dict
        ``solution`` and, as ``options`` ask, ``std``, ``lam`` and ``outlier``.
    """
    xp = ops.xp
    lanes = y.shape[1]
    n = xp.astype(xp.asarray(counts), xp.float64)

    def full(value: float) -> Any:
        return xp.full((lanes,), value, dtype=xp.float64)

    # GCV refactorizes the normal matrix of the last fit with each candidate λ; every other
    # fit only needs the factor, which a backend may build in one pass (``assemble_factor``:
    # the matrix factorized in place while it is assembled). The effective parameters need
    # no normal matrix: with G = AᵀWA + λ²R, trace(G⁻¹ AᵀWA) = n_cells - trace(G⁻¹ λ²R), and
    # R's band is as narrow as the derivative order (``ops.penalty_trace``).
    keep_gram = options.auto_lam
    fused = getattr(ops, "assemble_factor", None)
    reweight_fit = getattr(ops, "reweight_fit", None)

    def fit(w: Any, wy: Any, last: bool) -> tuple:
        if fused is not None and not (last and keep_gram):
            factor, singular, rhs = fused(w, wy, lam2)
            gram = None
        else:
            gram, rhs = ops.assemble(w, wy)
            factor, singular = ops.factor(gram, lam2)
        return gram, rhs, factor, singular, ops.solve(factor, rhs)

    w, wy = w0, wy0
    lam2 = full(options.initial_lam**2)
    n_fits = 1 + (options.iterations if options.robust else 0)
    gram, rhs, factor, singular, x = fit(w, wy, n_fits == 1)
    result: dict[str, Any] = {}

    if options.robust:
        for k in range(options.iterations):
            if reweight_fit is not None:  # the predictions made where they are used
                w, wy, outlier = reweight_fit(y, x, w0, options.robust, options.robust_tuning)
            else:
                w, wy, outlier = ops.reweight(
                    y, ops.predict(x), w0, options.robust, options.robust_tuning
                )
            gram, rhs, factor, singular, x = fit(w, wy, k == options.iterations - 1)
        result["outlier"] = outlier

    inverse = None
    if options.auto_lam:
        best = full(math.inf)
        chosen = full(math.nan)
        for lam in options.lams:
            trial, trial_singular = ops.factor(gram, full(lam**2))
            trial_x = ops.solve(trial, rhs)
            rss = ops.weighted_rss(y, ops.predict(trial_x), w)
            trial_inverse = ops.selected_inverse(trial)
            dof = n - (x.shape[0] - ops.penalty_trace(trial_inverse, full(lam**2)))
            safe = xp.where(dof > 0.5, dof, 1.0)
            gcv = xp.where(dof > 0.5, n * rss / (safe * safe), math.inf)
            better = (gcv < best) & ~trial_singular
            best = xp.where(better, gcv, best)
            chosen = xp.where(better, lam, chosen)
            x = xp.where(better[None, :], trial_x, x)
            factor = xp.where(better[None, :], trial, factor)
            inverse = (
                trial_inverse
                if inverse is None
                else xp.where(better[None, :], trial_inverse, inverse)
            )
        singular = ~(best < math.inf)
        result["lam"] = chosen

    if options.uncertainty:
        if inverse is None:
            inverse = ops.selected_inverse(factor)
        # (with GCV, each lane's chosen λ; NaN where none was, and such lanes are unsolved)
        penalty = lam2 if not options.auto_lam else chosen * chosen
        edf = x.shape[0] - ops.penalty_trace(inverse, penalty)
        rss = ops.weighted_rss(y, ops.predict(x), w)
        # The noise scale comes from the residuals; a fit that leaves less than one residual
        # degree of freedom (it interpolates its few pairs) has no residuals to estimate it
        # from: NaN, never the tiny number rss / (n - edf) would give.
        residual_dof = n - edf
        sigma2 = xp.where(
            residual_dof >= MIN_RESIDUAL_DOF, rss / xp.maximum(residual_dof, 1.0), math.nan
        )
        width = inverse.shape[0] // x.shape[0]
        variance = inverse[::width, :] * sigma2[None, :]
        result["std"] = xp.sqrt(xp.maximum(variance, 0.0))

    unsolved = singular | (n < options.min_obs)
    nan = xp.asarray(math.nan, dtype=xp.float64)
    result["solution"] = xp.where(unsolved[None, :], nan, x)
    if "std" in result:
        result["std"] = xp.where(unsolved[None, :], nan, result["std"])
    if "lam" in result:
        result["lam"] = xp.where(unsolved, nan, result["lam"])
    return result
