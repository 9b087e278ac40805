"""Namespace dispatch (numpy / cupy / array-API), engine choice, dask meta and pixel batches.

Runs without a GPU: the CuPy path is exercised through ``array_api_strict``, a namespace that
offers nothing beyond the array API standard, and through a stand-in CuPy array type whose
import fails. tests/test_gpu.py checks the same on a real GPU.
"""

import sys
import tracemalloc
import types

import numpy as np
import pytest
import xarray as xr
from conftest import FIXTURE_3X3, requires_shared

import xr_itslive
from xr_itslive.errors import InvalidParameterError, OptionalDependencyError
from xr_itslive.kernels import batching
from xr_itslive.kernels.namespace import (
    KERNEL_NAMES,
    cupy_namespace,
    empty_like_chunk,
    get_namespace,
    is_cupy_array,
    missing_names,
    numpy_namespace,
    put_rows,
)
from xr_itslive.kernels.pipeline import Options
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows import device
from xr_itslive.workflows.common import choose_engine
from xr_itslive.workflows.invert import build_problem
from xr_itslive.workflows.invert_to_zarr import invert_to_zarr

xps = pytest.importorskip("array_api_strict")


class FakeCupyArray:
    """An object whose type claims to live in ``cupy`` (as ``cupy.ndarray`` does)."""


FakeCupyArray.__module__ = "cupy._core.core"


@pytest.fixture
def no_cupy(monkeypatch):
    """CuPy cannot be imported (whether or not this machine has it)."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    cupy_namespace.cache_clear()
    yield
    cupy_namespace.cache_clear()


@pytest.fixture
def strict_xarray(monkeypatch):
    """Let xarray wrap array_api_strict arrays.

    xarray (2026.9) calls ``xp.transpose`` on array-API arrays, a name the standard spells
    ``permute_dims``; this namespace adds that one alias for xarray and nothing for
    xr_itslive, whose own calls still meet only the strict standard.
    """
    from array_api_strict._array_object import Array

    def transpose(x, axes=None):
        return xps.permute_dims(x, tuple(range(x.ndim))[::-1] if axes is None else axes)

    for_xarray = types.ModuleType("array_api_strict_for_xarray")
    for_xarray.__getattr__ = lambda name: getattr(xps, name)
    for_xarray.transpose = transpose
    monkeypatch.setattr(Array, "__array_namespace__", lambda self, api_version=None: for_xarray)
    return for_xarray


def test_numpy_2_is_used_directly():
    if missing_names(np):
        pytest.skip(f"numpy {np.__version__} lacks {missing_names(np)}; compat is used")
    assert numpy_namespace() is np
    assert get_namespace(np.zeros(3), 1.0, None) is np


def test_old_numpy_goes_through_array_api_compat(monkeypatch):
    import array_api_compat.numpy as compat_numpy

    monkeypatch.delattr(np, "permute_dims")
    numpy_namespace.cache_clear()
    try:
        assert missing_names(np) == ["permute_dims"]
        assert numpy_namespace() is compat_numpy
        assert get_namespace(np.zeros(3)) is compat_numpy
        assert missing_names(compat_numpy) == []
    finally:
        numpy_namespace.cache_clear()


def test_strict_arrays_get_their_own_namespace():
    assert get_namespace(xps.zeros(3), np.zeros(3), 2) is xps
    assert missing_names(xps) == []  # the kernels' names are all standard


def test_mixed_namespaces_are_refused():
    other = types.ModuleType("other_arrays")
    odd = types.SimpleNamespace(__array_namespace__=lambda: other)
    with pytest.raises(
        TypeError, match=r"several namespaces \['array_api_strict', 'other_arrays'\]"
    ):
        get_namespace(xps.zeros(2), odd)


def test_missing_cupy_names_the_gpu_extra(no_cupy):
    assert is_cupy_array(FakeCupyArray())
    with pytest.raises(OptionalDependencyError, match=r"pip install 'xr_itslive\[gpu\]'"):
        get_namespace(FakeCupyArray())


def test_cupy_chunks_choose_the_array_engine(no_cupy):
    # The engine is chosen from the chunk type alone: CuPy is not imported to decide.
    assert choose_engine(None, FakeCupyArray()) == "array"
    assert choose_engine(None, np.zeros(1)) == "numba"
    assert choose_engine(None, xps.zeros(1)) == "array"
    with pytest.raises(InvalidParameterError, match=r"engine='numba'.*CuPy \(GPU\) arrays"):
        choose_engine("numba", FakeCupyArray())
    with pytest.raises(InvalidParameterError, match=r"engine='numba'.*array_api_strict arrays"):
        choose_engine("numba", xps.zeros(1))


@pytest.mark.parametrize("dtype", [np.float32, np.int64, bool])
def test_empty_like_chunk_keeps_the_chunk_type(dtype):
    meta = empty_like_chunk(xps.zeros((2, 2)), 3, dtype)
    assert type(meta).__module__.startswith("array_api_strict")
    assert meta.shape == (0, 0, 0)
    assert meta.dtype == getattr(xps, np.dtype(dtype).name)
    host = empty_like_chunk(np.zeros(1), 2, dtype)
    assert isinstance(host, np.ndarray) and host.shape == (0, 0) and host.dtype == dtype


@pytest.mark.parametrize("trailing", [(), (4,)])
def test_put_rows_strict_equals_numpy_setitem(trailing):
    rng = np.random.default_rng(0)
    target = rng.normal(size=(7, *trailing))
    index = np.array([0, 3, 4, 6])
    value = rng.normal(size=(4, *trailing))
    expected = put_rows(np, target.copy(), index, value)
    assert np.array_equal(expected[index], value)
    got = put_rows(xps, xps.asarray(target), xps.asarray(index), xps.asarray(value))
    np.testing.assert_array_equal(np.asarray(got), expected)
    empty = put_rows(xps, xps.asarray(target), xps.asarray(index[:0]), xps.asarray(value[:0]))
    np.testing.assert_array_equal(np.asarray(empty), target)


OPTIONS = {
    "plain": {},
    "weights": {"weights": "user"},
    "robust": {"robust": True, "return_outliers": True},
    "auto_lam": {"lam": "auto"},
    "uncertainty": {"uncertainty": True},
    "all": {"weights": "user", "robust": "huber", "lam": "auto", "uncertainty": True},
}


def _options(cube, name):
    kwargs = dict(OPTIONS[name])
    if kwargs.get("weights") == "user":
        pair_weights = np.linspace(0.5, 2.0, cube.sizes["mid_date"])
        kwargs["weights"] = xr.DataArray(pair_weights, dims="mid_date")
    return kwargs


@pytest.mark.parametrize("name", list(OPTIONS))
def test_invert_on_strict_arrays_matches_numpy(name, strict_xarray):
    """The whole array path (invert → solve_block → kernels) runs on a non-numpy array type
    and gives it back: what CuPy chunks go through, minus the device."""
    cube = synthetic_cube(
        n_pairs=240, ny=2, nx=3, years=3, seed=5, empty_pixels=1, outlier_fraction=0.05
    )
    strict = cube.copy()
    for var in ("vx", "vy"):
        strict[var] = cube[var].copy(data=xps.asarray(cube[var].values))
    mask = xr.DataArray(np.array([[True, True, False], [True, True, True]]), dims=("y", "x"))
    kwargs = dict(step=30, mask=mask, **_options(cube, name))
    expected = xr_itslive.invert(cube, **kwargs)
    got = xr_itslive.invert(strict, engine="array", **kwargs)
    assert got.attrs["engine"] == "array" and expected.attrs["engine"] == "numba"
    per_pixel = [k for k in got.data_vars if k not in ("v", "time_bounds")]
    assert len(per_pixel) >= 3
    for key in per_pixel:
        data = got[key].data
        assert type(data).__module__.startswith("array_api_strict"), key
        np.testing.assert_allclose(
            np.asarray(data, dtype=float), expected[key].values.astype(float),
            rtol=1e-5, atol=1e-4, err_msg=key,
        )  # fmt: skip
    np.testing.assert_allclose(got["v"].values, expected["v"].values, rtol=1e-5, atol=1e-4)
    assert np.isnan(np.asarray(got["vx"].data)[:, 0, 2]).all()  # masked out
    assert int(np.asarray(got["n_obs"].data)[0, 2]) == 0


def _small_problem(n_pairs=300, seed=1):
    cube = synthetic_cube(n_pairs=n_pairs, ny=1, nx=1, years=3, seed=seed)
    return build_problem(cube, 12.0)


def _observations(problem, n_pix, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.normal(100.0, 10.0, (n_pix, problem.geometry.n_pairs))
    values[rng.uniform(size=values.shape) < 0.3] = np.nan
    return values


@pytest.mark.parametrize(
    "options",
    [Options(), Options(robust="tukey", iterations=2, uncertainty=True), Options(lams=(1.0, 30.0))],
)
@pytest.mark.parametrize("weighting", ["none", "pair", "pixel"])
def test_batches_give_the_same_answer(options, weighting):
    problem = _small_problem()
    values = _observations(problem, 11)
    rng = np.random.default_rng(3)
    weights = {
        "none": None,
        "pair": rng.uniform(0.5, 2.0, (1, values.shape[1])),
        "pixel": rng.uniform(0.5, 2.0, values.shape),
    }[weighting]
    whole = batching.solve_pixels_batched(np, values, weights, problem, options)
    batched = batching.solve_pixels_batched(np, values, weights, problem, options, batch_size=4)
    assert whole.keys() == batched.keys()
    assert whole["solution"].shape == (11, problem.n_cells)
    for key in whole:
        np.testing.assert_allclose(batched[key], whole[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_batch_size_from_the_environment(monkeypatch):
    cube = synthetic_cube(n_pairs=300, ny=3, nx=3, years=3, seed=2)
    whole = xr_itslive.invert(cube, engine="array", step=30)
    monkeypatch.setenv(batching.BATCH_ENV, "2")
    problem = build_problem(cube, 30.0)
    assert batching.pixel_batch_size(problem, Options(), free_bytes=None) == 2
    batched = xr_itslive.invert(cube, engine="array", step=30)
    xr.testing.assert_allclose(batched, whole)
    monkeypatch.setenv(batching.BATCH_ENV, "many")
    with pytest.raises(InvalidParameterError, match=r"XR_ITSLIVE_ARRAY_BATCH .*got 'many'"):
        batching.pixel_batch_size(problem, Options(), free_bytes=None)


def test_batch_size_follows_free_memory(monkeypatch):
    monkeypatch.delenv(batching.BATCH_ENV, raising=False)
    problem = _small_problem()
    per_pixel = batching.bytes_per_pixel(problem, Options())
    assert batching.pixel_batch_size(problem, Options(), free_bytes=None) is None
    assert batching.pixel_batch_size(problem, Options(), 1000 * per_pixel, fraction=0.5) == 500
    assert batching.pixel_batch_size(problem, Options(), per_pixel // 10) == 1
    robust = Options(robust="tukey", uncertainty=True)
    assert batching.bytes_per_pixel(problem, robust) > per_pixel
    assert batching.free_device_bytes(np.zeros(3)) is None


@pytest.mark.parametrize(
    "options",
    [
        Options(),
        Options(robust="tukey", iterations=2),
        Options(lams=(1.0, 10.0, 100.0), uncertainty=True),
    ],
)
def test_bytes_per_pixel_bounds_the_measured_peak(options):
    """The batch size rests on this bound: measured with tracemalloc on the numpy engine."""
    problem = _small_problem(n_pairs=1500, seed=4)
    values = _observations(problem, 64)
    tracemalloc.start()
    try:
        batching.solve_pixels_batched(np, values, None, problem, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    measured = peak / values.shape[0]
    bound = batching.bytes_per_pixel(problem, options)
    assert measured <= bound <= 3 * measured, (measured, bound)


def test_kernel_names_cover_what_the_kernels_call():
    """KERNEL_NAMES decides when numpy is wrapped: it must list every ``xp.<name>`` the
    generic kernels and solve_block use."""
    import inspect
    import re

    from xr_itslive.kernels import banded, pipeline
    from xr_itslive.workflows.invert import solve_block

    called = set()
    for source in (banded, pipeline, batching, solve_block, put_rows):
        called |= set(re.findall(r"\bxp\.([a-z_0-9]+)\b", inspect.getsource(source)))
    assert {"concat", "permute_dims", "take_along_axis"} <= called
    assert called - {"cumsum"} <= set(KERNEL_NAMES), called - set(KERNEL_NAMES)


def test_to_device_without_cupy_names_the_gpu_extra(no_cupy):
    cube = synthetic_cube(n_pairs=50, ny=1, nx=2)
    with pytest.raises(OptionalDependencyError, match=r"xr_itslive\[gpu\]"):
        device.to_device(cube)
    assert device.to_host(cube) is not cube  # nothing on a device: a copy, data untouched
    xr.testing.assert_identical(device.to_host(cube), cube)


@requires_shared
def test_cli_gpu_flag_without_cupy_says_how_to_install(no_cupy, tmp_path, capsys):
    from xr_itslive.cli import main

    status = main(["invert", str(FIXTURE_3X3), "--out", str(tmp_path / "out.zarr"), "--gpu",
                   "--no-progress"])  # fmt: skip
    assert status == 1
    err = capsys.readouterr().err
    assert "xr-itslive invert: error: CuPy is needed" in err and "xr_itslive[gpu]" in err
    assert not (tmp_path / "out.zarr").exists()


def test_gpu_writer_refuses_another_engine(tmp_path):
    cube = synthetic_cube(n_pairs=50, ny=1, nx=2)
    with pytest.raises(InvalidParameterError, match=r"GPU runs the 'array' engine.*'numba'"):
        invert_to_zarr(cube, tmp_path / "x.zarr", gpu=True, engine="numba")
