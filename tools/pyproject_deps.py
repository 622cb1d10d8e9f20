"""Print the requirements of ``pyproject.toml`` (the dependencies plus the named extras), one a line.

Used by ``make install`` to install everything but openai-whisper's own requirements (openai-whisper
itself goes in with ``--no-deps``: on Linux x86_64 it requires triton, a large GPU-only wheel):

    python tools/pyproject_deps.py --extras weights,synth,test --exclude openai-whisper
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: the copy that pip vendors
    from pip._vendor import tomli as tomllib


def requirement_name(req: str) -> str:
    """``"torch>=2.4"`` -> ``"torch"`` (normalised: lower case, ``_``/``.`` as ``-``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not match:
        raise SystemExit(f"error: pyproject.toml: cannot read the requirement {req!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyproject", default=str(Path(__file__).resolve().parents[1] / "pyproject.toml"))
    parser.add_argument("--extras", default="", help="comma-separated extras to include")
    parser.add_argument("--exclude", default="", help="comma-separated distribution names to leave out")
    args = parser.parse_args(argv)
    project = tomllib.loads(Path(args.pyproject).read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    reqs = list(project.get("dependencies", []))
    for extra in filter(None, (e.strip() for e in args.extras.split(","))):
        if extra not in optional:
            raise SystemExit(f"error: {args.pyproject}: no extra {extra!r} (have: {', '.join(sorted(optional))})")
        reqs += optional[extra]
    exclude = {requirement_name(n) for n in args.exclude.split(",") if n.strip()}
    sys.stdout.write("".join(f"{r}\n" for r in dict.fromkeys(reqs) if requirement_name(r) not in exclude))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
