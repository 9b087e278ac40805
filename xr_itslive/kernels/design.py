"""The date-span matrix on cells, the smoothness regularizer and the scatter tables.

Arrays only. On a grid of ``n_cells`` regular cells, row ``i`` of the date-span matrix holds
the fraction of interval ``i`` inside each cell: exact overlaps, so rows sum to one. An
interval is given in cell units ``[u1, u2]``; :func:`interval_fractions` is the one place
that turns it into a row (used by the inversion's pair geometry and by the GP). The
regularizer is ``lam * Δ^d / step**d`` (d-th forward difference), so that ``lam`` keeps its
meaning when ``step`` changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp


def interval_fractions(
    u1: np.ndarray, u2: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the date-span matrix for intervals ``[u1, u2]`` in cell units.

    Parameters
    ----------
    u1, u2
        Interval ends in cell units (``0 <= u1 < u2 <= n_cells``).
    n_cells
        Number of cells.

    Returns
    -------
    tuple of numpy.ndarray
        ``(first_cell, last_cell, first_frac, last_frac, inner)``: row ``i`` is ``first_frac``
        at ``first_cell``, ``inner`` on the cells strictly between and ``last_frac`` at
        ``last_cell`` (a single 1.0 when the interval lies inside one cell).
    """
    length = u2 - u1
    first = np.minimum(np.floor(u1).astype(np.int64), n_cells - 1)
    last = np.clip(np.ceil(u2).astype(np.int64) - 1, first, n_cells - 1)
    single = first == last
    with np.errstate(divide="ignore", invalid="ignore"):
        first_frac = np.where(single, 1.0, (first + 1 - u1) / length)
        last_frac = np.where(single, 0.0, (u2 - last) / length)
        inner = np.where(single, 0.0, 1.0 / length)
    return first, last, first_frac, last_frac, inner


def date_span_matrix(rows: tuple[np.ndarray, ...], n_cells: int) -> sp.csr_array:
    """The sparse date-span matrix (intervals × cells) of the rows of :func:`interval_fractions`."""
    first_cell, last_cell, first_frac, last_frac, inner = rows
    n_rows = int(first_cell.size)
    lengths = last_cell - first_cell + 1
    rows_index = np.repeat(np.arange(n_rows), lengths)
    starts = np.repeat(first_cell, lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = starts + offsets
    values = np.repeat(inner, lengths)
    first_positions = np.cumsum(lengths) - lengths
    values[first_positions] = first_frac
    multi = lengths > 1
    values[(np.cumsum(lengths) - 1)[multi]] = last_frac[multi]
    return sp.csr_array((values, (rows_index, cols)), shape=(n_rows, n_cells))


def difference_operator(n_cells: int, derivative: int) -> sp.csr_array:
    """The d-th forward difference, ``(n_cells - d) × n_cells``."""
    if derivative == 1:
        stencil = [-1.0, 1.0]
    else:
        stencil = [1.0, -2.0, 1.0]
    rows = max(n_cells - derivative, 0)
    diagonals = [np.full(rows, c) for c in stencil]
    return sp.diags_array(
        diagonals, offsets=list(range(derivative + 1)), shape=(rows, n_cells)
    ).tocsr()


def regularization_matrix(n_cells: int, derivative: int, lam: float, step: float) -> sp.csr_array:
    """``lam² (Δ^d)ᵀ Δ^d / step^(2d)``, the smoothness term of the normal equations."""
    diff = difference_operator(n_cells, derivative) * (lam / step**derivative)
    return (diff.T @ diff).tocsr()


def to_upper_band(matrix: sp.sparray, bandwidth: int) -> np.ndarray:
    """Upper band storage ``band[j, k] = matrix[j, j + k]`` of a symmetric banded matrix."""
    n = matrix.shape[0]
    band = np.zeros((n, bandwidth + 1))
    coo = sp.coo_array(matrix)
    upper = (coo.col >= coo.row) & (coo.col - coo.row <= bandwidth)
    np.add.at(band, (coo.row[upper], coo.col[upper] - coo.row[upper]), coo.data[upper])
    return band


@dataclass(frozen=True)
class NormalTerms:
    """Scatter tables from which the kernels assemble ``AᵀWA`` and ``AᵀWy`` for any weights.

    ``AᵀWA`` (upper band, ``n_cells × (bandwidth + 1)``) is built from four accumulators, each
    filled by ``acc[cell] += coef * w[pair]`` and then finished:

    * ``DIAGONAL_SWEEP_POINTS`` (kind 0): reverse cumulative sum along the band, then the
      diagonal sweep ``T[r, k] += T[r - 1, k + 1]``: the constant interior block of each pair;
    * ``DIAGONAL_SWEEP`` (kind 1): the diagonal sweep only: the last cell × interior column;
    * ``ROW_CUMSUM`` (kind 2): cumulative sum along the band: the first cell × interior row;
    * ``DIRECT`` (kind 3): the corner entries.

    So assembly costs O(pairs + cells × bandwidth) per pixel instead of O(Σ span²).
    ``AᵀWy`` has two kinds: cumulative sum along cells (kind 0) and direct (kind 1).
    Within a kind, terms are sorted by cell.
    """

    n_cells: int
    bandwidth: int
    gram_pair: np.ndarray
    gram_cell: np.ndarray  # flat index r * (bandwidth + 1) + k
    gram_coef: np.ndarray
    gram_kind_starts: np.ndarray  # 5 offsets into the term arrays
    rhs_pair: np.ndarray
    rhs_cell: np.ndarray
    rhs_coef: np.ndarray
    rhs_kind_starts: np.ndarray  # 3 offsets


def normal_terms(rows: tuple[np.ndarray, ...], n_cells: int, bandwidth: int) -> NormalTerms:
    """Build the scatter tables of :class:`NormalTerms` for the rows of
    :func:`interval_fractions` (``bandwidth``: at least the longest row's span)."""
    bw = bandwidth
    width = bw + 1
    j0, j1, e0, e1, c = rows
    pair = np.arange(j0.size)
    span = j1 - j0
    multi = span >= 1
    wide = span >= 2

    def flat(r, k):
        return r * width + k

    gram = [
        # kind 0: interior block c² on [j0+1, j1-1]², a point at (A, B - A)
        [(pair[wide], flat(j0[wide] + 1, span[wide] - 2), c[wide] ** 2)],
        # kind 1: column j1 against the interior rows, swept along the anti-diagonal
        [
            (pair[wide], flat(j0[wide] + 1, span[wide] - 1), c[wide] * e1[wide]),
            (pair[wide], flat(j1[wide], 0), -c[wide] * e1[wide]),
        ],
        # kind 2: row j0 against the interior columns, cumulated along the band
        [
            (pair[wide], flat(j0[wide], 1), e0[wide] * c[wide]),
            (pair[wide], flat(j0[wide], span[wide]), -e0[wide] * c[wide]),
        ],
        # kind 3: corners, and pairs inside one cell
        [
            (pair[multi], flat(j0[multi], 0), e0[multi] ** 2),
            (pair[multi], flat(j1[multi], 0), e1[multi] ** 2),
            (pair[multi], flat(j0[multi], span[multi]), e0[multi] * e1[multi]),
            (pair[~multi], flat(j0[~multi], 0), np.ones((~multi).sum())),
        ],
    ]
    rhs = [
        [
            (pair[wide], j0[wide] + 1, c[wide]),
            (pair[wide], j1[wide], -c[wide]),
        ],
        [
            (pair[multi], j0[multi], e0[multi]),
            (pair[multi], j1[multi], e1[multi]),
            (pair[~multi], j0[~multi], np.ones((~multi).sum())),
        ],
    ]

    def pack(kinds):
        pairs, cells, coefs, starts = [], [], [], [0]
        for parts in kinds:
            p = np.concatenate([part[0] for part in parts]).astype(np.int64)
            r = np.concatenate([part[1] for part in parts]).astype(np.int64)
            v = np.concatenate([part[2] for part in parts]).astype(np.float64)
            order = np.argsort(r, kind="stable")
            pairs.append(p[order])
            cells.append(r[order])
            coefs.append(v[order])
            starts.append(starts[-1] + r.size)
        return (
            np.concatenate(pairs),
            np.concatenate(cells),
            np.concatenate(coefs),
            np.asarray(starts, dtype=np.int64),
        )

    gp, gc, gv, gs = pack(gram)
    rp, rc, rv, rs = pack(rhs)
    return NormalTerms(
        n_cells=n_cells,
        bandwidth=bw,
        gram_pair=gp,
        gram_cell=gc,
        gram_coef=gv,
        gram_kind_starts=gs,
        rhs_pair=rp,
        rhs_cell=rc,
        rhs_coef=rv,
        rhs_kind_starts=rs,
    )
