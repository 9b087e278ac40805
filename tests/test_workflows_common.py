"""workflows.common.apply_per_pixel: apply_ufunc's result, lazily, without copying the blocks."""

import numpy as np
import pytest
import xarray as xr
from conftest import raise_if_dask_computes

from xr_itslive.errors import ChunkingError
from xr_itslive.workflows.common import apply_per_pixel


def _cube(chunks=None):
    rng = np.random.default_rng(1)
    values = xr.DataArray(rng.normal(size=(50, 6, 4)), dims=("mid_date", "y", "x"))
    weights = xr.DataArray(rng.uniform(size=50), dims="mid_date")
    return (values, weights) if chunks is None else (values.chunk(chunks), weights.chunk(-1))


def _kernel(values, weights, scale=1.0, seen=None):
    if seen is not None:
        seen.append(values)
    mean = (values * weights).sum(-1) / weights.sum()
    return mean * scale, np.stack([values.min(-1), values.max(-1)], axis=-1), values * 2


def _apply(values, weights, **kwargs):
    return apply_per_pixel(
        _kernel,
        values,
        weights,
        input_core_dims=[["mid_date"], ["mid_date"]],
        output_core_dims=[[], ["bound"], ["mid_date"]],
        output_dtypes=[float, float, float],
        output_sizes={"bound": 2},
        kwargs=kwargs,
    )


def test_lazy_result_equals_apply_ufunc():
    values, weights = _cube()
    expected = xr.apply_ufunc(
        _kernel, values, weights, input_core_dims=[["mid_date"], ["mid_date"]],
        output_core_dims=[[], ["bound"], ["mid_date"]], kwargs={"scale": 3.0},
    )  # fmt: skip
    eager = _apply(values, weights, scale=3.0)
    with raise_if_dask_computes():
        lazy = _apply(*_cube({"mid_date": -1, "y": 4, "x": 2}), scale=3.0)
    assert lazy[0].chunks == ((4, 2), (2, 2))
    assert lazy[1].chunks == ((4, 2), (2, 2), (2,))
    for got, lazy_got, want in zip(eager, lazy, expected, strict=True):
        xr.testing.assert_identical(got, want)
        xr.testing.assert_identical(lazy_got.compute(), want)


def test_blocks_reach_the_kernel_without_a_copy():
    values, weights = _cube({"mid_date": -1, "y": 3, "x": 2})
    produced: list = []

    def upstream(block):  # the task before the kernel (a read, say): what it hands over
        produced.append(block + 0.0)
        return produced[-1]

    values = values.copy(data=values.data.map_blocks(upstream, dtype=float))

    def handed_over(kernel_inputs):
        return [any(np.shares_memory(k, p) for p in produced) for k in kernel_inputs]

    seen: list = []
    _apply(values, weights, seen=seen)[0].compute(scheduler="synchronous")
    assert len(seen) == 4 and all(handed_over(seen))
    # what apply_ufunc hands over instead: a copy of every block (dask's concatenate3)
    produced.clear()
    copies: list = []
    xr.apply_ufunc(
        _kernel, values, weights, input_core_dims=[["mid_date"], ["mid_date"]],
        output_core_dims=[[], ["bound"], ["mid_date"]], dask="parallelized",
        output_dtypes=[float] * 3, dask_gufunc_kwargs={"output_sizes": {"bound": 2}},
        kwargs={"seen": copies},
    )[0].compute(scheduler="synchronous")  # fmt: skip
    assert len(copies) == 4 and not any(handed_over(copies))


def test_one_output_is_a_tuple_of_one():
    values, weights = _cube()

    def mean(values, weights):
        return ((values * weights).sum(-1) / weights.sum(),)

    for cube in (values, values.chunk({"y": 3})):
        (result,) = apply_per_pixel(
            mean, cube, weights, input_core_dims=[["mid_date"], ["mid_date"]],
            output_core_dims=[[]], output_dtypes=[float],
        )  # fmt: skip
        xr.testing.assert_allclose(result.compute(), values.weighted(weights).mean("mid_date"))


def test_a_core_dimension_in_several_chunks_is_refused():
    values, weights = _cube({"mid_date": 25, "y": 3, "x": 2})
    with pytest.raises(ChunkingError, match="core dimension 'mid_date' has 2 chunks"):
        _apply(values, weights)
