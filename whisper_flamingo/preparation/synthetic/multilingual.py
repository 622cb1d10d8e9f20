"""The nine-language synthetic corpus (mWhisper-Flamingo's MuAViC setting), deterministic for a seed.

Layout under ``out`` (the ``muavic_root`` of the configs), as the manifest loader reads it::

    muavic/en/{train,valid,test}.tsv + .en                  English ASR
    muavic/en/<X>/{train,valid,test}.tsv + .<X>             En->X (X in el es fr it pt ru): the English
                                                            audio, the X translation (case, full stop)
    muavic/<X>/muavic_normalized/{train,valid,test}.tsv + .<X>   ASR in X (mTEDx-normalised labels)
    muavic/<lang>/audio|video/<split>/<speaker>/<nnnnn>.wav|.mp4
    noise/babble/muavic/babble_all.wav + {valid,test}.tsv   multilingual babble (30 sources
                                                            round-robin: 4 each en/ar/de, 3 the others)
    noise/babble/sources/<lang>.tsv + <lang>/<k>.wav        the babble sources (> 15 s each)
    noise/train.tsv, noise/train/*.wav                      training noise (multilingual babble, speech,
                                                            white, pink, music-like)

Speech: eSpeak NG's voice of each language with a voice variant per speaker (English keeps the
accents of the English corpus); mouths as in :mod:`.corpus`.  Sentences: :mod:`.phrases` (aligned
translations; native scripts for ar, el, ru).  Speakers of train, valid and test are disjoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.preparation.synthetic import corpus as base
from whisper_flamingo.preparation.synthetic.phrases import (
    EN_X_TARGETS,
    MULTI_LANGS,
    N_SENTENCES,
    asr_label,
    babble_text,
    sample_sentences,
    translation_label,
)

log = logging.getLogger(__name__)

#: eSpeak NG voice per language (English speakers draw an accent as in the English corpus)
VOICES = {"ar": "ar", "de": "de", "el": "el", "es": "es", "fr": "fr", "it": "it", "pt": "pt", "ru": "ru"}
BABBLE_MIN_S = 15.5  # sources must be longer than the babble recipe's 15 s
BABBLE_WORDS = 48
N_TRAIN_POOL = 18  # shorter utterances (2 per language) for the training noise


def parse_langs(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``--langs`` as given (``en,ar de`` or ``en ar de``: commas, spaces or both), order kept, no repeats."""
    out: list[str] = []
    for v in values:
        out += [p for p in v.replace(",", " ").split() if p]
    return tuple(dict.fromkeys(out))


def babble_counts(langs: tuple[str, ...], n: int = base.N_BABBLE) -> dict[str, int]:
    """Sources per language of the round-robin draw (MuAViC order): 4 each en/ar/de, 3 the others."""
    order = [lang for lang in MULTI_LANGS if lang in langs]
    counts = dict.fromkeys(order, 0)
    for k in range(n):
        counts[order[k % len(order)]] += 1
    return counts


def _lang_dir(out: Path, lang: str) -> Path:
    return out / "muavic" / lang


def manifest_dir(out: Path, lang: str) -> Path:
    """Where the ASR manifests of ``lang`` go (``muavic/en`` or ``muavic/X/muavic_normalized``)."""
    return _lang_dir(out, lang) if lang == "en" else _lang_dir(out, lang) / "muavic_normalized"


def _speakers(rng: random.Random, sizes: dict[str, int], lang: str) -> dict[str, list[base.Speaker]]:
    from whisper_flamingo.preparation.synthetic.espeak import voice_variants

    spk = base.plan_speakers(rng, sizes, voice_variants())
    if lang == "en":
        return spk
    return {s: [dataclasses.replace(x, accent=VOICES[lang], id=f"{lang}{x.id}") for x in spk[s]] for s in spk}


def generate_multilingual_corpus(out: Path, langs: tuple[str, ...] = MULTI_LANGS, seed: int = 0,
                                 n_train: int = 40, n_valid: int = 6, n_test: int = 8, jobs: int = 2,
                                 noise: bool = True, progress: bool = True) -> base.CorpusInfo:
    """Write the multilingual corpus (sizes are per language) and describe it (see the module doc)."""
    t0 = time.perf_counter()
    out = Path(out).resolve()
    langs = tuple(dict.fromkeys(langs))
    bad = [lang for lang in langs if lang not in MULTI_LANGS]
    if bad or not langs:
        raise ConfigError(f"--langs: unsupported {bad or 'empty list'}; choose from {','.join(MULTI_LANGS)}")
    sizes = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    if min(sizes.values()) < 0 or sizes["train"] < 1:
        raise ConfigError(f"corpus sizes must be >= 0 with at least one train utterance, got {sizes}")
    if sum(sizes.values()) > N_SENTENCES:
        raise ConfigError(f"at most {N_SENTENCES} distinct sentences per language; ask for fewer utterances")
    en_x = tuple(x for x in EN_X_TARGETS if x in langs) if "en" in langs else ()
    base._prepare_out(out)
    rng = random.Random(seed)

    specs: dict[str, dict[str, list[base.UttSpec]]] = {}
    sents: dict[str, dict[str, list]] = {}
    speakers: dict[str, dict[str, list[base.Speaker]]] = {}
    for lang in langs:
        speakers[lang] = _speakers(rng, sizes, lang)
        srng = random.Random(rng.getrandbits(63))
        used: set = set()
        specs[lang], sents[lang] = {}, {}
        media = _lang_dir(out, lang)
        for split in base.SPLITS:
            spk_list = speakers[lang][split]
            order = [spk_list[k % len(spk_list)] for k in range(sizes[split])] if spk_list else []
            rng.shuffle(order)
            sents[lang][split] = sample_sentences(srng, len(order), used)
            counter: dict[str, int] = {}
            specs[lang][split] = []
            for spk, sent in zip(order, sents[lang][split]):
                k = counter[spk.id] = counter.get(spk.id, -1) + 1
                audio = media / "audio" / split / spk.id / f"{k:05d}.wav"
                video = media / "video" / split / spk.id / f"{k:05d}.mp4"
                specs[lang][split].append(base._utt_spec(rng, spk, f"{lang}/{spk.id}/{k:05d}", sent.words(lang),
                                                         str(audio), str(video)))

    # babble sources (> 15 s, speakers outside every split) and a pool for the training noise
    counts = babble_counts(langs) if noise else {}
    babble_specs: list[tuple[str, base.UttSpec]] = []
    pool_specs: list[base.UttSpec] = []
    from whisper_flamingo.preparation.synthetic.espeak import voice_variants

    eval_variants = {s.variant for lang in langs for sp in ("valid", "test") for s in speakers[lang][sp]}
    free = [v for v in voice_variants() if v not in eval_variants] or list(voice_variants())
    for lang, n in counts.items():
        for b in range(n + (N_TRAIN_POOL // len(counts) if counts else 0)):
            spk = base._make_speaker(rng, 900 + b, "babble", free[rng.randrange(len(free))])
            if lang != "en":
                spk = dataclasses.replace(spk, accent=VOICES[lang])
            words = BABBLE_WORDS if b < n else 16
            spec = base._utt_spec(rng, spk, f"babble/{lang}/{b:03d}", babble_text(rng, lang, words), None, None)
            (babble_specs.append((lang, spec)) if b < n else pool_specs.append(spec))

    # fixed batches over everything in plan order: their composition never depends on jobs
    flat = [u for lang in langs for split in base.SPLITS for u in specs[lang][split]]
    flat += [s for _, s in babble_specs] + pool_specs
    batches = [flat[i:i + base.BATCH] for i in range(0, len(flat), base.BATCH)]
    results = base._run_batches(batches, jobs, progress)

    audio_seconds: dict[str, float] = {}
    for lang in langs:
        mdir = manifest_dir(out, lang)
        for split in base.SPLITS:
            rows = []
            for spec in specs[lang][split]:
                r = results[spec.key]
                rows.append((spec.key.split("/", 1)[1], spec.video_path, spec.audio_path, r["n_frames"],
                             r["n_samples"]))
            audio_seconds[f"{lang}/{split}"] = round(sum(r[4] for r in rows) / base.SR, 3)
            base._write_manifest(mdir / f"{split}.tsv", rows, "/")
            base._write_lines(mdir / f"{split}.{lang}", [asr_label(s, lang) for s in sents[lang][split]])
            if lang == "en":
                for x in en_x:
                    base._write_manifest(mdir / x / f"{split}.tsv", rows, "/")
                    base._write_lines(mdir / x / f"{split}.{x}",
                                      [translation_label(s, x) for s in sents["en"][split]])

    babble_wav, babble_tsv, train_noise_tsv, kinds, sources = None, {}, None, {}, {}
    if noise:
        babble_wav, babble_tsv, sources = _write_babble(out, babble_specs, results, seed)
        train_noise_tsv, kinds = base.write_train_noise(out / "noise", [results[s.key]["pcm"] for s in pool_specs],
                                                        rng)
    info = base.CorpusInfo(
        root=out, seed=seed, sizes=sizes, langs=en_x,
        speakers={s: [spk.id for lang in langs for spk in speakers[lang][s]] for s in base.SPLITS},
        audio_seconds=audio_seconds, babble_wav=babble_wav, babble_tsv=babble_tsv,
        train_noise_tsv=train_noise_tsv,
        extra={"format": "muavic", "multilingual": True, "asr_langs": list(langs), "en_x": list(en_x),
               "paths": "absolute", "noise": noise, "sample_rate": base.SR, "fps": base.FPS,
               "sentences_per_language": N_SENTENCES, "babble_counts": counts, "babble_sources": sources,
               "train_noise": kinds,
               "voices": {lang: sorted({s.voice for sp in base.SPLITS for s in speakers[lang][sp]})
                          for lang in langs}})
    (out / base.CORPUS_JSON).write_text(json.dumps(info.to_json(), indent=1, ensure_ascii=False) + "\n",
                                        encoding="utf-8")
    (out / "README.txt").write_text(_readme(info), encoding="utf-8")
    info.elapsed_s = time.perf_counter() - t0
    n_utt = sum(sizes.values()) * len(langs)
    log.info("multilingual synthetic corpus: %d languages, %d utterances in %.1f s with %d jobs -> %s",
             len(langs), n_utt, info.elapsed_s, jobs, out)
    return info


def _write_babble(out: Path, babble_specs: list[tuple[str, base.UttSpec]], results: dict,
                  seed: int) -> tuple[Path, dict[str, Path], dict[str, list[str]]]:
    """Source wavs + per-language source manifests, then the MuAViC babble recipe over them."""
    from whisper_flamingo.preparation.noise_sets import muavic_babble

    src_dir = out / "noise" / "babble" / "sources"
    rows: dict[str, list[tuple]] = {}
    for lang, spec in babble_specs:
        pcm = results[spec.key]["pcm"]
        need = int(BABBLE_MIN_S * base.SR)
        if len(pcm) < need:  # a fast voice: loop the utterance up to the recipe's minimum length
            pcm = np.resize(pcm, need).astype(np.int16)
        path = src_dir / lang / f"{len(rows.get(lang, [])):03d}.wav"
        base._write_wav(path, pcm)
        rows.setdefault(lang, []).append((spec.key, "", str(path), 0, len(pcm)))
    tsvs = {}
    for lang in MULTI_LANGS:
        if lang in rows:
            tsvs[lang] = src_dir / f"{lang}.tsv"
            base._write_manifest(tsvs[lang], rows[lang], "/")
    wav = muavic_babble(tsvs, out, seed)
    lists = {split: wav.parent / f"{split}.tsv" for split in ("valid", "test")}
    chosen = (wav.parent / "sources.txt").read_text(encoding="utf-8").split()
    by_lang: dict[str, list[str]] = {}
    for p in chosen:
        by_lang.setdefault(Path(p).parent.name, []).append(p)
    return wav, lists, by_lang


def _readme(info: base.CorpusInfo) -> str:
    ex = info.extra
    return f"""Nine-language synthetic audio-visual corpus in the MuAViC layout (whisper-flamingo prepare synthetic)

seed {info.seed}; per language: train {info.sizes['train']}, valid {info.sizes['valid']}, test {info.sizes['test']}
ASR languages: {' '.join(ex['asr_langs'])}; En->X targets: {' '.join(ex['en_x']) or 'none'}
Speech: eSpeak NG's voice of each language, voice variants as speakers (disjoint across splits).
Sentences: subject + verb phrase + place/time, aligned translations ({ex['sentences_per_language']}
per language); ASR labels lower case without punctuation (mTEDx rules), En->X references keep case
and punctuation.

muavic_root: {info.root}
  muavic/en/{{train,valid,test}}.tsv + .en
  muavic/en/<X>/{{train,valid,test}}.tsv + .<X>                 En->X
  muavic/<X>/muavic_normalized/{{train,valid,test}}.tsv + .<X>  ASR in X
babble (multilingual, 30 sources {ex['babble_counts']}): {info.babble_wav}
training noise: {info.train_noise_tsv}
"""
