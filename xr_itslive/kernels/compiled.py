"""The CPU engine: the primitives of :mod:`.pipeline`, compiled with numba.

Each primitive works on a block of pixels laid out ``(rows, lanes)`` with the pixel index
innermost, so that every update runs across pixels while a block's band stays in cache.
They release the GIL: :func:`solve_pixels_compiled` runs pixel ranges in threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .pipeline import ROBUST_KINDS, Options, run_pipeline

BLOCK = 16
_JIT = {"nogil": True, "cache": True, "fastmath": {"contract"}}


@numba.njit(**_JIT)
def _load_block(values, weights, use_weights, p0, nb, w, wy, y, counts, active, valid):
    n_pairs, lanes = w.shape
    for b in range(lanes):
        counts[b] = 0
    # pairs outer: reads of a (n_pixels, n_pairs) view of a (mid_date, y, x) cube run along memory
    for i in range(n_pairs):
        for b in range(lanes):
            wi = 0.0
            yi = np.nan
            if b < nb:
                v = values[p0 + b, i]
                if v == v:
                    wi = (weights[p0 + b if weights.shape[0] > 1 else 0, i]) if use_weights else 1.0
                    if wi == wi and wi > 0:
                        yi = v
                        valid[b, counts[b]] = i
                        counts[b] += 1
                    else:
                        wi = 0.0
            w[i, b] = wi
            y[i, b] = yi
            wy[i, b] = wi * yi if wi > 0 else 0.0
        used = False
        for b in range(lanes):
            used = used or w[i, b] > 0
        active[i] = used


@numba.njit(**_JIT)
def _assemble(w, wy, active, gp, gc, gv, gs, rp, rc, rv, rs, n_cells, bandwidth, gram, sweep, rhs):
    # Pairs with no valid observation in the block contribute nothing: skip their terms
    # (a block's pixels often see a small part of a cube's pairs).
    lanes = w.shape[1]
    width = bandwidth + 1
    gram[:, :] = 0.0
    sweep[:, :] = 0.0
    rhs[:, :] = 0.0
    for t in range(gs[0], gs[1]):
        if not active[gp[t]]:
            continue
        for b in range(lanes):
            sweep[gc[t], b] += gv[t] * w[gp[t], b]
    for r in range(n_cells):
        for k in range(bandwidth - 1, -1, -1):
            for b in range(lanes):
                sweep[r * width + k, b] += sweep[r * width + k + 1, b]
    for t in range(gs[1], gs[2]):
        if not active[gp[t]]:
            continue
        for b in range(lanes):
            sweep[gc[t], b] += gv[t] * w[gp[t], b]
    for r in range(1, n_cells):
        for k in range(bandwidth):
            for b in range(lanes):
                sweep[r * width + k, b] += sweep[(r - 1) * width + k + 1, b]
    for t in range(gs[2], gs[3]):
        if not active[gp[t]]:
            continue
        for b in range(lanes):
            gram[gc[t], b] += gv[t] * w[gp[t], b]
    for r in range(n_cells):
        for k in range(1, width):
            for b in range(lanes):
                gram[r * width + k, b] += gram[r * width + k - 1, b]
    for t in range(gs[3], gs[4]):
        if not active[gp[t]]:
            continue
        for b in range(lanes):
            gram[gc[t], b] += gv[t] * w[gp[t], b]
    for s in range(n_cells * width):
        for b in range(lanes):
            gram[s, b] += sweep[s, b]
    for t in range(rs[0], rs[1]):
        if not active[rp[t]]:
            continue
        for b in range(lanes):
            rhs[rc[t], b] += rv[t] * wy[rp[t], b]
    for r in range(1, n_cells):
        for b in range(lanes):
            rhs[r, b] += rhs[r - 1, b]
    for t in range(rs[1], rs[2]):
        if not active[rp[t]]:
            continue
        for b in range(lanes):
            rhs[rc[t], b] += rv[t] * wy[rp[t], b]


@numba.njit(**_JIT)
def _assemble_sparse(
    w, wy, valid, counts, first, last, first_frac, last_frac, inner,
    n_cells, bandwidth, gram, sweep, rhs,
):  # fmt: skip
    """:func:`_assemble` visiting each pixel's valid pairs only (for sparse blocks).

    The same scatter terms, computed from the pair geometry, in two passes: the terms that
    are cumulated along the band first, then those added after (see design.NormalTerms).
    """
    lanes = w.shape[1]
    width = bandwidth + 1
    gram[:, :] = 0.0
    sweep[:, :] = 0.0
    rhs[:, :] = 0.0
    for b in range(lanes):
        for n in range(counts[b]):
            i = valid[b, n]
            wi = w[i, b]
            j0 = first[i]
            span = last[i] - j0
            if span >= 2 and wi != 0.0:
                c = inner[i]
                e0c = first_frac[i] * c * wi
                sweep[(j0 + 1) * width + span - 2, b] += c * c * wi
                gram[j0 * width + 1, b] += e0c
                gram[j0 * width + span, b] -= e0c
                cy = c * wy[i, b]
                rhs[j0 + 1, b] += cy
                rhs[j0 + span, b] -= cy
    for r in range(n_cells):
        for k in range(bandwidth - 1, -1, -1):
            for b in range(lanes):
                sweep[r * width + k, b] += sweep[r * width + k + 1, b]
        for k in range(1, width):
            for b in range(lanes):
                gram[r * width + k, b] += gram[r * width + k - 1, b]
    for r in range(1, n_cells):
        for b in range(lanes):
            rhs[r, b] += rhs[r - 1, b]
    for b in range(lanes):
        for n in range(counts[b]):
            i = valid[b, n]
            wi = w[i, b]
            if wi == 0.0:
                continue
            j0 = first[i]
            j1 = last[i]
            span = j1 - j0
            if span == 0:
                gram[j0 * width, b] += wi
                rhs[j0, b] += wy[i, b]
                continue
            e0 = first_frac[i]
            e1 = last_frac[i]
            if span >= 2:
                ce1 = inner[i] * e1 * wi
                sweep[(j0 + 1) * width + span - 1, b] += ce1
                sweep[j1 * width, b] -= ce1
            gram[j0 * width, b] += e0 * e0 * wi
            gram[j1 * width, b] += e1 * e1 * wi
            gram[j0 * width + span, b] += e0 * e1 * wi
            rhs[j0, b] += e0 * wy[i, b]
            rhs[j1, b] += e1 * wy[i, b]
    for r in range(1, n_cells):
        for k in range(bandwidth):
            for b in range(lanes):
                sweep[r * width + k, b] += sweep[(r - 1) * width + k + 1, b]
    for s in range(n_cells * width):
        for b in range(lanes):
            gram[s, b] += sweep[s, b]


@numba.njit(**_JIT)
def _factor(gram, regularization, lam2, n_cells, bandwidth, rel_tol, factor, singular, column):
    """factor = gram + lam2 * regularization, then banded Cholesky in place."""
    lanes = gram.shape[1]
    width = bandwidth + 1
    for s in range(n_cells * width):
        reg = regularization[s]
        for b in range(lanes):
            factor[s, b] = gram[s, b] + lam2[b] * reg
    tol = np.zeros(lanes)
    inv = np.empty(lanes)
    for j in range(n_cells):
        for b in range(lanes):
            tol[b] = max(tol[b], factor[j * width, b])
    for b in range(lanes):
        tol[b] *= rel_tol
        singular[b] = False
    second = np.zeros((bandwidth + 2, lanes))
    j = 0
    while j < n_cells:
        # Two columns per step: column j, then column j + 1 updated by column j only, then
        # one rank-2 update of the trailing window: every window entry is loaded and stored
        # once per two columns.
        base = j * width
        _pivot_column(factor, base, min(bandwidth, n_cells - 1 - j), tol, singular, inv, column)
        if j + 1 == n_cells:
            break
        kmax = min(bandwidth, n_cells - 1 - j)
        # row j + 1 (its band: columns j+1 .. j+1+kmax-1) minus column j's contribution
        next_base = base + width
        for m in range(kmax):
            for b in range(lanes):
                factor[next_base + m, b] -= column[1, b] * column[1 + m, b]
        kmax2 = min(bandwidth, n_cells - 2 - j)
        _pivot_column(factor, next_base, kmax2, tol, singular, inv, second)
        # column j's entries on rows j+2 .. j+1+kmax2, indexed from j + 1; zero beyond its reach
        for k in range(1, kmax2 + 1):
            for b in range(lanes):
                column[k, b] = column[k + 1, b] if k + 1 <= kmax else 0.0
        for k in range(1, kmax2 + 1):
            start = next_base + k * bandwidth
            for m in range(k, kmax2 + 1):
                for b in range(lanes):
                    factor[start + m, b] -= (
                        column[k, b] * column[m, b] + second[k, b] * second[m, b]
                    )
        j += 2


@numba.njit(**_JIT)
def _pivot_column(factor, base, kmax, tol, singular, inv, column):
    """Pivot of the row at ``base`` and its scaled column (entries 1..kmax) into ``column``."""
    lanes = factor.shape[1]
    for b in range(lanes):
        pivot = factor[base, b]
        if pivot > tol[b]:
            root = np.sqrt(pivot)
        else:
            singular[b] = True
            root = np.inf
        factor[base, b] = root
        inv[b] = 1.0 / root
    for k in range(1, kmax + 1):
        for b in range(lanes):
            value = factor[base + k, b] * inv[b]
            factor[base + k, b] = value
            column[k, b] = value


@numba.njit(**_JIT)
def _solve(factor, rhs, n_cells, bandwidth, x):
    lanes = rhs.shape[1]
    width = bandwidth + 1
    x[:, :] = rhs
    for j in range(n_cells):
        base = j * width
        for b in range(lanes):
            x[j, b] /= factor[base, b]
        kmax = min(bandwidth, n_cells - 1 - j)
        for k in range(1, kmax + 1):
            for b in range(lanes):
                x[j + k, b] -= factor[base + k, b] * x[j, b]
    for j in range(n_cells - 1, -1, -1):
        base = j * width
        kmax = min(bandwidth, n_cells - 1 - j)
        for k in range(1, kmax + 1):
            for b in range(lanes):
                x[j, b] -= factor[base + k, b] * x[j + k, b]
        for b in range(lanes):
            x[j, b] /= factor[base, b]


@numba.njit(**_JIT)
def _predict(x, used, first, last, first_frac, last_frac, inner, prefix, pred):
    n_cells, lanes = x.shape
    for b in range(lanes):
        prefix[0, b] = 0.0
    for j in range(n_cells):
        for b in range(lanes):
            prefix[j + 1, b] = prefix[j, b] + x[j, b]
    for i in used:
        j0 = first[i]
        j1 = last[i]
        e0 = first_frac[i]
        e1 = last_frac[i]
        c = inner[i]
        for b in range(lanes):
            pred[i, b] = e0 * x[j0, b] + e1 * x[j1, b] + c * (prefix[j1, b] - prefix[j0 + 1, b])


@numba.njit(**_JIT)
def _selected_inverse(factor, n_cells, bandwidth, z):
    """Entries of G⁻¹ inside the band (Takahashi recurrences), upper band layout."""
    lanes = factor.shape[1]
    width = bandwidth + 1
    acc = np.empty(lanes)
    for j in range(n_cells - 1, -1, -1):
        base = j * width
        kmax = min(bandwidth, n_cells - 1 - j)
        for i in range(kmax, 0, -1):
            for b in range(lanes):
                acc[b] = 0.0
            for k in range(1, kmax + 1):
                if k >= i:
                    idx = (j + i) * width + (k - i)
                else:
                    idx = (j + k) * width + (i - k)
                for b in range(lanes):
                    acc[b] += z[idx, b] * factor[base + k, b]
            for b in range(lanes):
                z[base + i, b] = -acc[b] / factor[base, b]
        for b in range(lanes):
            acc[b] = 0.0
        for k in range(1, kmax + 1):
            for b in range(lanes):
                acc[b] += z[base + k, b] * factor[base + k, b]
        for b in range(lanes):
            d = factor[base, b]
            z[base, b] = 1.0 / (d * d) - acc[b] / d


@numba.njit(**_JIT)
def _trace_product(z, gram, n_cells, bandwidth, out):
    """Σ (Z ∘ G) over the full symmetric band: trace(G⁻¹ AᵀWA) = effective parameters."""
    lanes = z.shape[1]
    width = bandwidth + 1
    for b in range(lanes):
        out[b] = 0.0
    for r in range(n_cells):
        for k in range(width):
            f = 1.0 if k == 0 else 2.0
            for b in range(lanes):
                out[b] += f * z[r * width + k, b] * gram[r * width + k, b]


@numba.njit(**_JIT)
def _weighted_rss(y, pred, w, used, out):
    lanes = y.shape[1]
    for b in range(lanes):
        out[b] = 0.0
    for i in used:
        for b in range(lanes):
            if w[i, b] > 0:
                r = y[i, b] - pred[i, b]
                out[b] += w[i, b] * r * r


@numba.njit(**_JIT)
def _reweight(y, pred, w0, valid, counts, kind, tuning, w, wy, outlier):
    """IRLS weights from residuals standardized by sqrt(w0) and scaled by 1.4826·MAD.

    Only each pixel's valid pairs (``valid[b, :counts[b]]``) are visited: the other rows
    of ``w``, ``wy`` and ``outlier`` must already be zero.
    """
    n_pairs, lanes = y.shape
    buffer = np.empty(n_pairs)
    for b in range(lanes):
        n = counts[b]
        for m in range(n):
            i = valid[b, m]
            buffer[m] = abs(y[i, b] - pred[i, b]) * np.sqrt(w0[i, b])
        scale = 1.4826 * np.median(buffer[:n]) if n > 0 else 1.0
        if not scale > 0:
            scale = 1e-12
        for m in range(n):
            i = valid[b, m]
            if w0[i, b] > 0:
                u = (y[i, b] - pred[i, b]) * np.sqrt(w0[i, b]) / (tuning * scale)
                au = abs(u)
                if kind == 1:  # Huber
                    factor = 1.0 if au <= 1.0 else 1.0 / au
                else:  # Tukey biweight
                    factor = (1.0 - u * u) ** 2 if au < 1.0 else 0.0
                w[i, b] = w0[i, b] * factor
                wy[i, b] = w[i, b] * y[i, b]
                outlier[i, b] = au > 1.0


class CompiledOps:
    """:mod:`.pipeline` primitives on a block of pixels, through the numba kernels."""

    name = "numba"

    def __init__(
        self, terms, geometry, regularization, n_cells, bandwidth, n_pairs, lanes, rel_tol
    ):
        self.terms = terms
        self.geometry = geometry
        self.regularization = regularization
        self.n_cells = n_cells
        self.bandwidth = bandwidth
        self.rel_tol = rel_tol
        size = n_cells * (bandwidth + 1)
        self.lanes = lanes
        self._sweep = np.empty((size, lanes))
        self._column = np.zeros((bandwidth + 2, lanes))
        self._prefix = np.empty((n_cells + 1, lanes))
        self.n_pairs = n_pairs
        self.active = np.ones(n_pairs, dtype=np.bool_)  # pairs with data in the current block
        self.used = np.arange(n_pairs)  # their indices
        self.valid = np.zeros((lanes, n_pairs), dtype=np.int64)  # each pixel's valid pairs
        self.counts = np.zeros(lanes, dtype=np.int64)
        # Buffers reused across the iterations of a block (the pipeline holds one at a time).
        self._gram = np.empty((size, lanes))
        self._rhs = np.empty((n_cells, lanes))
        self._pred = np.empty((n_pairs, lanes))
        self._w = np.zeros((n_pairs, lanes))
        self._wy = np.zeros((n_pairs, lanes))
        self._outlier = np.zeros((n_pairs, lanes), dtype=np.bool_)
        self._fresh = True

    def start_block(self, counts):
        """A new block was loaded: its valid pairs are in ``valid``, ``active``."""
        self.used = np.flatnonzero(self.active)
        self.counts = counts
        self._fresh = True

    # array helpers used by the pipeline
    xp = np

    def assemble(self, w, wy):
        gram, rhs = self._gram, self._rhs
        if int(self.counts.sum()) < 0.6 * self.n_pairs * self.lanes:
            # Below ~60% valid (pixel, pair) observations, scattering each pixel's valid pairs
            # beats scanning every term across the block's lanes (measured crossover).
            _assemble_sparse(
                w, wy, self.valid, self.counts, *self.geometry,
                self.n_cells, self.bandwidth, gram, self._sweep, rhs,
            )  # fmt: skip
        else:
            _assemble(
                w, wy, self.active, *self.terms, self.n_cells, self.bandwidth,
                gram, self._sweep, rhs,
            )  # fmt: skip
        return gram, rhs

    def factor(self, gram, lam2):
        factor = np.empty_like(gram)
        singular = np.empty(self.lanes, dtype=np.bool_)
        _factor(
            gram, self.regularization, lam2, self.n_cells, self.bandwidth, self.rel_tol,
            factor, singular, self._column,
        )  # fmt: skip
        return factor, singular

    def solve(self, factor, rhs):
        x = np.empty_like(rhs)
        _solve(factor, rhs, self.n_cells, self.bandwidth, x)
        return x

    def predict(self, x):
        # Only the block's pairs with data are predicted; the other rows are never read.
        _predict(x, self.used, *self.geometry, self._prefix, self._pred)
        return self._pred

    def selected_inverse(self, factor):
        z = np.empty_like(factor)
        _selected_inverse(factor, self.n_cells, self.bandwidth, z)
        return z

    def trace_product(self, z, gram):
        out = np.empty(self.lanes)
        _trace_product(z, gram, self.n_cells, self.bandwidth, out)
        return out

    def weighted_rss(self, y, pred, w):
        out = np.empty(self.lanes)
        _weighted_rss(y, pred, w, self.used, out)
        return out

    def reweight(self, y, pred, w0, kind, tuning):
        w, wy, outlier = self._w, self._wy, self._outlier
        if self._fresh:  # rows without data stay zero for the whole block
            w[:, :] = 0.0
            wy[:, :] = 0.0
            outlier[:, :] = False
            self._fresh = False
        _reweight(y, pred, w0, self.valid, self.counts, ROBUST_KINDS[kind], tuning, w, wy, outlier)
        return w, wy, outlier


def solve_pixels_compiled(
    values: np.ndarray,
    weights: np.ndarray | None,
    terms: tuple,
    geometry: tuple,
    regularization: np.ndarray,
    n_cells: int,
    bandwidth: int,
    options: Options,
    threads: int = 1,
    rel_tol: float = 1e-11,
) -> dict[str, np.ndarray]:
    """Solve every pixel of ``values`` (``(n_pixels, n_pairs)``, pixels first).

    Returns a dict of arrays with pixels first: ``solution`` ``(n_pixels, n_cells)``,
    ``n_obs``, and, as ``options`` ask, ``std``, ``lam``, ``outlier`` ``(n_pixels, n_pairs)``.
    Pixels with fewer than ``options.min_obs`` observations or a singular system are NaN.
    """
    n_pixels, n_pairs = values.shape
    use_weights = weights is not None
    if weights is None:
        weights = np.ones((1, 1))
    else:
        weights = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float64)
        if weights.shape[0] not in (1, n_pixels) or weights.shape[1] != n_pairs:
            raise ValueError(
                f"weights of shape {weights.shape} do not match values {values.shape}; "
                "pass (n_pixels, n_pairs) or (1, n_pairs)"
            )
    regularization = np.ascontiguousarray(regularization, dtype=np.float64).ravel()
    out = {
        "solution": np.empty((n_pixels, n_cells)),
        "n_obs": np.zeros(n_pixels, dtype=np.int64),
    }
    if options.uncertainty:
        out["std"] = np.empty((n_pixels, n_cells))
    if options.auto_lam:
        out["lam"] = np.empty(n_pixels)
    if options.robust:
        out["outlier"] = np.zeros((n_pixels, n_pairs), dtype=np.bool_)

    def run(start: int, stop: int) -> None:
        ops = CompiledOps(
            terms, geometry, regularization, n_cells, bandwidth, n_pairs, BLOCK, rel_tol
        )
        w0 = np.empty((n_pairs, BLOCK))
        wy0 = np.empty((n_pairs, BLOCK))
        y = np.empty((n_pairs, BLOCK))
        counts = np.empty(BLOCK, dtype=np.int64)
        for p0 in range(start, stop, BLOCK):
            nb = min(BLOCK, stop - p0)
            _load_block(
                values, weights, use_weights, p0, nb, w0, wy0, y, counts, ops.active, ops.valid
            )
            ops.start_block(counts)
            block = run_pipeline(ops, y, w0, wy0, counts, options)
            sl = slice(p0, p0 + nb)
            out["solution"][sl] = block["solution"][:, :nb].T
            out["n_obs"][sl] = counts[:nb]
            for key in ("std", "lam"):
                if key in out:
                    out[key][sl] = block[key][..., :nb].T
            if "outlier" in out:
                out["outlier"][sl] = block["outlier"][:, :nb].T

    if threads <= 1 or n_pixels <= BLOCK:
        run(0, n_pixels)
    else:
        edges = np.linspace(0, n_pixels, threads + 1)
        edges = np.unique(np.minimum(np.ceil(edges / BLOCK) * BLOCK, n_pixels).astype(int))
        edges = np.unique(np.concatenate([[0], edges]))
        with ThreadPoolExecutor(len(edges) - 1) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return out
