"""Result tables, CSV, plots and the results command on a hand-made decode tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whisper_flamingo.cli import main as cli_main
from whisper_flamingo.decoding.outputs import write_outputs
from whisper_flamingo.decoding.results import (
    collect,
    main_tables,
    noise_label,
    plot_series,
    snr_tables,
    write_results,
)

REF = "one two three four"
HYP_BY_ERRORS = {0: "one two three four", 1: "one two three five", 2: "one two six five", 4: ""}


def _condition(root: Path, lang: str, modality: str, snr: float, noise: str, errors: int, beam: int = 5,
               model: str = "ckpt.pt") -> None:
    d = root / model / lang / "test" / modality / f"snr-{snr:g}" / "visible-0" / f"beam-{beam}" / noise
    d.mkdir(parents=True)
    rows = [{"id": f"{lang}{i}", "ref": REF, "hyp": HYP_BY_ERRORS[errors], "audio_seconds": 1.0} for i in range(2)]
    extra = {"lang": lang, "lang_arg": lang, "split": "test", "modality": modality, "snr": snr,
             "noise_name": noise, "visible": 0, "beam": beam, "normalizer": "fairseq",
             "provenance": {"model": "small", "checkpoint": f"/abs/path/{model}"}}
    write_outputs(d, rows, "wer", lang, "fairseq", extra)


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "decode"
    # WER 25 % per reported error word (4 reference words)
    for lang, clean_err, noisy_err in [("en", 0, 1), ("es", 1, 2), ("fr", 2, 4)]:
        for noise in ("lrs3", "muavic"):  # the clean decode is saved under both noise folders
            _condition(root, lang, "asr", 1000, noise, clean_err)
        _condition(root, lang, "asr", 0, "lrs3", noisy_err)
        _condition(root, lang, "asr", -5, "lrs3", 4)
        _condition(root, lang, "avsr", 0, "lrs3", clean_err)
    # a folder written by the original script: only wer.368862
    orig = root / "orig.pt" / "en" / "test" / "asr" / "snr-0" / "visible-0" / "beam-15" / "muavic"
    orig.mkdir(parents=True)
    (orig / "wer.368862").write_text("WER: 17.9700\n")
    return root


def test_collect_reads_summaries_and_original_folders(tree):
    entries = collect([tree])
    assert len(entries) == 3 * 5 + 1
    orig = [e for e in entries if e.model == "orig.pt"]
    assert len(orig) == 1 and orig[0].score == pytest.approx(17.97) and orig[0].beam == 15
    assert orig[0].noise == "muavic" and orig[0].snr == 0 and orig[0].modality == "asr"


def test_main_table_like_the_notebooks(tree):
    tables = main_tables(collect([tree]))
    table = next(t for t in tables if t.title.startswith("ckpt.pt · beam 5"))
    assert table.header == ["condition", "en", "es", "fr", "Avg non-En"]
    rows = {r[0]: r[1:] for r in table.rows}
    assert list(rows) == ["Audio-Clean", "Audio-Babble-LRS3", "Audio-Visual-Babble-LRS3"]
    assert rows["Audio-Clean"] == [0.0, 25.0, 50.0, 37.5]
    assert rows["Audio-Babble-LRS3"] == [25.0, 50.0, 100.0, 75.0]
    assert rows["Audio-Visual-Babble-LRS3"] == [0.0, 25.0, 50.0, 37.5]
    md = table.markdown(1)
    assert "| Audio-Babble-LRS3 | 25.0 | 50.0 | 100.0 | 75.0 |" in md
    assert noise_label("noise", -5) == "Noise@-5dB"


def test_snr_sweep_table(tree):
    sweep = next(t for t in snr_tables(collect([tree])) if "ckpt.pt · beam 5" in t.title)
    assert sweep.header == ["lang", "modality", "noise", "-5 dB", "0 dB", "clean"]
    assert sweep.rows[0] == ["en", "Audio", "lrs3", 100.0, 25.0, 0.0]
    assert ["fr", "Audio-Visual", "lrs3", None, 50.0, None] in sweep.rows


def test_results_command_writes_markdown_csv_and_plots(tree, tmp_path, capsys):
    import csv

    out = tmp_path / "res"
    assert cli_main(["results", str(tree), "--out", str(out), "--decimals", "1"]) == 0
    printed = capsys.readouterr().out
    assert "| Audio-Clean | 0.0 | 25.0 | 50.0 | 37.5 |" in printed
    assert (out / "results.md").read_text().startswith("# Results")
    assert not (out / "main.csv").exists() and not (out / "snr_sweep.csv").exists()
    # one tidy table: one header line, then one row per model x condition x language x metric
    text = (out / "results.csv").read_text()
    lines = text.splitlines()
    assert lines[0] == "model,beam,split,normalizer,lang,modality,noise,snr,condition,metric,value,utterances,path"
    assert lines.count(lines[0]) == 1
    rows = list(csv.DictReader(lines))
    assert all(len(r) == 13 and None not in r for r in rows)
    # ckpt.pt: 3 langs x (clean asr once, though filed under two noise folders; asr 0, -5; avsr 0) + orig.pt
    assert len(rows) == 3 * 4 + 1
    keys = [(r["model"], r["lang"], r["modality"], r["noise"], r["snr"], r["metric"]) for r in rows]
    assert len(set(keys)) == len(keys)
    got = {(r["model"], r["lang"], r["modality"], r["snr"]): float(r["value"]) for r in rows}
    assert got[("ckpt.pt", "fr", "asr", "0")] == 100.0 and got[("ckpt.pt", "es", "asr", "clean")] == 25.0
    assert got[("orig.pt", "en", "asr", "0")] == 18.0  # --decimals 1
    assert {r["noise"] for r in rows if r["snr"] == "clean"} == {"none"}
    pngs = sorted((out / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["snr_asr_lrs3.png", "snr_asr_muavic.png", "snr_avsr_lrs3.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 2000 for p in pngs)


def test_plots_put_every_model_on_shared_axes(tree):
    """Zero-shot and fine-tuned models of one modality and noise type share one plot, labelled by name."""
    for snr, errors in ((1000, 2), (0, 4), (-5, 4)):
        _condition(tree, "en", "asr", snr, "lrs3" if snr < 1000 else "none", errors, model="tiny.en")
    series = plot_series([e for e in collect([tree]) if e.lang == "en"])
    assert set(series) == {("asr", "lrs3"), ("asr", "muavic"), ("avsr", "lrs3")}
    lines = series[("asr", "lrs3")]
    assert set(lines) == {"ckpt.pt", "tiny.en"}  # one language: lines named by the model alone
    assert lines["tiny.en"] == {-5.0: 100.0, 0.0: 100.0, 1000.0: 50.0}
    assert lines["ckpt.pt"] == {-5.0: 100.0, 0.0: 25.0, 1000.0: 0.0}
    several = plot_series(collect([tree]))[("asr", "lrs3")]
    assert {"ckpt.pt (en)", "ckpt.pt (fr)", "tiny.en (en)"} <= set(several)


def test_rescore_with_another_normaliser(tmp_path):
    d = tmp_path / "m" / "en" / "test" / "asr" / "snr-1000" / "visible-0" / "beam-1" / "none"
    d.mkdir(parents=True)
    write_outputs(d, [{"id": "a", "ref": "Mr. Smith won't go.", "hyp": "mister smith will not go"}], "wer", "en",
                  "fairseq", {"lang": "en", "split": "test", "modality": "asr", "snr": 1000.0, "noise_name": "none",
                              "beam": 1, "normalizer": "fairseq", "provenance": {"model": "m"}})
    assert json.loads((d / "summary.json").read_text())["score"] == pytest.approx(75.0)
    res = write_results([tmp_path / "m"], tmp_path / "out", normalizer="whisper")
    assert res["entries"][0].score == 0.0 and res["entries"][0].normalizer == "whisper"
    with pytest.raises(Exception, match="no decode results"):
        write_results([tmp_path / "out"], tmp_path / "out2")


def test_results_notebook_runs_on_a_decode_tree(tree, tmp_path, monkeypatch):
    import sys
    import types

    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "results.ipynb").read_text())
    assert nb["nbformat"] == 4
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    shown = []
    display_mod = types.ModuleType("IPython.display")
    display_mod.display = shown.append
    display_mod.Markdown = lambda text: ("md", text)
    display_mod.Image = lambda filename: ("png", filename)
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display_mod)
    ns: dict = {}
    for cell in code:
        src = "".join(cell["source"])
        src = src.replace('DIRS = ["decode/"]', f"DIRS = [{str(tree)!r}]")
        src = src.replace('OUT = Path("decode/results")', f"OUT = Path({str(tmp_path / 'nb')!r})")
        exec(compile(src, "results.ipynb", "exec"), ns)
    kinds = [s[0] for s in shown]
    assert kinds.count("md") == 2 and kinds.count("png") == 3
    assert "Audio-Babble-LRS3" in shown[0][1]
