import numpy as np
import pytest
import scipy.sparse as sp

from xr_itslive.errors import EmptySelectionError, InvalidParameterError
from xr_itslive.geo import design
from xr_itslive.kernels import design as kdesign

NS_DAY = 86400 * 10**9


def pairs(n=200, seed=0, span=900.0, max_len=400.0):
    rng = np.random.default_rng(seed)
    length = rng.uniform(0.5, max_len, n)
    start = rng.uniform(0, span - length)
    t0 = np.datetime64("2016-03-01T00:00", "ns")
    img1 = t0 + (start * NS_DAY).astype("timedelta64[ns]")
    img2 = img1 + (length * NS_DAY).astype("timedelta64[ns]")
    return img1, img2


def brute_force_overlaps(img1, img2, grid):
    edges = grid.days(grid.edges)
    u1, u2 = grid.days(img1), grid.days(img2)
    overlap = np.minimum(u2[:, None], edges[None, 1:]) - np.maximum(u1[:, None], edges[None, :-1])
    return np.clip(overlap, 0, None) / (u2 - u1)[:, None]


@pytest.mark.parametrize("step", [1, 5.5, 12, 30])
def test_date_span_matrix_is_exact_overlap(step):
    img1, img2 = pairs()
    geometry = design.pair_geometry(img1, img2, step)
    matrix = kdesign.date_span_matrix(geometry.arrays, geometry.n_cells).toarray()
    expected = brute_force_overlaps(img1, img2, geometry.grid)
    np.testing.assert_allclose(matrix, expected, atol=1e-12)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
    assert geometry.bandwidth == max(int((matrix > 0).sum(axis=1).max()) - 1, 2)


def test_window_drops_pairs_reaching_outside():
    img1, img2 = pairs()
    start, end = np.datetime64("2016-06-01"), np.datetime64("2017-06-01")
    geometry = design.pair_geometry(img1, img2, 12, start, end)
    inside = (img1 >= start) & (img2 <= end)
    np.testing.assert_array_equal(geometry.kept, inside)
    assert geometry.grid.start == np.datetime64("2016-06-01", "ns")
    matrix = kdesign.date_span_matrix(geometry.arrays, geometry.n_cells)
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)


def test_window_without_pairs_is_a_clear_error():
    img1, img2 = pairs()
    with pytest.raises(EmptySelectionError, match="no image pair lies inside 2030-01-01"):
        design.pair_geometry(img1, img2, 12, "2030-01-01", "2031-01-01")


def test_reversed_pairs_are_dropped_with_a_warning():
    img1, img2 = pairs(20)
    img2 = img2.copy()
    img2[3] = img1[3]
    img2[5] = img1[5] - np.timedelta64(10, "D")
    with pytest.warns(
        UserWarning, match="2 pairs have acquisition_date_img2 <= acquisition_date_img1"
    ):
        geometry = design.pair_geometry(img1, img2, 12)
    assert not geometry.kept[3] and not geometry.kept[5]
    assert geometry.kept.sum() == 18


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"step": 0}, "step must be a positive number of days, got step=0"),
        ({"step": -3}, "step must be a positive number of days, got step=-3"),
        ({"lam": -1.0}, r"lam must be a finite number >= 0, got lam=-1.0"),
        ({"derivative": 3}, "derivative must be 1 .* got derivative=3"),
    ],
)
def test_bad_parameters(kwargs, match):
    params = {"step": 12, "lam": 10.0, "derivative": 2} | kwargs
    with pytest.raises(InvalidParameterError, match=match):
        design.check_parameters(**params)


def test_start_after_end():
    img1, img2 = pairs()
    with pytest.raises(
        InvalidParameterError, match="start must be before end, got start=2017-01-01"
    ):
        design.time_grid(img1, img2, 12, "2017-01-01", "2016-01-01")


@pytest.mark.parametrize("derivative", [1, 2])
def test_regularizer_scales_with_step(derivative):
    # lam has units: the same lam on a finer grid penalizes the same physical roughness
    reg12 = kdesign.regularization_matrix(50, derivative, 10.0, 12.0).toarray()
    diff = kdesign.difference_operator(50, derivative).toarray()
    np.testing.assert_allclose(reg12, (10.0 / 12.0**derivative) ** 2 * diff.T @ diff)
    x = np.linspace(0, 1, 50) ** 2  # a curved series
    assert diff.shape == (50 - derivative, 50)
    assert np.all(np.abs(diff @ np.ones(50)) < 1e-12)  # constants are free
    assert x @ reg12 @ x > 0


def test_upper_band_roundtrip():
    rng = np.random.default_rng(1)
    dense = np.zeros((30, 30))
    for k in range(4):
        values = rng.normal(size=30 - k)
        dense += np.diag(values, k) + (np.diag(values, -k) if k else 0)
    band = kdesign.to_upper_band(sp.csr_array(dense), 3)
    for k in range(4):
        np.testing.assert_allclose(band[: 30 - k, k], np.diag(dense, k))
