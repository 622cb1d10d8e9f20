"""Collect decode outputs into tables (Markdown, CSV) and WER-vs-SNR plots (PNG).

Sources: every ``summary.json`` under the given folders; folders of the original script (a
``wer.368862`` / ``bleu.368862`` without ``summary.json``) are read too, their condition taken from
the path ``.../<lang>/<split>/<modality>/snr-<N>/visible-<v>/beam-<B>/<noise>/``.

Tables, one set per *setup* (model, beam, split, normaliser):

* main table, as the original result notebooks: rows ``<modality>-<noise condition>`` (e.g.
  ``Audio-Clean``, ``Audio-Visual-Babble-LRS3``) for clean and 0 dB, columns the languages (``en``
  first) and ``Avg non-En``;
* SNR sweep: rows (language, modality, noise), columns the SNRs and ``clean``.
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

    @property
    def clean(self) -> bool:
        return self.snr >= CLEAN_SNR

    @property
    def setup(self) -> tuple[str, int, str, str]:
        return (self.model, self.beam, self.split, self.normalizer)


def _from_summary(path: Path) -> Entry:
    s = json.loads(path.read_text(encoding="utf-8"))
    prov = s.get("provenance", {})
    model = prov.get("checkpoint") or prov.get("model") or "?"
    return Entry(model=str(model), lang=s.get("lang_arg", s["lang"]), split=s.get("split", "test"),
                 modality=s["modality"], snr=float(s["snr"]), noise=s.get("noise_name", "none"),
                 beam=int(s.get("beam", 1)), metric=s["metric"], score=s.get("score"),
                 normalizer=s.get("normalizer", "fairseq"), visible=int(s.get("visible", 0)),
                 utterances=s.get("utterances"), path=str(path.parent),
                 extra={"wer": s.get("scores", {}).get("wer", {}).get("wer")})


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

    def csv(self, decimals: int = 2) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["table", *self.header])
        for row in self.rows:
            w.writerow([self.title, *(_fmt(v, decimals, empty="") for v in row)])
        return buf.getvalue()


def _fmt(v, decimals: int, empty: str = "–") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return empty
    if isinstance(v, float):
        return f"{v:.{decimals}f}"
    return str(v)


def _setup_title(setup: tuple[str, int, str, str]) -> str:
    model, beam, split, norm = setup
    return f"{model} · beam {beam} · {split} · {norm}"


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


def plot_snr(entries: Sequence[Entry], out_dir: str | Path) -> list[Path]:
    """One PNG per setup and modality: score vs SNR, one line per language and noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    groups: dict[tuple, list[Entry]] = defaultdict(list)
    for e in entries:
        groups[(e.setup, e.modality)].append(e)
    for (setup, modality), items in groups.items():
        noisy = sorted({e.snr for e in items if not e.clean})
        if not noisy:
            continue
        xs_clean = noisy[-1] + max(5.0, (noisy[-1] - noisy[0]) / 4 if len(noisy) > 1 else 5.0)
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        lines: dict[tuple[str, str], dict[float, float]] = defaultdict(dict)
        clean = {}
        for e in items:
            if e.score is None:
                continue
            if e.clean:
                clean.setdefault(e.lang, e.score)
            else:
                lines[(e.lang, e.noise)][e.snr] = e.score
        for (lang, noise), pts in sorted(lines.items(), key=lambda kv: (_lang_key(kv[0][0]), kv[0][1])):
            xs = sorted(pts)
            ys = [pts[x] for x in xs]
            if lang in clean:
                xs, ys = xs + [xs_clean], ys + [clean[lang]]
            ax.plot(xs, ys, marker="o", label=f"{lang} ({noise})")
        ticks = noisy + [xs_clean]
        ax.set_xticks(ticks, [f"{t:g}" for t in noisy] + ["clean"])
        metric = "/".join(sorted({e.metric.upper() for e in items}))
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel(metric)
        ax.set_title(f"{MODALITY_NAMES[modality]}: {_setup_title(setup)}", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"snr_{setup[0]}_beam{setup[1]}_{setup[2]}_{setup[3]}_{modality}")
        path = out / f"{name.strip('_')}.png"
        fig.savefig(path)
        plt.close(fig)
        paths.append(path)
    return paths


def tag_tables(entries: Sequence[Entry], top: int = 5) -> list[Table]:
    """Whisper-AT tag frequencies per condition (decodes run with ``--at-checkpoint``): for each condition,
    the share (%) of tag segments whose top tag is each of the ``top`` most frequent top tags overall
    (how tags shift with SNR is one of the Whisper-AT paper's findings)."""
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
    files = [out / "results.md", out / "main.csv"]
    files[0].write_text(md, encoding="utf-8")
    files[1].write_text("".join(t.csv(decimals) for t in mains), encoding="utf-8")
    if sweeps:
        files.append(out / "snr_sweep.csv")
        files[-1].write_text("".join(t.csv(decimals) for t in sweeps), encoding="utf-8")
    tags = tag_tables(entries)
    if tags:
        md += "\n## Sound tags (Whisper-AT)\n\n" + "\n".join(t.markdown(1) for t in tags)
        files[0].write_text(md, encoding="utf-8")
        files.append(out / "tags.csv")
        files[-1].write_text("".join(t.csv(1) for t in tags), encoding="utf-8")
    files += plot_snr(entries, out / "plots")
    return {"markdown": md, "files": files, "entries": entries}
