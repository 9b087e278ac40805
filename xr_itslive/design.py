"""The time grid, the date-span design matrix and the smoothness regularizer.

Each ITS_LIVE observation is the mean velocity between two acquisition dates. On a grid of
regular cells of ``step`` days, row ``i`` of the date-span matrix holds the fraction of pair
``i``'s interval inside each cell: exact overlaps, so rows sum to one. The regularizer is
``lam * Δ^d / step**d`` (d-th forward difference), so that ``lam`` keeps its meaning when
``step`` changes: with d = 2 it penalizes curvature in velocity per day².
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .errors import EmptySelectionError, InvalidParameterError

_NS_PER_DAY = 86400 * 10**9


def _to_datetime64(value) -> np.datetime64:
    try:
        return np.datetime64(value, "ns")
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"could not read {value!r} as a date; pass an ISO date such as '2015-01-01' "
            "or a numpy.datetime64"
        ) from err


def check_parameters(step: float, lam: float, derivative: int) -> None:
    """Raise a clear error for a step, lambda or derivative order out of range."""
    if not np.isfinite(step) or step <= 0:
        raise InvalidParameterError(
            f"step must be a positive number of days, got step={step!r}; e.g. step=12"
        )
    if not np.isfinite(lam) or lam < 0:
        raise InvalidParameterError(
            f"lam must be a finite number >= 0, got lam={lam!r}; e.g. lam=10.0 "
            "(0 turns the smoothness term off)"
        )
    if derivative not in (1, 2):
        raise InvalidParameterError(
            f"derivative must be 1 (penalize changes) or 2 (penalize curvature), "
            f"got derivative={derivative!r}"
        )


@dataclass(frozen=True)
class TimeGrid:
    """Regular cells of ``step`` days starting at ``start``."""

    start: np.datetime64
    step: float
    n_cells: int

    @property
    def edges(self) -> np.ndarray:
        offsets = np.round(np.arange(self.n_cells + 1) * self.step * _NS_PER_DAY)
        return self.start + offsets.astype("timedelta64[ns]")

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return edges[:-1] + (edges[1:] - edges[:-1]) / 2

    @property
    def end(self) -> np.datetime64:
        return self.edges[-1]

    def days(self, dates: np.ndarray) -> np.ndarray:
        """Dates as float days since the grid's start."""
        delta = np.asarray(dates, dtype="datetime64[ns]") - self.start
        return delta.astype("int64") / _NS_PER_DAY


def time_grid(img1: np.ndarray, img2: np.ndarray, step: float, start=None, end=None) -> TimeGrid:
    """The regular grid covering the pairs, or ``start``..``end`` when given."""
    img1 = np.asarray(img1, dtype="datetime64[ns]")
    img2 = np.asarray(img2, dtype="datetime64[ns]")
    valid = img2 > img1
    if not valid.any():
        raise EmptySelectionError(
            "no image pair has acquisition_date_img2 > acquisition_date_img1; "
            "check the cube's acquisition dates"
        )
    first = (
        _to_datetime64(start) if start is not None else img1[valid].min().astype("datetime64[D]")
    )
    last = _to_datetime64(end) if end is not None else img2[valid].max()
    first = np.datetime64(first, "ns")
    if last <= first:
        raise InvalidParameterError(
            f"start must be before end, got start={np.datetime_as_string(first, 'D')} and "
            f"end={np.datetime_as_string(last, 'D')}; swap them or widen the window"
        )
    span_days = (last - first).astype("int64") / _NS_PER_DAY
    n_cells = max(1, int(np.ceil(span_days / step - 1e-9)))
    return TimeGrid(start=first, step=float(step), n_cells=n_cells)


@dataclass(frozen=True)
class PairGeometry:
    """Where each kept pair's interval falls on the grid.

    Row ``i`` of the date-span matrix is ``first_frac`` at ``first_cell``, ``inner`` on the
    cells strictly between, and ``last_frac`` at ``last_cell`` (a single 1.0 when the pair
    lies inside one cell).
    """

    grid: TimeGrid
    kept: np.ndarray  # bool over the cube's mid_date
    first_cell: np.ndarray
    last_cell: np.ndarray
    first_frac: np.ndarray
    last_frac: np.ndarray
    inner: np.ndarray
    bandwidth: int = field(default=0)

    @property
    def n_pairs(self) -> int:
        return int(self.first_cell.size)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(first_cell, last_cell, first_frac, last_frac, inner)``: what the kernels take."""
        return (self.first_cell, self.last_cell, self.first_frac, self.last_frac, self.inner)


def pair_geometry(
    img1: np.ndarray,
    img2: np.ndarray,
    step: float,
    start=None,
    end=None,
    derivative: int = 2,
) -> PairGeometry:
    """Locate every pair on the grid; drop reversed pairs (with a warning) and pairs outside."""
    img1 = np.asarray(img1, dtype="datetime64[ns]")
    img2 = np.asarray(img2, dtype="datetime64[ns]")
    grid = time_grid(img1, img2, step, start, end)
    reversed_pairs = ~(img2 > img1)
    if reversed_pairs.any():
        warnings.warn(
            f"{int(reversed_pairs.sum())} pairs have acquisition_date_img2 <= "
            "acquisition_date_img1 (or a missing date) and are dropped",
            UserWarning,
            stacklevel=3,
        )
    u1 = grid.days(img1) / grid.step
    u2 = grid.days(img2) / grid.step
    inside = ~reversed_pairs & (u1 >= -1e-9) & (grid.days(img2) <= grid.days(grid.end) + 1e-9)
    if end is not None:
        inside &= img2 <= _to_datetime64(end)
    if not inside.any():
        raise EmptySelectionError(
            f"no image pair lies inside {np.datetime_as_string(grid.start, 'D')}.."
            f"{np.datetime_as_string(grid.end, 'D')} (pairs span "
            f"{np.datetime_as_string(img1[~reversed_pairs].min(), 'D')}.."
            f"{np.datetime_as_string(img2[~reversed_pairs].max(), 'D')}); widen start/end"
        )
    u1 = np.clip(u1[inside], 0.0, None)
    u2 = np.minimum(u2[inside], grid.n_cells)
    length = u2 - u1
    first = np.floor(u1).astype(np.int64)
    last = np.maximum(np.ceil(u2).astype(np.int64) - 1, first)
    first = np.minimum(first, grid.n_cells - 1)
    last = np.minimum(last, grid.n_cells - 1)
    single = first == last
    with np.errstate(divide="ignore", invalid="ignore"):
        first_frac = np.where(single, 1.0, (first + 1 - u1) / length)
        last_frac = np.where(single, 0.0, (u2 - last) / length)
        inner = np.where(single, 0.0, 1.0 / length)
    span = int((last - first).max()) if last.size else 0
    return PairGeometry(
        grid=grid,
        kept=inside,
        first_cell=first,
        last_cell=last,
        first_frac=first_frac,
        last_frac=last_frac,
        inner=inner,
        bandwidth=max(span, derivative),
    )


def date_span_matrix(geometry: PairGeometry) -> sp.csr_array:
    """The sparse date-span matrix (kept pairs × cells): the fraction of each pair in each cell."""
    lengths = geometry.last_cell - geometry.first_cell + 1
    rows = np.repeat(np.arange(geometry.n_pairs), lengths)
    starts = np.repeat(geometry.first_cell, lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = starts + offsets
    values = np.repeat(geometry.inner, lengths)
    first_positions = np.cumsum(lengths) - lengths
    values[first_positions] = geometry.first_frac
    multi = lengths > 1
    values[(np.cumsum(lengths) - 1)[multi]] = geometry.last_frac[multi]
    shape = (geometry.n_pairs, geometry.grid.n_cells)
    return sp.csr_array((values, (rows, cols)), shape=shape)


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


def normal_terms(geometry: PairGeometry) -> NormalTerms:
    """Build the scatter tables of :class:`NormalTerms` for a pair geometry."""
    bw = geometry.bandwidth
    width = bw + 1
    pair = np.arange(geometry.n_pairs)
    j0, j1 = geometry.first_cell, geometry.last_cell
    e0, e1, c = geometry.first_frac, geometry.last_frac, geometry.inner
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
        n_cells=geometry.grid.n_cells,
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
