"""Import architecture: the arrows between the package's subpackages run one way, with no cycles.

Every module of ``whisper_flamingo`` is parsed with ``ast`` (nothing is imported); each ``import`` /
``from ... import`` of the package, at any depth (function-local ones too), is an edge between the
layers below.  The order (``../shared/DESIGN.md``)::

    base (errors, config, logging helpers) -> data, models -> checkpoints -> decoding -> tasks -> commands (+ cli)

``data`` and ``models`` do not import each other; ``preparation`` may import ``data`` and the base and
is imported only by ``commands``.  The one exception: a function-local import of ``checkpoints``
inside a method named ``from_checkpoint`` in ``models/`` (a model's short delegate to its loader); it is
printed, but it is neither a violation nor part of a cycle (it runs at call time, not import time).
``pytest -s tests/test_architecture.py`` prints the edges; a failure prints them too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "whisper_flamingo"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE

#: top-level modules of the base layer (the logging helper's name may be any of these)
BASE_MODULES = ("errors", "config", "logs", "log", "logging_utils", "base")
#: the layers above the base, in order; a layer may import only layers of a lower rank
RANK = {"base": 0, "data": 1, "models": 1, "checkpoints": 2, "decoding": 3, "tasks": 4, "commands": 5}
#: what each layer may import (besides itself)
ALLOWED = {
    "base": {"base"},
    "data": {"base"},
    "models": {"base"},
    "checkpoints": {"base", "data", "models"},
    "decoding": {"base", "data", "models", "checkpoints"},
    "tasks": {"base", "data", "models", "checkpoints", "decoding"},
    "commands": {"base", "data", "models", "checkpoints", "decoding", "tasks", "preparation"},
    "preparation": {"base", "data"},
    "root": set(),  # whisper_flamingo/__init__.py: the version, and lazy exports by module name (no imports)
}


@dataclass(frozen=True)
class Edge:
    src: str  # layer of the importing module
    dst: str  # layer of the imported module
    where: str  # "path:line"
    exempt: bool  # the models/ from_checkpoint delegate


def layer_of(module: str) -> str:
    """``whisper_flamingo.data.audio`` -> ``data``; base modules -> ``base``; ``cli`` -> ``commands``."""
    parts = module.split(".")
    assert parts[0] == PACKAGE, module
    if len(parts) == 1:
        return "root"
    head = parts[1]
    if head in BASE_MODULES:
        return "base"
    if head == "cli":
        return "commands"
    if head in ALLOWED:
        return head
    raise AssertionError(f"{module}: not in any layer; add it to tests/test_architecture.py (BASE_MODULES or "
                         f"ALLOWED) where ../shared/DESIGN.md puts it")


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """Absolute names of what ``node`` imports (relative imports resolved against ``module``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    # `from whisper_flamingo import data` names the subpackage; `from x.y import name` names x.y
    return [f"{base}.{a.name}" if base == PACKAGE else base for a in node.names]


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, where: str) -> None:
        self.module, self.is_package, self.where = module, is_package, where
        self.functions: list[str] = []
        self.found: list[tuple[str, int, str | None]] = []  # (target, line, enclosing function)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def _import(self, node: ast.Import | ast.ImportFrom) -> None:
        for target in _targets(node, self.module, self.is_package):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                self.found.append((target, node.lineno, self.functions[-1] if self.functions else None))

    visit_Import = visit_ImportFrom = _import


def import_edges(package_dir: Path = PACKAGE_DIR) -> list[Edge]:
    """Every import between two different layers of the package under ``package_dir``."""
    edges = []
    for path in sorted(package_dir.rglob("*.py")):
        module = module_name(path, package_dir)
        src = layer_of(module)
        where = str(path.relative_to(package_dir.parent))
        collector = _Collector(module, path.name == "__init__.py", where)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for target, line, function in dict.fromkeys(collector.found):  # `from x import a, b`: one edge
            dst = layer_of(target)
            if dst != src:
                exempt = src == "models" and dst == "checkpoints" and function == "from_checkpoint"
                edges.append(Edge(src, dst, f"{where}:{line}", exempt))
    return edges


def describe(edges: list[Edge]) -> str:
    """One line per layer pair: ``src -> dst  (n)  file:line, ...`` (the delegate exception on its own line)."""
    grouped: dict[tuple[str, str, bool], list[Edge]] = defaultdict(list)
    for e in edges:
        grouped[e.src, e.dst, e.exempt].append(e)
    order = {name: i for i, name in enumerate(["root", *RANK, "preparation"])}
    lines = []
    for (src, dst, exempt), es in sorted(grouped.items(), key=lambda kv: (order[kv[0][0]], order[kv[0][1]], kv[0][2])):
        note = " [from_checkpoint delegate: allowed]" if exempt else ""
        bad = "" if exempt or dst in ALLOWED[src] else " [AGAINST THE ORDER]"
        files = list(dict.fromkeys(e.where.rsplit(":", 1)[0].removeprefix(PACKAGE + "/") for e in es))
        lines.append(f"{src:>11} -> {dst:<11} ({len(es)}){note}{bad}  {', '.join(files)}")
    return "\n".join(lines)


def violations(edges: list[Edge]) -> list[Edge]:
    """Edges whose target layer the source layer may not import (the exemption aside)."""
    return [e for e in edges if not e.exempt and e.dst not in ALLOWED[e.src]]


def cycles(edges: list[Edge]) -> list[list[str]]:
    """Strongly connected sets of two or more layers (exempt edges left out: they run at call time)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if not e.exempt:
            graph[e.src].add(e.dst)
    nodes = sorted(set(graph) | {d for ds in graph.values() for d in ds})

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {n: reach(n) for n in nodes}
    found = {tuple(sorted(m for m in nodes if m in reachable[n] and n in reachable[m])) for n in nodes}
    return [list(c) for c in sorted(found) if len(c) > 1]


def test_import_arrows_run_one_way_without_cycles():
    edges = import_edges()
    report = describe(edges)
    print("\nimport edges between layers (src -> dst (count) where):\n" + report)
    assert edges, "no imports found: is PACKAGE_DIR right?"
    bad = violations(edges)
    loops = cycles(edges)
    assert not bad and not loops, (
        f"{len(bad)} import(s) against the order base -> data, models -> checkpoints -> decoding -> tasks -> "
        f"commands (preparation: base, data; imported by commands only):\n"
        + "\n".join(f"  {e.where}: {e.src} imports {e.dst}" for e in bad)
        + f"\ncycles between layers: {loops}\nall edges:\n{report}")


def test_checker_finds_wrong_arrows_cycles_and_keeps_the_delegate_exception(tmp_path):
    """The checker itself, on a made-up package: it must see what the real test relies on it to see."""
    pkg = tmp_path / PACKAGE
    files = {
        "__init__.py": "",
        "errors.py": "",
        "config.py": "from whisper_flamingo.errors import ConfigError\n",
        "data/__init__.py": "",
        "data/audio.py": "from ..models import whisper\n",  # data -> models: against the order
        "models/__init__.py": "",
        "models/whisper.py": ("class M:\n    @classmethod\n    def from_checkpoint(cls, p):\n"
                              "        from whisper_flamingo.checkpoints.whisper import load\n"
                              "        return load(p)\n"),
        "models/avhubert.py": "def build():\n    from whisper_flamingo.checkpoints import avhubert\n",  # not exempt
        "checkpoints/__init__.py": "",
        "checkpoints/whisper.py": "from whisper_flamingo.models.whisper import M\n",
        "decoding/__init__.py": "from whisper_flamingo import tasks\n",  # decoding -> tasks: against the order
        "tasks/__init__.py": "import whisper_flamingo.decoding.search\n",
        "commands/__init__.py": "from whisper_flamingo.preparation import synthetic\n",
        "cli.py": "from . import commands\n",
        "preparation/__init__.py": "from whisper_flamingo.data import audio\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    edges = import_edges(pkg)
    got = {(e.src, e.dst, e.where.split("/", 1)[1], e.exempt) for e in edges}
    assert got == {
        ("data", "models", "data/audio.py:1", False),
        ("models", "checkpoints", "models/whisper.py:4", True),
        ("models", "checkpoints", "models/avhubert.py:2", False),
        ("checkpoints", "models", "checkpoints/whisper.py:1", False),
        ("decoding", "tasks", "decoding/__init__.py:1", False),
        ("tasks", "decoding", "tasks/__init__.py:1", False),
        ("commands", "preparation", "commands/__init__.py:1", False),
        ("preparation", "data", "preparation/__init__.py:1", False),
    }, got
    assert {(e.src, e.dst) for e in violations(edges)} == {("data", "models"), ("models", "checkpoints"),
                                                          ("decoding", "tasks")}
    assert cycles(edges) == [["checkpoints", "models"], ["decoding", "tasks"]]
    (pkg / "models/avhubert.py").write_text("")
    assert cycles(import_edges(pkg)) == [["decoding", "tasks"]]  # the delegate alone makes no cycle
    assert "AGAINST THE ORDER" in describe(edges) and "from_checkpoint delegate" in describe(edges)
