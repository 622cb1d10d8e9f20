"""``pip install .`` alone gives a working install: every third-party module the package imports comes from a
requirement of ``pyproject.toml`` (module-level imports: a core dependency; function-local ones: a core
dependency or an extra), and ``make install``'s requirement list is those requirements minus openai-whisper."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the copy that pip vendors
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "whisper_flamingo"


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)).lower()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def third_party_imports() -> dict[str, dict[str, list[str]]]:
    """``{"top" | "local": {module: ["path:line", ...]}}`` for every non-stdlib, non-package import."""
    found: dict[str, dict[str, list[str]]] = {"top": {}, "local": {}}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top == "whisper_flamingo":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                found["local" if id(node) in local else "top"].setdefault(top, []).append(where)
    return found


def _providers_by_files(module: str) -> set[str]:
    """Distributions whose installed files include ``module``'s package (for wheels whose top_level.txt
    leaves it out, e.g. dlib-bin lists only ``_dlib_pybind11``)."""
    return {_name(d.metadata["Name"]) for d in importlib.metadata.distributions()
            if any(f.parts[:2] == (module, "__init__.py") for f in d.files or [])}


def test_every_imported_package_is_a_declared_requirement():
    project = _project()
    core = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for reqs in project["optional-dependencies"].values() for r in reqs}
    providers = importlib.metadata.packages_distributions()
    imports = third_party_imports()
    assert "whisper" in imports["top"] and "torch" in imports["top"], imports
    problems = []
    for kind, allowed in (("top", core), ("local", core | extras)):
        for module, where in sorted(imports[kind].items()):
            dists = {_name(d) for d in providers.get(module, [])} or _providers_by_files(module)
            assert dists, f"{module} (imported at {where[0]}) is not installed: cannot tell its distribution"
            if not dists & allowed:
                problems.append(f"{module} ({'/'.join(sorted(dists))}), imported at {', '.join(where)}: not in "
                                f"pyproject.toml's {'dependencies' if kind == 'top' else 'dependencies or extras'}")
    assert not problems, "\n".join(problems)


def test_make_install_requirements_are_pyprojects_without_openai_whisper():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "pyproject_deps.py"), "--extras", "weights,test",
                          "--exclude", "openai-whisper"], check=True, capture_output=True, text=True).stdout
    project = _project()
    want = [r for r in project["dependencies"] + project["optional-dependencies"]["weights"]
            + project["optional-dependencies"]["test"] if _name(r) != "openai-whisper"]
    assert out.splitlines() == list(dict.fromkeys(want))
    assert "openai-whisper" in {_name(r) for r in project["dependencies"]}
    bad = subprocess.run([sys.executable, str(ROOT / "tools" / "pyproject_deps.py"), "--extras", "nope"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "no extra 'nope'" in bad.stderr
