"""The package layout holds: every module imports on its own, no import loop (function-level
imports count: a lazy import is still a dependency), imports go one way through the layers
below, and no module grows past ~600 lines.

The layers (README "Layout"): a module may import modules of its own layer and of lower layers,
never of a higher one. Plugin loading by name (``importlib.import_module`` of a built-in format
or encoder family, the CLI's command table) is not an import statement and is how a lower layer
finds what registers itself from a higher one.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "sam_edge"
MAX_LINES = 600

#: lowest first; a module belongs to the layer of its longest matching prefix (so a task built on
#: the engine, ``sam_edge.training.pretrain``, sits above ``sam_edge.training``; the format registry
#: ``sam_edge.formats.__init__`` below the format modules that register in it)
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("sam_edge.errors", "sam_edge.utils")),
    ("modeling", ("sam_edge.modeling",)),
    ("model registry", ("sam_edge.checkpoint", "sam_edge.encoders", "sam_edge.registry")),
    ("core", ("sam_edge.transforms", "sam_edge.image", "sam_edge.predictor", "sam_edge.everything",
              "sam_edge.visualize", "sam_edge.__init__")),
    ("format registry, data", ("sam_edge.formats.__init__", "sam_edge.data")),
    ("runtime, training engine", ("sam_edge.runtime", "sam_edge.training")),
    ("export core, evaluation", ("sam_edge.export", "sam_edge.evaluation")),
    ("formats, tasks", ("sam_edge.formats", "sam_edge.export.quantize", "sam_edge.export.qat",
                        "sam_edge.training.pretrain", "sam_edge.distillation")),
    ("bench, pipeline", ("sam_edge.bench", "sam_edge.pipeline")),
    ("cli", ("sam_edge.cli", "sam_edge.commands")),
]


def _module_files() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(ROOT).with_suffix("")
        out[".".join(rel.parts)] = f  # packages keep their ".__init__" suffix
    return out


MODULES = _module_files()


def _canonical(name: str) -> str | None:
    """A dotted import target -> the module key in MODULES (package -> its __init__)."""
    if name in MODULES:
        return name
    if f"{name}.__init__" in MODULES:
        return f"{name}.__init__"
    return None


def _imports(key: str, path: Path) -> set[str]:
    """Every sam_edge module ``key`` imports anywhere in its body (module or function level)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = key.rsplit(".", 1)[0] if not key.endswith(".__init__") else key[: -len(".__init__")]
    for node in list(ast.walk(tree)):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = [ast.Pass()]  # type-only imports are not run: not a dependency
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "sam_edge":
                    c = _canonical(a.name)
                    if c:
                        found.add(c)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "sam_edge":
                continue
            for a in node.names:
                c = _canonical(f"{target}.{a.name}")  # `from pkg import module`
                if c:
                    found.add(c)
                    continue
                c = _canonical(target)
                if c:
                    found.add(c)
    found.discard(key)
    return found


GRAPH = {k: _imports(k, f) for k, f in MODULES.items()}


def _layer_of(key: str) -> int:
    best, layer = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (key == p or key.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), i
    assert layer is not None, f"module {key} is in no layer of tests/test_layout.py: add it to LAYERS"
    return layer


def test_every_module_is_in_a_layer():
    for key in MODULES:
        _layer_of(key)


def test_imports_go_down_the_layers():
    bad = []
    for key, deps in GRAPH.items():
        for d in deps:
            if _layer_of(d) > _layer_of(key):
                bad.append(f"{key} ({LAYERS[_layer_of(key)][0]}) imports {d} ({LAYERS[_layer_of(d)][0]})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_loop():
    loops = _cycles(GRAPH)
    assert not loops, "import loops (function-level imports included):\n" + "\n".join(" <-> ".join(c) for c in loops)


def test_no_module_over_600_lines():
    files = list(PKG.rglob("*.py")) + list((ROOT / "benchmarks").rglob("*.py"))
    long = {str(f.relative_to(ROOT)): n for f in files if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


_CHILD = r"""
import importlib, os, sys, traceback
import numpy, torch  # the heavy third-party imports, shared by every forked child
mods = sys.argv[1:]
failed = []
for m in mods:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(m)
            code = 0
        except BaseException:
            os.write(w, traceback.format_exc(limit=3).encode()[-2000:])
            code = 1
        os._exit(code)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(f"{m}: {msg.decode(errors='replace')}")
print("\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_every_module_imports_alone():
    """Each module imported first in a fresh process (forked after numpy + torch only), so a
    module that works only because another one was imported before it is caught."""
    names = sorted(k[: -len(".__init__")] if k.endswith(".__init__") else k for k in MODULES)
    r = subprocess.run([sys.executable, "-c", _CHILD, *names], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
