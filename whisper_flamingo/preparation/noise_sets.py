"""``prepare babble`` and ``prepare musan``: the evaluation babble and the training noise lists.

Babble (reference: whisper_flamingo.md 3.2, avhubert_muavic.md 9.5):

* ``lrs3`` (AV-HuBERT ``lrs3_noise.py``): 30 random training utterances longer than 15 s, truncated to the
  shortest, averaged, cast to int16 (truncation) -> ``noise/babble/lrs3/noise.wav``;
* ``muavic`` (Whisper-Flamingo ``make_noise_muavic``): 30 utterances longer than 15 s drawn round-robin
  over the languages in the order given (en, ar, de, el, es, fr, it, pt, ru: 4 each for en/ar/de, 3 for
  the others) -> ``noise/babble/muavic/babble_all.wav``.

Both write ``{valid,test}.tsv`` next to the wav (one absolute path, no header) and ``sources.txt`` (the
utterances used).  The draw is seeded (``numpy.random.default_rng(seed)``): same seed and manifests,
same file.

MUSAN (AV-HuBERT ``musan_prepare.py`` + ``noise_manifest.py``): every file of ``music/``, ``noise/`` and
``speech/`` cut into 10-s pieces, pieces of 3-11 s kept; per category a seeded 80/10/10 split; babble
pieces = the mean of 30 random speech pieces of the same split; ``tsv/{babble,music,noise,speech}/
{train,valid,test}.tsv``; ``tsv/all/train.tsv`` = noise, music, babble and speech (MUSAN speech, or LRS3
"speech noise" given as a list), each category repeated (cycled in its shuffled order) to
``per_category`` (20,000) entries.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

RATE = 16000
MIN_BABBLE_S = 15.0
N_SPEAKERS = 30
MUAVIC_ORDER = ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")


def _read_wav(path: str | Path) -> np.ndarray:
    from scipy.io import wavfile

    try:
        rate, x = wavfile.read(str(path))
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read the wav ({err})", reason="unreadable", path=path) from None
    if rate != RATE or x.dtype != np.int16 or x.ndim != 1:
        raise DataError(f"expected 16 kHz mono int16, got {rate} Hz {x.dtype} {x.shape}; run extract-audio",
                        reason="unreadable", path=path)
    return x


def _write_wav(path: Path, x: np.ndarray) -> None:
    from scipy.io import wavfile

    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(str(path), RATE, x.astype(np.int16))


def long_utterances(tsv: Path, min_s: float = MIN_BABBLE_S) -> list[str]:
    """Audio paths of a manifest's rows longer than ``min_s`` seconds (by the sample count column)."""
    lines = tsv.read_text(encoding="utf-8").splitlines()
    root = lines[0].strip() if lines else ""
    out = []
    for lineno, row in enumerate(lines[1:], 2):
        cols = row.split("\t")
        if len(cols) != 5:
            raise DataError("expected 5 tab-separated columns", reason="column_count", path=tsv, line=lineno)
        if int(cols[4]) > min_s * RATE:
            out.append(str(Path(root) / cols[2]))
    return out


def mix_babble(paths: list[str]) -> np.ndarray:
    """The int16 mean of the wavs, each truncated to the shortest."""
    waves = [_read_wav(p) for p in paths]
    n = min(len(w) for w in waves)
    return (np.sum([w[:n].astype(np.float64) for w in waves], 0) / len(waves)).astype(np.int16)


def _write_babble(out_dir: Path, name: str, sources: list[str]) -> Path:
    wav = out_dir / name
    _write_wav(wav, mix_babble(sources))
    for split in ("valid", "test"):
        (out_dir / f"{split}.tsv").write_text(f"{wav.resolve()}\n", encoding="utf-8")
    (out_dir / "sources.txt").write_text("".join(s + "\n" for s in sources), encoding="utf-8")
    return wav


def lrs3_babble(train_tsv: Path, out: Path, seed: int = 0) -> Path:
    """AV-HuBERT's LRS3 babble from a train manifest -> ``out/noise/babble/lrs3/noise.wav``."""
    cands = long_utterances(train_tsv)
    if len(cands) < N_SPEAKERS:
        raise DataError(f"only {len(cands)} utterances longer than {MIN_BABBLE_S:.0f} s; the babble needs "
                        f"{N_SPEAKERS}", reason="too_few", path=train_tsv)
    rng = np.random.default_rng(seed)
    chosen = [cands[i] for i in rng.choice(len(cands), N_SPEAKERS, replace=False)]
    return _write_babble(out / "noise" / "babble" / "lrs3", "noise.wav", chosen)


def muavic_babble(manifests: dict[str, Path], out: Path, seed: int = 0) -> Path:
    """The multilingual babble: round-robin over the languages (in ``manifests``' order) until 30."""
    rng = np.random.default_rng(seed)
    pools = {}
    for lang, tsv in manifests.items():
        cands = long_utterances(tsv)
        pools[lang] = [cands[i] for i in rng.permutation(len(cands))]
    chosen, taken = [], dict.fromkeys(pools, 0)
    while len(chosen) < N_SPEAKERS:
        progress = False
        for lang, pool in pools.items():
            if len(chosen) == N_SPEAKERS:
                break
            if taken[lang] < len(pool):
                chosen.append(pool[taken[lang]])
                taken[lang] += 1
                progress = True
        if not progress:
            raise ConfigError(f"only {len(chosen)} utterances longer than {MIN_BABBLE_S:.0f} s in all the "
                              f"manifests; the babble needs {N_SPEAKERS}")
    logger.info("babble speakers per language: %s", taken)
    return _write_babble(out / "noise" / "babble" / "muavic", "babble_all.wav", chosen)


def _cut(x: np.ndarray, piece_s: float = 10.0, min_s: float = 3.0, max_s: float = 11.0) -> list[np.ndarray]:
    step = int(piece_s * RATE)
    pieces = [x[i:i + step] for i in range(0, len(x), step)]
    return [p for p in pieces if min_s * RATE <= len(p) <= max_s * RATE]


def _splits(items: list[str], rng: np.random.Generator) -> dict[str, list[str]]:
    order = [items[i] for i in rng.permutation(len(items))]
    n_tr, n_va = int(0.8 * len(order)), int(0.1 * len(order))
    return {"train": order[:n_tr], "valid": order[n_tr:n_tr + n_va], "test": order[n_tr + n_va:]}


def prepare_musan(src: Path, out: Path, seed: int = 0, per_category: int = 20000,
                  babble_per_split: dict[str, int] | None = None, speech_list: Path | None = None,
                  speakers: int = N_SPEAKERS) -> dict:
    """Cut MUSAN, split it, make MUSAN babble and write the tsv lists (see the module docstring)."""
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    cats: dict[str, list[str]] = {}
    for cat in ("music", "noise", "speech"):
        files = sorted((src / cat).rglob("*.wav"))
        if not files:
            raise ConfigError(f"{src / cat}: no wav files; --src is the MUSAN root (music/, noise/, speech/)")
        pieces = []
        for f in tqdm(files, desc=f"cutting {cat}", unit="file", disable=len(files) < 20):
            for k, piece in enumerate(_cut(_read_wav(f))):
                dst = out / cat / f.relative_to(src / cat).with_suffix("") / f"{k:03d}.wav"
                if not dst.exists():
                    _write_wav(dst, piece)
                pieces.append(str(dst.resolve()))
        cats[cat] = pieces
    splits = {cat: _splits(p, rng) for cat, p in cats.items()}
    babble_n = babble_per_split or {"train": 2000, "valid": 200, "test": 200}
    splits["babble"] = {}
    for split, n in babble_n.items():
        speech = splits["speech"][split]
        if len(speech) < speakers:
            raise ConfigError(f"MUSAN speech {split}: {len(speech)} pieces, the babble needs {speakers} "
                              "(--babble-speakers)")
        made = []
        for k in range(n):
            dst = out / "babble" / split / f"{k:05d}.wav"
            if not dst.exists():
                _write_wav(dst, mix_babble([speech[i] for i in rng.choice(len(speech), speakers, replace=False)]))
            made.append(str(dst.resolve()))
        splits["babble"][split] = made
    for cat, by_split in splits.items():
        for split, items in by_split.items():
            d = out / "tsv" / cat
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{split}.tsv").write_text("".join(i + "\n" for i in items), encoding="utf-8")
    speech_train = splits["speech"]["train"]
    if speech_list is not None:
        speech_train = [ln.strip() for ln in speech_list.read_text(encoding="utf-8").splitlines() if ln.strip()]
    all_train = []
    for cat, items in (("noise", splits["noise"]["train"]), ("music", splits["music"]["train"]),
                       ("babble", splits["babble"]["train"]), ("speech", speech_train)):
        if not items:
            raise ConfigError(f"no {cat} pieces for the training list")
        all_train += [items[i % len(items)] for i in range(per_category)]
    (out / "tsv" / "all").mkdir(parents=True, exist_ok=True)
    (out / "tsv" / "all" / "train.tsv").write_text("".join(i + "\n" for i in all_train), encoding="utf-8")
    return {cat: {s: len(v) for s, v in by.items()} for cat, by in splits.items()} | {"all/train": len(all_train)}
