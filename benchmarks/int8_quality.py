"""What ``--quantize int8`` does to the transcripts: float32 vs int8 (``models/quantize.py``) on the same clips.

Utterances as ``decode_speed.py`` takes them (``--muavic-root``'s English test set, at most ``--max-seconds``
long, the first ``--max-utterances``, plus ``../shared/data/jfk.flac``), 30-s padded, greedy, batches of 8.
Prints both WERs (fairseq normaliser), how many hypotheses are identical, every pair that differs, and
the relative L2 error of each encoder linear layer's int8 output on the first clip (its float32 input), and
the last line ``float_wer=<x> int8_wer=<y> int8_wer_delta=<y-x> identical=<n>/<N>``.

    python benchmarks/int8_quality.py --muavic-root demo_out/corpus --max-utterances 60
    python benchmarks/int8_quality.py --muavic-root demo_out/corpus --model demo_out/checkpoints/demo_tiny.en/last.ckpt
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decode_speed import load_utterances, mels, stack  # noqa: E402

log = logging.getLogger("int8_quality")


def layer_errors(model: torch.nn.Module, mel: torch.Tensor, int8_linear: type) -> dict[str, float]:
    """Encoder linear layer name -> ``|int8(x) - float(x)| / |float(x)|`` for its input ``x`` from ``mel``."""
    errors: dict[str, float] = {}

    def hook(name: str):
        def record(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            errors[name] = float((int8_linear.from_linear(module)(inputs[0]) - output).norm() / output.norm())
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.encoder.named_modules()
               if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model.encoder(mel[None])
    for h in handles:
        h.remove()
    return errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny.en", help="Whisper name or checkpoint (default: tiny.en)")
    p.add_argument("--muavic-root", default=None, help="corpus root with muavic/en/test.tsv (optional)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="longest corpus utterance (default: 10)")
    p.add_argument("--max-utterances", type=int, default=60, help="corpus utterances to use (default: 60)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    import whisper

    from whisper_flamingo.checkpoints.names import load_whisper
    from whisper_flamingo.decoding.scoring import wer_cer
    from whisper_flamingo.decoding.search import SearchOptions, decode_batch
    from whisper_flamingo.models.quantize import Int8Linear, quantize_int8

    model = load_whisper(args.model).eval()
    models = {"float32": model, "int8": quantize_int8(copy.deepcopy(model))}
    tok = whisper.tokenizer.get_tokenizer(model.is_multilingual, num_languages=model.num_languages,
                                          language="en" if model.is_multilingual else None, task="transcribe")
    prompt = list(tok.sot_sequence_including_notimestamps)
    utts = load_utterances(args.muavic_root, args.max_seconds, args.max_utterances)
    ms = mels(utts, True, model.dims.n_mels)
    hyps: dict[str, list[str]] = {}
    for name, m in models.items():
        hyps[name] = []
        for i in range(0, len(ms), 8):
            group = ms[i:i + 8]
            hyps[name] += [h.text for h in decode_batch(m, stack(group), [prompt] * len(group), tok,
                                                        SearchOptions())]
    errors = layer_errors(model, ms[0], Int8Linear)
    log.info("encoder linear layers, int8 output vs float32 (relative L2, first clip): %.2f-%.2f %%",
             100 * min(errors.values()), 100 * max(errors.values()))
    refs = [u["ref"] for u in utts]
    wer = {name: float(wer_cer(refs, h)["wer"]) for name, h in hyps.items()}
    same = sum(a == b for a, b in zip(hyps["float32"], hyps["int8"]))
    for u, a, b in zip(utts, hyps["float32"], hyps["int8"]):
        if a != b:
            log.info("%s\n  REF   %s\n  float %s\n  int8  %s", u["id"], u["ref"], a[:160], b[:160])
    log.info("%s, %d utterances, 30-s padded, greedy: WER float32 %.2f, int8 %.2f", args.model, len(utts),
             wer["float32"], wer["int8"])
    print(f"float_wer={wer['float32']:.2f} int8_wer={wer['int8']:.2f} "
          f"int8_wer_delta={wer['int8'] - wer['float32']:.2f} identical={same}/{len(utts)}")


if __name__ == "__main__":
    main()
