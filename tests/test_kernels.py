"""The kernels against a direct dense solve, and against each other."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_geo_design import pairs

from xr_itslive.geo import design
from xr_itslive.kernels import design as kdesign
from xr_itslive.kernels.banded import assemble_normal_equations, solve_pixels
from xr_itslive.kernels.compiled import solve_pixels_compiled
from xr_itslive.kernels.pipeline import Options


def problem(n_pairs=300, step=12.0, lam=10.0, derivative=2, seed=0, max_len=400.0):
    img1, img2 = pairs(n_pairs, seed=seed, max_len=max_len)
    geometry = design.pair_geometry(img1, img2, step, derivative=derivative)
    terms = kdesign.normal_terms(geometry.arrays, geometry.n_cells, geometry.bandwidth)
    arrays = (
        terms.gram_pair, terms.gram_cell, terms.gram_coef, terms.gram_kind_starts,
        terms.rhs_pair, terms.rhs_cell, terms.rhs_coef, terms.rhs_kind_starts,
    )  # fmt: skip
    unit = kdesign.regularization_matrix(geometry.grid.n_cells, derivative, 1.0, step)
    band = kdesign.to_upper_band(unit, geometry.bandwidth).ravel()
    a = kdesign.date_span_matrix(geometry.arrays, geometry.n_cells).toarray()
    return geometry, arrays, band, a, lam**2 * unit.toarray()


def geometry_arrays(geometry):
    return geometry.arrays


def compiled(values, weights, geometry, arrays, band, options, threads=1):
    n_cells, bw = geometry.grid.n_cells, geometry.bandwidth
    return solve_pixels_compiled(
        values, weights, geometry_arrays(geometry), band, n_cells, bw, options, threads
    )


def generic(values, weights, geometry, arrays, band, options):
    """The namespace-generic engine, pixels first in and out like ``compiled``."""
    n_cells, bw = geometry.grid.n_cells, geometry.bandwidth
    out = solve_pixels(
        values.T.copy(), None if weights is None else weights.T.copy(), arrays,
        geometry_arrays(geometry), band, n_cells, bw, options,
    )  # fmt: skip
    return {k: np.asarray(v).T for k, v in out.items()}


def observations(n_pix, n_pairs, seed=0, gaps=0.3):
    rng = np.random.default_rng(seed)
    values = rng.normal(100, 20, (n_pix, n_pairs))
    values[rng.uniform(size=values.shape) < gaps] = np.nan
    return values


def dense_reference(values, weights, a, reg, min_obs):
    out = np.full((values.shape[0], a.shape[1]), np.nan)
    for p, row in enumerate(values):  # the reference formulation: one dense solve per pixel
        valid = ~np.isnan(row)
        if valid.sum() < min_obs:
            continue
        w = np.ones(valid.sum()) if weights is None else weights[p, valid]
        av = a[valid]
        out[p] = np.linalg.solve(av.T @ (w[:, None] * av) + reg, av.T @ (w * row[valid]))
    return out


@pytest.mark.parametrize("derivative", [1, 2])
@pytest.mark.parametrize("step", [6.0, 12.0, 31.0])
def test_assembly_matches_dense_normal_matrix(derivative, step):
    geometry, arrays, _, a, _ = problem(step=step, derivative=derivative)
    values = observations(7, a.shape[0])
    rng = np.random.default_rng(3)
    w = np.where(np.isnan(values), 0.0, rng.uniform(0.1, 2.0, values.shape))
    wy = np.where(np.isnan(values), 0.0, w * values)
    gram, rhs = assemble_normal_equations(
        w.T.copy(), wy.T.copy(), arrays, a.shape[1], geometry.bandwidth
    )
    for p in range(values.shape[0]):
        dense = a.T @ (w[p][:, None] * a)
        band = kdesign.to_upper_band(sp.csr_array(dense), geometry.bandwidth).ravel()
        np.testing.assert_allclose(gram[:, p], band, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(rhs[:, p], a.T @ wy[p], rtol=1e-12, atol=1e-9)


ENGINES = {"compiled": compiled, "generic": generic}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("derivative", "lam"), [(1, 3.0), (2, 10.0), (2, 200.0)])
@pytest.mark.parametrize("gaps", [0.3, 0.85])  # the numba engine's dense and sparse assembly
def test_solution_matches_dense_least_squares(engine, derivative, lam, gaps):
    geometry, arrays, band, a, reg = problem(derivative=derivative, lam=lam)
    values = observations(23, a.shape[0], gaps=gaps)
    values[4] = np.nan  # an empty pixel
    values[5, 3:] = np.nan  # too few observations
    expected = dense_reference(values, None, a, reg, min_obs=5)
    out = ENGINES[engine](values, None, geometry, arrays, band, Options(min_obs=5, lams=(lam,)))
    got = out["solution"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.nanmax(np.abs(expected)))
    np.testing.assert_array_equal(out["n_obs"], (~np.isnan(values)).sum(axis=1))


@pytest.mark.parametrize("engine", ENGINES)
def test_weighted_solution_matches_dense(engine):
    geometry, arrays, band, a, reg = problem()
    values = observations(9, a.shape[0])
    weights = np.random.default_rng(5).uniform(0.05, 3.0, values.shape)
    expected = dense_reference(values, weights, a, reg, min_obs=5)
    out = ENGINES[engine](values, weights, geometry, arrays, band, Options(lams=(10.0,)))
    np.testing.assert_allclose(out["solution"], expected, rtol=1e-9, atol=1e-7)


def test_threads_give_identical_results():
    geometry, arrays, band, a, _ = problem()
    values = observations(101, a.shape[0], seed=2)
    one = compiled(values, None, geometry, arrays, band, Options(), threads=1)
    two = compiled(values, None, geometry, arrays, band, Options(), threads=3)
    np.testing.assert_array_equal(one["solution"], two["solution"])


@pytest.mark.parametrize("engine", ENGINES)
def test_singular_pixels_are_nan_not_garbage(engine):
    # no smoothness term and data in a few cells only: unidentifiable cells
    geometry, arrays, band, a, _ = problem(lam=0.0)
    values = observations(4, a.shape[0])
    values[1, :] = np.nan
    values[1, :3] = 50.0
    out = ENGINES[engine](values, None, geometry, arrays, band, Options(min_obs=1, lams=(0.0,)))
    assert np.isnan(out["solution"][1]).all()
    assert np.isfinite(out["solution"][0]).all()


def dense_selected(values, weights, a, reg):
    """Dense G⁻¹, effective parameters and residual variance for one pixel."""
    valid = ~np.isnan(values)
    w = np.ones(valid.sum()) if weights is None else weights[valid]
    av = a[valid]
    gram = av.T @ (w[:, None] * av)
    inverse = np.linalg.inv(gram + reg)
    x = inverse @ (av.T @ (w * values[valid]))
    edf = np.trace(inverse @ gram)
    rss = np.sum(w * (values[valid] - av @ x) ** 2)
    return x, inverse, edf, rss


@pytest.mark.parametrize("engine", ENGINES)
def test_posterior_std_matches_dense_inverse(engine):
    geometry, arrays, band, a, reg = problem(lam=10.0)
    values = observations(5, a.shape[0])
    out = ENGINES[engine](
        values, None, geometry, arrays, band, Options(lams=(10.0,), uncertainty=True)
    )
    for p in range(values.shape[0]):
        x, inverse, edf, rss = dense_selected(values[p], None, a, reg)
        sigma2 = rss / (np.sum(~np.isnan(values[p])) - edf)
        np.testing.assert_allclose(out["std"][p], np.sqrt(np.diag(inverse) * sigma2), rtol=1e-8)
        np.testing.assert_allclose(out["solution"][p], x, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("engine", ENGINES)
def test_auto_lam_minimizes_gcv(engine):
    geometry, arrays, band, a, _ = problem(n_pairs=400)
    values = observations(4, a.shape[0], seed=7)
    grid = (0.3, 3.0, 30.0, 300.0)
    out = ENGINES[engine](values, None, geometry, arrays, band, Options(lams=grid))
    unit = kdesign.regularization_matrix(geometry.grid.n_cells, 2, 1.0, 12.0).toarray()
    for p in range(values.shape[0]):
        n = np.sum(~np.isnan(values[p]))
        scores = []
        for lam in grid:
            _, _, edf, rss = dense_selected(values[p], None, a, lam**2 * unit)
            scores.append(n * rss / (n - edf) ** 2)
        best = grid[int(np.argmin(scores))]
        assert out["lam"][p] == best
        expected = dense_reference(values[p : p + 1], None, a, best**2 * unit, 5)[0]
        np.testing.assert_allclose(out["solution"][p], expected, rtol=1e-9, atol=1e-7)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["tukey", "huber"])
def test_robust_rejects_gross_outliers(engine, kind):
    geometry, arrays, band, a, reg = problem(n_pairs=600)
    rng = np.random.default_rng(9)
    truth = 100 + 20 * np.sin(np.arange(a.shape[1]) / 6.0)
    clean = a @ truth + rng.normal(0, 2.0, (6, a.shape[0]))
    values = clean.copy()
    hit = rng.uniform(size=values.shape) < 0.1
    values[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(100, 400, hit.sum())
    plain = ENGINES[engine](values, None, geometry, arrays, band, Options())
    robust = ENGINES[engine](
        values, None, geometry, arrays, band, Options(robust=kind, iterations=6)
    )
    reference = ENGINES[engine](clean, None, geometry, arrays, band, Options())
    inner = slice(3, -3)
    err_plain = np.abs(plain["solution"] - truth)[:, inner].mean()
    err_robust = np.abs(robust["solution"] - truth)[:, inner].mean()
    err_clean = np.abs(reference["solution"] - truth)[:, inner].mean()
    assert err_robust < 0.2 * err_plain
    assert err_robust < 2.0 * err_clean
    flagged = robust["outlier"]
    assert flagged[hit].mean() > 0.95  # the outliers are flagged
    assert flagged[~hit].mean() < (0.05 if kind == "tukey" else 0.2)


@pytest.mark.parametrize("gaps", [0.3, 0.85])
def test_engines_agree_on_every_option(gaps):
    geometry, arrays, band, a, _ = problem(n_pairs=300)
    values = observations(6, a.shape[0], seed=4, gaps=gaps)
    weights = np.random.default_rng(2).uniform(0.2, 2.0, values.shape)
    options = Options(lams=(1.0, 10.0, 100.0), robust="tukey", iterations=3, uncertainty=True)
    one = compiled(values, weights, geometry, arrays, band, options)
    two = generic(values, weights, geometry, arrays, band, options)
    for key in ("solution", "std", "lam"):
        np.testing.assert_allclose(one[key], two[key], rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(one["outlier"], two["outlier"])


def test_generic_kernels_run_under_strict_array_api():
    """The generic engine calls nothing numpy-only: it runs under array_api_strict."""
    xps = pytest.importorskip("array_api_strict")
    geometry, arrays, band, a, reg = problem(n_pairs=120)
    values = observations(6, a.shape[0])
    strict_terms = [xps.asarray(x) for x in arrays]
    strict_terms[3] = [int(v) for v in arrays[3]]
    strict_terms[7] = [int(v) for v in arrays[7]]
    strict_geometry = tuple(xps.asarray(x) for x in geometry_arrays(geometry))
    options = Options(lams=(3.0, 10.0), robust="huber", iterations=2, uncertainty=True)
    got = solve_pixels(
        xps.asarray(values.T.copy()), None, tuple(strict_terms), strict_geometry,
        xps.asarray(band), a.shape[1], geometry.bandwidth, options,
    )  # fmt: skip
    assert all(type(v).__module__.startswith("array_api_strict") for v in got.values())
    expected = compiled(values, None, geometry, arrays, band, options)
    for key in ("solution", "std", "lam"):
        np.testing.assert_allclose(np.asarray(got[key]).T, expected[key], rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("engine", ["numba", "array"])
def test_penalty_trace_counts_the_parameters_the_smoothness_takes(engine):
    """``n_cells - trace(G⁻¹ λ²R)`` is ``trace(G⁻¹ AᵀWA)``, the effective parameters, and
    the entries of the band past the matrix edge (never written by the selected inverse)
    are not read."""
    from xr_itslive.kernels.banded import ArrayOps
    from xr_itslive.kernels.compiled import BLOCK, _penalty_trace

    rng = np.random.default_rng(0)
    n, bw, lanes = 9, 3, BLOCK
    reg = kdesign.regularization_matrix(n, 2, 1.0, 12.0).toarray()
    reg_band = kdesign.to_upper_band(sp.csr_array(reg), bw).ravel()
    lam2 = rng.uniform(0.5, 40.0, size=lanes)
    z = np.full((n * (bw + 1), lanes), np.nan)  # past the edge: garbage
    expected = np.empty(lanes)
    for b in range(lanes):
        a = rng.normal(size=(2 * n, n)) * (rng.uniform(size=(2 * n, n)) < 0.5)
        data = a.T @ a
        inverse = np.linalg.inv(data + lam2[b] * reg)
        expected[b] = np.trace(inverse @ data)
        for r in range(n):
            for k in range(min(bw + 1, n - r)):
                z[r * (bw + 1) + k, b] = inverse[r, r + k]
    if engine == "numba":
        out = np.empty(lanes)
        _penalty_trace(z, reg_band, lam2, n, bw, 2, out)
    else:
        z = np.nan_to_num(z)  # the array engine's selected inverse writes zeros there
        ops = ArrayOps(np, None, None, reg_band, n, bw)
        assert ops.reg_width == 2
        out = ops.penalty_trace(z, lam2)
    np.testing.assert_allclose(n - out, expected, rtol=1e-10)


@pytest.mark.parametrize("n", [1, 2, 3, 511, 512, 513, 1000, 3151])
def test_median_equals_numpy(n):
    """The bracketed selection (IRLS scale) returns np.median exactly, ties and all."""
    from xr_itslive.kernels.compiled import _median

    rng = np.random.default_rng(n)
    buffer, sample = np.empty(n + 1), np.empty(63)
    cases = [
        np.abs(rng.standard_cauchy(n)),  # heavy tails: outliers far from the bracket
        np.round(np.abs(rng.standard_normal(n)) * 3),  # many ties
        np.sort(np.abs(rng.standard_normal(n))),  # sorted: a biased sample
        np.where(np.arange(n) < n // 2, 0.0, rng.uniform(1, 2, n)),  # half zeros
    ]
    for values in cases:
        assert _median(values, n, buffer, sample) == np.median(values)


COLD_CACHE_SCRIPT = """
import numpy as np
from test_kernels import compiled, observations, problem
from xr_itslive.kernels.pipeline import Options

geometry, arrays, band, a, _ = problem(n_pairs=60)
compiled(observations(3, a.shape[0]), None, geometry, arrays, band, Options())
"""


def test_cold_numba_cache_is_announced_once_and_warm_one_is_silent(tmp_path):
    """The first inversion with an empty numba cache says it compiles (the wait is seconds);
    a process that finds the kernels in the cache says nothing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from xr_itslive.kernels.compiled import COLD_CACHE_NOTICE

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])

    def run() -> str:
        out = subprocess.run(
            [sys.executable, "-c", COLD_CACHE_SCRIPT], env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    cold = run()
    assert cold.count(COLD_CACHE_NOTICE) == 1
    assert COLD_CACHE_NOTICE not in run()


def test_profile_benchmark_runs_on_a_tiny_cube(tmp_path):
    """benchmarks/profile_whole_cube.py (the per-primitive timings of docs/scaling.md) runs."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    from make_cube import make_cube

    cube = tmp_path / "cube.zarr"
    make_cube(cube, ny=20, nx=20, n_pairs=2_000, chunk_pairs=1_000, workers=1, seed=1)
    out = subprocess.run(
        [sys.executable, str(bench / "profile_whole_cube.py"), "--cube", str(cube),
         "--pixels", "100", "--y0", "5", "--x0", "5", "--repeat", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "solve_block:" in out.stdout and "assemble_factor" in out.stdout


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("per_pixel_weights", [False, True])
def test_chunk_layouts_give_identical_results(dtype, per_pixel_weights):
    """A (mid_date, pixel) chunk read in place (whole blocks as vectors, a partial last block)
    gives what a pixels-first copy gives, with per-pair or per-pixel weights."""
    geometry, arrays, band, a, _ = problem(n_pairs=300)
    values = observations(37, a.shape[0], seed=3, gaps=0.6).astype(dtype)  # 2 blocks + 5
    rng = np.random.default_rng(4)
    shape = values.shape if per_pixel_weights else (a.shape[0],)
    weights = rng.uniform(0.2, 2.0, shape)
    options = Options(robust="tukey", iterations=2)
    in_place = np.ascontiguousarray(values.T).T  # pixels innermost in memory
    assert in_place.T.flags.c_contiguous
    one = compiled(np.ascontiguousarray(values), weights, geometry, arrays, band, options)
    two = compiled(in_place, weights, geometry, arrays, band, options)
    for key in ("solution", "n_obs", "outlier"):
        np.testing.assert_array_equal(one[key], two[key])


@pytest.mark.parametrize("robust", [None, "huber", "tukey"])
@pytest.mark.parametrize("weighting", ["none", "per pair", "per pixel"])
def test_compiled_steps_give_the_pipelines_numbers_to_the_bit(robust, weighting):
    """One λ: ``solve_pixels_compiled`` runs the pipeline's steps compiled in one call
    (``_solve_range``); its numbers are those of ``run_pipeline`` calling the same
    primitives from Python (``steps="pipeline"``), bit for bit, for every output, including
    pixels it must leave
    NaN (too few pairs) and a subset of pixels read in place."""
    geometry, arrays, band, _, _ = problem(n_pairs=260, seed=3)
    rng = np.random.default_rng(7)
    n_pix, n_pairs = 53, geometry.arrays[0].size
    values = np.ascontiguousarray(observations(n_pix, n_pairs, seed=5, gaps=0.6))
    values[rng.uniform(size=values.shape) < 0.02] += 400.0  # outliers
    values[4, 3:] = np.nan  # too few pairs
    weights = {
        "none": None,
        "per pair": rng.uniform(0.2, 2.0, n_pairs),
        "per pixel": rng.uniform(0.2, 2.0, (n_pix, n_pairs)),
    }[weighting]
    pixels = np.array([p for p in range(n_pix) if p % 7 != 2], dtype=np.int64)
    options = Options(min_obs=5, lams=(10.0,), robust=robust, iterations=2, uncertainty=True)
    got, expected = (
        solve_pixels_compiled(
            values,
            weights,
            geometry_arrays(geometry),
            band,
            geometry.grid.n_cells,
            geometry.bandwidth,
            options,
            pixels=pixels,
            steps=steps,
        )  # fmt: skip
        for steps in ("compiled", "pipeline")
    )
    assert np.isnan(got["solution"][pixels.tolist().index(4)]).all()
    assert np.isfinite(got["solution"]).sum() > 0.8 * got["solution"].size
    for key in ("solution", "std", "n_obs") + (("outlier",) if robust else ()):
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_unknown_steps_are_refused_with_the_choices():
    geometry, arrays, band, _, _ = problem(n_pairs=60, seed=1)
    values = np.ascontiguousarray(observations(4, geometry.arrays[0].size, seed=2))
    options = Options(min_obs=5, lams=(10.0,))
    with pytest.raises(ValueError, match="steps must be 'compiled' or 'pipeline', not 'fast'"):
        solve_pixels_compiled(
            values, None, geometry_arrays(geometry), band, geometry.grid.n_cells,
            geometry.bandwidth, options, steps="fast",
        )  # fmt: skip
