"""Generate a small audio-visual corpus in the MuAViC layout, deterministically for a seed.

Layout under ``out`` (``out`` is the ``muavic_root`` of the configs)::

    muavic/en/{train,valid,test}.tsv  + .en          English AVSR manifests and labels
    muavic/en/<xx>/{train,valid,test}.tsv + .<xx>    En->X translation manifests and labels
    muavic/en/audio/<split>/<speaker>/<nnnnn>.wav    16 kHz mono int16
    muavic/en/video/<split>/<speaker>/<nnnnn>.mp4    96x96 grayscale mouth region, 25 fps
    noise/babble/noise.wav, noise/babble/{valid,test}.tsv, noise/babble/sources/*.wav
    noise/train/*.wav, noise/train.tsv               training noise (babble, speech, white, pink, music)
    corpus.json, README.txt

Speech comes from eSpeak NG in fresh worker processes (one per fixed batch of utterances), so the
files are identical bit for bit for the same seed and sizes whatever ``jobs`` is.  Speakers (voice
variants) of train, valid and test are disjoint; the valid/test babble is made from other speakers.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.preparation.synthetic import noise as noise_gen
from whisper_flamingo.preparation.synthetic.grammar import LANGS, SentenceGenerator, english_vocabulary
from whisper_flamingo.preparation.synthetic.video import FPS, FaceStyle

log = logging.getLogger(__name__)

SR = 16000
SPLITS = ("train", "valid", "test")
SAMPLES_PER_FRAME = SR // FPS  # 640: every utterance is a whole number of video frames
BATCH = 24  # utterances per fresh worker process (fixed: determinism does not depend on jobs)
N_BABBLE = 30  # utterances averaged into the valid/test babble (as LRS3's)
N_BABBLE_POOL = 16  # further utterances for training babble and speech noise
TRAIN_NOISE_PER_KIND = 3
ACCENTS = (("en-us", 3), ("en", 2), ("en-gb-x-rp", 1), ("en-gb-scotland", 1), ("en-us-nyc", 1),
           ("en-029", 1), ("en-gb-x-gbclan", 1), ("en-gb-x-gbcwmd", 1))
# natural-sounding variants reserved for valid/test speakers; all others (and the rest of these)
# can be train speakers
EVAL_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f4", "adam", "benjamin", "david",
                 "edward", "john", "linda", "max", "michel", "norbert", "paul", "quincy", "rob", "robert",
                 "shelby", "steph", "travis", "zac", "Annie", "aunty", "belinda", "Andy", "Lee", "ian")
CORPUS_JSON = "corpus.json"


# ----------------------------------------------------------------------------------------------
# plan


@dataclass(frozen=True)
class Speaker:
    """A synthetic speaker: an eSpeak voice with prosody settings and a face style."""

    id: str
    split: str
    variant: str
    accent: str
    pitch: int
    pitch_range: int
    rate: int
    word_gap: int
    gain_db: float
    strength: float
    face: FaceStyle

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


@dataclass(frozen=True)
class UttSpec:
    """Everything a worker needs to make one utterance (picklable)."""

    key: str
    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    seed: int
    pre_pad: float
    post_pad: float
    rms_db: float
    floor_db: float
    strength: float = 1.0
    face: FaceStyle | None = None
    audio_path: str | None = None  # None: return the samples instead of writing a file
    video_path: str | None = None


@dataclass
class CorpusInfo:
    """What :func:`generate_corpus` wrote (paths are absolute)."""

    root: Path  # the muavic_root of the configs
    seed: int
    sizes: dict[str, int]
    langs: tuple[str, ...]
    speakers: dict[str, list[str]]
    audio_seconds: dict[str, float]
    babble_wav: Path | None  # None: generated with noise=False
    babble_tsv: dict[str, Path]  # valid/test -> one-line noise list
    train_noise_tsv: Path | None
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def lang_dir(self) -> Path:
        return self.root / "muavic" / "en"

    def tsv(self, split: str, lang: str = "en") -> Path:
        """Manifest of ``split``: English AVSR (``lang='en'``) or En->``lang`` translation."""
        return self.lang_dir / f"{split}.tsv" if lang == "en" else self.lang_dir / lang / f"{split}.tsv"

    def labels(self, split: str, lang: str = "en") -> Path:
        """Label file aligned with :meth:`tsv`."""
        return self.tsv(split, lang).with_suffix(f".{lang}")

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("elapsed_s")
        return json.loads(json.dumps(d, default=str))


def _weighted(rng: random.Random, pairs):
    r, acc = rng.random() * sum(w for _, w in pairs), 0.0
    for item, w in pairs:
        acc += w
        if r < acc:
            return item
    return pairs[-1][0]


def _n_speakers(split: str, n: int) -> int:
    if n <= 0:
        return 0
    per, cap = (10, 10_000) if split == "train" else (8, 8)
    return max(2 if n >= 2 else 1, min(math.ceil(n / per), cap))


def _make_speaker(rng: random.Random, idx: int, split: str, variant: str) -> Speaker:
    face_rng = np.random.default_rng(rng.getrandbits(63))
    return Speaker(
        id=f"s{idx:03d}{variant.lower()}", split=split, variant=variant,
        accent=_weighted(rng, ACCENTS), pitch=rng.randint(30, 70), pitch_range=rng.randint(30, 85),
        rate=rng.randint(150, 185), word_gap=_weighted(rng, [(0, 4), (1, 1)]),
        gain_db=rng.uniform(-26.0, -18.0), strength=rng.uniform(0.85, 1.2),
        face=FaceStyle.random(face_rng))


def plan_speakers(rng: random.Random, sizes: dict[str, int], variants: tuple[str, ...]
                  ) -> dict[str, list[Speaker]]:
    """Disjoint speakers per split: valid/test draw from :data:`EVAL_VARIANTS`, train from the rest."""
    pool = [v for v in EVAL_VARIANTS if v in variants]
    rng.shuffle(pool)
    n_valid, n_test = _n_speakers("valid", sizes["valid"]), _n_speakers("test", sizes["test"])
    if n_valid + n_test > len(pool):
        raise ConfigError(f"only {len(pool)} evaluation voices available; ask for fewer valid/test "
                          "utterances")
    chosen = {"valid": pool[:n_valid], "test": pool[n_valid:n_valid + n_test]}
    used = set(chosen["valid"]) | set(chosen["test"])
    train_pool = [v for v in variants if v not in used]
    rng.shuffle(train_pool)
    n_train = _n_speakers("train", sizes["train"])
    chosen["train"] = [train_pool[k % len(train_pool)] for k in range(n_train)]
    out: dict[str, list[Speaker]] = {}
    idx = 0
    for split in SPLITS:
        out[split] = []
        for variant in chosen[split]:
            out[split].append(_make_speaker(rng, idx, split, variant))
            idx += 1
    return out


def _utt_spec(rng: random.Random, spk: Speaker, key: str, text: str, audio: str | None,
              video: str | None) -> UttSpec:
    return UttSpec(
        key=key, text=text, voice=spk.voice, rate=spk.rate + rng.randint(-8, 8),
        pitch=min(99, max(0, spk.pitch + rng.randint(-4, 4))), pitch_range=spk.pitch_range,
        word_gap=spk.word_gap, seed=rng.getrandbits(63), pre_pad=rng.uniform(0.12, 0.3),
        post_pad=rng.uniform(0.12, 0.3), rms_db=spk.gain_db + rng.uniform(-2.0, 2.0),
        floor_db=rng.uniform(-68.0, -56.0), strength=spk.strength, face=spk.face if video else None,
        audio_path=audio, video_path=video)


# ----------------------------------------------------------------------------------------------
# worker (runs in a fresh spawned process per batch)


def _make_audio(spec: UttSpec) -> tuple[np.ndarray, list, float]:
    from whisper_flamingo.preparation.synthetic.espeak import engine, resample_to

    syn = engine().synthesize(spec.text, voice=spec.voice, rate=spec.rate, pitch=spec.pitch,
                              pitch_range=spec.pitch_range, word_gap=spec.word_gap)
    speech = resample_to(syn.audio, syn.sample_rate, SR).astype(np.float64)
    rng = np.random.default_rng(spec.seed)
    active = speech[np.abs(speech) > 1e-3]
    rms = float(np.sqrt(np.mean(active ** 2))) if active.size else 1e-3
    speech *= 10 ** (spec.rms_db / 20) / max(rms, 1e-6)
    peak = float(np.abs(speech).max()) if speech.size else 0.0
    if peak > 0.95:
        speech *= 0.95 / peak
    pre = int(round(spec.pre_pad * SR))
    n = pre + len(speech) + int(round(spec.post_pad * SR))
    n = max(SAMPLES_PER_FRAME, int(math.ceil(n / SAMPLES_PER_FRAME)) * SAMPLES_PER_FRAME)
    wav = np.zeros(n, np.float64)
    wav[pre:pre + len(speech)] = speech
    wav += rng.standard_normal(n) * 10 ** (spec.floor_db / 20)  # room tone
    pcm = np.clip(np.round(wav * 32768), -32768, 32767).astype(np.int16)
    return pcm, syn.phones, pre / SR


def _synth_batch(specs: list[UttSpec]) -> list[dict]:
    """Make every utterance of a batch, in order, in this (fresh) process."""
    import soundfile as sf

    from whisper_flamingo.preparation.synthetic.video import articulation_track, render_frames, write_mp4

    results = []
    for spec in specs:
        pcm, phones, offset = _make_audio(spec)
        res = {"key": spec.key, "n_samples": int(len(pcm)), "n_frames": int(len(pcm) // SAMPLES_PER_FRAME),
               "n_phones": len(phones)}
        if spec.audio_path is None:
            res["pcm"] = pcm
        else:
            path = Path(spec.audio_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), pcm, SR, subtype="PCM_16", format="WAV")
        if spec.video_path is not None:
            track = articulation_track(phones, res["n_frames"], offset=offset, strength=spec.strength)
            frames = render_frames(track, spec.face, np.random.default_rng(spec.seed + 1))
            write_mp4(Path(spec.video_path), frames)
        results.append(res)
    return results


# ----------------------------------------------------------------------------------------------
# driver


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        if not (out / CORPUS_JSON).is_file():
            raise ConfigError(f"{out}: exists, is not empty and holds no {CORPUS_JSON}; choose a new "
                              "or empty directory for the synthetic corpus")
        for name in ("muavic", "noise"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (CORPUS_JSON, "README.txt"):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _run_batches(batches: list[list[UttSpec]], jobs: int, progress: bool) -> dict[str, dict]:
    from tqdm import tqdm

    results: dict[str, dict] = {}
    total = sum(len(b) for b in batches)
    ctx = mp.get_context("spawn")
    with tqdm(total=total, unit="utt", desc="synthesising", disable=not progress) as bar, \
            ctx.Pool(processes=max(1, jobs), maxtasksperchild=1) as pool:
        for batch_res in pool.imap_unordered(_synth_batch, batches):
            for r in batch_res:
                results[r["key"]] = r
            bar.update(len(batch_res))
    return results


def _write_manifest(path: Path, rows: list[tuple[str, str, str, int, int]], root_line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [root_line] + ["\t".join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _write_wav(path: Path, pcm: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, SR, subtype="PCM_16", format="WAV")


def _write_noise(noise_dir: Path, pcms: list[np.ndarray], rng: random.Random):
    """Valid/test babble (mean of the first :data:`N_BABBLE` sources) and the training noise."""
    eval_sources = pcms[:N_BABBLE]
    source_paths = []
    for k, pcm in enumerate(eval_sources):
        p = noise_dir / "babble" / "sources" / f"{k:03d}.wav"
        _write_wav(p, pcm)
        source_paths.append(p)
    babble_wav = noise_dir / "babble" / "noise.wav"
    _write_wav(babble_wav, noise_gen.babble_mean(eval_sources))
    babble_tsv = {}
    for split in ("valid", "test"):
        babble_tsv[split] = noise_dir / "babble" / f"{split}.tsv"
        _write_lines(babble_tsv[split], [str(babble_wav)])
    train_noise_tsv, kinds = write_train_noise(noise_dir, pcms[N_BABBLE:], rng)
    return babble_wav, babble_tsv, train_noise_tsv, source_paths, kinds


def write_train_noise(noise_dir: Path, pool: list[np.ndarray], rng: random.Random
                      ) -> tuple[Path, dict[str, list[str]]]:
    """Training noise from a pool of utterances (babble, speech) and generated noise -> ``train.tsv``."""
    nrng = np.random.default_rng(rng.getrandbits(63))
    train_noise: list[Path] = []
    kinds = {}
    for kind in ("babble", "speech", "white", "pink", "music"):
        for k in range(TRAIN_NOISE_PER_KIND):
            n = int(nrng.uniform(3.0, 11.0) * SR)
            if kind == "babble":
                pick = nrng.choice(len(pool), size=min(N_BABBLE, len(pool)), replace=False)
                pcm = noise_gen.babble_mix([pool[i] for i in pick], n, nrng)
            elif kind == "speech":
                src = pool[int(nrng.integers(len(pool)))]
                pcm = np.resize(src, n).astype(np.int16) if len(src) < n else src[:n]
            elif kind == "white":
                pcm = noise_gen.white_noise(n, nrng)
            elif kind == "pink":
                pcm = noise_gen.pink_noise(n, nrng)
            else:
                pcm = noise_gen.music_like(n, nrng)
            p = noise_dir / "train" / f"{kind}_{k:02d}.wav"
            _write_wav(p, pcm)
            train_noise.append(p)
            kinds.setdefault(kind, []).append(str(p))
    train_noise_tsv = noise_dir / "train.tsv"
    _write_lines(train_noise_tsv, [str(p) for p in train_noise])
    return train_noise_tsv, kinds


def generate_corpus(out: Path, seed: int = 0, n_train: int = 300, n_valid: int = 40, n_test: int = 40,
                    jobs: int = 2, en_x_langs: tuple[str, ...] = ("fr",), min_words: int = 5,
                    max_words: int = 11, relative_paths: bool = False, noise: bool = True,
                    progress: bool = True) -> CorpusInfo:
    """Write a synthetic MuAViC-layout corpus under ``out`` and describe it.

    ``relative_paths``: manifests start with the absolute corpus root and list paths relative to
    it, instead of ``/`` and absolute paths (MuAViC's convention, the default).  ``noise=False``
    skips the babble and training noise files (faster, for tests).
    """
    t0 = time.perf_counter()
    from whisper_flamingo.preparation.synthetic.espeak import voice_variants

    out = Path(out).resolve()
    sizes = {"train": int(n_train), "valid": int(n_valid), "test": int(n_test)}
    if any(v < 0 for v in sizes.values()) or sizes["train"] < 1:
        raise ConfigError(f"corpus sizes must be >= 0 with at least one train utterance, got {sizes}")
    langs = tuple(dict.fromkeys(en_x_langs))
    bad = [lang for lang in langs if lang not in LANGS]
    if bad:
        raise ConfigError(f"--langs: no grammar for {bad}; supported En-X targets: {list(LANGS)}")
    if "audio" in str(out) or "video" in str(out):
        log.warning("%s contains 'audio' or 'video': loaders that derive the video path by replacing "
                    "every 'audio' in the audio path will look in the wrong place", out)
    _prepare_out(out)
    rng = random.Random(seed)
    speakers = plan_speakers(rng, sizes, voice_variants())
    lang_dir = out / "muavic" / "en"

    # sentences: unique within the corpus, so valid/test never repeat a train sentence
    gen = SentenceGenerator(random.Random(rng.getrandbits(63)), langs, min_words, max_words)
    seen: set[str] = set()
    specs: dict[str, list[UttSpec]] = {}
    rows: dict[str, list[tuple]] = {}
    labels: dict[str, dict[str, list[str]]] = {}
    for split in SPLITS:
        specs[split], labels[split] = [], {lang: [] for lang in ("en", *langs)}
        spk_list = speakers[split]
        order = [spk_list[k % len(spk_list)] for k in range(sizes[split])] if spk_list else []
        rng.shuffle(order)
        counter: dict[str, int] = {}
        for spk in order:
            for _ in range(100):
                sent = gen.sample()
                if sent.en not in seen:
                    break
            seen.add(sent.en)
            k = counter[spk.id] = counter.get(spk.id, -1) + 1
            key = f"{spk.id}/{k:05d}"
            audio = lang_dir / "audio" / split / spk.id / f"{k:05d}.wav"
            video = lang_dir / "video" / split / spk.id / f"{k:05d}.mp4"
            specs[split].append(_utt_spec(rng, spk, key, sent.en, str(audio), str(video)))
            labels[split]["en"].append(sent.en)
            for lang in langs:
                labels[split][lang].append(sent.translations[lang])

    # babble sources: long utterances of train-variant speakers that speak in no split
    variants_eval = {s.variant for split in ("valid", "test") for s in speakers[split]}
    babble_variants = [v for v in voice_variants() if v not in variants_eval]
    babble_specs: list[UttSpec] = []
    for b in range(N_BABBLE + N_BABBLE_POOL if noise else 0):
        spk = _make_speaker(rng, 900 + b, "babble", babble_variants[rng.randrange(len(babble_variants))])
        words: list[str] = []
        while len(words) < 16:
            words += gen.sample().en.split()
        babble_specs.append(_utt_spec(rng, spk, f"babble/{b:03d}", " ".join(words), None, None))

    batches = [specs[s][i:i + BATCH] for s in SPLITS for i in range(0, len(specs[s]), BATCH)]
    batches += [babble_specs[i:i + BATCH] for i in range(0, len(babble_specs), BATCH)]
    batches.sort(key=len, reverse=True)  # stable: the composition of a batch never depends on jobs
    results = _run_batches(batches, jobs, progress)

    # manifests and labels
    root_line = str(out) if relative_paths else "/"
    audio_seconds = {}
    for split in SPLITS:
        rows[split] = []
        for spec in specs[split]:
            r = results[spec.key]
            a, v = Path(spec.audio_path), Path(spec.video_path)
            if relative_paths:
                a, v = a.relative_to(out), v.relative_to(out)
            rows[split].append((spec.key, str(v), str(a), r["n_frames"], r["n_samples"]))
        audio_seconds[split] = round(sum(r[4] for r in rows[split]) / SR, 3)
        _write_manifest(lang_dir / f"{split}.tsv", rows[split], root_line)
        _write_lines(lang_dir / f"{split}.en", labels[split]["en"])
        for lang in langs:
            _write_manifest(lang_dir / lang / f"{split}.tsv", rows[split], root_line)
            _write_lines(lang_dir / lang / f"{split}.{lang}", labels[split][lang])

    babble_wav, babble_tsv, train_noise_tsv, source_paths, kinds = None, {}, None, [], {}
    if noise:
        babble_wav, babble_tsv, train_noise_tsv, source_paths, kinds = _write_noise(
            out / "noise", [results[s.key]["pcm"] for s in babble_specs], rng)
    info = CorpusInfo(
        root=out, seed=seed, sizes=sizes, langs=langs,
        speakers={s: [spk.id for spk in speakers[s]] for s in SPLITS}, audio_seconds=audio_seconds,
        babble_wav=babble_wav, babble_tsv=babble_tsv, train_noise_tsv=train_noise_tsv,
        extra={
            "format": "muavic", "paths": "relative" if relative_paths else "absolute", "noise": noise,
            "sample_rate": SR, "fps": FPS, "video_size": [96, 96], "words": [min_words, max_words],
            "vocabulary_size": len(english_vocabulary()),
            "speaker_details": {s: [{"id": spk.id, "voice": spk.voice, "pitch": spk.pitch,
                                     "rate": spk.rate} for spk in speakers[s]] for s in SPLITS},
            "babble_sources": [str(p) for p in source_paths],
            "babble_source_voices": [s.voice for s in babble_specs[:N_BABBLE]],
            "train_noise": kinds,
        })
    (out / CORPUS_JSON).write_text(json.dumps(info.to_json(), indent=1) + "\n", encoding="utf-8")
    (out / "README.txt").write_text(_readme(info), encoding="utf-8")

    info.elapsed_s = time.perf_counter() - t0
    n_utt = sum(sizes.values())
    secs = sum(audio_seconds.values())
    log.info("synthetic corpus: %d utterances (%.1f s of audio, %d babble sources) in %.1f s with %d "
             "jobs: %.2f utt/s, %.1f audio-s/s -> %s", n_utt, secs, len(babble_specs), info.elapsed_s,
             jobs, n_utt / info.elapsed_s, secs / info.elapsed_s, out)
    return info


def _readme(info: CorpusInfo) -> str:
    sizes = ", ".join(f"{s} {info.sizes[s]} ({info.audio_seconds[s]:.0f} s)" for s in SPLITS)
    return f"""Synthetic audio-visual corpus in the MuAViC layout (whisper-flamingo prepare synthetic)

seed {info.seed}; {sizes}; En-X targets: {', '.join(info.langs) or 'none'}
Speech: eSpeak NG voice variants (speakers of train/valid/test are disjoint), 16 kHz mono int16.
Video: 96x96 grayscale 25 fps drawn mouth whose shape follows the phonemes being spoken.
Sentences: a small English grammar ({info.extra['vocabulary_size']} word types) with aligned
translations; English labels are lower case without punctuation (LRS3 style).

muavic_root: {info.root}
  muavic/en/{{train,valid,test}}.tsv + .en        English recognition
  muavic/en/<xx>/{{train,valid,test}}.tsv + .<xx> En->X translation
  muavic/en/audio|video/<split>/<speaker>/<n>.wav|.mp4
Manifests: first line is the root, then id, video path, audio path, video frames, audio samples.
""" + (f"""Noise lists (one absolute wav path per line, no header):
  {info.babble_tsv['valid']}  (babble: mean of {N_BABBLE} utterances of other speakers)
  {info.babble_tsv['test']}
  {info.train_noise_tsv}  (babble, speech, white, pink, music-like; 3-11 s each)
""" if info.babble_wav else "No noise files (generated with noise=False).\n")
