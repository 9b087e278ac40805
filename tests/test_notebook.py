"""Run docs/example_glacier.ipynb end to end on the real data (point → masked, inverted glacier)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import REPO, SHARED_DATA, requires_shared

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("geopandas")

NOTEBOOK = REPO / "docs" / "example_glacier.ipynb"

pytestmark = [requires_shared, pytest.mark.slow]


@pytest.mark.timeout(300)
def test_example_glacier_notebook_runs(tmp_path, monkeypatch):
    # The kernel imports the checkout (CI installs it; here it may not be), reads the shared
    # data, and writes nothing outside tmp_path; Jupyter's own files go there too.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("XR_ITSLIVE_SHARED_DATA", str(SHARED_DATA))
    monkeypatch.delenv("XR_ITSLIVE_ONLINE", raising=False)
    for name in ("JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "IPYTHONDIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        "commit the notebook without outputs"
    )
    client = nbclient.NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "data" in o and "image/png" in o["data"]]
    assert len(images) >= 4  # mask, speed map, point series, line through time

    summary_cell = next(c for c in notebook.cells if "summary" in c.metadata.get("tags", []))
    text = "".join(o.get("text", "") for o in summary_cell.outputs if o.output_type == "stream")
    summary = json.loads(text.strip().splitlines()[-1])
    # every glacier pixel solved, nothing solved or filled off the glacier
    assert summary["glacier_pixels"] > 0
    assert summary["solved_on_glacier"] > 0.95
    assert summary["solved_off_glacier"] == 0
    assert summary["finite_off_glacier"] == 0
    assert summary["time_cells"] == 37  # 2018-01-01 .. 2021-01-01 in 30-day cells
    assert not list(tmp_path.glob("*.png"))  # plots stay in the notebook
