"""The CPU engine: the same algorithm as :mod:`.banded`, compiled with numba.

Pixels are processed in blocks of ``BLOCK`` with the pixel index innermost, so that the
compiler vectorizes every update across pixels (SIMD) while a block's band stays in cache.
Functions release the GIL: the caller runs several pixel ranges in threads.
"""

from __future__ import annotations

import numba
import numpy as np

BLOCK = 16


@numba.njit(nogil=True, cache=True, fastmath={"contract"})
def _solve_range(
    values,  # (n_pixels, n_pairs) float32/64, NaN missing
    weights,  # (n_pixels, n_pairs) float64 or (1, n_pairs)
    use_weights,
    gp,
    gc,
    gv,
    gs,
    rp,
    rc,
    rv,
    rs,
    regularization,  # (n_cells * width,)
    n_cells,
    bandwidth,
    min_obs,
    rel_tol,
    pixel_start,
    pixel_stop,
    solution,  # (n_pixels, n_cells) float64, written
    n_obs,  # (n_pixels,) int64, written
):
    width = bandwidth + 1
    size = n_cells * width
    n_pairs = values.shape[1]
    w = np.empty((n_pairs, BLOCK))
    wy = np.empty((n_pairs, BLOCK))
    gram = np.empty((size, BLOCK))
    sweep = np.empty((size, BLOCK))
    rhs = np.empty((n_cells, BLOCK))
    lanes = w.shape[1]  # a runtime trip count: LLVM vectorizes it with alias checks
    tmp = np.empty(BLOCK)
    counts = np.zeros(BLOCK, dtype=np.int64)
    column = np.empty((bandwidth + 1, BLOCK))
    tol = np.empty(BLOCK)
    singular = np.empty(BLOCK, dtype=np.bool_)
    for p0 in range(pixel_start, pixel_stop, BLOCK):
        nb = min(BLOCK, pixel_stop - p0)
        # weights and weighted values, pairs × block; pairs outer so that reads of a
        # (n_pixels, n_pairs) view of a (mid_date, y, x) cube run along memory.
        for b in range(BLOCK):
            counts[b] = 0
        for i in range(n_pairs):
            for b in range(BLOCK):
                wi = 0.0
                yi = 0.0
                if b < nb:
                    y = values[p0 + b, i]
                    if y == y:
                        wi = weights[p0 + b if weights.shape[0] > 1 else 0, i] if use_weights else 1.0
                        if wi == wi and wi > 0:
                            yi = wi * y
                            counts[b] += 1
                        else:
                            wi = 0.0
                w[i, b] = wi
                wy[i, b] = yi
        for b in range(nb):
            n_obs[p0 + b] = counts[b]
        gram[:, :] = 0.0
        sweep[:, :] = 0.0
        rhs[:, :] = 0.0
        # kind 0 into sweep, reverse cumulative sum along the band
        for t in range(gs[0], gs[1]):
            for b in range(lanes):
                sweep[gc[t], b] += gv[t] * w[gp[t], b]
        for r in range(n_cells):
            for k in range(bandwidth - 1, -1, -1):
                for b in range(lanes):
                    sweep[r * width + k, b] += sweep[r * width + k + 1, b]
        # kind 1 into sweep, then the diagonal sweep
        for t in range(gs[1], gs[2]):
            for b in range(lanes):
                sweep[gc[t], b] += gv[t] * w[gp[t], b]
        for r in range(1, n_cells):
            for k in range(bandwidth):
                for b in range(lanes):
                    sweep[r * width + k, b] += sweep[(r - 1) * width + k + 1, b]
        # kind 2 into gram, cumulated along the band; kind 3 direct
        for t in range(gs[2], gs[3]):
            for b in range(lanes):
                gram[gc[t], b] += gv[t] * w[gp[t], b]
        for r in range(n_cells):
            for k in range(1, width):
                for b in range(lanes):
                    gram[r * width + k, b] += gram[r * width + k - 1, b]
        for t in range(gs[3], gs[4]):
            for b in range(lanes):
                gram[gc[t], b] += gv[t] * w[gp[t], b]
        for s in range(size):
            reg = regularization[s]
            for b in range(lanes):
                gram[s, b] += sweep[s, b] + reg
        # right-hand side
        for t in range(rs[0], rs[1]):
            for b in range(lanes):
                rhs[rc[t], b] += rv[t] * wy[rp[t], b]
        for r in range(1, n_cells):
            for b in range(lanes):
                rhs[r, b] += rhs[r - 1, b]
        for t in range(rs[1], rs[2]):
            for b in range(lanes):
                rhs[rc[t], b] += rv[t] * wy[rp[t], b]
        # banded Cholesky, in place
        for b in range(lanes):
            tol[b] = 0.0
            singular[b] = False
        for j in range(n_cells):
            for b in range(lanes):
                tol[b] = max(tol[b], gram[j * width, b])
        for b in range(lanes):
            tol[b] *= rel_tol
        for j in range(n_cells):
            base = j * width
            for b in range(lanes):
                pivot = gram[base, b]
                if pivot > tol[b]:
                    root = np.sqrt(pivot)
                else:
                    singular[b] = True
                    root = np.inf
                gram[base, b] = root
                tmp[b] = 1.0 / root
            kmax = min(bandwidth, n_cells - 1 - j)
            for k in range(1, kmax + 1):
                for b in range(lanes):
                    value = gram[base + k, b] * tmp[b]
                    gram[base + k, b] = value
                    column[k, b] = value
            # A separate column buffer: no aliasing, so the update vectorizes across pixels.
            for k in range(1, kmax + 1):
                start = base + k * bandwidth
                for m in range(k, kmax + 1):
                    for b in range(lanes):
                        gram[start + m, b] -= column[k, b] * column[m, b]
        # forward and back substitution
        for j in range(n_cells):
            base = j * width
            for b in range(lanes):
                rhs[j, b] /= gram[base, b]
            kmax = min(bandwidth, n_cells - 1 - j)
            for k in range(1, kmax + 1):
                for b in range(lanes):
                    rhs[j + k, b] -= gram[base + k, b] * rhs[j, b]
        for j in range(n_cells - 1, -1, -1):
            base = j * width
            kmax = min(bandwidth, n_cells - 1 - j)
            for k in range(1, kmax + 1):
                for b in range(lanes):
                    rhs[j, b] -= gram[base + k, b] * rhs[j + k, b]
            for b in range(lanes):
                rhs[j, b] /= gram[base, b]
        for b in range(nb):
            bad = singular[b] or n_obs[p0 + b] < min_obs
            for j in range(n_cells):
                solution[p0 + b, j] = np.nan if bad else rhs[j, b]


def solve_pixels_compiled(
    values: np.ndarray,
    weights: np.ndarray | None,
    terms: tuple,
    regularization: np.ndarray,
    n_cells: int,
    bandwidth: int,
    min_obs: int,
    threads: int = 1,
    rel_tol: float = 1e-11,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve every pixel of ``values`` (``(n_pixels, n_pairs)``, pixels first).

    Returns ``(solution (n_pixels, n_cells), n_obs (n_pixels,))``; NaN rows for pixels
    with fewer than ``min_obs`` observations or a singular system.
    """
    n_pixels = values.shape[0]
    solution = np.empty((n_pixels, n_cells))
    n_obs = np.zeros(n_pixels, dtype=np.int64)
    use_weights = weights is not None
    if weights is None:
        weights = np.ones((1, 1))
    else:
        weights = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float64)
        if weights.shape[0] not in (1, n_pixels) or weights.shape[1] != values.shape[1]:
            raise ValueError(
                f"weights of shape {weights.shape} do not match values {values.shape}; "
                "pass (n_pixels, n_pairs) or (1, n_pairs)"
            )
    regularization = np.ascontiguousarray(regularization, dtype=np.float64).ravel()
    args = (*terms, regularization, n_cells, bandwidth, min_obs, rel_tol)

    def run(start, stop):
        _solve_range(values, weights, use_weights, *args, start, stop, solution, n_obs)

    if threads <= 1 or n_pixels <= BLOCK:
        run(0, n_pixels)
    else:
        from concurrent.futures import ThreadPoolExecutor

        edges = np.linspace(0, n_pixels, threads + 1).astype(int)
        edges = np.unique((edges + BLOCK - 1) // BLOCK * BLOCK)
        edges[-1] = n_pixels
        edges = np.unique(np.concatenate([[0], np.minimum(edges, n_pixels)]))
        with ThreadPoolExecutor(len(edges) - 1) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return solution, n_obs
