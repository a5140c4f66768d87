"""The package's shape: imports point one way (down the layers below), no import
circles, no private names imported across modules, no ``model._private`` outside
``model/``, files and the model class kept small, the reverse loop in one place and
one version string."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "python" / "cellsynth"

#: lowest first; a module may import from its own layer or any layer below
LAYERS = [
    ["_version", "errors", "seeding", "progress", "precision", "threads", "_core", "_cuda"],
    ["io", "nn", "counts", "distributed", "calibration", "quantiles", "hurdle"],
    ["data", "diffusion", "pretrained"],
    ["metrics", "train"],
    ["model"],
    ["tl", "plotting"],
    ["demo"],
    ["cli", "__main__"],
]
MAX_LINES = 450
MAX_CLASS_LINES = 300


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PKG.rglob("*.py")}
EXTENSIONS = {"cellsynth._core", "cellsynth._cuda"}


def layer(mod: str) -> int:
    top = mod.split(".")[1]
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{mod} is in no layer; add its top-level name to LAYERS in this test")


def imports(mod: str) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every cellsynth import in ``mod``."""
    path = MODULES[mod]
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "cellsynth":
                base = node.module
            else:
                continue
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULES or full in EXTENSIONS:
                    out.append((full, "", node.lineno))
                else:
                    out.append((base, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names if a.name.split(".")[0] == "cellsynth"]
    return out


CHECKED = sorted(m for m in MODULES if m != "cellsynth")  # the package root is the public facade


@pytest.mark.parametrize("mod", CHECKED)
def test_imports_point_down(mod):
    bad = [f"line {ln}: {mod} (layer {layer(mod)}) imports {dst} (layer {layer(dst)})"
           for dst, _, ln in imports(mod) if dst != "cellsynth" and layer(dst) > layer(mod)]
    assert not bad, "\n".join(bad)


def test_no_import_circles():
    graph = {m: {d for d, _, _ in imports(m) if d in MODULES and d != "cellsynth"} for m in CHECKED}
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            if d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in CHECKED:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("mod", CHECKED)
def test_no_private_names_across_modules(mod):
    bad = [f"line {ln}: from {src} import {name}" for src, name, ln in imports(mod)
           if name.startswith("_") and not name.startswith("__")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mod", [m for m in CHECKED if not m.startswith("cellsynth.model")])
def test_no_private_model_use_outside_model(mod):
    tree = ast.parse(MODULES[mod].read_text())
    bad = [f"line {n.lineno}: {n.value.id}.{n.attr}" for n in ast.walk(tree)
           if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("model", "m")
           and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_files_are_small(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[mod].relative_to(ROOT)} has {n} lines (at most {MAX_LINES})"


def test_model_class_is_small():
    tree = ast.parse((PKG / "model" / "core.py").read_text())
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CellSynth"]
    n = cls.end_lineno - cls.lineno + 1
    assert n <= MAX_CLASS_LINES, f"CellSynth has {n} lines (at most {MAX_CLASS_LINES})"


def test_reverse_loop_exists_once():
    """A sampler's ``.step(...)`` (with arguments: optimisers' ``.step()`` have none) is
    called in diffusion/prior.py only, doctests aside."""
    calls = [f"{p.relative_to(PKG)}:{i}" for p in sorted(PKG.rglob("*.py")) for i, line in enumerate(p.read_text().splitlines(), 1)
             if re.search(r"\.step\(\s*[^)\s]", line) and not line.lstrip().startswith(">>>")]
    assert calls and all(c.startswith("diffusion/prior.py:") for c in calls), calls


def test_one_version_string():
    from cellsynth import __version__

    description = dict(line.split(": ", 1) for line in (ROOT / "DESCRIPTION").read_text().splitlines() if ": " in line)
    assert description["Version"].strip() == __version__
    assert re.search(r'^version\s*=', (ROOT / "pyproject.toml").read_text(), re.M) is None, "pyproject.toml must read the version from _version.py"
