"""``whisper-flamingo prepare``: make data sets; ``prepare synthetic`` writes the demo corpus, ``prepare
manifest --layout audio`` a manifest from a folder of audio files with transcripts, the other steps turn real
videos and corpora into one (README, "Preparing real data").

Examples::

    whisper-flamingo prepare synthetic --out data/synthetic --train 300 --valid 40 --test 40 --jobs 2
    whisper-flamingo prepare pipeline --src my_videos --out my_corpus
    whisper-flamingo prepare manifest --layout audio --src my_recordings/train --out data/mine/muavic/en
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _lang_list(value: str) -> str:
    """One ``--langs`` value (a code or a comma list), checked at parse time."""
    from whisper_flamingo.preparation.synthetic.grammar import LANGS
    from whisper_flamingo.preparation.synthetic.phrases import MULTI_LANGS

    bad = [x for x in value.replace(",", " ").split() if x not in (*LANGS, *MULTI_LANGS)]
    if bad:
        raise argparse.ArgumentTypeError(f"unsupported language {', '.join(bad)}; choose from "
                                         f"{', '.join(MULTI_LANGS)}")
    return value


def _add_synthetic(sub) -> None:
    from whisper_flamingo.preparation.synthetic.grammar import LANGS

    p = sub.add_parser(
        "synthetic", help="generate a synthetic audio-visual corpus in the MuAViC layout",
        description="Generate English sentences from a small grammar (with aligned translations), "
                    "speak them with eSpeak NG voice variants, draw a 96x96 talking mouth that follows "
                    "the phonemes, and write MuAViC-format manifests, labels and noise lists.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks for errors")
    p.add_argument("--out", type=Path, required=True,
                   help="corpus directory (the muavic_root of the configs); new, empty or a previous "
                        "synthetic corpus, which is replaced")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and sizes: same files)")
    p.add_argument("--train", type=int, default=300, help="train utterances (default: 300)")
    p.add_argument("--valid", type=int, default=40, help="valid utterances (default: 40)")
    p.add_argument("--test", type=int, default=40, help="test utterances (default: 40)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes (default: min(4, CPUs)); does not change the output")
    p.add_argument("--langs", nargs="*", default=["fr"], metavar="LANG", type=_lang_list,
                   help=f"En-X translation targets among {', '.join(LANGS)} (default: fr; none: no En-X); "
                        "a list with en or another MuAViC language (en,ar,de,el,es,fr,it,pt,ru; commas or "
                        "spaces) makes the multilingual corpus: ASR in each, En-X for el es fr it pt ru, "
                        "multilingual babble; --train/--valid/--test are then per language")
    p.add_argument("--min-words", type=int, default=5, help="shortest sentence in words (default: 5)")
    p.add_argument("--max-words", type=int, default=11, help="longest sentence in words (default: 11)")
    p.add_argument("--relative-paths", action="store_true",
                   help="manifests start with the corpus root and list paths relative to it "
                        "(default: '/' then absolute paths, as MuAViC)")
    p.add_argument("--no-noise", action="store_true",
                   help="skip the babble and training noise files (faster; noisy evaluation needs them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


EXAMPLES = """examples:
  whisper-flamingo prepare synthetic --out data/synthetic_multi --langs en,ar,de,el,es,fr,it,pt,ru --train 40
  whisper-flamingo prepare synthetic-tagging --out data/synthetic_tagging
  whisper-flamingo prepare esc50 --src ESC-50-master --out data/esc50   # or speechcommands --src speech_commands_v0.02
"""


def _add_synthetic_tagging(sub) -> None:
    p = sub.add_parser(
        "synthetic-tagging", help="generate a synthetic multi-label sound-tagging set with AudioSet labels",
        description="10-s clips mixing eSpeak NG speech with generated sounds (music, sine, beeps, dial tone, "
                    "white and pink noise; silence), labelled with real AudioSet mids; train/valid/eval JSON "
                    "lists and the AudioSet label CSV.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--out", type=Path, required=True, help="output directory (new, empty, or a previous set)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--train", type=int, default=240, help="training clips (default: 240)")
    p.add_argument("--valid", type=int, default=40, help="validation clips (default: 40)")
    p.add_argument("--eval", type=int, default=60, help="held-out evaluation clips (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    _add_synthetic(sub)
    _add_extract_audio(sub)
    _add_landmarks(sub)
    _add_crop_mouth(sub)
    _add_corpus_manifest(sub)
    _add_normalize_labels(sub)
    _add_pipeline(sub)
    _add_babble(sub)
    _add_musan(sub)
    _add_synthetic_tagging(sub)
    _add_tagging_corpora(sub)


def _run_tagging(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.synthetic.tagging import generate_tagging_set

    info = generate_tagging_set(args.out, seed=args.seed, n_train=args.train, n_valid=args.valid,
                                n_eval=args.eval, progress=not args.no_progress)
    sizes = ", ".join(f"{s} {n}" for s, n in info.sizes.items())
    print(f"synthetic tagging set in {info.root} ({info.elapsed_s:.1f} s): {sizes}\n"  # noqa: T201
          f"  lists: {' '.join(str(p) for p in info.lists.values())}\n  label_csv: {info.label_csv}")
    return 0


def _add_tagging_corpora(sub) -> None:
    for name, src, out, what in (
            ("esc50", "ESC-50-master", "data/esc50",
             "ESC-50 (audio/*.wav + meta/esc50.csv) -> 16-kHz clips, AST's 5-fold train/eval lists, label CSV"),
            ("speechcommands", "speech_commands_v0.02", "data/speechcommands",
             "Speech Commands V2 (word folders, validation/testing lists) -> AST's train/valid/eval lists, label CSV")):
        p = sub.add_parser(name, help=what, description=what + " (config/tagging/ast_*.yaml read these).")
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        p.add_argument("--src", type=Path, required=True, help=f"the unpacked official download (e.g. {src})")
        p.add_argument("--out", type=Path, required=True, help=f"output directory (e.g. {out})")


def _run_tagging_corpus(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.tagging_corpora import prepare_esc50, prepare_speechcommands

    info = (prepare_esc50 if args.what == "esc50" else prepare_speechcommands)(args.src, args.out)
    sizes = ", ".join(f"{s} {n}" for s, n in info.sizes.items())
    print(f"{args.what} in {args.out}: {sizes}; resampled to 16 kHz: {info.resampled}\n"  # noqa: T201
          f"  label_csv: {info.label_csv}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what in _STEPS:
        return _STEPS[args.what](args)
    if args.what != "synthetic":  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"unknown prepare target {args.what}")
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.preparation.synthetic import generate_corpus
    from whisper_flamingo.preparation.synthetic.grammar import LANGS
    from whisper_flamingo.preparation.synthetic.multilingual import parse_langs

    langs = parse_langs(args.langs)
    if not set(langs) <= set(LANGS):
        return _run_multilingual(args, langs)
    if args.min_words < 3 or args.max_words < args.min_words:
        raise ConfigError(f"--min-words {args.min_words} / --max-words {args.max_words}: need "
                          "3 <= min-words <= max-words")
    info = generate_corpus(args.out, seed=args.seed, n_train=args.train, n_valid=args.valid,
                           n_test=args.test, jobs=args.jobs, en_x_langs=langs,
                           min_words=args.min_words, max_words=args.max_words,
                           relative_paths=args.relative_paths, noise=not args.no_noise,
                           progress=not args.no_progress)
    sizes = ", ".join(f"{s} {n} ({info.audio_seconds[s]:.0f} s)" for s, n in info.sizes.items())
    lines = [f"synthetic corpus in {info.root} ({info.elapsed_s:.1f} s): {sizes}; "
             f"En-X: {', '.join(info.langs) or 'none'}", f"  muavic_root: {info.root}"]
    if info.babble_wav is not None:
        lines += [f"  babble (valid/test): {info.babble_tsv['valid']} {info.babble_tsv['test']}",
                  f"  training noise: {info.train_noise_tsv}"]
    print("\n".join(lines))  # noqa: T201 - the command's user-facing summary
    return 0


def _run_multilingual(args: argparse.Namespace, langs: tuple[str, ...]) -> int:
    from whisper_flamingo.preparation.synthetic.multilingual import generate_multilingual_corpus

    if args.relative_paths:
        log.warning("--relative-paths is not supported by the multilingual corpus; writing absolute paths")
    info = generate_multilingual_corpus(args.out, langs, seed=args.seed, n_train=args.train,
                                        n_valid=args.valid, n_test=args.test, jobs=args.jobs,
                                        noise=not args.no_noise, progress=not args.no_progress)
    lines = [f"multilingual synthetic corpus in {info.root} ({info.elapsed_s:.1f} s): "
             f"{' '.join(info.extra['asr_langs'])}; per language train {info.sizes['train']}, valid "
             f"{info.sizes['valid']}, test {info.sizes['test']}; En-X: {' '.join(info.langs) or 'none'}",
             f"  muavic_root: {info.root}"]
    if info.babble_wav is not None:
        lines += [f"  multilingual babble (valid/test): {info.babble_tsv['valid']} {info.babble_tsv['test']}",
                  f"  training noise: {info.train_noise_tsv}"]
    print("\n".join(lines))  # noqa: T201 - the command's user-facing summary
    return 0


# ------------------------------------------------------------------ real-data steps (issue 13)


def _add_common(p, suffix_help: str) -> None:
    """Arguments shared by the per-file steps: inputs, outputs, sharding, resuming, bad inputs."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks for errors")
    p.add_argument("--src", type=Path, default=None,
                   help="input folder (searched recursively) or one file")
    p.add_argument("--list", type=Path, default=None,
                   help="a file of input paths, one a line (relative ones are relative to --src)")
    p.add_argument("--out", type=Path, required=True, help=f"output folder: {suffix_help}")
    p.add_argument("--rank", type=int, default=0, help="this process's shard (default: 0)")
    p.add_argument("--nshard", type=int, default=1, help="number of shards (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist (default: keep them)")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                   help="a bad input stops the step with a one-line error (default) or is counted and skipped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_jobs(args: argparse.Namespace, step: str, suffix: str, work, extensions=None, unit: str = "file") -> int:
    """Plan ``<out>/<relative path><suffix>`` for every input under ``--src`` (this ``--rank``'s share), run
    ``work(job, tmp_out)`` on the missing ones (preparation.jobs.run_step) and print the summary line."""
    from whisper_flamingo.preparation.jobs import VIDEO_EXTENSIONS, find_inputs, plan_jobs, run_step, shard

    root, files = find_inputs(args.src, args.list, extensions or VIDEO_EXTENSIONS)
    jobs = shard(plan_jobs(root, files, args.out, suffix), args.rank, args.nshard)
    summary = run_step(step, jobs, work, on_bad_sample=args.on_bad_sample, overwrite=args.overwrite,
                       progress=not args.no_progress, unit=unit)
    print(summary.line())  # noqa: T201 - the command's user-facing summary
    return 0


def _add_extract_audio(sub) -> None:
    p = sub.add_parser("extract-audio", help="video (mp4/mkv/avi/webm/...) -> 16 kHz mono int16 wav",
                       description="Decode the first audio stream of each input with PyAV (no ffmpeg binary) "
                                   "and write <out>/<relative path>.wav, 16 kHz mono int16.")
    _add_common(p, "<out>/<path relative to --src>.wav")
    p.add_argument("--extensions", nargs="*", default=None, metavar="EXT",
                   help="input suffixes to look for under --src (default: the usual video containers)")


def _run_extract_audio(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.extract_audio import extract_one

    exts = tuple(e if e.startswith(".") else f".{e}" for e in args.extensions) if args.extensions else None
    return _run_jobs(args, "extract-audio", ".wav", lambda job, tmp: extract_one(job.src, tmp), exts)


def _add_landmarks(sub) -> None:
    p = sub.add_parser("landmarks", help="per-video face landmarks (mediapipe or dlib) -> npz",
                       description="Detect face landmarks on every frame (25 fps) and write "
                                   "<out>/<relative path>.npz (points, found, mouth; NaN where no face). "
                                   "With --precomputed, convert MuAViC / auto_avsr landmark pickles instead.")
    _add_common(p, "<out>/<path relative to --src>.npz")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe",
                   help="mediapipe (auto_avsr's 4 points; the `prepare` extra) or dlib (AV-HuBERT's 68 points)")
    p.add_argument("--mediapipe-model", choices=("mesh", "detection"), default="mesh",
                   help="mesh: Face Mesh in tracking mode (finds tight lower-face views; default); "
                        "detection: auto_avsr's face detector")
    p.add_argument("--no-cnn-fallback", action="store_true",
                   help="dlib: no CNN detector when HOG finds no face (faster; AV-HuBERT used it)")
    p.add_argument("--precomputed", action="store_true",
                   help="inputs are per-video landmark pickles (*.pkl, MuAViC / auto_avsr) to convert")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames (for trials)")


def _run_landmarks(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.landmarks import detect_video, from_precomputed

    def work(job, tmp):
        if args.precomputed:
            lm = from_precomputed(job.src)
        else:
            lm = detect_video(job.src, args.detector, args.mediapipe_model, not args.no_cnn_fallback,
                              args.max_frames)
        lm.save(tmp)
        return {"frames": int(lm.found.size), "frames with a face": int(lm.found.sum())}

    return _run_jobs(args, "landmarks", ".npz", work, (".pkl", ".pickle") if args.precomputed else None, "video")


def _add_crop_mouth(sub) -> None:
    p = sub.add_parser("crop-mouth", help="96x96 grayscale 25 fps mouth-ROI mp4 from videos + landmarks",
                       description="Interpolate and smooth the landmarks of `prepare landmarks`, align each "
                                   "frame to a mean face and crop 96x96 around the mouth (AV-HuBERT's or "
                                   "auto_avsr's pipeline); write <out>/<relative path>.mp4.")
    _add_common(p, "<out>/<path relative to --src>.mp4")
    p.add_argument("--landmarks", type=Path, required=True,
                   help="the --out folder of `prepare landmarks` (same relative paths, .npz)")
    p.add_argument("--method", choices=("avhubert", "autoavsr"), default="autoavsr",
                   help="avhubert: 68 points, 12-frame queue (AV-HuBERT/MuAViC); autoavsr: 4 mediapipe or 68 "
                        "points, +-6 frame smoothing (auto_avsr; default)")
    p.add_argument("--mean-face", type=Path, default=None,
                   help="a (68, 2) .npy mean face in a 256x256 frame, e.g. 20words_mean_face.npy (default: "
                        "the shipped dlib mean shape; see preparation/mean_face.py)")
    p.add_argument("--no-face", choices=("error", "resize"), default="error",
                   help="a video with no face in any frame: a bad input (default) or the whole frame "
                        "resized to 96x96 (MuAViC)")
    p.add_argument("--contact-sheet", action="store_true",
                   help="also write <out>/<relative path>.png: 16 crops sampled over the frames with a face")
    p.add_argument("--codec", choices=("libx264", "mpeg4"), default="libx264",
                   help="libx264 at CRF 20 (AV-HuBERT's setting; default) or mpeg4 (bit-exact reruns)")


def _run_crop_mouth(args: argparse.Namespace) -> int:
    import numpy as np

    from whisper_flamingo.errors import DataError
    from whisper_flamingo.preparation.crop import contact_sheet, crop_video, load_mean_face
    from whisper_flamingo.preparation.landmarks import load_landmarks, read_frames
    from whisper_flamingo.preparation.synthetic.video import write_mp4

    mean_face = load_mean_face(args.mean_face)

    def work(job, tmp):
        lm_path = args.landmarks / f"{job.rel}.npz"
        if not lm_path.is_file():
            raise DataError(f"no landmarks {lm_path}; run `prepare landmarks` first", reason="missing_landmarks",
                            path=job.src)
        lm = load_landmarks(lm_path)
        frames = list(read_frames(job.src))
        crops = crop_video(frames, lm, args.method, mean_face, path=job.src, no_face=args.no_face)
        pixels = crops if isinstance(crops, np.ndarray) else crops.frames
        write_mp4(tmp, pixels, fps=25, codec=args.codec, quality=20 if args.codec == "libx264" else 2)
        if args.contact_sheet:
            contact_sheet(pixels, job.out.with_suffix(".png"), lm.found)
        return {"frames": len(pixels)}

    return _run_jobs(args, "crop-mouth", ".mp4", work, unit="video")


def _add_corpus_manifest(sub) -> None:
    p = sub.add_parser("manifest", help="{split}.tsv (actual frame/sample counts) + labels from a corpus layout",
                       description="Write AV-HuBERT/MuAViC manifests (root line '/', then id, video, audio, "
                                   "frames, samples: the actual counts) and label files from LRS3, LRS2 "
                                   "(auto_avsr lists), VoxCeleb2, MuAViC or a plain folder of videos with "
                                   "<name>.txt transcripts.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--layout", choices=("lrs3", "lrs2", "muavic", "voxceleb2", "folder", "audio"), required=True,
                   help="how the corpus sits on disk (lrs3, lrs2, muavic, voxceleb2, folder: videos with "
                        "transcripts; audio: a folder of audio files with transcripts, audio-only rows)")
    p.add_argument("--src", type=Path, required=True,
                   help="the corpus root (lrs3: pretrain/trainval/test; lrs2: auto_avsr's root; muavic: "
                        "MuAViC's muavic/; folder: videos + .txt transcripts; audio: audio files (searched "
                        "recursively) + <name>.txt or --transcripts; voxceleb2: unused)")
    p.add_argument("--audio", type=Path, default=None,
                   help="the 16 kHz wavs (extract-audio --out), same relative paths")
    p.add_argument("--video", type=Path, default=None,
                   help="the mouth videos (crop-mouth --out), same relative paths")
    p.add_argument("--out", type=Path, required=True, help="where the tsv and label files go")
    p.add_argument("--split", choices=("train", "valid", "test"), default=None,
                   help="folder and audio layouts: the split (default: test for folder, train for audio)")
    p.add_argument("--lang", default="en", help="label file extension / MuAViC language (default: en)")
    p.add_argument("--valid-ids", type=Path, default=None, help="lrs3: AV-HuBERT's lrs3-valid.id")
    p.add_argument("--lists", type=Path, default=None,
                   help="lrs2: folder of lrs2_*_transcript_lengths_seg24s.csv (default: <src>/labels)")
    p.add_argument("--transcripts", type=Path, default=None,
                   help="voxceleb2: tsv of <id> TAB <text>; audio: tsv of <name> TAB <text> (name: the audio "
                        "path relative to --src, with or without extension) instead of <name>.txt files")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                   help="a missing/unreadable file or empty transcript stops (default) or is counted and left out")
    p.add_argument("--overwrite", action="store_true", help="audio layout: replace an existing manifest of this split")


def _run_audio_manifest(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.manifest import manifest_from_folder, muavic_root_of

    split = args.split or "train"
    info = manifest_from_folder(args.src, args.out, split=split, lang=args.lang,
                                transcripts=args.transcripts, on_bad_sample=args.on_bad_sample,
                                overwrite=args.overwrite)
    skipped = f"; left out {dict(info.skipped)}" if info.skipped else ""
    root = muavic_root_of(args.out, split, args.lang)
    hint = (f"train with: muavic_root={root} lang={args.lang}" if root is not None else
            f"note: training reads <muavic_root>/muavic/{args.lang}"
            f"{'' if args.lang == 'en' else '/muavic_normalized'}/{split}.tsv; move the files there")
    print(f"{info.rows} rows ({info.seconds / 3600:.2f} h) written to {info.tsv} and {info.labels}{skipped}\n"  # noqa: T201
          f"  {hint}")
    return 0


def _run_corpus_manifest(args: argparse.Namespace) -> int:
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.preparation import corpus_manifests as cm

    if args.layout == "audio":
        return _run_audio_manifest(args)
    if args.layout == "muavic":
        done = cm.convert_muavic(args.src, args.out / "muavic", args.lang, args.on_bad_sample)
    else:
        if args.layout != "lrs2" and (args.audio is None or args.video is None):
            raise ConfigError(f"--layout {args.layout} needs --audio and --video (the prepared media folders)")
        if args.layout == "folder":
            splits = cm.layout_folder(args.src, args.audio, args.video, args.split or "test")
        elif args.layout == "lrs3":
            splits = cm.layout_lrs3(args.src, args.audio, args.video, args.valid_ids)
        elif args.layout == "lrs2":
            splits = cm.layout_lrs2(args.src, args.lists or args.src / "labels")
        else:
            if args.transcripts is None:
                raise ConfigError("--layout voxceleb2 needs --transcripts (VoxCeleb2 has no transcripts)")
            splits = cm.layout_voxceleb2(args.audio, args.video, args.transcripts)
        ext = "wrd" if args.layout == "lrs2" else args.lang
        done = {s: cm.write_split(args.out, s, utts, ext, args.on_bad_sample) for s, utts in splits.items()}
    for name, counts in done.items():
        extra = "".join(f", {k} {v}" for k, v in sorted(counts.items()) if k != "rows")
        print(f"manifest {name}: {counts['rows']} rows{extra}")  # noqa: T201 - the command's summary
    return 0


def _add_normalize_labels(sub) -> None:
    p = sub.add_parser("normalize-labels", help="MuAViC/mTEDx label normalisation (the original's notebook)",
                       description="sacrebleu 13a tokens, punctuation-only tokens dropped, non-word characters "
                                   "except apostrophes removed, quoted spans unwrapped, lower-cased.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--lang", required=True, help="ar, de, el, es, fr, it, pt, ru or en")
    p.add_argument("src", type=Path, help="a label file (one utterance a line)")
    p.add_argument("dst", type=Path, help="the normalised label file")


def _run_normalize_labels(args: argparse.Namespace) -> int:
    from whisper_flamingo.data.label_norm import normalize_line

    lines = args.src.read_text(encoding="utf-8").splitlines()
    out = [normalize_line(ln, args.lang) for ln in lines]
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    args.dst.write_text("".join(ln + "\n" for ln in out), encoding="utf-8")
    changed = sum(a != b for a, b in zip(lines, out))
    print(f"normalize-labels: {len(out)} lines, {changed} changed -> {args.dst}")  # noqa: T201
    return 0


def _add_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="raw videos + transcripts -> a training-ready corpus (all steps)",
                       description="extract-audio, landmarks, crop-mouth and manifest --layout folder on a "
                                   "folder of videos with <name>.txt transcripts; the result is a muavic_root "
                                   "for `whisper-flamingo train` / `decode`.")
    _add_common(p, "the muavic_root: muavic/<lang>/{audio,video}/<split>/..., <split>.tsv, labels")
    p.add_argument("--lang", default="en", help="language of the transcripts (default: en)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="test", help="split (default: test)")
    p.add_argument("--detector", choices=("mediapipe", "dlib"), default="mediapipe",
                   help="landmark detector: mediapipe face mesh (tight crops) or dlib (full faces)")
    p.add_argument("--method", choices=("avhubert", "autoavsr"), default="avhubert",
                   help="crop pipeline (default: avhubert, centred on the current frame's mouth)")
    p.add_argument("--mean-face", type=Path, default=None, help="as crop-mouth --mean-face")
    p.add_argument("--no-face", choices=("error", "resize"), default="error", help="as crop-mouth --no-face")


def _run_pipeline(args: argparse.Namespace) -> int:
    from whisper_flamingo.errors import ConfigError

    if args.src is None:
        raise ConfigError("prepare pipeline needs --src (a folder of videos with .txt transcripts)")
    out = args.out
    base = out / "muavic" / args.lang
    ns = vars(args).copy()
    ns.update(out=base / "audio" / args.split, extensions=None)
    _run_extract_audio(argparse.Namespace(**ns))
    ns.update(out=out / "landmarks" / args.split, mediapipe_model="mesh", no_cnn_fallback=False,
              precomputed=False, max_frames=None)
    _run_landmarks(argparse.Namespace(**ns))
    ns.update(out=base / "video" / args.split, landmarks=out / "landmarks" / args.split, contact_sheet=True,
              codec="libx264")
    _run_crop_mouth(argparse.Namespace(**ns))
    if args.nshard > 1:
        print("pipeline: sharded run; when every shard is done, run it once more with --nshard 1 to write "
              "the manifest")  # noqa: T201
        return 0
    from whisper_flamingo.preparation import corpus_manifests as cm

    if args.lang == "en":
        man_dir, ext, norm = base, "en", False
    else:
        man_dir, ext, norm = base / "muavic_normalized", args.lang, True
    splits = cm.layout_folder(args.src if args.src.is_dir() else args.src.parent, base / "audio" / args.split,
                              base / "video" / args.split, args.split)
    utts = splits[args.split]
    if norm:
        from whisper_flamingo.data.label_norm import normalize_line

        for u in utts:
            u.text = normalize_line(u.text, args.lang)
    counts = cm.write_split(man_dir, args.split, utts, ext, args.on_bad_sample)
    print(f"pipeline: {counts['rows']} utterances in {man_dir / (args.split + '.tsv')}; muavic_root: "
          f"{out.resolve()}")  # noqa: T201
    return 0


def _add_babble(sub) -> None:
    p = sub.add_parser("babble", help="LRS3 or multilingual MuAViC babble noise + its noise lists",
                       description="lrs3: the mean of 30 random train utterances longer than 15 s (AV-HuBERT); "
                                   "muavic: 30 such utterances round-robin over the languages (4 each for "
                                   "en/ar/de, 3 for the others). Writes the wav and {valid,test}.tsv.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--recipe", choices=("lrs3", "muavic"), required=True,
                   help="lrs3: 30 English utterances; muavic: 30 utterances across the 9 languages")
    p.add_argument("--manifest", nargs="+", required=True, metavar="TSV|LANG=TSV",
                   help="lrs3: the train manifest; muavic: LANG=TSV per language, in the order en ar de el es "
                        "fr it pt ru")
    p.add_argument("--out", type=Path, required=True, help="folder that receives noise/babble/<recipe>/")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and manifests: same file)")


def _run_babble(args: argparse.Namespace) -> int:
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.preparation.noise_sets import MUAVIC_ORDER, lrs3_babble, muavic_babble

    if args.recipe == "lrs3":
        if len(args.manifest) != 1 or "=" in args.manifest[0]:
            raise ConfigError("--recipe lrs3 takes one --manifest (the LRS3 / MuAViC-En train.tsv)")
        wav = lrs3_babble(Path(args.manifest[0]), args.out, args.seed)
    else:
        pairs = [m.split("=", 1) for m in args.manifest]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--recipe muavic takes LANG=TSV pairs, e.g. en=muavic/en/train.tsv")
        pairs.sort(key=lambda p: MUAVIC_ORDER.index(p[0]) if p[0] in MUAVIC_ORDER else len(MUAVIC_ORDER))
        wav = muavic_babble({lang: Path(t) for lang, t in pairs}, args.out, args.seed)
    print(f"babble: {wav}; noise lists {wav.parent / 'valid.tsv'} {wav.parent / 'test.tsv'}")  # noqa: T201
    return 0


def _add_musan(sub) -> None:
    p = sub.add_parser("musan", help="MUSAN cut into 10-s pieces, 80/10/10 splits, babble, training noise list",
                       description="AV-HuBERT's MUSAN preparation: 10-s pieces (3-11 s kept), seeded 80/10/10 "
                                   "splits, MUSAN babble (30 speech pieces each), tsv/{babble,music,noise,speech}/"
                                   "{split}.tsv and tsv/all/train.tsv (4 categories x --per-category entries).")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--src", type=Path, required=True, help="the MUSAN root (music/, noise/, speech/; 16 kHz wavs)")
    p.add_argument("--out", type=Path, required=True, help="output folder (pieces, babble, tsv/)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed: same pieces and splits)")
    p.add_argument("--per-category", type=int, default=20000, help="entries per category in tsv/all/train.tsv")
    p.add_argument("--babble", type=int, nargs=3, default=[2000, 200, 200], metavar=("TRAIN", "VALID", "TEST"),
                   help="MUSAN babble pieces per split (default: 2000 200 200)")
    p.add_argument("--babble-speakers", type=int, default=30, help="speech pieces per babble piece (default: 30)")
    p.add_argument("--speech-list", type=Path, default=None,
                   help="the speech category of tsv/all (e.g. LRS3 speech noise; default: MUSAN speech train)")


def _run_musan(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.noise_sets import prepare_musan

    sizes = prepare_musan(args.src, args.out, args.seed, args.per_category,
                          dict(zip(("train", "valid", "test"), args.babble)), args.speech_list,
                          args.babble_speakers)
    print(f"musan: {sizes}; training list {args.out / 'tsv' / 'all' / 'train.tsv'}")  # noqa: T201
    return 0


_STEPS = {
    "babble": _run_babble,
    "musan": _run_musan,
    "extract-audio": _run_extract_audio,
    "landmarks": _run_landmarks,
    "crop-mouth": _run_crop_mouth,
    "manifest": _run_corpus_manifest,
    "normalize-labels": _run_normalize_labels,
    "pipeline": _run_pipeline,
    "synthetic-tagging": _run_tagging,
    "esc50": _run_tagging_corpus,
    "speechcommands": _run_tagging_corpus,
}
