"""The kernels against a direct dense solve, and against each other."""

import numpy as np
import pytest
import scipy.sparse as sp
from test_design import pairs

from xr_itslive import design
from xr_itslive.kernels.banded import assemble_normal_equations, solve_pixels
from xr_itslive.kernels.compiled import solve_pixels_compiled


def problem(n_pairs=300, step=12.0, lam=10.0, derivative=2, seed=0, max_len=400.0):
    img1, img2 = pairs(n_pairs, seed=seed, max_len=max_len)
    geometry = design.pair_geometry(img1, img2, step, derivative=derivative)
    terms = design.normal_terms(geometry)
    arrays = (
        terms.gram_pair, terms.gram_cell, terms.gram_coef, terms.gram_kind_starts,
        terms.rhs_pair, terms.rhs_cell, terms.rhs_coef, terms.rhs_kind_starts,
    )  # fmt: skip
    reg = design.regularization_matrix(geometry.grid.n_cells, derivative, lam, step)
    band = design.to_upper_band(reg, geometry.bandwidth).reshape(-1, 1)
    a = design.date_span_matrix(geometry).toarray()
    return geometry, arrays, band, a, reg.toarray()


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
        band = design.to_upper_band(sp.csr_array(dense), geometry.bandwidth).ravel()
        np.testing.assert_allclose(gram[:, p], band, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(rhs[:, p], a.T @ wy[p], rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("engine", ["compiled", "generic"])
@pytest.mark.parametrize(("derivative", "lam"), [(1, 3.0), (2, 10.0), (2, 200.0)])
def test_solution_matches_dense_least_squares(engine, derivative, lam):
    geometry, arrays, band, a, reg = problem(derivative=derivative, lam=lam)
    values = observations(23, a.shape[0])
    values[4] = np.nan  # an empty pixel
    values[5, 3:] = np.nan  # too few observations
    expected = dense_reference(values, None, a, reg, min_obs=5)
    n_cells, bw = a.shape[1], geometry.bandwidth
    if engine == "compiled":
        got, n_obs = solve_pixels_compiled(values, None, arrays, band, n_cells, bw, 5)
    else:
        got, n_obs = solve_pixels(values.T.copy(), None, arrays, band, n_cells, bw, 5)
        got = got.T
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.nanmax(np.abs(expected)))
    np.testing.assert_array_equal(n_obs, (~np.isnan(values)).sum(axis=1))


def test_weighted_solution_matches_dense():
    geometry, arrays, band, a, reg = problem()
    values = observations(9, a.shape[0])
    weights = np.random.default_rng(5).uniform(0.05, 3.0, values.shape)
    expected = dense_reference(values, weights, a, reg, min_obs=5)
    n_cells, bw = a.shape[1], geometry.bandwidth
    got, _ = solve_pixels_compiled(values, weights, arrays, band, n_cells, bw, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-7)
    got2, _ = solve_pixels(values.T.copy(), weights.T.copy(), arrays, band, n_cells, bw, 5)
    np.testing.assert_allclose(got2.T, expected, rtol=1e-9, atol=1e-7)


def test_threads_give_identical_results():
    geometry, arrays, band, a, _ = problem()
    values = observations(101, a.shape[0], seed=2)
    one, _ = solve_pixels_compiled(
        values, None, arrays, band, a.shape[1], geometry.bandwidth, 5, threads=1
    )
    two, _ = solve_pixels_compiled(
        values, None, arrays, band, a.shape[1], geometry.bandwidth, 5, threads=3
    )
    np.testing.assert_array_equal(one, two)


def test_singular_pixels_are_nan_not_garbage():
    # no smoothness term and data in a few cells only: unidentifiable cells
    geometry, arrays, band, a, _ = problem(lam=0.0)
    values = observations(4, a.shape[0])
    values[1, :] = np.nan
    values[1, :3] = 50.0
    got, _ = solve_pixels_compiled(
        values, None, arrays, band * 0, a.shape[1], geometry.bandwidth, 1
    )
    assert np.isnan(got[1]).all()
    got_generic, _ = solve_pixels(
        values.T.copy(), None, arrays, band * 0, a.shape[1], geometry.bandwidth, 1
    )
    assert np.isnan(got_generic[:, 1]).all()


def test_generic_kernels_run_under_strict_array_api():
    """The generic engine calls nothing numpy-only: it runs under array_api_strict."""
    xps = pytest.importorskip("array_api_strict")
    geometry, arrays, band, a, reg = problem(n_pairs=120)
    values = observations(6, a.shape[0])
    strict_terms = [xps.asarray(x) for x in arrays]
    strict_terms[3] = [int(v) for v in arrays[3]]
    strict_terms[7] = [int(v) for v in arrays[7]]
    got, n_obs = solve_pixels(
        xps.asarray(values.T.copy()), None, tuple(strict_terms), xps.asarray(band),
        a.shape[1], geometry.bandwidth, 5,
    )  # fmt: skip
    assert type(got).__module__.startswith("array_api_strict")
    expected = dense_reference(values, None, a, reg, min_obs=5)
    np.testing.assert_allclose(np.asarray(got).T, expected, rtol=1e-9, atol=1e-7)
