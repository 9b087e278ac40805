"""The CPU engine: the primitives of :mod:`.pipeline`, compiled with numba.

Each primitive works on a block of pixels laid out ``(rows, lanes)`` with the pixel index
innermost, so that every update runs across pixels while a block's band stays in cache.
They release the GIL: :func:`solve_pixels_compiled` runs pixel ranges in threads.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from .banded import regularization_width
from .pipeline import MIN_RESIDUAL_DOF, ROBUST_KINDS, Options, run_pipeline

BLOCK = 16
_JIT = {"nogil": True, "cache": True, "fastmath": {"contract"}}
# kernels called only from other kernels: no CPython wrapper to build (compile time)
_INNER = {**_JIT, "no_cpython_wrapper": True}
COLD_CACHE_NOTICE = (
    "xr_itslive: compiling the numba kernels once (a few seconds); later runs load them "
    "from the cache"
)
_logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------- lanes
# A row of a block, BLOCK contiguous float64, as one LLVM vector value (two zmm or four ymm
# registers). numba's loop vectorizer serves loops this short badly: each `for b in
# range(lanes)` pays run-time alias checks that cost more than its 16 lanes of work, several
# arrays in one loop exceed what it will check, and a constant trip count is unrolled to
# scalar code before it vectorizes. The hot kernels (factorization, substitution, assembly)
# therefore load, combine and store whole rows explicitly: multipliers stay in registers
# and nothing is checked at run time. Offsets are in elements of the flat, C-ordered array
# and are not bounds-checked.
_LANES_IR = ir.VectorType(ir.DoubleType(), BLOCK)


class _LanesType(types.Type):
    def __init__(self) -> None:
        super().__init__(name=f"Lanes{BLOCK}")


_lanes = _LanesType()


@register_model(_LanesType)
class _LanesModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _LANES_IR)


def _is_flat_float64(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.float64 and array.layout == "C"


def _lanes_pointer(context, builder, array_type, array, offset):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), _LANES_IR.as_pointer())


@intrinsic
def _row(typingctx, array, offset):
    """``array.flat[offset : offset + BLOCK]`` as a lanes value."""
    if not _is_flat_float64(array):
        return None
    sig = _lanes(array, types.intp)

    def codegen(context, builder, sig, args):
        return builder.load(_lanes_pointer(context, builder, sig.args[0], *args), align=8)

    return sig, codegen


@intrinsic
def _put(typingctx, array, offset, value):
    """``array.flat[offset : offset + BLOCK] = value``."""
    if not _is_flat_float64(array) or value is not _lanes:
        return None
    sig = types.void(array, types.intp, _lanes)

    def codegen(context, builder, sig, args):
        pointer = _lanes_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], pointer, align=8)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _axpy(typingctx, array, offset, alpha, value):
    """``array.flat[offset : offset + BLOCK] += alpha * value`` (one rounding where the CPU
    fuses multiply-adds, as ``fastmath={"contract"}`` lets the scalar loops do)."""
    if not _is_flat_float64(array) or value is not _lanes:
        return None
    sig = types.void(array, types.intp, types.float64, _lanes)

    def codegen(context, builder, sig, args):
        pointer = _lanes_pointer(context, builder, sig.args[0], args[0], args[1])
        old = builder.load(pointer, align=8)
        scale = _splat(builder, args[2])
        product = builder.fmul(scale, args[3], flags=("contract",))
        builder.store(builder.fadd(old, product, flags=("contract",)), pointer, align=8)
        return context.get_dummy_value()

    return sig, codegen


def _vector_intrinsic(builder, name):
    """LLVM's ``llvm.<name>`` of a lanes value (llvmlite cannot name vector overloads)."""
    function_type = ir.FunctionType(_LANES_IR, [_LANES_IR])
    return cgutils.get_or_insert_function(builder.module, function_type, f"llvm.{name}.v{BLOCK}f64")


def _splat(builder, scalar):
    one = builder.insert_element(ir.Constant(_LANES_IR, ir.Undefined), scalar, ir.IntType(32)(0))
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), BLOCK), [0] * BLOCK)
    return builder.shuffle_vector(one, ir.Constant(_LANES_IR, ir.Undefined), zeros)


@intrinsic
def _fill(typingctx, scalar):
    """A lanes value with ``scalar`` in every lane."""
    sig = _lanes(types.float64)

    def codegen(context, builder, sig, args):
        return _splat(builder, args[0])

    return sig, codegen


def _lanes_binary(operation: str):
    @intrinsic
    def binary(typingctx, a, b):
        if a is not _lanes or b is not _lanes:
            return None
        sig = _lanes(_lanes, _lanes)

        def codegen(context, builder, sig, args):
            return getattr(builder, operation)(args[0], args[1], flags=("contract",))

        return sig, codegen

    return binary


_plus = _lanes_binary("fadd")
_minus = _lanes_binary("fsub")
_times = _lanes_binary("fmul")
_over = _lanes_binary("fdiv")


@intrinsic
def _widen(typingctx, array, offset):
    """``array.flat[offset : offset + BLOCK]`` (float32 or float64) as a float64 lanes value."""
    if not (
        isinstance(array, types.Array)
        and array.dtype in (types.float32, types.float64)
        and array.layout == "C"
    ):
        return None
    sig = _lanes(array, types.intp)
    single = array.dtype == types.float32

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        element = ir.FloatType() if single else ir.DoubleType()
        vector = ir.VectorType(element, BLOCK)
        pointer = builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer())
        value = builder.load(pointer, align=4 if single else 8)
        return builder.fpext(value, _LANES_IR) if single else value

    return sig, codegen


@intrinsic
def _any_valid(typingctx, value):
    """Whether any lane of ``value`` is not NaN."""
    if value is not _lanes:
        return None
    sig = types.boolean(_lanes)

    def codegen(context, builder, sig, args):
        valid = builder.fcmp_ordered("ord", args[0], args[0])
        mask = builder.bitcast(valid, ir.IntType(BLOCK))
        return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(BLOCK), 0))

    return sig, codegen


@intrinsic
def _where_valid(typingctx, value, other):
    """``other`` where ``value`` is not NaN, else 0."""
    if value is not _lanes or other is not _lanes:
        return None
    sig = _lanes(_lanes, _lanes)

    def codegen(context, builder, sig, args):
        valid = builder.fcmp_ordered("ord", args[0], args[0])
        return builder.select(valid, args[1], ir.Constant(_LANES_IR, [0.0] * BLOCK))

    return sig, codegen


@intrinsic
def _absolute(typingctx, value):
    if value is not _lanes:
        return None
    sig = _lanes(_lanes)

    def codegen(context, builder, sig, args):
        return builder.call(_vector_intrinsic(builder, "fabs"), [args[0]])

    return sig, codegen


@intrinsic
def _root(typingctx, value):
    if value is not _lanes:
        return None
    sig = _lanes(_lanes)

    def codegen(context, builder, sig, args):
        return builder.call(_vector_intrinsic(builder, "sqrt"), [args[0]])

    return sig, codegen


@intrinsic
def _larger(typingctx, a, b):
    """Lane-wise ``a if a > b else b`` (``b`` where ``a`` is NaN), like ``max(a, b)``."""
    if a is not _lanes or b is not _lanes:
        return None
    sig = _lanes(_lanes, _lanes)

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])

    return sig, codegen


@intrinsic
def _pivot_root(typingctx, pivot):
    """Lane-wise ``sqrt(pivot)`` where ``pivot > 0``, else ``inf`` (a column of zeros)."""
    if pivot is not _lanes:
        return None
    sig = _lanes(_lanes)

    def codegen(context, builder, sig, args):
        positive = builder.fcmp_ordered(">", args[0], ir.Constant(_LANES_IR, [0.0] * BLOCK))
        root = builder.call(_vector_intrinsic(builder, "sqrt"), [args[0]])
        return builder.select(positive, root, ir.Constant(_LANES_IR, [math.inf] * BLOCK))

    return sig, codegen


@intrinsic
def _lowest_pivot(typingctx, pivot, lowest):
    """Lane-wise ``lowest`` where ``pivot > lowest``, else ``pivot`` (``-inf`` for NaN: a NaN
    pivot is always singular)."""
    if pivot is not _lanes or lowest is not _lanes:
        return None
    sig = _lanes(_lanes, _lanes)

    def codegen(context, builder, sig, args):
        pivot, lowest = args
        below = builder.select(
            builder.fcmp_ordered("ord", pivot, pivot),
            pivot,
            ir.Constant(_LANES_IR, [-math.inf] * BLOCK),
        )
        return builder.select(builder.fcmp_ordered(">", pivot, lowest), lowest, below)

    return sig, codegen


@intrinsic
def _put_outliers(typingctx, array, offset, size, prior):
    """``array.flat[offset : offset + BLOCK] = (size > 1) & (prior > 0)`` (a bool array)."""
    if not (isinstance(array, types.Array) and array.dtype == types.boolean) or array.layout != "C":
        return None
    if size is not _lanes or prior is not _lanes:
        return None
    sig = types.void(array, types.intp, _lanes, _lanes)

    def codegen(context, builder, sig, args):
        one = ir.Constant(_LANES_IR, [1.0] * BLOCK)
        zero = ir.Constant(_LANES_IR, [0.0] * BLOCK)
        flags = builder.and_(
            builder.fcmp_ordered(">", args[2], one), builder.fcmp_ordered(">", args[3], zero)
        )
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        vector = ir.VectorType(ir.IntType(8), BLOCK)
        pointer = builder.bitcast(builder.gep(data, [args[1]]), vector.as_pointer())
        builder.store(builder.zext(flags, vector), pointer, align=1)
        return context.get_dummy_value()

    return sig, codegen


# --------------------------------------------------------------------------- kernels
@numba.njit(**_JIT)
def _count_valid(values, pairs_first, fill, counts):
    """Add each pixel's values that are not NaN to ``counts``; whether any value is ±inf or
    equal to ``fill``.

    ``values`` as for :func:`_load_block`: ``(n_pairs, n_pixels)`` with ``pairs_first``, else
    ``(n_pixels, n_pairs)``; one pass in memory order.
    """
    bad = False
    if pairs_first:
        for i in range(values.shape[0]):
            for p in range(values.shape[1]):
                v = values[i, p]
                counts[p] += v == v
                bad |= (abs(v) == np.inf) | (v == fill)
    else:
        for p in range(values.shape[0]):
            n = 0
            for i in range(values.shape[1]):
                v = values[p, i]
                n += v == v
                bad |= (abs(v) == np.inf) | (v == fill)
            counts[p] += n
    return bad


def _in_memory_order(values: np.ndarray) -> tuple[np.ndarray, bool]:
    """``values`` (``(n_pixels, n_pairs)``) as the kernels read it, and whether pairs first.

    A (mid_date, pixel) chunk (what dask hands over, transposed) is read in place: for each
    pair a block's pixels are contiguous. Any other layout is made pixels-first.
    """
    if values.ndim == 2 and values.T.flags.c_contiguous and values.shape[1] > 1:
        return values.T, True
    return np.ascontiguousarray(values), False


def count_valid(values: np.ndarray, fill: float = np.nan) -> tuple[np.ndarray, bool]:
    """Per pixel, the observations that are not NaN, and whether any value is ±inf or
    ``fill`` (values the caller must not take as data).

    One pass over ``values`` in its memory order, without temporaries: what
    :func:`solve_pixels_compiled` needs to know before it solves.

    Parameters
    ----------
    values : numpy.ndarray
        ``(n_pixels, n_pairs)``, float32 or float64, in any memory layout.
    fill : float, optional
        A fill value that undecoded data would hold (ITS_LIVE's -32767); NaN: none.

    Returns
    -------
    counts : numpy.ndarray
        ``(n_pixels,)`` int64.
    untrusted : bool
        Whether any value is infinite or equal to ``fill``.
    """
    source, pairs_first = _in_memory_order(values)
    counts = np.zeros(values.shape[0], dtype=np.int64)
    untrusted = _count_valid(source, pairs_first, float(fill), counts)
    return counts, bool(untrusted)


@numba.njit(**_JIT)
def _load_block(
    values, pairs_first, weights, use_weights, pixels, p0, nb, order, seen, rows, y, w0, wy0,
    counts,
):  # fmt: skip
    """Load pixels ``pixels[p0 .. p0 + nb]`` into the block's rows: one row per pair with data.

    ``values`` is ``(n_pairs, n_pixels)`` with ``pairs_first`` (a ``(mid_date, pixel)``
    chunk read in place: a block's pixels are contiguous for every pair), else
    ``(n_pixels, n_pairs)``. Row ``u`` holds pair ``rows[u]``, rows in the order of ``order``
    (pairs sorted by first cell, as :func:`_assemble` needs); pairs without a value in the
    block get no row. Missing observations (and non-positive or NaN weights) get weight 0
    and value 0. Weights with a row per pixel are indexed by pixel too. Returns the number of
    rows.
    """
    lanes = BLOCK
    n_pairs = values.shape[0] if pairs_first else values.shape[1]
    per_pixel = weights.shape[0] > 1
    # a whole block of neighbouring pixels of a pixels-innermost chunk with per-pair weights
    # (the common case): every pair's lanes are one vector load
    base = pixels[p0]
    whole = pairs_first and nb == lanes and not per_pixel and pixels[p0 + nb - 1] - base == nb - 1
    width = values.shape[1]
    if whole:
        for i in range(n_pairs):
            seen[i] = _any_valid(_widen(values, i * width + base))
    elif pairs_first:
        for i in range(n_pairs):
            hit = False
            for b in range(nb):
                v = values[i, pixels[p0 + b]]
                hit |= v == v
            seen[i] = hit
    else:  # pairs outer, in memory order of a (pixel, pair) array
        for i in range(n_pairs):
            hit = False
            for b in range(nb):
                v = values[pixels[p0 + b], i]
                hit |= v == v
            seen[i] = hit
    u = 0
    for k in range(n_pairs):
        i = order[k]
        if seen[i]:
            rows[u] = i
            u += 1
    if whole:
        zero = _fill(0.0)
        total = zero
        for m in range(u):
            i = rows[m]
            wi = weights[0, i] if use_weights else 1.0
            v = _widen(values, i * width + base)
            if wi > 0:
                wm = _where_valid(v, _fill(wi))
                ym = _where_valid(v, v)
                total = _plus(total, _where_valid(v, _fill(1.0)))
            else:
                wm = zero
                ym = zero
            _put(w0, m * lanes, wm)
            _put(y, m * lanes, ym)
            _put(wy0, m * lanes, _times(wm, ym))
        tally = np.empty(lanes)
        _put(tally, 0, total)
        for b in range(lanes):
            counts[b] = np.int64(tally[b])
        return u
    for b in range(lanes):
        counts[b] = 0
    for m in range(u):
        i = rows[m]
        for b in range(nb):  # branch-free: a missing value or weight gives weight 0
            pixel = pixels[p0 + b]
            v = np.float64(values[i, pixel] if pairs_first else values[pixel, i])
            wi = weights[pixel if per_pixel else 0, i] if use_weights else 1.0
            ok = (v == v) & (wi > 0)  # False for NaN
            w0[m, b] = wi if ok else 0.0
            y[m, b] = v if ok else 0.0
            counts[b] += ok
        for b in range(nb, lanes):
            w0[m, b] = 0.0
            y[m, b] = 0.0
        for b in range(lanes):
            wy0[m, b] = w0[m, b] * y[m, b]
    return u


@numba.njit(**_INNER)
def _finish_row(r, bandwidth, mask, gpre, spre, rpre, dprev, racc, gram, rhs):
    """Band row ``r`` (and ``rhs[r]``) from the scatter terms in ring slot ``r & mask``,
    which is zeroed for reuse; ``dprev`` carries the diagonal sums from row ``r - 1``."""
    lanes = BLOCK
    width = bandwidth + 1
    pw = bandwidth + 2
    base = (r & mask) * pw * lanes
    out = r * width * lanes
    slot = (r & mask) * lanes
    zero = _fill(0.0)
    # backward sums along the row (s_k), and the diagonal sums d_k = s_k + d_{k+1} of the
    # previous row: descending k, the previous row's d_{k+1} carried in a register; each
    # scatter slot is zeroed for reuse as it is read
    total = zero
    carry = _row(dprev, width * lanes)
    for k in range(bandwidth, -1, -1):
        total = _plus(_row(spre, base + k * lanes), total)
        _put(spre, base + k * lanes, zero)
        previous = _row(dprev, k * lanes)
        _put(dprev, k * lanes, _plus(total, carry))
        carry = previous
    _put(spre, base + (bandwidth + 1) * lanes, zero)
    total = zero
    for k in range(width):  # forward sums along the row
        total = _plus(_row(gpre, base + k * lanes), total)
        _put(gpre, base + k * lanes, zero)
        _put(gram, out + k * lanes, _plus(total, _row(dprev, k * lanes)))
    _put(gpre, base + (bandwidth + 1) * lanes, zero)
    total = _plus(_row(racc, 0), _row(rpre, slot))
    _put(racc, 0, total)
    _put(rhs, r * lanes, total)
    _put(rpre, slot, zero)


@numba.njit(**_JIT)
def _assemble(
    w, wy, first, last, first_frac, last_frac, inner, n_cells, bandwidth,
    gpre, spre, rpre, dprev, gram, rhs,
    fused, lam2, regularization, reg_width, panel, min_pivot, max_diagonal,
):  # fmt: skip
    """Upper band of ``AᵀWA`` and ``AᵀWy`` for the block's rows (sorted by first cell).

    With ``fused``, ``gram`` receives ``AᵀWA + lam2 * regularization`` (whose band is
    ``reg_width + 1`` wide) and is factorized in place while it is assembled: each step of
    :func:`_factor_step` runs as soon as the rows it reaches are complete, a band's width
    behind the assembly, so a row is assembled, updated and factorized while it is in cache
    instead of passing through memory three times. ``min_pivot`` and ``max_diagonal`` then
    hold what :func:`_flag_singular` needs.

    ``first`` .. ``inner``: the geometry of each row's pair (:meth:`CompiledOps.start_block`).

    Each pair scatters a few terms per lane whose cumulative sums are its outer product
    (the runs of its row of A: first cell, inner cells, last cell): ``gpre`` is summed along
    each band row, ``spre`` backwards along each band row and then down the band's
    diagonals (the inner × inner triangles), ``rpre`` down the cells. A pair starting at
    cell ``j0`` only touches rows ``j0 .. j0 + bandwidth + 1``, so rows before ``j0`` are
    complete when it comes: they are turned into the band (:func:`_finish_row`) and their
    ring slots reused. ``gpre``, ``spre``: ``(ring * (bandwidth + 2), lanes)``, ``rpre``:
    ``(ring, lanes)``, ``ring`` a power of two >= ``bandwidth + 2``; zero on entry and exit.
    """
    lanes = BLOCK
    n_used = w.shape[0]
    pw = bandwidth + 2
    mask = rpre.shape[0] - 1
    zero = _fill(0.0)
    for k in range(bandwidth + 2):
        _put(dprev, k * lanes, zero)
    racc = np.zeros(lanes)
    scale = _row(lam2, 0)
    width = bandwidth + 1
    # (np.int64: a plain 0 would make numba compile the callees once more for a literal 0)
    done = np.int64(0)
    factored = np.int64(0)  # columns factorized (fused)
    for u in range(n_used + 1):
        j0 = first[u] if u < n_used else n_cells
        while done < j0:
            _finish_row(done, bandwidth, mask, gpre, spre, rpre, dprev, racc, gram, rhs)
            if fused:
                for k in range(min(reg_width, bandwidth) + 1):
                    at = (done * width + k) * lanes
                    extra = _times(scale, _fill(regularization[done * width + k]))
                    _put(gram, at, _plus(_row(gram, at), extra))
                for b in range(lanes):
                    max_diagonal[b] = max(max_diagonal[b], gram[done * width, b])
            done += 1
            # a step reaches the rows up to j + PANEL - 1 + bandwidth: run it once they are done
            while fused and factored < n_cells:
                if min(factored + PANEL - 1 + bandwidth, n_cells - 1) >= done:
                    break
                factored += _factor_step(
                    gram, factored, n_cells, bandwidth, panel, min_pivot, fused, rhs
                )
        if u == n_used:
            break
        j1 = last[u]
        span = j1 - j0
        # flat offsets of the ring rows the pair touches
        g0 = (j0 & mask) * pw * lanes
        g1 = (j1 & mask) * pw * lanes
        r0 = (j0 & mask) * lanes
        r1 = ((j0 + 1) & mask) * lanes
        r2 = (j1 & mask) * lanes
        r3 = ((j1 + 1) & mask) * lanes
        wu = _row(w, u * lanes)
        wyu = _row(wy, u * lanes)
        if span == 0:
            _axpy(gpre, g0, 1.0, wu)
            _axpy(gpre, g0 + lanes, -1.0, wu)
            _axpy(rpre, r0, 1.0, wyu)
            _axpy(rpre, r1, -1.0, wyu)
            continue
        e0 = first_frac[u]
        e1 = last_frac[u]
        a00 = e0 * e0
        a01 = e0 * e1
        a11 = e1 * e1
        if span == 1:
            _axpy(gpre, g0, a00, wu)
            _axpy(gpre, g0 + lanes, a01 - a00, wu)
            _axpy(gpre, g0 + 2 * lanes, -a01, wu)
            _axpy(gpre, g1, a11, wu)
            _axpy(gpre, g1 + lanes, -a11, wu)
            _axpy(rpre, r0, e0, wyu)
            _axpy(rpre, r2, e1 - e0, wyu)
            _axpy(rpre, r3, -e1, wyu)
            continue
        c = inner[u]
        c0 = e0 * c
        c1 = c * e1
        s1 = (((j0 + 1) & mask) * pw + span - 2) * lanes
        _axpy(gpre, g0, a00, wu)
        _axpy(gpre, g0 + lanes, c0 - a00, wu)
        _axpy(gpre, g0 + span * lanes, a01 - c0, wu)
        _axpy(gpre, g0 + (span + 1) * lanes, -a01, wu)
        _axpy(gpre, g1, a11, wu)
        _axpy(gpre, g1 + lanes, -a11, wu)
        _axpy(spre, s1, c * c - c1, wu)
        _axpy(spre, s1 + lanes, c1, wu)
        _axpy(spre, g1, -c1, wu)
        _axpy(rpre, r0, e0, wyu)
        _axpy(rpre, r1, c - e0, wyu)
        _axpy(rpre, r2, e1 - c, wyu)
        _axpy(rpre, r3, -e1, wyu)
    # the slot of row n_cells, touched by pairs ending in the last cell
    _put(rpre, (n_cells & mask) * lanes, zero)


PANEL = 4  # columns per step of the factorization


@numba.njit(**_INNER)
def _factor_step(factor, j, n_cells, bandwidth, panel, min_pivot, forward, x):
    """Columns ``j .. j + PANEL - 1`` of the banded Cholesky factorization, in place; with
    ``forward``, also their part of the forward substitution ``L z = x`` (in place in ``x``,
    ``(n_cells, lanes)``, whose rows up to the step's reach must be final), while the
    columns are in cache: :func:`_solve` then only substitutes backwards.

    Each column is pivoted after the earlier columns of the step are subtracted from its
    row; then the rows below get one rank-``PANEL`` update, so every entry of the trailing
    window is loaded and stored once per ``PANEL`` columns, with the step's entries of a row
    held in registers. Rows up to ``j + PANEL - 1 + bandwidth`` must hold their final band.
    ``panel`` (``PANEL * (bandwidth + PANEL + 1) * BLOCK``, flat) is work space: column
    ``q`` of the step holds its entries on rows ``j .. j + bandwidth + PANEL`` (zero past
    its reach). A pivot that is not positive gives an infinite root (a column of zeros);
    ``min_pivot`` keeps each lane's smallest pivot, compared with the tolerance once the
    whole matrix is known (:func:`_flag_singular`). Returns the columns done.
    """
    lanes = BLOCK
    width = bandwidth + 1
    column = panel.shape[0] // PANEL  # elements per panel column
    rows = column // lanes
    zero = _fill(0.0)
    steps = min(PANEL, n_cells - j)
    for i in range(steps):
        base = (j + i) * width
        kmax = min(bandwidth, n_cells - 1 - (j + i))
        for q in range(i):  # row j + i minus the earlier columns of this step
            entry_q = _row(panel, q * column + i * lanes)
            for m in range(kmax + 1):
                at = (base + m) * lanes
                other = _row(panel, q * column + (i + m) * lanes)
                _put(factor, at, _minus(_row(factor, at), _times(entry_q, other)))
        pivot = _row(factor, base * lanes)
        _put(min_pivot, 0, _lowest_pivot(pivot, _row(min_pivot, 0)))
        root = _pivot_root(pivot)
        _put(factor, base * lanes, root)
        scale = _over(_fill(1.0), root)
        for m in range(1, kmax + 1):
            value = _times(_row(factor, (base + m) * lanes), scale)
            _put(factor, (base + m) * lanes, value)
            _put(panel, i * column + (i + m) * lanes, value)
        for o in range(i + kmax + 1, rows):
            _put(panel, i * column + o * lanes, zero)
        if forward:  # the same operations, in the same order, as _solve's forward sweep
            xj = _over(_row(x, (j + i) * lanes), _row(factor, base * lanes))
            _put(x, (j + i) * lanes, xj)
            for m in range(1, kmax + 1):
                at = (j + i + m) * lanes
                _put(
                    x,
                    at,
                    _minus(_row(x, at), _times(_row(panel, i * column + (i + m) * lanes), xj)),
                )
    first = j + steps
    if first >= n_cells:  # (a step of fewer than PANEL columns is the last one)
        return steps
    last = min(j + PANEL - 1 + bandwidth, n_cells - 1)  # the last row the step reaches
    # Two rows at a time: row r's entry (r, r + d) and row r + 1's entry (r + 1, r + d) take
    # the same panel entries (on row r + d), loaded once for both. Each entry gets one chain
    # of fused multiply-subtracts, column after column. The pairs go upwards, from the last
    # rows to the first: the rows right below the step, which the next step factorizes
    # first, are then the last updated and still in L1 cache when it reads them (the order
    # of the rows changes no entry's operations).
    row = first + ((last - first) // 2) * 2
    while row >= first:
        o = (row - j) * lanes
        a0 = _row(panel, o)
        a1 = _row(panel, column + o)
        a2 = _row(panel, 2 * column + o)
        a3 = _row(panel, 3 * column + o)
        base = row * width * lanes
        entry = _minus(_row(factor, base), _times(a0, a0))
        entry = _minus(entry, _times(a1, a1))
        entry = _minus(entry, _times(a2, a2))
        entry = _minus(entry, _times(a3, a3))
        _put(factor, base, entry)
        if row == last:  # a lone last row: only its diagonal is reached
            row -= 2
            continue
        b0 = _row(panel, o + lanes)
        b1 = _row(panel, column + o + lanes)
        b2 = _row(panel, 2 * column + o + lanes)
        b3 = _row(panel, 3 * column + o + lanes)
        below = base + width * lanes - lanes  # row + 1's entry d - 1 is at below + d
        for d in range(1, last - row + 1):
            od = o + d * lanes
            p0 = _row(panel, od)
            p1 = _row(panel, column + od)
            p2 = _row(panel, 2 * column + od)
            p3 = _row(panel, 3 * column + od)
            at = base + d * lanes
            entry = _minus(_row(factor, at), _times(a0, p0))
            entry = _minus(entry, _times(a1, p1))
            entry = _minus(entry, _times(a2, p2))
            entry = _minus(entry, _times(a3, p3))
            _put(factor, at, entry)
            at = below + d * lanes
            entry = _minus(_row(factor, at), _times(b0, p0))
            entry = _minus(entry, _times(b1, p1))
            entry = _minus(entry, _times(b2, p2))
            entry = _minus(entry, _times(b3, p3))
            _put(factor, at, entry)
        row -= 2
    return steps


@numba.njit(**_JIT)
def _flag_singular(min_pivot, max_diagonal, rel_tol, singular):
    """A lane is singular where a pivot fell to ``rel_tol`` of its largest diagonal entry.

    Deciding after the factorization flags the same lanes as testing each pivot as it comes:
    every pivot up to a lane's first small one is the same either way, and the lanes that
    have one are flagged (what follows it, NaN included, is never used)."""
    for b in range(singular.shape[0]):
        singular[b] = not (min_pivot[b] > rel_tol * max_diagonal[b])


@numba.njit(**_JIT)
def _factor(gram, regularization, lam2, n_cells, bandwidth, rel_tol, factor, singular, panel):
    """factor = gram + lam2 * regularization, then banded Cholesky in place (``BLOCK`` lanes;
    see :func:`_factor_step`)."""
    lanes = BLOCK
    width = bandwidth + 1
    scale = _row(lam2, 0)
    for s in range(n_cells * width):
        entry = _plus(_row(gram, s * lanes), _times(scale, _fill(regularization[s])))
        _put(factor, s * lanes, entry)
    max_diagonal = np.zeros(lanes)
    min_pivot = np.full(lanes, np.inf)
    for j in range(n_cells):
        for b in range(lanes):
            max_diagonal[b] = max(max_diagonal[b], factor[j * width, b])
    for j in range(0, n_cells, PANEL):
        # (np.bool_: a literal False would compile _factor_step once more)
        _factor_step(factor, j, n_cells, bandwidth, panel, min_pivot, np.bool_(False), factor)
    _flag_singular(min_pivot, max_diagonal, rel_tol, singular)


@numba.njit(**_JIT)
def _solve(factor, rhs, n_cells, bandwidth, forward, x):
    """``x`` from ``L Lᵀ x = rhs``; without ``forward``, ``rhs`` is already ``L⁻¹ rhs``."""
    lanes = BLOCK
    width = bandwidth + 1
    for j in range(n_cells):
        _put(x, j * lanes, _row(rhs, j * lanes))
    if forward:
        for j in range(n_cells):
            base = j * width
            xj = _over(_row(x, j * lanes), _row(factor, base * lanes))
            _put(x, j * lanes, xj)
            kmax = min(bandwidth, n_cells - 1 - j)
            for k in range(1, kmax + 1):
                at = (j + k) * lanes
                _put(x, at, _minus(_row(x, at), _times(_row(factor, (base + k) * lanes), xj)))
    for j in range(n_cells - 1, -1, -1):
        base = j * width
        kmax = min(bandwidth, n_cells - 1 - j)
        acc = _row(x, j * lanes)
        for k in range(1, kmax + 1):
            acc = _minus(acc, _times(_row(factor, (base + k) * lanes), _row(x, (j + k) * lanes)))
        _put(x, j * lanes, _over(acc, _row(factor, base * lanes)))


@numba.njit(**_JIT)
def _predict(x, index, first, last, first_frac, last_frac, inner, prefix, pred):
    """``pred[u, b]``: lane ``b``'s mean of ``x`` (``(n_cells, lanes)``) over the interval of
    pair ``index[u]`` of the geometry (prefix sums over its inner cells), NaN where
    ``index[u] < 0``. Lanes innermost: every update runs along contiguous memory.
    ``prefix`` (``(n_cells + 1, lanes)``) is work space."""
    n_cells, lanes = x.shape
    for b in range(lanes):
        prefix[0, b] = 0.0
    for j in range(n_cells):
        for b in range(lanes):
            prefix[j + 1, b] = prefix[j, b] + x[j, b]
    for u in range(index.shape[0]):
        k = index[u]
        if k < 0:
            for b in range(lanes):
                pred[u, b] = np.nan
            continue
        j0 = first[k]
        j1 = last[k]
        e0 = first_frac[k]
        e1 = last_frac[k]
        c = inner[k]
        for b in range(lanes):
            pred[u, b] = e0 * x[j0, b] + e1 * x[j1, b] + c * (prefix[j1, b] - prefix[j0 + 1, b])


@numba.njit(**_JIT)
def _gather_geometry(
    rows, first, last, first_frac, last_frac, inner, out_int, out_float, w0, root_w0
):  # fmt: skip
    """The geometry of the block's rows' pairs, and ``root_w0 = sqrt(w0)``."""
    for u in range(rows.shape[0]):
        i = rows[u]
        out_int[0, u] = first[i]
        out_int[1, u] = last[i]
        out_float[0, u] = first_frac[i]
        out_float[1, u] = last_frac[i]
        out_float[2, u] = inner[i]
    for u in range(w0.shape[0]):
        _put(root_w0, u * BLOCK, _root(_row(w0, u * BLOCK)))


@numba.njit(**_INNER)
def _window_entry(j, k, i, width):
    """Flat index (in lanes rows) of ``G⁻¹[j + k, j + i]`` in the upper band layout."""
    return (j + min(k, i)) * width + abs(k - i)


@numba.njit(**_JIT)
def _selected_inverse(factor, n_cells, bandwidth, z):
    """Entries of G⁻¹ inside the band (Takahashi recurrences), upper band layout.

    Row ``j``'s off-diagonal entries ``G⁻¹[j, j + i] = -Σ_k L[j + k, j] G⁻¹[j + k, j + i] /
    L[j, j]`` read rows below ``j`` only, so they are independent of each other: four are
    summed at once, each ``L`` entry loaded once for four independent sums (one sum alone
    waits on its own additions). Each sum runs over ``k`` in ascending order as before.
    """
    lanes = BLOCK
    width = bandwidth + 1
    zero = _fill(0.0)
    minus_one = _fill(-1.0)
    for j in range(n_cells - 1, -1, -1):
        base = j * width
        kmax = min(bandwidth, n_cells - 1 - j)
        d = _row(factor, base * lanes)
        i = 1
        while i + 3 <= kmax:
            a0 = zero
            a1 = zero
            a2 = zero
            a3 = zero
            # k <= i: the four entries are neighbours on row j + k
            for k in range(1, i + 1):
                f = _row(factor, (base + k) * lanes)
                at = ((j + k) * width + i - k) * lanes
                a0 = _plus(a0, _times(_row(z, at), f))
                a1 = _plus(a1, _times(_row(z, at + lanes), f))
                a2 = _plus(a2, _times(_row(z, at + 2 * lanes), f))
                a3 = _plus(a3, _times(_row(z, at + 3 * lanes), f))
            for k in range(i + 1, min(i + 3, kmax) + 1):  # between: some of each
                f = _row(factor, (base + k) * lanes)
                a0 = _plus(a0, _times(_row(z, _window_entry(j, k, i, width) * lanes), f))
                a1 = _plus(a1, _times(_row(z, _window_entry(j, k, i + 1, width) * lanes), f))
                a2 = _plus(a2, _times(_row(z, _window_entry(j, k, i + 2, width) * lanes), f))
                a3 = _plus(a3, _times(_row(z, _window_entry(j, k, i + 3, width) * lanes), f))
            # k > i + 3: entry t is at offset k - i - t of row j + i + t
            r0 = ((j + i) * width - i) * lanes
            r1 = ((j + i + 1) * width - i - 1) * lanes
            r2 = ((j + i + 2) * width - i - 2) * lanes
            r3 = ((j + i + 3) * width - i - 3) * lanes
            for k in range(i + 4, kmax + 1):
                f = _row(factor, (base + k) * lanes)
                o = k * lanes
                a0 = _plus(a0, _times(_row(z, r0 + o), f))
                a1 = _plus(a1, _times(_row(z, r1 + o), f))
                a2 = _plus(a2, _times(_row(z, r2 + o), f))
                a3 = _plus(a3, _times(_row(z, r3 + o), f))
            _put(z, (base + i) * lanes, _times(minus_one, _over(a0, d)))
            _put(z, (base + i + 1) * lanes, _times(minus_one, _over(a1, d)))
            _put(z, (base + i + 2) * lanes, _times(minus_one, _over(a2, d)))
            _put(z, (base + i + 3) * lanes, _times(minus_one, _over(a3, d)))
            i += 4
        while i <= kmax:
            acc = zero
            for k in range(1, kmax + 1):
                f = _row(factor, (base + k) * lanes)
                acc = _plus(acc, _times(_row(z, _window_entry(j, k, i, width) * lanes), f))
            _put(z, (base + i) * lanes, _times(minus_one, _over(acc, d)))
            i += 1
        acc = zero
        for k in range(1, kmax + 1):
            acc = _plus(acc, _times(_row(z, (base + k) * lanes), _row(factor, (base + k) * lanes)))
        _put(z, base * lanes, _minus(_over(_fill(1.0), _times(d, d)), _over(acc, d)))


@numba.njit(**_JIT)
def _penalty_trace(z, regularization, lam2, n_cells, bandwidth, reg_width, out):
    """``lam2 · Σ (Z ∘ R)`` over the full symmetric band of the regularization ``R``, whose
    band is ``reg_width + 1`` wide: ``trace(G⁻¹ lam2 R)``, the parameters the smoothness
    takes from the fit (see :func:`xr_itslive.kernels.pipeline.run_pipeline`)."""
    lanes = BLOCK
    width = bandwidth + 1
    total = _fill(0.0)
    for r in range(n_cells):
        # entries inside the matrix only: past its edge z is never written
        for k in range(min(reg_width, n_cells - 1 - r) + 1):
            entry = regularization[r * width + k] * (1.0 if k == 0 else 2.0)
            total = _plus(total, _times(_fill(entry), _row(z, (r * width + k) * lanes)))
    _put(out, 0, _times(total, _row(lam2, 0)))


@numba.njit(**_JIT)
def _weighted_rss(y, pred, w, out):
    n_used, lanes = y.shape
    for b in range(lanes):
        out[b] = 0.0
    for u in range(n_used):
        for b in range(lanes):
            r = y[u, b] - pred[u, b]
            out[b] += w[u, b] * r * r


@numba.njit(**_INNER)  # called by kernels only (here and kernels/composite.py)
def select_kth(a, n, k):
    """``a[:n]`` reordered in place so that ``a[k]`` is its k-th smallest value (the values
    before it not larger); returns it. Quickselect, for the engines' exact medians.

    Parameters
    ----------
    a : numpy.ndarray
        Values (1-D), reordered in place.
    n : int
        How many of them count.
    k : int
        The rank wanted, ``0 <= k < n``.

    Returns
    -------
    float
        The k-th smallest of ``a[:n]``.
    """
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


@numba.njit(**_JIT)
def _median(a, n, buf, sample):
    """Median of ``a[:n]`` (not modified); ``buf`` (>= n) and ``sample`` (63) are work space.

    From 512 values on, a sorted sample of 63 values brackets the median; one pass counts
    the values below the bracket and copies those inside, and the median is selected among
    them. With fewer values, or when the bracket misses it (rare), the whole of ``a[:n]`` is
    selected from. The exact median: ``np.median``'s value, ties and all.
    """
    k = n // 2
    k_low = k - 1 if n % 2 == 0 else k
    ns = sample.shape[0]
    if n >= 512:
        for t in range(ns):
            sample[t] = a[(t * n) // ns]
        # insertion sort: np.sort (and np.median) would compile numba's whole sorting
        # machinery, seconds of a cold first call for 63 values
        for t in range(1, ns):
            v = sample[t]
            i = t - 1
            while i >= 0 and sample[i] > v:
                sample[i + 1] = sample[i]
                i -= 1
            sample[i + 1] = v
        lo = sample[ns // 2 - 8]
        hi = sample[ns // 2 + 8]
        below = np.int64(0)  # (not a literal 0: select_kth is compiled once)
        m = np.int64(0)
        for i in range(n):
            v = a[i]
            buf[m] = v
            m += (v >= lo) & (v <= hi)
            below += v < lo
        if below <= k_low and k < below + m:
            upper = select_kth(buf, m, k - below)
            if k_low == k:
                return upper
            lower = buf[0]
            for i in range(1, k - below):
                lower = max(lower, buf[i])
            return 0.5 * (lower + upper)
    for i in range(n):  # few values, or the bracket missed: select among all
        buf[i] = a[i]
    upper = select_kth(buf, n, k)
    if k_low == k:
        return upper
    lower = buf[0]
    for i in range(1, k):
        lower = max(lower, buf[i])
    return 0.5 * (lower + upper)


@numba.njit(**_JIT)
def _reweight(
    y, x, first, last, first_frac, last_frac, inner, prefix, w0, root_w0, kind, tuning, z,
    scratch, buffer, w, wy, outlier,
):  # fmt: skip
    """IRLS weights from residuals standardized by sqrt(w0) and scaled by 1.4826·MAD.

    The residuals are those of the fit ``x`` (``(n_cells, lanes)``): each row's prediction
    (the mean of ``x`` over its pair's interval, as :func:`_predict` computes it, from the
    prefix sums in ``prefix``) is made where it is used instead of passing through memory.
    Rows with ``w0 == 0`` (no observation) keep weight 0 and are never outliers.
    ``root_w0`` is ``sqrt(w0)``; ``z`` (like ``y``), ``scratch`` ``(lanes, > rows)`` and
    ``buffer`` ``(> rows,)`` are work space.
    """
    lanes = BLOCK
    n_used = y.shape[0]
    n_cells = x.shape[0]
    zero = _fill(0.0)
    total = zero
    _put(prefix, 0, total)
    for j in range(n_cells):
        total = _plus(total, _row(x, j * lanes))
        _put(prefix, (j + 1) * lanes, total)
    fill = np.zeros(lanes, dtype=np.int64)
    for u in range(n_used):
        j0 = first[u]
        j1 = last[u]
        inside = _minus(_row(prefix, j1 * lanes), _row(prefix, (j0 + 1) * lanes))
        pred = _plus(
            _plus(
                _times(_fill(first_frac[u]), _row(x, j0 * lanes)),
                _times(_fill(last_frac[u]), _row(x, j1 * lanes)),
            ),
            _times(_fill(inner[u]), inside),
        )
        o = u * lanes
        _put(z, o, _times(_minus(_row(y, o), pred), _row(root_w0, o)))
        for b in range(lanes):  # branch-free compaction of each lane's observations
            scratch[b, fill[b]] = abs(z[u, b])
            fill[b] += w0[u, b] > 0
    inv = np.empty(lanes)
    sample = np.empty(63)
    for b in range(lanes):
        n = fill[b]
        scale = 1.4826 * _median(scratch[b], n, buffer, sample) if n > 0 else 1.0
        if not scale > 0:
            scale = 1e-12
        inv[b] = 1.0 / (tuning * scale)
    scale = _row(inv, 0)
    one = _fill(1.0)
    for u in range(n_used):
        o = u * lanes
        t = _times(_row(z, o), scale)
        size = _absolute(t)
        if kind == 1:  # Huber
            factor = _over(one, _larger(size, one))
        else:  # Tukey biweight
            factor = _larger(_minus(one, _times(t, t)), zero)
            factor = _times(factor, factor)
        prior = _row(w0, o)
        wb = _times(prior, factor)
        _put(w, o, wb)
        _put(wy, o, _times(wb, _row(y, o)))
        _put_outliers(outlier, o, size, prior)


def _aligned(shape, dtype=np.float64, zero: bool = False) -> np.ndarray:
    """An empty (or zero) C-ordered array whose data start on a 64-byte boundary.

    A block's row (BLOCK float64, 128 bytes) is then exactly two cache lines. numpy aligns
    large arrays to 16 bytes only, and a vector load or store that straddles a line
    boundary costs about twice as much as one that does not.
    """
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = (np.zeros if zero else np.empty)(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start : start + nbytes].view(dtype).reshape(shape)


# stand-ins for the outputs a solve does not make (typed like the real ones)
_NO_OUTPUT = np.empty((0, 0))
_NO_FLAGS = np.empty((0, 0), dtype=np.bool_)


class CompiledOps:
    """:mod:`.pipeline` primitives on a block of pixels, through the numba kernels.

    A block holds one row per pair with data in it (``start_block``); every primitive runs
    over those rows only, lanes (pixels) innermost.
    """

    name = "numba"
    xp = np

    def __init__(self, geometry, regularization, n_cells, bandwidth, n_pairs, lanes, rel_tol):
        self.geometry = geometry
        self.regularization = regularization
        self.n_cells = n_cells
        self.bandwidth = bandwidth
        self.rel_tol = rel_tol
        self.lanes = lanes
        width = bandwidth + 1
        size = n_cells * width
        # scatter terms of _assemble, a ring of rows: zero between calls
        ring = 1 << (bandwidth + 1).bit_length()  # a power of two >= bandwidth + 2
        self._gpre = _aligned((ring * (bandwidth + 2), lanes), zero=True)
        self._spre = _aligned((ring * (bandwidth + 2), lanes), zero=True)
        self._rpre = _aligned((ring, lanes), zero=True)
        self._dprev = _aligned((width + 1, lanes), zero=True)
        if lanes != BLOCK:
            raise ValueError(f"the numba kernels work on blocks of {BLOCK} lanes, not {lanes}")
        self._panel = _aligned(PANEL * (bandwidth + PANEL + 1) * lanes, zero=True)
        self._min_pivot = np.empty(lanes)
        self._max_diagonal = np.empty(lanes)
        self._no_lam2 = np.zeros(lanes)
        self._reg_width = regularization_width(regularization, n_cells, bandwidth)
        self._prefix = _aligned((n_cells + 1, lanes))
        # buffers reused across the iterations of a block (the pipeline holds one at a time)
        self._gram = _aligned((size, lanes))
        self._factors = (_aligned((size, lanes)), _aligned((size, lanes)))
        self._turn = 0
        self._substituted = None  # (factor, rhs) whose forward substitution is done
        self._rhs = _aligned((n_cells, lanes))
        # two solution buffers in turn, as for the factors
        self._xs = (_aligned((n_cells, lanes)), _aligned((n_cells, lanes)))
        self._x_turn = 0
        self._pred_all = _aligned((n_pairs, lanes))
        self._w_all = _aligned((n_pairs, lanes))
        self._wy_all = _aligned((n_pairs, lanes))
        self._outlier_all = np.empty((n_pairs, lanes), dtype=np.bool_)
        self._scratch = np.empty((lanes, n_pairs + 1))
        self._buffer = np.empty(n_pairs + 1)
        self._cells_all = np.empty((2, n_pairs), dtype=np.int64)
        self._fracs_all = np.empty((3, n_pairs))
        self._root_w0_all = _aligned((n_pairs, lanes))
        self._z_all = _aligned((n_pairs, lanes))
        self.rows = np.arange(0)
        self._identity = np.arange(n_pairs)  # _predict's index for the block's own rows

    def start_block(self, rows, w0):
        """A new block was loaded: its rows are pairs ``rows``, with prior weights ``w0``."""
        self.rows = rows
        n = rows.shape[0]
        self._root_w0 = self._root_w0_all[:n]
        _gather_geometry(
            rows, *self.geometry, self._cells_all, self._fracs_all, w0, self._root_w0
        )  # fmt: skip
        self.block_geometry = (
            self._cells_all[0, :n], self._cells_all[1, :n],
            self._fracs_all[0, :n], self._fracs_all[1, :n], self._fracs_all[2, :n],
        )  # fmt: skip
        self._z = self._z_all[:n]
        self._pred = self._pred_all[:n]
        self._w = self._w_all[:n]
        self._wy = self._wy_all[:n]
        self._outlier = self._outlier_all[:n]

    def assemble(self, w, wy):
        gram, rhs = self._gram, self._rhs
        self._substituted = None
        _assemble(
            w, wy, *self.block_geometry, self.n_cells, self.bandwidth,
            self._gpre, self._spre, self._rpre, self._dprev, gram, rhs,
            False, self._no_lam2, self.regularization, self._reg_width, self._panel,
            self._min_pivot, self._max_diagonal,
        )  # fmt: skip
        return gram, rhs

    def assemble_factor(self, w, wy, lam2):
        """``factor(*assemble(w, wy), lam2)`` in one pass, for when the normal matrix itself
        is not needed afterwards: returns ``factor, singular, rhs``. The factor lives in the
        buffer ``assemble`` returns its matrix in (valid until the next call of
        either)."""
        factor, rhs = self._gram, self._rhs
        self._min_pivot[:] = np.inf
        self._max_diagonal[:] = 0.0
        _assemble(
            w, wy, *self.block_geometry, self.n_cells, self.bandwidth,
            self._gpre, self._spre, self._rpre, self._dprev, factor, rhs,
            True, np.ascontiguousarray(lam2, dtype=np.float64), self.regularization,
            self._reg_width, self._panel, self._min_pivot, self._max_diagonal,
        )  # fmt: skip
        singular = np.empty(self.lanes, dtype=np.bool_)
        _flag_singular(self._min_pivot, self._max_diagonal, self.rel_tol, singular)
        self._substituted = (factor, rhs)  # solve: backwards only
        return factor, singular, rhs

    def factor(self, gram, lam2):
        # Two buffers in turn: a factor stays valid until the second next call, enough for
        # the pipeline (which keeps the previous factor only while it compares a new one).
        self._turn ^= 1
        factor = self._factors[self._turn]
        singular = np.empty(self.lanes, dtype=np.bool_)
        _factor(
            gram, self.regularization, lam2, self.n_cells, self.bandwidth, self.rel_tol,
            factor, singular, self._panel,
        )  # fmt: skip
        return factor, singular

    def solve(self, factor, rhs):
        self._x_turn ^= 1
        x = self._xs[self._x_turn]
        done = self._substituted
        forward = not (done is not None and done[0] is factor and done[1] is rhs)
        _solve(factor, rhs, self.n_cells, self.bandwidth, forward, x)
        return x

    def predict(self, x):
        _predict(
            x, self._identity[: self.rows.shape[0]], *self.block_geometry, self._prefix, self._pred
        )
        return self._pred

    def selected_inverse(self, factor):
        z = _aligned(factor.shape)
        _selected_inverse(factor, self.n_cells, self.bandwidth, z)
        return z

    def penalty_trace(self, z, lam2):
        out = np.empty(self.lanes)
        _penalty_trace(
            z, self.regularization, np.ascontiguousarray(lam2, dtype=np.float64), self.n_cells,
            self.bandwidth, self._reg_width, out,
        )  # fmt: skip
        return out

    def weighted_rss(self, y, pred, w):
        out = np.empty(self.lanes)
        _weighted_rss(y, pred, w, out)
        return out

    def reweight_fit(self, y, x, w0, kind, tuning):
        """``reweight(y, predict(x), w0, kind, tuning)`` without the predictions in memory."""
        w, wy, outlier = self._w, self._wy, self._outlier
        _reweight(
            y, x, *self.block_geometry, self._prefix, w0, self._root_w0, ROBUST_KINDS[kind],
            tuning, self._z, self._scratch, self._buffer, w, wy, outlier,
        )  # fmt: skip
        return w, wy, outlier

    def range_work(self, load: tuple) -> tuple:
        """These buffers, with ``load`` (``_load_buffers``), as ``_solve_range``'s work
        space: the compiled steps use the same memory as the pipeline's calls."""
        y, w0, wy0, rows, seen, counts = load
        return (
            y, w0, wy0, rows, seen, counts, self._cells_all, self._fracs_all,
            self._root_w0_all, self._gpre, self._spre, self._rpre, self._dprev, self._panel,
            self._min_pivot, self._max_diagonal, self._gram, self._rhs, self._xs[0],
            self._prefix, self._w_all, self._wy_all, self._outlier_all, self._z_all,
            self._scratch, self._buffer, self._pred_all, _aligned(self._gram.shape),
            self._identity, np.empty(self.lanes),
        )  # fmt: skip


@numba.njit(**_JIT)
def _fit_block(
    w, wy, first, last, first_frac, last_frac, inner, n_cells, bandwidth, gpre, spre, rpre,
    dprev, factor, rhs, lam2, regularization, reg_width, panel, min_pivot, max_diagonal,
    rel_tol, singular, x,
):  # fmt: skip
    """One weighted fit of a block: assembled and factorized in one pass, then solved
    (:meth:`CompiledOps.assemble_factor` and :meth:`CompiledOps.solve`)."""
    for b in range(BLOCK):
        min_pivot[b] = np.inf
        max_diagonal[b] = 0.0
    _assemble(
        w, wy, first, last, first_frac, last_frac, inner, n_cells, bandwidth, gpre, spre,
        rpre, dprev, factor, rhs, True, lam2, regularization, reg_width, panel, min_pivot,
        max_diagonal,
    )  # fmt: skip
    _flag_singular(min_pivot, max_diagonal, rel_tol, singular)
    _solve(factor, rhs, n_cells, bandwidth, False, x)


@numba.njit(**_JIT)
def _solve_range(
    values, pairs_first, weights, use_weights, pixels, start, stop, order, geometry,
    regularization, reg_width, n_cells, bandwidth, rel_tol, lam2, min_obs, robust_kind,
    tuning, iterations, uncertainty, keep_outliers, work, solution, std, n_obs, outlier,
):  # fmt: skip
    """:func:`xr_itslive.kernels.pipeline.run_pipeline` with one λ, compiled whole: every
    block of pixels ``pixels[start:stop]`` loaded, fitted, reweighted ``iterations`` times
    (``robust_kind`` 0: not robust) and, with ``uncertainty``, given its posterior spread,
    the same primitives in the same order as the pipeline runs them through
    :class:`CompiledOps`, with no Python (and no GIL) between them. Outputs are written
    into rows ``start .. stop`` of ``solution``, ``std``, ``n_obs``, ``outlier``; ``work`` is
    :meth:`CompiledOps.range_work`'s work space."""
    (y, w0, wy0, rows, seen, counts, cells, fracs, root_w0, gpre, spre, rpre, dprev, panel,
     min_pivot, max_diagonal, factor, rhs, x, prefix, w_all, wy_all, outlier_all, z_all,
     scratch, buffer, pred_all, inverse, identity, trace) = work  # fmt: skip
    lanes = BLOCK
    width = bandwidth + 1
    first, last, first_frac, last_frac, inner = geometry
    singular = np.empty(lanes, dtype=np.bool_)
    rss = np.empty(lanes)
    for p0 in range(start, stop, lanes):
        nb = min(lanes, stop - p0)
        n_used = _load_block(
            values, pairs_first, weights, use_weights, pixels, p0, nb, order, seen, rows, y,
            w0, wy0, counts,
        )  # fmt: skip
        block_rows = rows[:n_used]
        _gather_geometry(
            block_rows, first, last, first_frac, last_frac, inner, cells, fracs,
            w0[:n_used], root_w0[:n_used],
        )  # fmt: skip
        first_b = cells[0, :n_used]
        last_b = cells[1, :n_used]
        first_frac_b = fracs[0, :n_used]
        last_frac_b = fracs[1, :n_used]
        inner_b = fracs[2, :n_used]
        w = w0[:n_used]
        wy = wy0[:n_used]
        for fit in range(1 + (iterations if robust_kind else 0)):
            if fit:
                w = w_all[:n_used]
                wy = wy_all[:n_used]
                _reweight(
                    y[:n_used], x, first_b, last_b, first_frac_b, last_frac_b, inner_b,
                    prefix, w0[:n_used], root_w0[:n_used], robust_kind, tuning,
                    z_all[:n_used], scratch, buffer, w, wy, outlier_all[:n_used],
                )  # fmt: skip
            _fit_block(
                w, wy, first_b, last_b, first_frac_b, last_frac_b, inner_b, n_cells,
                bandwidth, gpre, spre, rpre, dprev, factor, rhs, lam2, regularization,
                reg_width, panel, min_pivot, max_diagonal, rel_tol, singular, x,
            )  # fmt: skip
        if uncertainty:
            _selected_inverse(factor, n_cells, bandwidth, inverse)
            _penalty_trace(inverse, regularization, lam2, n_cells, bandwidth, reg_width, trace)
            pred = pred_all[:n_used]
            _predict(
                x,
                identity[:n_used],
                first_b,
                last_b,
                first_frac_b,
                last_frac_b,
                inner_b,
                prefix,
                pred,
            )
            _weighted_rss(y[:n_used], pred, w, rss)
        for b in range(nb):
            p = p0 + b
            n = np.float64(counts[b])
            n_obs[p] = counts[b]
            unsolved = singular[b] or n < min_obs
            for c in range(n_cells):
                solution[p, c] = np.nan if unsolved else x[c, b]
            if uncertainty:
                # as the pipeline: no noise scale from less than one residual degree of freedom
                residual_dof = n - (n_cells - trace[b])
                if residual_dof >= MIN_RESIDUAL_DOF:
                    sigma2 = rss[b] / max(residual_dof, 1.0)
                else:
                    sigma2 = np.nan
                for c in range(n_cells):
                    variance = inverse[c * width, b] * sigma2
                    if unsolved or variance != variance:  # (NaN stays NaN, as np.maximum)
                        std[p, c] = np.nan
                    else:
                        std[p, c] = np.sqrt(variance) if variance > 0.0 else 0.0
            if robust_kind and keep_outliers:
                for m in range(n_used):
                    outlier[p, block_rows[m]] = outlier_all[m, b]


def _load_buffers(n_pairs: int) -> tuple:
    """What :func:`_load_block` fills for one block: ``y, w0, wy0, rows, seen, counts``."""
    return (
        _aligned((n_pairs, BLOCK)),
        _aligned((n_pairs, BLOCK)),
        _aligned((n_pairs, BLOCK)),
        np.empty(n_pairs, dtype=np.int64),
        np.empty(n_pairs, dtype=np.bool_),
        np.empty(BLOCK, dtype=np.int64),
    )


_order_cache: tuple = (None, None)  # (first cells, their order): one problem per cube


def _pair_order(first_cell: np.ndarray) -> np.ndarray:
    """Pairs sorted by first cell (stable), remembered for the last geometry seen: every
    chunk of a cube shares it, and sorting 25,000 pairs per chunk is not free."""
    global _order_cache
    known, order = _order_cache
    if known is not first_cell:
        order = np.argsort(first_cell, kind="stable")
        _order_cache = (first_cell, order)  # one tuple, replaced whole: safe across threads
    return order


_cache_checked = threading.Event()
_cache_lock = threading.Lock()


def announce_compilation() -> None:
    """Say so, once per process and before the wait, when the kernels are not in numba's
    on-disk cache (a fresh install, another numba or CPU): the first inversion then spends
    seconds compiling them. A warm cache says nothing.

    The probe is a small kernel, called with the argument types the engine itself uses: a
    miss on it means the cache folder holds none of this file's kernels.
    """
    if _cache_checked.is_set():
        return
    with _cache_lock:
        if _cache_checked.is_set():
            return
        try:
            known = bool(_flag_singular.signatures)  # compiled or loaded in this process
            _flag_singular(np.ones(BLOCK), np.ones(BLOCK), 1e-11, np.empty(BLOCK, np.bool_))
            stats = getattr(_flag_singular, "stats", None)
            if not known and stats is not None and sum(stats.cache_misses.values()) > 0:
                _logger.warning(COLD_CACHE_NOTICE)
        finally:
            _cache_checked.set()


def solve_pixels_compiled(
    values: np.ndarray,
    weights: np.ndarray | None,
    geometry: tuple,
    regularization: np.ndarray,
    n_cells: int,
    bandwidth: int,
    options: Options,
    threads: int = 1,
    rel_tol: float = 1e-11,
    pixels: np.ndarray | None = None,
    steps: str = "pipeline",
) -> dict[str, np.ndarray]:
    """Solve every pixel of ``values`` (``(n_pixels, n_pairs)``, pixels first), or those of
    ``pixels`` (indices into ``values``, in place of a copy of their rows).

    ``steps="pipeline"`` runs :func:`xr_itslive.kernels.pipeline.run_pipeline` block by
    block through :class:`CompiledOps`, from Python; ``steps="compiled"`` (with one λ; GCV
    always runs the pipeline) runs the same steps compiled, a whole range of pixels in one
    call with no Python, and no GIL, between them (``_solve_range``), at the price of one
    more kernel to compile on a cold cache. The numbers are the same to the bit (the tests
    check it); the caller chooses (:data:`xr_itslive.workflows.invert.COMPILED_STEPS_MIN_PIXELS`).

    ``geometry`` is ``(first_cell, last_cell, first_frac, last_frac, inner)`` per pair
    (:class:`xr_itslive.geo.design.PairGeometry`). Returns a dict of arrays with one row per
    solved pixel: ``solution`` ``(n, n_cells)``, ``n_obs``, and, as ``options`` ask, ``std``,
    ``lam``, ``outlier`` ``(n, n_pairs)``. Pixels with fewer than ``options.min_obs``
    observations or a singular system are NaN.
    """
    announce_compilation()
    n_values, n_pairs = values.shape
    if pixels is None:
        pixels = np.arange(n_values, dtype=np.int64)
    pixels = np.ascontiguousarray(pixels, dtype=np.int64)
    n_pixels = pixels.shape[0]
    use_weights = weights is not None
    if weights is None:
        weights = np.ones((1, 1))
    else:
        weights = np.ascontiguousarray(np.atleast_2d(weights), dtype=np.float64)
        if weights.shape[0] not in (1, n_values) or weights.shape[1] != n_pairs:
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
    if options.robust and options.outliers:
        out["outlier"] = np.zeros((n_pixels, n_pairs), dtype=np.bool_)

    order = _pair_order(geometry[0])  # pairs by first cell, for _assemble
    source, pairs_first = _in_memory_order(values)

    def run_pipeline_blocks(start: int, stop: int) -> None:  # the steps called from Python
        ops = CompiledOps(geometry, regularization, n_cells, bandwidth, n_pairs, BLOCK, rel_tol)
        y, w0, wy0, rows, seen, counts = _load_buffers(n_pairs)
        for p0 in range(start, stop, BLOCK):
            nb = min(BLOCK, stop - p0)
            n_used = _load_block(
                source, pairs_first, weights, use_weights, pixels, p0, nb, order, seen, rows,
                y, w0, wy0, counts,
            )  # fmt: skip
            ops.start_block(rows[:n_used], w0[:n_used])
            block = run_pipeline(ops, y[:n_used], w0[:n_used], wy0[:n_used], counts, options)
            sl = slice(p0, p0 + nb)
            out["solution"][sl] = block["solution"][:, :nb].T
            out["n_obs"][sl] = counts[:nb]
            for key in ("std", "lam"):
                if key in out:
                    out[key][sl] = block[key][..., :nb].T
            if "outlier" in out:
                out["outlier"][sl][:, rows[:n_used]] = block["outlier"][:, :nb].T

    def run_compiled(start: int, stop: int) -> None:  # one λ: the whole pipeline compiled
        ops = CompiledOps(geometry, regularization, n_cells, bandwidth, n_pairs, BLOCK, rel_tol)
        kind = ROBUST_KINDS[options.robust] if options.robust else 0
        _solve_range(
            source, pairs_first, weights, use_weights, pixels, start, stop, order,
            tuple(geometry), regularization, ops._reg_width, n_cells, bandwidth, rel_tol,
            np.full(BLOCK, options.initial_lam**2), options.min_obs, kind,
            options.robust_tuning if options.robust else 0.0, options.iterations,
            options.uncertainty, "outlier" in out, ops.range_work(_load_buffers(n_pairs)),
            out["solution"], out.get("std", _NO_OUTPUT), out["n_obs"],
            out.get("outlier", _NO_FLAGS),
        )  # fmt: skip

    if steps not in ("compiled", "pipeline"):
        raise ValueError(f"steps must be 'compiled' or 'pipeline', not {steps!r}")
    run = run_pipeline_blocks if options.auto_lam or steps == "pipeline" else run_compiled
    if threads <= 1 or n_pixels <= BLOCK:
        run(0, n_pixels)
    else:
        edges = np.linspace(0, n_pixels, threads + 1)
        edges = np.unique(np.minimum(np.ceil(edges / BLOCK) * BLOCK, n_pixels).astype(int))
        edges = np.unique(np.concatenate([[0], edges]))
        with ThreadPoolExecutor(len(edges) - 1) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return out


def predict_series_compiled(
    solution: np.ndarray, rows: np.ndarray, geometry: tuple, n_out: int, threads: int = 1
) -> np.ndarray:
    """Mean of each series over each pair's interval (``A @ x``), pixels first.

    ``solution`` is ``(n_pixels, n_cells)``; pair ``k`` of ``geometry`` (``first_cell, last_cell,
    first_frac, last_frac, inner``) goes to column ``rows[k]`` of the ``(n_pixels, n_out)``
    float32 result; the other columns are NaN. The result is a transposed view of pairs-first
    memory (what a (mid_date, pixel) cube wants). ``threads`` split the pairs.
    """
    announce_compilation()
    solution_t = np.ascontiguousarray(np.asarray(solution, dtype=np.float64).T)
    index = np.full(n_out, -1, dtype=np.int64)  # column -> pair of the geometry
    index[np.asarray(rows, dtype=np.int64)] = np.arange(len(rows))
    out_t = np.empty((n_out, solution_t.shape[1]), dtype=np.float32)

    def run(start: int, stop: int) -> None:
        prefix = np.empty((solution_t.shape[0] + 1, solution_t.shape[1]))
        _predict(solution_t, index[start:stop], *geometry, prefix, out_t[start:stop])

    edges = np.unique(np.linspace(0, n_out, max(1, min(threads, n_out)) + 1).astype(int))
    if edges.size <= 2:
        run(0, n_out)
    else:
        with ThreadPoolExecutor(edges.size - 1) as pool:
            list(pool.map(run, edges[:-1], edges[1:]))
    return out_t.T
