"""The README's first quick-start command: ``xr-itslive demo`` on the bundled real subset."""

import numpy as np
import xarray as xr

from xr_itslive.cli import main


def test_demo_writes_a_result_and_a_plot(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    printed = capsys.readouterr().out
    assert "7397 image pairs x 3 x 3 pixels" in printed
    assert "mean speed per year" in printed
    result = xr.open_zarr(tmp_path / "demo" / "inverted.zarr")
    assert {"vx", "vy", "v", "vx_std", "vy_std", "n_obs"} <= set(result.data_vars)
    assert result.attrs["robust"] == "tukey" and result.attrs["weights"] == "error"
    speed = result["v"].values
    assert np.isfinite(speed).all()
    assert 0 < np.median(speed) < 100  # slow ice near the glacier margin, m/yr
    figure = tmp_path / "demo" / "demo.png"
    assert figure.stat().st_size > 20_000
