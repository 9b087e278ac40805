"""The README's first quick-start command: ``xr-itslive demo`` on the bundled real subset."""

import struct

import numpy as np
import xarray as xr

import xr_itslive.demo
from xr_itslive.cli import main


def test_demo_writes_a_result_and_a_plot_and_says_what_is_signal(tmp_path, capsys, monkeypatch):
    """Slow ice: the signal is the mean velocity (~2 m/yr), and the per-cell speeds (~11 m/yr)
    are the noise's size; the demo must not print the latter as a finding."""
    returned = {}
    run_demo = xr_itslive.demo.run_demo

    def keep(*args, **kwargs):
        returned.update(run_demo(*args, **kwargs))
        return returned

    monkeypatch.setattr(xr_itslive.demo, "run_demo", keep)
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "7397 image pairs x 3 x 3 pixels" in printed
    result = xr.open_zarr(tmp_path / "demo" / "inverted.zarr", consolidated=False)
    assert {"vx", "vy", "v", "vx_std", "vy_std", "n_obs"} <= set(result.data_vars)
    assert {"v_std", "v_debiased", "v_significant"} <= set(result.data_vars)
    assert result.attrs["robust"] == "tukey" and result.attrs["weights"] == "error"
    assert np.isfinite(result["v"].values).all()
    figure = tmp_path / "demo" / "demo.png"
    assert figure.stat().st_size > 20_000
    assert struct.unpack(">II", figure.read_bytes()[16:24]) == (1210, 880)

    assert "signal (slow ice" in printed and "noise:" in printed
    assert "measure the noise, not the flow" in printed
    assert "mean speed per year" not in printed  # the old summary printed noise as findings
    assert 0.5 < returned["mean_speed"] < 4.0  # m/yr: slow ice near the glacier margin
    assert returned["median_cell_speed"] > 3 * returned["mean_speed"]
    assert returned["cell_noise_std"] > 2 * returned["posterior_std"]
    assert 0.25 < returned["upstream_fraction"] < 0.6  # real flow never points upstream
    assert returned["significant_fraction"] < 0.2
    assert abs(returned["gp_mean_speed"] - returned["mean_speed"]) < 1.0
    assert all(0 < v < 5 for v in returned["annual_mean_speed"].values())
