"""Namespace-generic kernels (numpy, cupy, array-API): pixels on the last axis.

Layout: the upper band of each pixel's normal matrix is stored as ``band[r * (bw + 1) + k, p]
= G_p[r, r + k]``, pixels last so that every operation runs across pixels (contiguous on the
CPU, coalesced on the GPU). The Python loops run over cells and band offsets, never over
pixels.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .namespace import get_namespace

# Kinds of scatter terms (see xr_itslive.kernels.design.NormalTerms).
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
        rhs_kind_starts)`` from :func:`xr_itslive.kernels.design.normal_terms`, as arrays of the
        namespace of ``weights`` (starts as Python ints).
    n_cells, bandwidth
        The number of cells of the series and the band's width (offsets ``0..bandwidth``).

    Returns
    -------
    gram, rhs
        ``(n_cells * (bandwidth + 1), n_pixels)`` with ``gram[j * (bandwidth + 1) + k, p] =
        G_p[j, j + k]``, and ``(n_cells, n_pixels)``.
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

    Parameters
    ----------
    band
        ``(n_cells * (bandwidth + 1), n_pixels)``: the upper band of each pixel's symmetric
        matrix, ``band[j * (bandwidth + 1) + k, p] = G_p[j, j + k]``; overwritten.
    n_cells, bandwidth
        The matrix's size and bandwidth.
    rel_tol
        A pivot at or below ``rel_tol`` times the pixel's largest diagonal entry makes it
        singular.

    Returns
    -------
    factor, singular
        ``band`` holding the factor, and ``(n_pixels,)`` booleans.
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
    """Solve ``L Lᵀ x = rhs`` for every pixel from :func:`banded_cholesky`'s factor.

    Parameters
    ----------
    factor
        ``(n_cells * (bandwidth + 1), n_pixels)`` from :func:`banded_cholesky`.
    rhs
        ``(n_cells, n_pixels)``; not modified.
    n_cells, bandwidth
        The factor's size and bandwidth.

    Returns
    -------
    array
        ``(n_cells, n_pixels)``: ``x``.
    """
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


def predict_pairs(x, first, last, first_frac, last_frac, inner):
    """Mean of each pixel's series over each pair: ``A @ x`` via prefix sums, (pairs, lanes).

    Parameters
    ----------
    x
        ``(n_cells, lanes)``: the series, one cell a row.
    first, last
        ``(n_pairs,)`` integer arrays: each pair's first and last cell.
    first_frac, last_frac
        ``(n_pairs,)``: the weights of the pair's first and last (partial) cells in its mean.
    inner
        ``(n_pairs,)``: the weight of each cell strictly between them (``1 / length``).

    Returns
    -------
    array
        ``(n_pairs, lanes)``.
    """
    xp = get_namespace(x)
    prefix = xp.concat([xp.zeros((1, x.shape[1]), dtype=x.dtype), _cumsum(xp, x, 0)])
    interior = xp.take(prefix, last, axis=0) - xp.take(prefix, first + 1, axis=0)
    return (
        first_frac[:, None] * xp.take(x, first, axis=0)
        + last_frac[:, None] * xp.take(x, last, axis=0)
        + inner[:, None] * interior
    )


def selected_inverse(factor, n_cells: int, bandwidth: int, width: int | None = None):
    """The band of ``G⁻¹`` up to offset ``width`` from the banded Cholesky factor, per lane.

    The one Takahashi selected inverse of the array kernels: the inversion's posterior
    variances and GCV (``width`` = the bandwidth) and the GP's interval variances (a wider
    band) both use it.

    Parameters
    ----------
    factor
        ``(n_cells * (bandwidth + 1), lanes)`` with ``factor[j * (bw + 1) + k, p] =
        L_p[j + k, j]`` (:func:`banded_cholesky`'s layout; LAPACK's lower storage, transposed
        and flattened).
    n_cells, bandwidth
        The factor's size and bandwidth.
    width
        Largest offset wanted (default and minimum: ``bandwidth``).

    Returns
    -------
    array
        ``(n_cells * (width + 1), lanes)`` with ``out[j * (width + 1) + d, p] =
        G_p⁻¹[j, j + d]`` (zero beyond the matrix).

    Notes
    -----
    Takahashi's recursion ``Σ[j, i] = (δ_ij / L_jj - Σ_k L_kj Σ[k, i]) / L_jj`` from the last
    row up, keeping a dense ``(width + 1)²`` window per lane: ``O(n · width · bandwidth)``
    work, one Python step per cell, never a dense inverse.
    """
    xp = get_namespace(factor)
    width = bandwidth if width is None else max(int(width), bandwidth)
    pad = width + 1
    lanes = factor.shape[1]
    # lanes first inside, so that each step is one batched matrix product (BLAS on the host)
    lower = xp.permute_dims(xp.reshape(factor, (n_cells, bandwidth + 1, lanes)), (2, 0, 1))
    window = xp.zeros((lanes, pad, pad), dtype=factor.dtype)  # Σ[j + a, j + b] per lane
    out = xp.zeros((lanes, n_cells, pad), dtype=factor.dtype)
    for j in range(n_cells - 1, -1, -1):
        # window held Σ[j+1 : j+1+pad, j+1 : j+1+pad]: shift it down by one
        shifted = xp.zeros((lanes, pad, pad), dtype=factor.dtype)
        shifted[:, 1:, 1:] = window[:, :-1, :-1]
        window = shifted
        diagonal = lower[:, j, 0]
        kmax = min(bandwidth, n_cells - 1 - j)
        if kmax:
            column = lower[:, j, 1 : 1 + kmax]  # L[j+1 : j+1+kmax, j]
            # Σ[j, j+1 : j+1+width] = -(column · Σ[j+1 : j+1+kmax, j+1 : j+1+width]) / L_jj
            row = xp.matmul(column[:, None, :], window[:, 1 : 1 + kmax, 1:])[:, 0, :]
            row = -row / diagonal[:, None]
            window[:, 0, 1:] = row
            window[:, 1:, 0] = row
            acc = xp.sum(column * row[:, :kmax], axis=1)
            window[:, 0, 0] = (1.0 / diagonal - acc) / diagonal
        else:
            window[:, 0, 0] = 1.0 / (diagonal * diagonal)
        out[:, j, :] = window[:, 0, :]
    return xp.reshape(xp.permute_dims(out, (1, 2, 0)), (n_cells * pad, lanes))


def regularization_width(regularization, n_cells: int, bandwidth: int) -> int:
    """The largest band offset at which the regularization has entries (its derivative
    order): the only offsets the fused assembly adds it to and :func:`penalty_trace` reads.

    Parameters
    ----------
    regularization
        ``(n_cells * (bandwidth + 1),)``: the band of ``R``, upper band layout.
    n_cells, bandwidth
        The band's size and bandwidth.

    Returns
    -------
    int
    """
    xp = get_namespace(regularization)
    used = xp.any(xp.reshape(regularization != 0, (n_cells, bandwidth + 1)), axis=0)
    offsets = xp.nonzero(used)[0]
    return int(xp.max(offsets)) if offsets.shape[0] else 0


def penalty_trace(z, regularization, lam2, n_cells: int, bandwidth: int, reg_width: int):
    """``lam2 · Σ (Z ∘ R)`` over the full symmetric band of ``R`` (``reg_width + 1`` wide),
    per lane: ``trace(G⁻¹ lam2 R)``.

    Parameters
    ----------
    z
        ``(n_cells * (bandwidth + 1), lanes)``: the band of ``G⁻¹`` (:func:`selected_inverse`).
    regularization
        ``(n_cells * (bandwidth + 1),)``: the band of ``R`` for ``lam = 1``.
    lam2
        ``(lanes,)``: each lane's ``lam²``.
    n_cells, bandwidth
        The band's size and bandwidth.
    reg_width
        The largest offset at which ``R`` has entries.

    Returns
    -------
    array
        ``(lanes,)``.
    """
    xp = get_namespace(z)
    width = bandwidth + 1
    used = reg_width + 1
    band = xp.reshape(z, (n_cells, width, z.shape[1]))[:, :used, :]
    weights = xp.reshape(regularization, (n_cells, width))[:, :used]
    product = band * weights[:, :, None]
    return lam2 * (2.0 * xp.sum(product, axis=(0, 1)) - xp.sum(product[:, 0, :], axis=0))


def reweight(y, pred, w0, kind: str, tuning: float):
    """IRLS weights (Huber or Tukey) on residuals standardized by sqrt(w0), scaled by 1.4826·MAD."""
    xp = get_namespace(y)
    valid = w0 > 0
    standardized = xp.where(valid, (y - pred) * xp.sqrt(w0), 0.0)
    magnitude = xp.where(valid, xp.abs(standardized), xp.inf)
    ordered = xp.sort(magnitude, axis=0)
    count = xp.sum(xp.astype(valid, xp.int64), axis=0)
    low = xp.clip((count - 1) // 2, 0, None)
    high = xp.clip(count // 2, 0, None)
    median = 0.5 * (
        xp.take_along_axis(ordered, low[None, :], axis=0)
        + xp.take_along_axis(ordered, high[None, :], axis=0)
    )
    scale = 1.4826 * median
    scale = xp.where((count > 0) & (scale > 0) & (scale < xp.inf), scale, 1e-12)
    u = standardized / (tuning * scale)
    au = xp.abs(u)
    if kind == "huber":
        factor = xp.where(au <= 1.0, 1.0, 1.0 / xp.maximum(au, 1.0))
    else:
        factor = xp.where(au < 1.0, (1.0 - u * u) ** 2, 0.0)
    w = xp.where(valid, w0 * factor, 0.0)
    wy = xp.where(valid, w * y, 0.0)
    return w, wy, valid & (au > 1.0)


class ArrayOps:
    """:mod:`.pipeline` primitives for all pixels of a chunk in one array namespace.

    Each method is one step of :func:`~xr_itslive.kernels.pipeline.run_pipeline` on arrays of
    ``(…, lanes)``, pixels on the last axis; the numba engine's ``CompiledOps`` has the same
    methods.

    Parameters
    ----------
    xp
        The array namespace (numpy, cupy, ``array_api_strict``, ...).
    terms
        Scatter tables (see :func:`assemble_normal_equations`).
    geometry
        ``(first_cell, last_cell, first_frac, last_frac, inner)`` of every pair (see
        :func:`predict_pairs`).
    regularization
        ``(n_cells * (bandwidth + 1),)``: the upper band of the smoothness term for
        ``lam = 1``.
    n_cells, bandwidth
        The series' number of cells and the normal matrix's bandwidth.
    rel_tol
        The pivot tolerance of :func:`banded_cholesky`.
    """

    name = "array"

    def __init__(self, xp, terms, geometry, regularization, n_cells, bandwidth, rel_tol=1e-11):
        self.xp = xp
        self.terms = terms
        self.geometry = geometry
        self.regularization = regularization  # (size,)
        self.reg_width = regularization_width(regularization, n_cells, bandwidth)
        self.n_cells = n_cells
        self.bandwidth = bandwidth
        self.rel_tol = rel_tol

    def assemble(self, w, wy):
        """``AᵀWA`` and ``AᵀWy`` (:func:`assemble_normal_equations`).

        Parameters
        ----------
        w, wy
            ``(n_pairs, lanes)``: the weights (0 where missing) and weights times values.
        """
        return assemble_normal_equations(w, wy, self.terms, self.n_cells, self.bandwidth)

    def factor(self, gram, lam2):
        """The factor of ``gram + lam2 R`` and the singular lanes (:func:`banded_cholesky`).

        Parameters
        ----------
        gram
            ``(n_cells * (bandwidth + 1), lanes)``: ``AᵀWA``; not modified.
        lam2
            ``(lanes,)``: each lane's ``lam²``.
        """
        band = gram + self.regularization[:, None] * lam2[None, :]
        return banded_cholesky(band, self.n_cells, self.bandwidth, self.rel_tol)

    def solve(self, factor, rhs):
        """``x`` from the factor (:func:`banded_solve`).

        Parameters
        ----------
        factor
            From :meth:`factor`.
        rhs
            ``(n_cells, lanes)``: ``AᵀWy``.
        """
        return banded_solve(factor, rhs, self.n_cells, self.bandwidth)

    def predict(self, x):
        """Each pair's mean of the series (:func:`predict_pairs`).

        Parameters
        ----------
        x
            ``(n_cells, lanes)``.
        """
        return predict_pairs(x, *self.geometry)

    def selected_inverse(self, factor):
        """The band of ``G⁻¹`` (:func:`selected_inverse`).

        Parameters
        ----------
        factor
            From :meth:`factor`.
        """
        return selected_inverse(factor, self.n_cells, self.bandwidth)

    def penalty_trace(self, z, lam2):
        """``trace(G⁻¹ lam2 R)`` per lane (:func:`penalty_trace`).

        Parameters
        ----------
        z
            From :meth:`selected_inverse`.
        lam2
            ``(lanes,)``: each lane's ``lam²``.
        """
        return penalty_trace(
            z, self.regularization, lam2, self.n_cells, self.bandwidth, self.reg_width
        )

    def weighted_rss(self, y, pred, w):
        """``Σ w (y - pred)²`` over the pairs with a weight, per lane.

        Parameters
        ----------
        y, pred, w
            ``(n_pairs, lanes)``: values (NaN where missing), predictions and weights.
        """
        xp = self.xp
        residual = xp.where(w > 0, y - pred, 0.0)
        return xp.sum(w * residual * residual, axis=0)

    def reweight(self, y, pred, w0, kind, tuning):
        """IRLS weights, weights times values and outlier flags (:func:`reweight`).

        Parameters
        ----------
        y, pred, w0
            ``(n_pairs, lanes)``: values, predictions and the initial weights.
        kind
            ``"huber"`` or ``"tukey"``.
        tuning
            The tuning constant, in units of the robust scale.
        """
        return reweight(y, pred, w0, kind, tuning)


def solve_pixels(
    values, weights, terms, geometry, regularization, n_cells: int, bandwidth: int, options
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
    geometry
        ``(first_cell, last_cell, first_frac, last_frac, inner)`` of every pair.
    regularization
        ``(n_cells * (bandwidth + 1),)`` upper band of the smoothness term for ``lam = 1``.
    n_cells, bandwidth
        The series' number of cells and the normal matrix's bandwidth.
    options
        :class:`.pipeline.Options`.

    Returns
    -------
    dict
        ``solution`` ``(n_cells, n_pixels)``, ``n_obs``, and as asked ``std``, ``lam``,
        ``outlier`` ``(n_pairs, n_pixels)``.
    """
    from .pipeline import run_pipeline

    xp = get_namespace(values)
    values = xp.astype(values, xp.float64)
    valid = ~xp.isnan(values)
    w = xp.astype(valid, xp.float64)
    if weights is not None:
        weights = xp.astype(weights, xp.float64)
        w = xp.where(valid & (weights > 0), w * weights, 0.0)
    usable = w > 0
    y = xp.where(usable, values, xp.nan)
    wy = xp.where(usable, w * values, 0.0)
    n_obs = xp.sum(xp.astype(usable, xp.int64), axis=0)
    ops = ArrayOps(xp, terms, geometry, xp.reshape(regularization, (-1,)), n_cells, bandwidth)
    result = run_pipeline(ops, y, w, wy, n_obs, options)
    result["n_obs"] = n_obs
    return result
