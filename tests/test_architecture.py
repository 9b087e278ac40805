"""The house in layers (docs/architecture.md): contracts that make a violation fail CI.

- the import-linter contracts of pyproject.toml (layers; kernels free of xarray and storage),
- no import cycle between the package's modules, function-level imports included,
- no module imports another module's private (``_``) name.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "xr_itslive"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """Every import in a module, wherever it stands: (module, imported names, line)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return found


def _internal_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names, _ in _imports(name, path):
            if not target.startswith("xr_itslive"):
                continue
            # ``from package import module`` imports the module
            candidates = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            candidates = candidates or ([target] if target in modules else [])
            graph[name].update(c for c in candidates if c != name)
    return graph


@pytest.mark.skipif(shutil.which("lint-imports") is None and not Path(sys.prefix, "bin",
                    "lint-imports").exists(), reason="import-linter is not installed")  # fmt: skip
def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.prefix, "bin", "lint-imports"))
    out = subprocess.run([exe, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and " 0 broken" in out.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_counting_function_level_imports():
    graph = _internal_graph()
    # The package's __init__ re-exports the public names: it imports everything by design;
    # the CLI reads __version__ from it. Neither is a cycle of the layers.
    graph.pop("xr_itslive", None)
    for targets in graph.values():
        targets.discard("xr_itslive")
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def test_the_cycle_check_sees_function_level_imports(tmp_path):
    """The checks above can fail: a cycle hidden in a function is found."""
    (tmp_path / "a.py").write_text("from .b import g\n")
    (tmp_path / "b.py").write_text("def g():\n    from .a import f\n")
    graph = {
        name: {t for t, _, _ in _imports(f"pkg.{name}", tmp_path / f"{name}.py")}
        for name in ("a", "b")
    }
    assert graph == {"a": {"pkg.b"}, "b": {"pkg.a"}}
    assert _cycles({"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": {"pkg.a"}}) == [
        ["pkg.a", "pkg.b"]
    ]


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    offences = []
    for name, path in modules.items():
        for target, names, line in _imports(name, path):
            if not target.startswith("xr_itslive") or target == name:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            # importing a private module (xr_itslive._x) counts too
            if any(part.startswith("_") and not part.startswith("__")
                   for part in target.split(".")):  # fmt: skip
                private.append(target)
            if private and not (name == "xr_itslive" and names == ["accessor"]):
                offences.append(f"{path.relative_to(REPO)}:{line} imports {private} of {target}")
    assert not offences, "\n".join(offences)


def test_layer_folders_exist_and_hold_the_code():
    for folder in ("kernels", "io", "geo", "workflows"):
        assert (PACKAGE / folder / "__init__.py").is_file()
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    # Top level: the public names, the base (errors, crs) and the faces only.
    assert flat == [
        "__init__.py", "__main__.py", "accessor.py", "cli.py", "crs.py", "demo.py",
        "errors.py", "plot.py", "synthetic.py", "widget.py",
    ]  # fmt: skip
