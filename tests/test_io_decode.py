"""ITS_LIVE's int16 velocities decoded in one pass (kernels/decode.py): the numbers, NaNs,
attributes and encoding of xarray's CF decoding followed by the sort by ``mid_date``, whatever
the chunking; lazily, the sort done inside the read tasks."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import raise_if_dask_computes

import xr_itslive
from xr_itslive.io.cube import decode_cube
from xr_itslive.kernels.decode import mask_fill
from xr_itslive.synthetic import synthetic_cube


def _reference(values: np.ndarray, fills, order) -> np.ndarray:
    taken = values[order]
    out = taken.astype(np.float32)
    out[np.isin(taken, fills)] = np.nan
    return out


@pytest.mark.parametrize("dtype", [np.int16, np.int8, np.uint8, np.uint16])
def test_mask_fill_is_the_cast_mask_and_take(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max, size=(300, 4, 5), endpoint=True).astype(dtype)
    fills = [int(info.max), int(info.min) + 1]
    values[rng.random(values.shape) < 0.3] = fills[0]
    values[rng.random(values.shape) < 0.1] = fills[1]
    order = rng.permutation(300)
    for f in ([fills[0]], fills):
        got = mask_fill(values, f, order)
        assert got.dtype == np.float32 and got.shape == values.shape
        np.testing.assert_array_equal(got, _reference(values, f, order))
    # as stored without an order; a strided (not C-contiguous) chunk too
    np.testing.assert_array_equal(
        mask_fill(values, fills), _reference(values, fills, np.arange(300))
    )
    strided = values[:, ::2, 1:]
    np.testing.assert_array_equal(
        mask_fill(strided, fills, order), _reference(strided, fills, order)
    )


def test_mask_fill_edges():
    values = np.array([[0, 5], [-32767, 7]], np.int16)
    # a fill the dtype cannot hold (or a NaN fill) marks nothing
    np.testing.assert_array_equal(mask_fill(values, [70000]), values.astype(np.float32))
    np.testing.assert_array_equal(mask_fill(values, [np.nan]), values.astype(np.float32))
    assert mask_fill(values[:0], [-32767]).shape == (0, 2)
    with pytest.raises(TypeError, match="not int32"):
        mask_fill(values.astype(np.int32), [-32767])
    with pytest.raises(IndexError, match="order must index the 2 rows"):
        mask_fill(values, [-32767], np.array([0, 2]))


def _int16_store(tmp_path, chunks: dict, name: str = "cube.zarr", **extra_attrs):
    """An ITS_LIVE-encoded store (int16 + missing_value, unsorted mid_date) and its cube."""
    cube = synthetic_cube(n_pairs=400, ny=4, nx=5, seed=3)
    cube = cube.isel(mid_date=np.random.default_rng(0).permutation(cube.sizes["mid_date"]))
    cube = cube.reset_coords(["acquisition_date_img1", "acquisition_date_img2"])
    cube = cube.drop_vars([c for c in cube.coords if c not in ("mid_date", "y", "x")])
    for v in ("vx", "vy"):
        cube[v] = cube[v].round()
        cube[v].attrs.update(extra_attrs)
        cube[v].encoding = {"dtype": "int16", "missing_value": -32767}
    path = tmp_path / name
    cube.chunk(chunks).to_zarr(path, zarr_format=2, consolidated=True)
    return path


def _without_crs(attrs: dict) -> dict:
    return {k: v for k, v in attrs.items() if k != "grid_mapping"}  # rioxarray's to set


@pytest.mark.parametrize(
    "chunks", [{"mid_date": -1, "y": 2, "x": 5}, {"mid_date": 150, "y": 4, "x": 5}]
)
def test_open_cube_gives_xarrays_decoding_sorted(tmp_path, chunks):
    path = _int16_store(tmp_path, chunks)
    with raise_if_dask_computes(max_computes=1):  # the pair dates only
        opened = xr_itslive.open_cube(path, chunks=chunks if chunks["mid_date"] > 0 else None)
    ref = xr.open_zarr(path)  # xarray's CF decoding
    order = np.argsort(ref["mid_date"].values, kind="stable")
    ref = ref.isel(mid_date=order)
    for v in ("vx", "vy"):
        assert opened[v].dtype == np.float32
        np.testing.assert_array_equal(opened[v].values, ref[v].values)
        assert _without_crs(opened[v].attrs) == _without_crs(ref[v].attrs)
        assert opened[v].encoding["missing_value"] == -32767
        assert opened[v].encoding["dtype"] == np.int16
    np.testing.assert_array_equal(opened["pair_id"].values, order)
    assert np.all(np.diff(opened["mid_date"].values) >= np.timedelta64(0))


def test_the_sort_happens_in_the_read_tasks_with_one_order_key(tmp_path):
    path = _int16_store(tmp_path, {"mid_date": -1, "y": 1, "x": 1})
    opened = xr_itslive.open_cube(path, variables=["vx"])
    data = opened["vx"].data
    graph = data.__dask_graph__()
    # one task per chunk that reads, decodes and sorts (no dask take/getitem layer after it)
    assert not any(name.startswith(("getitem", "take")) for name in graph.layers)
    (optimized,) = __import__("dask").optimize(data)
    n_pairs = opened.sizes["mid_date"]
    # the order (8 bytes a pair) is in the graph once, not in each of the 20 tasks
    assert len(pickle.dumps(dict(optimized.__dask_graph__()))) < 20 * 8 * n_pairs / 2


def test_decode_cube_decodes_a_store_opened_undecoded(tmp_path):
    path = _int16_store(tmp_path, {"mid_date": -1, "y": 4, "x": 5})
    raw = xr.open_zarr(path, mask_and_scale=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # missing_value is there: nothing to warn about
        lazy = decode_cube(raw)
        eager = decode_cube(raw.load())  # numpy-backed variables: the same numbers
    reference = xr_itslive.open_cube(path)
    for v in ("vx", "vy"):
        np.testing.assert_array_equal(lazy[v].values, reference[v].values)
        np.testing.assert_array_equal(eager[v].values, reference[v].values)


def test_scaled_integers_are_left_to_xarray(tmp_path):
    # M11/M12 style: int16 with scale_factor and add_offset, decoded by xarray to floats
    path = _int16_store(tmp_path, {"mid_date": -1, "y": 4, "x": 5})
    raw = xr.open_zarr(path, mask_and_scale=False)
    raw["vx"].attrs.update(scale_factor=0.5, add_offset=1.0)
    decoded = decode_cube(raw)
    ref = raw.isel(mid_date=np.argsort(raw["mid_date"].values, kind="stable"))["vx"].values
    expected = np.where(ref == -32767, np.nan, ref * 0.5 + 1.0)
    np.testing.assert_allclose(decoded["vx"].values, expected, rtol=1e-6)
