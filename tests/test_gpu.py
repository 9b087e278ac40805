"""The inversion on a GPU: CuPy chunks in, CuPy chunks out, same numbers as the CPU engine.

The GPU tests are marked ``gpu`` (``pytest -m gpu`` selects them) and skip, with the reason,
where CuPy cannot be imported or no CUDA device is visible; ``benchmarks/gpu_check.sh`` runs
them on a GPU machine. The benchmark's smoke tests at the end run everywhere.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xr_itslive
from xr_itslive.errors import InvalidParameterError
from xr_itslive.kernels import batching
from xr_itslive.kernels.namespace import cupy_namespace, get_namespace, missing_names
from xr_itslive.kernels.pipeline import Options
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows import device
from xr_itslive.workflows.invert import build_problem


def _gpu_status() -> str:
    """'' when a CUDA device is usable through CuPy, else why not."""
    try:
        import cupy
    except Exception as err:  # ImportError, or a CUDA library that fails to load
        return (
            f"CuPy is not importable ({type(err).__name__}: {err}); "
            "install it with pip install 'xr_itslive[gpu]'"
        )
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # no driver
        return f"CuPy found no CUDA device ({type(err).__name__}: {err})"
    return "" if count > 0 else "CuPy found no CUDA device"


GPU_STATUS = _gpu_status()
requires_gpu = pytest.mark.skipif(bool(GPU_STATUS), reason=GPU_STATUS)
BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "bench_gpu.py"

RTOL, ATOL = 1e-6, 1e-4  # float32 outputs of float64 solves; values ~10-1000 m/yr


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


def to_device(cube: xr.Dataset, cp, names=("vx", "vy", "vx_error", "vy_error")) -> xr.Dataset:
    """``cube`` with ``names`` on the GPU: CuPy arrays, or dask arrays of CuPy chunks."""
    out = cube.copy()
    for name in names:
        data = cube[name].data
        if hasattr(data, "map_blocks"):
            meta = cp.empty((0,) * data.ndim, dtype=data.dtype)
            moved = data.map_blocks(cp.asarray, dtype=data.dtype, meta=meta)
        else:
            moved = cp.asarray(data)
        out[name] = cube[name].copy(data=moved)
    return out


def host(data) -> np.ndarray:
    return data.get() if hasattr(data, "get") else np.asarray(data)


def assert_same(got: xr.Dataset, expected: xr.Dataset) -> None:
    assert set(got.data_vars) == set(expected.data_vars)
    for key in expected.data_vars:
        if key == "time_bounds":
            continue
        np.testing.assert_allclose(
            host(got[key].data).astype(float), expected[key].values.astype(float),
            rtol=RTOL, atol=ATOL, err_msg=key,
        )  # fmt: skip


@pytest.fixture(scope="module")
def cube():
    # small: on a GPU a few pixels cost what many do (one kernel launch per band operation)
    return synthetic_cube(
        n_pairs=500, ny=4, nx=6, years=2, seed=11, empty_pixels=2, outlier_fraction=0.03
    )


@pytest.mark.gpu
@requires_gpu
def test_compat_namespace_has_every_kernel_name(cp):
    import cupy

    xp = get_namespace(cp.zeros(2))
    assert xp is cupy_namespace() and xp.__name__ == "array_api_compat.cupy"
    assert missing_names(xp) == []
    print(f"cupy {cupy.__version__} itself lacks {missing_names(cupy)}; compat adds them")


@pytest.mark.gpu
@requires_gpu
def test_dask_cupy_chunks_in_cupy_chunks_out(cube, cp):
    lazy = cube.chunk({"y": 2, "x": 3})
    expected = xr_itslive.invert(cube, step=12)
    assert expected.attrs["engine"] == "numba"
    result = xr_itslive.invert(to_device(lazy, cp), step=12)
    assert result.attrs["engine"] == "array"
    for key in ("vx", "vy", "v", "n_obs"):
        data = result[key].data
        assert isinstance(data._meta, cp.ndarray), (key, type(data._meta))
        block = data.blocks[(0,) * data.ndim].compute()
        assert isinstance(block, cp.ndarray), (key, type(block))
    assert result["vx"].chunks == ((expected.sizes["time"],), (2, 2), (3, 3))
    computed = result.compute()
    assert isinstance(computed["vx"].data, cp.ndarray)
    assert_same(computed, expected)


@pytest.mark.gpu
@requires_gpu
def test_cupy_arrays_in_cupy_arrays_out(cube, cp):
    result = xr_itslive.invert(to_device(cube, cp), step=30)
    assert all(isinstance(result[k].data, cp.ndarray) for k in ("vx", "vy", "v", "n_obs"))
    assert_same(result, xr_itslive.invert(cube, step=30))


OPTIONS = {
    "weights": {"weights": "error"},
    "robust": {"robust": True, "return_outliers": True},
    "huber": {"robust": "huber", "return_outliers": True},
    "auto_lam": {"lam": "auto"},
    "uncertainty": {"uncertainty": True},
    "all": {"weights": "error", "robust": True, "lam": "auto", "uncertainty": True},
}


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("lazy", [False, True], ids=["cupy", "dask-cupy"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_matches_the_numba_engine(cube, cp, name, lazy):
    mask = xr.DataArray(np.ones((cube.sizes["y"], cube.sizes["x"]), bool), dims=("y", "x"))
    mask[0, 0] = False
    kwargs = dict(step=12, mask=mask, **OPTIONS[name])
    expected = xr_itslive.invert(cube, **kwargs)
    source = cube.chunk({"y": 2, "x": 6}) if lazy else cube
    result = xr_itslive.invert(to_device(source, cp), **kwargs)
    if lazy:
        assert isinstance(result["vx"].data._meta, cp.ndarray)
        result = result.compute()
    assert isinstance(result["vx"].data, cp.ndarray)
    assert_same(result, expected)
    assert np.isnan(host(result["vx"].data)[:, 0, 0]).all()


@pytest.mark.gpu
@requires_gpu
def test_pixel_batches_on_the_device(cube, cp, monkeypatch):
    device_cube = to_device(cube, cp)
    whole = xr_itslive.invert(device_cube, step=12, uncertainty=True)
    monkeypatch.setenv(batching.BATCH_ENV, "5")
    batched = xr_itslive.invert(device_cube, step=12, uncertainty=True)
    for key in ("vx", "vx_std", "vy", "n_obs"):
        np.testing.assert_allclose(host(batched[key].data), host(whole[key].data), rtol=1e-12)


@pytest.mark.gpu
@requires_gpu
def test_free_memory_sizes_the_batches(cube, cp):
    free = batching.free_device_bytes(cp.zeros(1))
    assert free is not None and free > 0
    problem = build_problem(cube, 12.0)
    batch = batching.pixel_batch_size(problem, Options(), free)
    assert batch * batching.bytes_per_pixel(problem, Options()) <= free
    print(f"free {free / 2**30:.1f} GiB -> {batch} pixels per batch for 500 pairs")


@pytest.mark.gpu
@requires_gpu
def test_numba_engine_refuses_gpu_chunks(cube, cp):
    with pytest.raises(InvalidParameterError, match=r"engine='numba'.*CuPy \(GPU\) arrays"):
        xr_itslive.invert(to_device(cube, cp), engine="numba")


def load_benchmark():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_runs_on_a_tiny_cube(capsys, tmp_path):
    """The benchmark cannot silently break: its CPU part (and GPU part, where there is
    one) runs here on a tiny cube."""
    bench = load_benchmark()
    out = tmp_path / "figures.json"
    args = ["--pairs", "300", "--years", "2", "--side", "4", "--json", str(out)]
    if GPU_STATUS:
        args.append("--cpu-only")
    else:
        args += ["--fill-fraction", "0.0001", "--cpu-max-pixels", "64"]
    assert bench.main(args) == 0
    printed = capsys.readouterr().out
    assert "case 1: the 300-pair synthetic case, 16 pixels" in printed
    figures = json.loads(out.read_text())
    assert figures["case1_cpu_pixels_per_s"] > 0
    if not GPU_STATUS:
        assert figures["case1_gpu_pixels_per_s"] > 0 and figures["card"]["name"]
        assert figures["case1_max_abs_difference"] < 1e-3


@pytest.mark.skipif(not GPU_STATUS, reason="this machine has a GPU")
def test_benchmark_without_a_gpu_says_so(capsys):
    assert load_benchmark().main([]) == 2
    message = capsys.readouterr().err
    assert message.startswith("no GPU: CuPy") and "--cpu-only" in message


@pytest.mark.gpu
@requires_gpu
def test_to_device_and_back_stays_lazy(cube, cp):
    lazy = cube.chunk({"y": 2, "x": 3})
    on_device = device.to_device(lazy)
    assert isinstance(on_device["vx"].data._meta, cp.ndarray)
    assert on_device["satellite_img1"].dtype == cube["satellite_img1"].dtype  # left on the host
    result = device.to_host(xr_itslive.invert(on_device, step=12))
    assert result.attrs["engine"] == "array"
    assert isinstance(result["vx"].data._meta, np.ndarray)
    assert isinstance(result["vx"].data.blocks[0, 0, 0].compute(), np.ndarray)
    assert_same(result.compute(), xr_itslive.invert(cube, step=12))


@pytest.mark.gpu
@requires_gpu
def test_gpu_writer_matches_the_cpu_store(cube, cp, tmp_path):
    """What ``xr-itslive invert --gpu`` runs (needs zarr, which a bare GPU machine may lack)."""
    pytest.importorskip("zarr", reason="zarr is not installed: the store is not checked here")
    from xr_itslive.workflows.invert_to_zarr import invert_to_zarr

    lazy = cube[["vx", "vy"]].chunk({"y": 2, "x": 3})
    kwargs = dict(step=12, lam=10.0, uncertainty=True, progress=False)
    gpu = invert_to_zarr(lazy, tmp_path / "gpu.zarr", gpu=True, **kwargs)
    cpu = invert_to_zarr(lazy, tmp_path / "cpu.zarr", **kwargs)
    assert gpu.n_written == cpu.n_written == 4
    assert_same(xr.open_zarr(tmp_path / "gpu.zarr"), xr.open_zarr(tmp_path / "cpu.zarr").load())
