"""Collect decode outputs into tables (Markdown, CSV) and WER-vs-SNR plots (PNG).

Sources: every ``summary.json`` under the given folders; folders of the original script (a
``wer.368862`` / ``bleu.368862`` without ``summary.json``) are read too, their condition taken from
the path ``.../<lang>/<split>/<modality>/snr-<N>/visible-<v>/beam-<B>/<noise>/``.

Files written by :func:`write_results`:

* ``results.csv``: one tidy table, one row per model × condition × language × metric (columns
  :data:`CSV_COLUMNS`), read by ``pandas.read_csv`` with no options;
* ``results.md`` for humans, one set of tables per *setup* (model, beam, split, normaliser, task): the main
  table, as the original result notebooks (rows ``<modality>-<noise condition>``, e.g. ``Audio-Clean``,
  ``Audio-Visual-Babble-LRS3``, for clean and 0 dB; columns the languages, ``en`` first, and
  ``Avg non-En``), and the SNR sweep (rows language, modality, noise; columns the SNRs and ``clean``);
* ``plots/snr_<modality>_<noise>.png``: score vs SNR, one plot per modality and noise type with every
  model (and language) on shared axes, lines labelled by model name.

The model is named by its decode folder (``summary.json``'s ``model_label``; older summaries: the
checkpoint's file name).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from whisper_flamingo.errors import WFError

log = logging.getLogger(__name__)

CLEAN_SNR = 1000.0
LANG_ORDER = ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")
MODALITY_NAMES = {"asr": "Audio", "avsr": "Audio-Visual", "vsr": "Video"}
_PATH_RE = re.compile(r"(?P<lang>[^/]+)/(?P<split>[^/]+)/(?P<modality>asr|avsr|vsr)/snr-(?P<snr>-?[\d.]+)/"
                      r"visible-(?P<visible>\d)/beam-(?P<beam>\d+)/(?P<noise>[^/]+)$")


@dataclass
class Entry:
    """One decoded condition."""

    model: str
    lang: str
    split: str
    modality: str
    snr: float
    noise: str
    beam: int
    metric: str
    score: float | None
    normalizer: str = "fairseq"
    visible: int = 0
    utterances: int | None = None
    path: str = ""
    extra: dict = field(default_factory=dict)
    task: str = "transcribe"

    @property
    def clean(self) -> bool:
        return self.snr >= CLEAN_SNR

    @property
    def setup(self) -> tuple[str, int, str, str, str]:
        return (self.model, self.beam, self.split, self.normalizer, self.task)


def _from_summary(path: Path) -> Entry:
    s = json.loads(path.read_text(encoding="utf-8"))
    prov = s.get("provenance", {})
    model = s.get("model_label") or Path(str(prov.get("checkpoint") or prov.get("model") or "?")).name
    return Entry(model=str(model), lang=s.get("lang_arg", s["lang"]), split=s.get("split", "test"),
                 modality=s["modality"], snr=float(s["snr"]), noise=s.get("noise_name", "none"),
                 beam=int(s.get("beam", 1)), metric=s["metric"], score=s.get("score"),
                 normalizer=s.get("normalizer", "fairseq"), visible=int(s.get("visible", 0)),
                 utterances=s.get("utterances"), path=str(path.parent),
                 extra={"wer": s.get("scores", {}).get("wer", {}).get("wer")},
                 task=str(s.get("task") or "transcribe"))


def _from_original(path: Path, root: Path) -> Entry | None:
    rel = path.parent.as_posix()
    m = _PATH_RE.search(rel)
    if not m:
        return None
    head = rel[: m.start()].rstrip("/")
    try:
        model = str(Path(head).relative_to(root)) if head else "?"
    except ValueError:
        model = head
    text = path.read_text(encoding="utf-8").strip()
    mm = re.match(r"(WER|BLEU):\s*([-\d.]+)", text)
    if not mm:
        log.warning("%s: unreadable score line %r; skipped", path, text[:40])
        return None
    return Entry(model=model, lang=m["lang"], split=m["split"], modality=m["modality"], snr=float(m["snr"]),
                 noise=m["noise"], beam=int(m["beam"]), metric=mm[1].lower(), score=float(mm[2]),
                 visible=int(m["visible"]), path=str(path.parent))


def collect(dirs: Iterable[str | Path]) -> list[Entry]:
    """Every condition found under ``dirs`` (``summary.json`` preferred over the original files)."""
    entries: list[Entry] = []
    for d in dirs:
        root = Path(d)
        if not root.exists():
            raise WFError(f"{root}: no such folder; pass folders holding decode outputs")
        seen = set()
        for p in sorted(root.rglob("summary.json")):
            entries.append(_from_summary(p))
            seen.add(p.parent)
        for pattern in ("wer.368862", "bleu.368862"):
            for p in sorted(root.rglob(pattern)):
                if p.parent not in seen:
                    e = _from_original(p, root)
                    if e is not None:
                        entries.append(e)
                        seen.add(p.parent)
    return entries


def rescore(entries: Sequence[Entry], normalizer: str) -> list[Entry]:
    """WER entries re-scored with another normaliser from their ``wer.json`` (BLEU entries kept)."""
    from whisper_flamingo.decoding.scoring import wer_cer

    out = []
    for e in entries:
        f = Path(e.path) / "wer.json"
        if e.metric != "wer" or not f.exists():
            out.append(e)
            continue
        data = json.loads(f.read_text(encoding="utf-8"))
        lang = e.lang.replace("-visible", "")
        r = wer_cer(data["refs"], data["pred"], normalizer, "en" if lang == "lrs2" else lang)
        out.append(Entry(**{**e.__dict__, "score": r["wer"], "normalizer": normalizer}))
    return out


def _lang_key(lang: str) -> tuple[int, str]:
    base = lang.replace("-visible", "")
    return (LANG_ORDER.index(base) if base in LANG_ORDER else len(LANG_ORDER), lang)


def noise_label(noise: str, snr: float) -> str:
    """``Clean``, ``Babble-LRS3`` (the babble lists of the original at 0 dB), else ``<Noise>@<snr>dB``."""
    if snr >= CLEAN_SNR:
        return "Clean"
    name = f"Babble-{noise.upper()}" if noise in ("lrs3", "muavic") else noise.capitalize()
    return name if snr == 0 else f"{name}@{snr:g}dB"


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list]

    def markdown(self, decimals: int = 2) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" for _ in self.header) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_fmt(v, decimals) for v in row) + " |")
        return "\n".join(lines) + "\n"


def _fmt(v, decimals: int, empty: str = "–") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return empty
    if isinstance(v, float):
        return f"{v:.{decimals}f}"
    return str(v)


def _setup_title(setup: tuple[str, int, str, str, str]) -> str:
    model, beam, split, norm, task = setup
    return f"{model} · beam {beam} · {split} · {norm}" + ("" if task == "transcribe" else f" · {task}")


def main_tables(entries: Sequence[Entry]) -> list[Table]:
    """The notebook tables: rows modality × (clean, 0 dB per noise), columns languages + Avg non-En."""
    tables = []
    by_setup: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        if e.clean or e.snr == 0:
            by_setup[e.setup].append(e)
    for setup, items in by_setup.items():
        langs = sorted({e.lang for e in items}, key=_lang_key)
        non_en = [lang for lang in langs if lang.replace("-visible", "") not in ("en", "lrs2")]
        cells: dict[tuple[str, str], dict[str, Entry]] = defaultdict(dict)
        clean_done: set[tuple[str, str]] = set()
        for e in sorted(items, key=lambda e: (list(MODALITY_NAMES).index(e.modality), not e.clean, e.noise)):
            row = (e.modality, noise_label(e.noise, e.snr))
            if e.clean and (e.modality, e.lang) in clean_done:
                continue  # the same clean decode saved under several noise folders
            if e.clean:
                clean_done.add((e.modality, e.lang))
            cells[row][e.lang] = e
        header = ["condition", *langs] + (["Avg non-En"] if len(non_en) > 1 or (non_en and len(langs) > 1) else [])
        rows = []
        for (modality, label), by_lang in cells.items():
            values = [by_lang[lang].score if lang in by_lang else None for lang in langs]
            row = [f"{MODALITY_NAMES[modality]}-{label}", *values]
            if header[-1] == "Avg non-En":
                vals = [by_lang[lang].score for lang in non_en if lang in by_lang and by_lang[lang].score is not None]
                row.append(sum(vals) / len(vals) if vals else None)
            rows.append(row)
        metrics = sorted({e.metric.upper() for e in items})
        tables.append(Table(f"{_setup_title(setup)} ({'/'.join(metrics)})", header, rows))
    return tables


def snr_tables(entries: Sequence[Entry]) -> list[Table]:
    """Per setup: rows (language, modality, noise), columns the SNRs (ascending) and clean."""
    tables = []
    by_setup: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        by_setup[e.setup].append(e)
    for setup, items in by_setup.items():
        noisy = sorted({e.snr for e in items if not e.clean})
        if not noisy:
            continue
        has_clean = any(e.clean for e in items)
        header = ["lang", "modality", "noise", *(f"{s:g} dB" for s in noisy)] + (["clean"] if has_clean else [])
        clean: dict[tuple[str, str], float | None] = {}
        grid: dict[tuple[str, str, str], dict[float, float | None]] = defaultdict(dict)
        for e in items:
            if e.clean:
                clean.setdefault((e.lang, e.modality), e.score)
            else:
                grid[(e.lang, e.modality, e.noise)][e.snr] = e.score
        rows = []
        for (lang, modality, noise) in sorted(grid, key=lambda k: (_lang_key(k[0]), k[1], k[2])):
            row = [lang, MODALITY_NAMES[modality], noise, *(grid[(lang, modality, noise)].get(s) for s in noisy)]
            if has_clean:
                row.append(clean.get((lang, modality)))
            rows.append(row)
        tables.append(Table(f"SNR sweep: {_setup_title(setup)}", header, rows))
    return tables


CSV_COLUMNS = ("model", "beam", "split", "normalizer", "lang", "modality", "noise", "snr", "condition", "metric",
               "value", "utterances", "path")


def tidy_rows(entries: Sequence[Entry]) -> list[dict]:
    """One row per model × condition × language × metric (a BLEU condition also gives its WER row).

    A clean decode is one condition whatever noise folder it was filed under (the original saved a
    copy under each): its ``noise`` is ``none`` and the first copy is kept."""
    rows, seen = [], set()
    for e in sorted(entries, key=lambda e: (e.setup, _lang_key(e.lang), list(MODALITY_NAMES).index(e.modality),
                                            e.noise, -e.snr)):
        noise = "none" if e.clean else e.noise
        key = (e.setup, e.lang, e.modality, noise, e.snr)
        if key in seen:
            continue
        seen.add(key)
        metrics = [(e.metric, e.score)]
        if e.metric != "wer" and e.extra.get("wer") is not None:
            metrics.append(("wer", e.extra["wer"]))
        for metric, value in metrics:
            rows.append({"model": e.model, "beam": e.beam, "split": e.split, "normalizer": e.normalizer,
                         "lang": e.lang, "modality": e.modality, "noise": noise,
                         "snr": "clean" if e.clean else f"{e.snr:g}",
                         "condition": f"{MODALITY_NAMES[e.modality]}-{noise_label(e.noise, e.snr)}",
                         "metric": metric, "value": value, "utterances": e.utterances, "path": e.path})
    return rows


def tidy_csv(entries: Sequence[Entry], decimals: int = 2) -> str:
    """:func:`tidy_rows` as CSV text (one header line; empty cell = no score)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    w.writeheader()
    for row in tidy_rows(entries):
        w.writerow({k: _fmt(v, decimals, empty="") for k, v in row.items()})
    return buf.getvalue()


def plot_series(entries: Sequence[Entry]) -> dict[tuple[str, str], dict[str, dict[float, float]]]:
    """What :func:`plot_snr` draws: ``{(modality, noise): {line label: {snr: score}}}``, one line per
    model (and language, beam, split or normaliser where several appear); the clean score, when
    decoded, at ``snr = CLEAN_SNR``."""
    scored = [e for e in entries if e.score is not None]
    vary = {"lang": len({e.lang for e in scored}) > 1}
    for name in ("beam", "split", "normalizer"):  # named only where one model was decoded with several
        vary[name] = len({(e.model, getattr(e, name)) for e in scored}) > len({e.model for e in scored})

    def label(e: Entry) -> str:
        extra = [e.lang] if vary["lang"] else []
        extra += [f"beam {e.beam}"] if vary["beam"] else []
        extra += [e.split] if vary["split"] else []
        extra += [e.normalizer] if vary["normalizer"] else []
        return e.model + (f" ({', '.join(extra)})" if extra else "")

    clean: dict[tuple[str, str], float] = {}
    for e in scored:
        if e.clean:
            clean.setdefault((e.modality, label(e)), e.score)
    groups: dict[tuple[str, str], dict[str, dict[float, float]]] = defaultdict(lambda: defaultdict(dict))
    for e in scored:
        if not e.clean:
            groups[(e.modality, e.noise)][label(e)][e.snr] = e.score
    for (modality, _), lines in groups.items():
        for name, pts in lines.items():
            if (modality, name) in clean:
                pts[CLEAN_SNR] = clean[(modality, name)]
    return {k: dict(v) for k, v in groups.items()}


def plot_snr(entries: Sequence[Entry], out_dir: str | Path) -> list[Path]:
    """One PNG per modality and noise type: score vs SNR, every model on the same axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    metric = "/".join(sorted({e.metric.upper() for e in entries}))
    order = list(MODALITY_NAMES)
    for (modality, noise), lines in sorted(plot_series(entries).items(), key=lambda kv: (order.index(kv[0][0]),
                                                                                          kv[0][1])):
        noisy = sorted({x for pts in lines.values() for x in pts if x < CLEAN_SNR})
        xs_clean = noisy[-1] + max(5.0, (noisy[-1] - noisy[0]) / 4 if len(noisy) > 1 else 5.0)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        for name, pts in sorted(lines.items()):
            xs = sorted(pts)
            ax.plot([xs_clean if x >= CLEAN_SNR else x for x in xs], [pts[x] for x in xs], marker="o", label=name)
        ax.set_xticks(noisy + [xs_clean], [f"{t:g}" for t in noisy] + ["clean"])
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(metric)
        ax.set_title(f"{MODALITY_NAMES[modality]}, noise {noise}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"snr_{modality}_{noise}")
        path = out / f"{name.strip('_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def _tag_counts(entries: Sequence[Entry]) -> tuple[dict[tuple, dict[str, int]], dict[tuple, int]]:
    """Top-tag counts per condition ``(setup, lang, modality, condition, snr)`` from the utterance
    records of decodes run with ``--at-checkpoint``, and the number of tag segments per condition."""
    counts: dict[tuple, dict[str, int]] = {}
    totals: dict[tuple, int] = {}
    for e in entries:
        path = Path(e.path) / "utterances.jsonl"
        if not path.is_file():
            continue
        key = (e.setup, e.lang, e.modality, noise_label(e.noise, e.snr), e.snr)
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                segments = json.loads(line).get("audio_tags")
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
            for seg in segments or []:
                if seg.get("tags"):
                    name = seg["tags"][0][0]
                    counts.setdefault(key, defaultdict(int))[name] += 1
                    totals[key] = totals.get(key, 0) + 1
    return counts, totals


def tag_csv(entries: Sequence[Entry]) -> str:
    """Tag frequencies as one tidy CSV: a row per setup x language x modality x condition x top tag."""
    counts, totals = _tag_counts(entries)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["setup", "lang", "modality", "condition", "snr", "tag", "segments", "share_pct"])
    for key in sorted(counts, key=lambda k: (k[0], _lang_key(k[1]), k[2], k[3], -k[4])):
        for name, n in sorted(counts[key].items(), key=lambda kv: (-kv[1], kv[0])):
            w.writerow([*key[:4], key[4], name, n, f"{100.0 * n / totals[key]:.1f}"])
    return buf.getvalue()


def tag_tables(entries: Sequence[Entry], top: int = 5) -> list[Table]:
    """Whisper-AT tag frequencies per condition (decodes run with ``--at-checkpoint``): for each condition,
    the share (%) of tag segments whose top tag is each of the ``top`` most frequent top tags overall
    (how tags shift with SNR is one of the Whisper-AT paper's findings)."""
    counts, totals = _tag_counts(entries)
    tables = []
    for setup in sorted({k[0] for k in counts}):
        keys = sorted((k for k in counts if k[0] == setup), key=lambda k: (_lang_key(k[1]), k[2], k[3], -k[4]))
        overall: dict[str, int] = defaultdict(int)
        for k in keys:
            for name, n in counts[k].items():
                overall[name] += n
        names = sorted(overall, key=lambda n: (-overall[n], n))[:top]
        rows = [[k[1], MODALITY_NAMES.get(k[2], k[2]), k[3], totals[k],
                 *(100.0 * counts[k].get(n, 0) / totals[k] for n in names)] for k in keys]
        tables.append(Table(f"Top tags (% of segments) · {_setup_title(setup)}",
                            ["lang", "modality", "condition", "segments", *names], rows))
    return tables


def write_results(dirs: Sequence[str | Path], out: str | Path, decimals: int = 2,
                  normalizer: str | None = None) -> dict:
    """Tables and plots for ``dirs`` into ``out``; returns ``{"markdown", "files", "entries"}``."""
    entries = collect(dirs)
    if not entries:
        raise WFError(f"no decode results (summary.json, wer.368862, bleu.368862) under {', '.join(map(str, dirs))}")
    if normalizer:
        entries = rescore(entries, normalizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mains, sweeps = main_tables(entries), snr_tables(entries)
    md = "# Results\n\n" + "\n".join(t.markdown(decimals) for t in mains)
    if sweeps:
        md += "\n## SNR sweeps\n\n" + "\n".join(t.markdown(decimals) for t in sweeps)
    files = [out / "results.md", out / "results.csv"]
    files[0].write_text(md, encoding="utf-8")
    files[1].write_text(tidy_csv(entries, decimals), encoding="utf-8")
    tags = tag_tables(entries)
    if tags:
        md += "\n## Sound tags (Whisper-AT)\n\n" + "\n".join(t.markdown(1) for t in tags)
        files[0].write_text(md, encoding="utf-8")
        files.append(out / "tags.csv")
        files[-1].write_text(tag_csv(entries), encoding="utf-8")
    files += plot_snr(entries, out / "plots")
    return {"markdown": md, "files": files, "entries": entries}
