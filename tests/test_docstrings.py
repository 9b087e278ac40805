"""Every public function and class documents its parameters (a numpydoc ``Parameters`` section).

The objects checked: the names of ``xr_itslive.__all__`` (exception classes excepted: they take
a message only) and the public methods of its classes, those of ``xr_itslive.kernels.__all__``
(the array-level namespace) and their methods, the public methods of the ``ds.itslive`` accessor
(``xr_itslive.accessor.ITSLiveAccessor``), and the map widget ``xr_itslive.widget.GlacierMap``
with its public methods. A callable with no parameters besides ``self`` (and private ``_name``
ones) is skipped. The docstring is parsed with ``numpydoc.docscrape``; its ``Parameters``
section must name every parameter of the signature. Grouped entries (``a, b : float``) count
for each name, and ``*args`` / ``**kwargs`` may be written with or without their stars. A
class may document its constructor's parameters in the class docstring or in ``__init__``'s.
One test per object, so that a failure names the object.
"""

from __future__ import annotations

import inspect
import re
import warnings

import pytest

docscrape = pytest.importorskip("numpydoc.docscrape")

import xr_itslive  # noqa: E402
from xr_itslive import kernels  # noqa: E402
from xr_itslive.accessor import ITSLiveAccessor  # noqa: E402
from xr_itslive.widget import GlacierMap  # noqa: E402


def _public_methods(cls: type, path: str) -> list[tuple[str, object]]:
    """``(path.name, attribute)`` for the public methods defined on ``cls`` (not inherited)."""
    out = []
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, (property, type)) or not (
            inspect.isfunction(raw) or isinstance(raw, (classmethod, staticmethod))
        ):
            continue  # properties and attributes take no parameters
        out.append((f"{path}.{name}", getattr(cls, name)))
    return out


def _targets() -> list[tuple[str, object]]:
    targets = []
    for name in xr_itslive.__all__:
        obj = getattr(xr_itslive, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue  # exceptions take a message only
        targets.append((f"xr_itslive.{name}", obj))
        if inspect.isclass(obj):  # and what users call on its objects
            targets += _public_methods(obj, f"xr_itslive.{name}")
    # The array kernels' own namespace (for array-level use, e.g. other engines)
    for name in kernels.__all__:
        obj = getattr(kernels, name)
        targets.append((f"xr_itslive.kernels.{name}", obj))
        if inspect.isclass(obj):
            targets += _public_methods(obj, f"xr_itslive.kernels.{name}")
    # The accessor itself is built by xarray (``ds.itslive``); users call its methods.
    targets += _public_methods(ITSLiveAccessor, "xr_itslive.accessor.ITSLiveAccessor")
    targets.append(("xr_itslive.widget.GlacierMap", GlacierMap))
    targets += _public_methods(GlacierMap, "xr_itslive.widget.GlacierMap")
    return targets


def _signature_names(obj: object) -> list[str]:
    """The parameter names a caller passes, stars dropped.

    Not ``self``/``cls``, nor private ones (``_name``: a dataclass's internal fields, which
    no caller passes).
    """
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):  # builtins without a signature
        return []
    names = list(signature.parameters)
    if names and names[0] in ("self", "cls") and not inspect.isclass(obj):
        # an unbound method seen through the class
        names = names[1:]
    return [name for name in names if not name.startswith("_")]


def _parse(obj: object) -> docscrape.NumpyDocString:
    with warnings.catch_warnings():
        # docscrape warns about unknown sections etc.; what is checked here is the Parameters
        warnings.simplefilter("ignore")
        if inspect.isclass(obj):
            return docscrape.ClassDoc(obj, config={"show_class_members": False})
        return docscrape.FunctionDoc(obj)


def _init_doc(cls: type) -> docscrape.NumpyDocString | None:
    init = vars(cls).get("__init__")
    if init is None or not inspect.getdoc(init):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return docscrape.FunctionDoc(init)


def _documented_names(doc: docscrape.NumpyDocString) -> set[str]:
    names = set()
    for parameter in doc["Parameters"]:
        for name in re.split(r"\s*,\s*", parameter.name.strip()):
            if name:
                names.add(name.lstrip("*").strip("`"))
    return names


TARGETS = _targets()


@pytest.mark.parametrize("path, obj", TARGETS, ids=[path for path, _ in TARGETS])
def test_parameters_documented(path: str, obj: object) -> None:
    wanted = _signature_names(obj)
    if not wanted:
        pytest.skip(f"{path} takes no parameters")
    doc = _parse(obj)
    if not doc["Parameters"] and inspect.isclass(obj):
        init = _init_doc(obj)  # numpydoc allows the constructor's parameters under __init__
        if init is not None and init["Parameters"]:
            doc = init
    if not inspect.getdoc(obj):
        pytest.fail(f"{path} has no docstring (parameters: {', '.join(wanted)})")
    assert doc["Parameters"], f"{path} has no Parameters section (parameters: {', '.join(wanted)})"
    missing = [name for name in wanted if name not in _documented_names(doc)]
    assert not missing, f"{path}: Parameters section does not name {', '.join(missing)}"


def test_targets_cover_the_public_api() -> None:
    # the walk itself: every non-exception public name is checked, and the two classes' methods
    paths = {path for path, _ in TARGETS}
    assert "xr_itslive.invert" in paths
    assert "xr_itslive.accessor.ITSLiveAccessor.invert" in paths
    assert "xr_itslive.widget.GlacierMap.select_glacier" in paths
    assert not any(inspect.isclass(obj) and issubclass(obj, BaseException) for _, obj in TARGETS)
