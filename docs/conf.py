"""Sphinx configuration for the xr_itslive documentation.

Build from the repository root, offline, warnings as errors::

    python -m pip install ".[docs]"
    python -m sphinx -W --keep-going -b html docs docs/_build/html

The notebooks are executed during the build (myst-nb, ``nb_execution_mode = "force"``);
they read the real data in ``../shared/data`` beside the checkout (or
``$XR_ITSLIVE_SHARED_DATA``).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent

# Document (and execute the notebooks against) this checkout, not whatever is installed.
sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
)
# The notebooks' real data: ../shared/data beside the checkout unless set already.
_shared = REPO.parent / "shared" / "data"
if _shared.is_dir():
    os.environ.setdefault("XR_ITSLIVE_SHARED_DATA", str(_shared))

import xr_itslive  # noqa: E402

# -- Project -------------------------------------------------------------------------------

project = "xr_itslive"
author = "xr_itslive developers"
copyright = "xr_itslive developers"
release = xr_itslive.__version__
version = ".".join(release.split(".")[:2])

# -- General -------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "myst_nb",  # MyST Markdown pages and executed notebooks (includes myst_parser)
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "jupyter_execute",
    "**.ipynb_checkpoints",
    "**.zarr",
    "**.zarr.tmp",
    "**/xr_itslive_demo*",
    "xr_itslive_demo*",
    "Thumbs.db",
    ".DS_Store",
]

# No intersphinx: the build runs offline. Every reference into xr_itslive must resolve
# (nitpicky, and -W in .ci/run: a broken cross-reference fails CI); references into other
# libraries' docs cannot, so those alone are let through as plain text.
nitpicky = True
_EXTERNAL = (
    "numpy", "np", "xarray", "xr", "scipy", "pandas", "dask", "distributed", "zarr", "fsspec",
    "s3fs", "shapely", "pyproj", "geopandas", "rasterio", "rioxarray", "matplotlib",
    "ipyleaflet", "ipywidgets", "cupy", "array_api_compat", "array_api_strict", "numba",
    "tracemalloc", "concurrent", "collections", "typing", "os", "pathlib", "datetime",
    "argparse", "tqdm", "threadpoolctl", "pytest",
)  # fmt: skip
nitpick_ignore_regex = [
    (r"py:.*", rf"~?({'|'.join(_EXTERNAL)})(\..*)?"),
    # types written in prose in the numpydoc sections ("array-like", "callable", ...)
    (r"py:class", r"[a-z][\w -]*"),
]

# -- autodoc / autosummary -----------------------------------------------------------------

autosummary_generate = True  # (re)writes docs/generated/*.rst on every build
autosummary_imported_members = False
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_member_order = "bysource"
add_module_names = False

# -- numpydoc ------------------------------------------------------------------------------

numpydoc_show_class_members = False  # the class template lists the members (no duplicates)
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
# Type cross-references would point into the Python docs, which need intersphinx (no network
# at build time): plain text instead.
numpydoc_xref_param_type = False
numpydoc_xref_aliases = {
    "Dataset": "xarray.Dataset",
    "DataArray": "xarray.DataArray",
    "ndarray": "numpy.ndarray",
}
numpydoc_xref_ignore = {
    "optional",
    "default",
    "or",
    "of",
    "and",
    "the",
    "a",
    "an",
    "to",
    "in",
    "for",
    "with",
    "one",
    "each",
    "any",
    "like",
    "shape",
}

# -- myst-nb -------------------------------------------------------------------------------

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_execution_in_temp = False  # run in docs/, where the notebooks' relative paths point
nb_merge_streams = True

# -- HTML ----------------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"xr_itslive {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "icon_links": [],
}
html_show_sourcelink = False


# -- Checks --------------------------------------------------------------------------------


def _check_api_covers_all(app) -> None:
    """Warn (an error under -W) for a name of ``xr_itslive.__all__`` missing from api.rst."""
    from sphinx.util import logging

    logger = logging.getLogger("xr_itslive.docs")
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    # the autosummary entries: indented lines holding one (dotted) name
    listed = set(re.findall(r"^[ ]+~?(?:xr_itslive\.)?([A-Za-z_][\w.]*)[ ]*$", text, re.M))
    for name in sorted(set(xr_itslive.__all__) - listed):
        logger.warning(
            "xr_itslive.%s is in xr_itslive.__all__ but not in docs/api.rst",
            name,
            type="xr_itslive",
        )


def setup(app):
    app.connect("builder-inited", _check_api_covers_all)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
