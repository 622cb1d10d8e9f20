"""Decoding speed on the same utterances: ours vs openai-whisper vs CTranslate2 (faster-whisper's engine).

Utterances: ``../shared/data/jfk.flac`` plus, with ``--muavic-root``, the English test set found there
(e.g. the synthetic corpus of ``whisper-flamingo prepare``), utterances of at most ``--max-seconds``.
One model (``--model``, default ``tiny.en``) with the same weights everywhere:

* ours (``decoding.search.decode_batch``): greedy and beam 5, batch 1 and length-bucketed batches,
  on 30-s padded input and on variable-length input (an off-the-shelf model was trained on 30-s
  windows, so its variable-length WER shows what fine-tuning à la Whisper-Flamingo is needed for);
  the variable-length batched rows also ``masked`` (key-padding masks, ``use_padding_mask``: what a
  model trained with ``padding_mask: true`` decodes with), in the same run; masks change the
  hypotheses of a model (and so the work), so the cost of the masks alone is timed by the
  ``mask-cost`` rows: the same batches with and without masks, end-of-text suppressed so that every
  utterance decodes exactly ``--mask-cost-tokens`` tokens;
* ours with ``--quantize int8`` (``int8 ...`` rows; CPU only): the same model with every linear layer and the
  vocabulary projection in int8, activations scaled per row
  (:func:`whisper_flamingo.models.quantize.quantize_int8`), 30-s padded,
  per utterance and batched, greedy and beam 5;
* openai-whisper ``whisper.decode`` per utterance (30-s padded), greedy and beam 5;
* CTranslate2 ``ctranslate2.models.Whisper`` (the engine of faster-whisper; the faster-whisper package is
  not needed) with int8 and float32 weights converted from the same checkpoint, 30-s padded, per
  utterance and batched, greedy and beam 5.

Two kinds of rows.  *User-facing*: what a user runs, ours batched at variable length (the decoder's
defaults: no runaway guard) against openai-whisper per clip.  *Like for like* (``ll ...``): ours and
openai-whisper on the same 30-s padded input, the same batches of ``--batch-size``, greedy,
without our runaway guard (both may produce 224 tokens), and the benchmark stops unless both produce
the same tokens for every utterance.

Per configuration: audio seconds decoded per second (best of ``--repeats`` rounds that visit the
configurations in turn, after one warm-up utterance each), peak memory growth (RSS sampled every
2 ms on CPU; ``torch.cuda.max_memory_allocated`` on CUDA) and corpus WER (fairseq normaliser).
Threads are pinned: ``torch.set_num_threads(N)`` and CT2 ``intra_threads=N, inter_threads=1``.  The last line is

``vs_openai=<x> vs_faster_whisper_int8=<y> padded_vs_openai=<z> like_for_like=<w> masked_vs_unmasked=<m>
int8_vs_openai=<q> int8_wer_delta=<d>``

x = ours (variable length, batched, greedy) / openai greedy per clip (user-facing); y = the same / CT2
int8 greedy batched; z = ours (30-s padded, batched, greedy) / openai greedy per utterance (the same
padded input, not the same batching); w = ours / openai, both greedy on the same padded batches of
``--batch-size`` with the same tokens produced; m = the ``mask-cost`` greedy rows, masked / unmasked
(equal work; ``masked_vs_unmasked_beam5``: the same for beam 5); q = ours int8 (30-s padded, batched,
greedy) / openai greedy per clip, d = its WER minus the float32 row's (``ours greedy padded b<N>``), in points.

For the variable-length targets pass a model fine-tuned on variable-length input (``--model
demo_out/checkpoints/demo_tiny.en/last.ckpt`` after ``make demo``): every engine then runs the same
fine-tuned weights, so the WER columns compare.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
JFK_TEXT = ("And so my fellow Americans, ask not what your country can do for you, ask what you can do for "
            "your country.")


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak resident memory (MB) above the level at entry; CUDA: peak allocated tensor memory."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        _malloc_trim()  # hand freed heap back to the OS, so growth is measured from what is in use
        self.base = self.peak = self._rss()
        self.stop = threading.Event()

        def sample() -> None:
            while not self.stop.is_set():
                self.peak = max(self.peak, self._rss())
                time.sleep(0.002)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
            return
        self.stop.set()
        self.thread.join()
        self.peak = max(self.peak, self._rss())
        self.peak_mb = (self.peak - self.base) / 2**20


def load_utterances(muavic_root: str | None, max_seconds: float, limit: int | None) -> list[dict]:
    from whisper_flamingo.data.audio import load_audio, to_unit_range

    utts = []
    if muavic_root:
        from whisper_flamingo.decoding.runner import DecodeSettings, load_records

        records = load_records(DecodeSettings(langs=["en"], muavic_root=muavic_root), "en")
        for r in records:
            if r.n_samples <= max_seconds * 16000:
                utts.append({"id": r.id, "audio": to_unit_range(load_audio(r.audio_path)), "ref": r.text})
        if limit:
            utts = utts[:limit]
    jfk = SHARED / "jfk.flac"
    if jfk.exists():
        utts.append({"id": "jfk", "audio": to_unit_range(load_audio(jfk)), "ref": JFK_TEXT})
    if not utts:
        raise SystemExit("no utterances: ../shared/data/jfk.flac is missing and no --muavic-root was given")
    return utts


def mels(utts: list[dict], padded: bool, n_mels: int) -> list[torch.Tensor]:
    from whisper_flamingo.data.audio import log_mel, pad_or_trim

    return [log_mel(pad_or_trim(u["audio"]) if padded else u["audio"], n_mels) for u in utts]


def batches_of(lengths: list[int], size: int) -> list[list[int]]:
    """Length-sorted batches of at most ``size`` utterances (longest first)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + size] for i in range(0, len(order), size)]


def stack(ms: list[torch.Tensor]) -> torch.Tensor:
    t = max(m.shape[-1] for m in ms)
    out = torch.zeros(len(ms), ms[0].shape[0], t)
    for i, m in enumerate(ms):
        out[i, :, : m.shape[-1]] = m
    return out


def measure(configs: dict, utts: list[dict], repeats: int, device: torch.device) -> dict[str, dict]:
    """Time every ``run(indices) -> {index: text}`` over all utterances.

    One warm-up utterance per configuration, then ``repeats`` rounds that visit the configurations in
    turn (so a slow spell of a shared machine does not fall on one of them); the best time is kept.
    """
    from whisper_flamingo.decoding.scoring import wer_cer

    for run in configs.values():
        run([0])
    audio_s = sum(len(u["audio"]) for u in utts) / 16000
    best = {name: float("inf") for name in configs}
    mem = dict.fromkeys(configs, 0.0)
    texts: dict[str, dict] = {}
    for _ in range(repeats):
        for name, run in configs.items():
            with PeakMemory(device) as pm:
                t0 = time.perf_counter()
                texts[name] = run(list(range(len(utts))))
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - t0
            best[name], mem[name] = min(best[name], elapsed), max(mem[name], pm.peak_mb)
    refs = [u["ref"] for u in utts]
    out = {}
    for name in configs:
        wer = wer_cer(refs, [texts[name][i] for i in range(len(utts))], "fairseq", "en")["wer"]
        out[name] = {"seconds": best[name], "speed": audio_s / best[name], "peak_mb": mem[name], "wer": wer}
        print(f"{name:34s} {out[name]['speed']:8.2f} x  WER {wer:.2f}", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny.en", help="Whisper name or checkpoint (default: tiny.en)")
    p.add_argument("--muavic-root", default=None, help="corpus root with muavic/en/test.tsv (optional)")
    p.add_argument("--max-seconds", type=float, default=10.0, help="longest corpus utterance (default: 10)")
    p.add_argument("--max-utterances", type=int, default=24, help="corpus utterances to use (default: 24)")
    p.add_argument("--batch-size", type=int, default=8, help="utterances per batch when batched (default: 8)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and CT2 (default: 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed rounds over all configurations; best kept")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--skip", nargs="*", default=[], choices=["openai", "ct2", "beam"], help="leave these out")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--mask-cost-tokens", type=int, default=32,
                   help="tokens per utterance in the mask-cost rows (default: 32)")
    args = p.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import whisper
    from whisper.decoding import DecodingOptions
    from whisper.tokenizer import get_tokenizer

    from whisper_flamingo.checkpoints import export_ctranslate2, load_whisper
    from whisper_flamingo.decoding.search import SearchOptions, decode_batch, suppressed_tokens

    ours = load_whisper(args.model).to(device).eval()
    dims, sd = ours.dims, ours.state_dict()
    tok = get_tokenizer(ours.is_multilingual, num_languages=ours.num_languages, language="en", task="transcribe")
    prompt = list(tok.sot_sequence_including_notimestamps)
    utts = load_utterances(args.muavic_root, args.max_seconds, args.max_utterances)
    audio_s = sum(len(u["audio"]) for u in utts) / 16000
    fp16 = device.type == "cuda"
    precision = "fp16" if fp16 else "fp32"
    padded_m, var_m = mels(utts, True, dims.n_mels), mels(utts, False, dims.n_mels)
    lengths = [len(u["audio"]) for u in utts]
    beams = [1] if "beam" in args.skip else [1, 5]
    configs: dict = {}

    n_tokens: dict[str, int] = {}  # ours: tokens decoded in the last timed round

    def ours_run(ms, beam, batch, masked=False, name="", forced=None, model=None):
        model = ours if model is None else model
        opts = SearchOptions(beam_size=beam, precision=precision) if forced is None else SearchOptions(
            beam_size=beam, precision=precision, max_new_tokens=forced, suppress_tokens=f"-1,{tok.eot}")

        def run(idx):
            out = {}
            model.use_padding_mask = masked
            n_tokens[name] = 0
            groups = [[i] for i in idx] if batch == 1 else batches_of([lengths[i] for i in idx], batch)
            for g in groups:
                g = [idx[j] for j in g] if batch != 1 else g
                frames = torch.tensor([ms[i].shape[-1] for i in g]) if masked else None
                hyps = decode_batch(model, stack([ms[i] for i in g]).to(device), [prompt] * len(g), tok, opts,
                                    audio_seconds=[lengths[i] / 16000 for i in g], mel_frames=frames)
                out.update({i: h.text for i, h in zip(g, hyps)})
                n_tokens[name] += sum(len(h.tokens) + 1 for h in hyps)
            model.use_padding_mask = False
            return out
        return run

    for beam in beams:
        for padded in (True, False):
            for batch in (1, args.batch_size):
                name = f"ours {'greedy' if beam == 1 else f'beam{beam}'} {'padded' if padded else 'varlen'} " \
                       f"{'b1' if batch == 1 else f'b{batch}'}"
                configs[name] = ours_run(padded_m if padded else var_m, beam, batch, name=name)
                if not padded and batch != 1:
                    configs[f"{name} masked"] = ours_run(var_m, beam, batch, masked=True, name=f"{name} masked")
        cost = f"mask-cost {'greedy' if beam == 1 else f'beam{beam}'} varlen b{args.batch_size}"
        for masked in (False, True):
            label = f"{cost} masked" if masked else cost
            configs[label] = ours_run(var_m, beam, args.batch_size, masked=masked, name=label,
                                      forced=args.mask_cost_tokens)

    if device.type == "cpu":
        from whisper_flamingo.models.quantize import quantize_int8

        ours_int8 = quantize_int8(copy.deepcopy(ours))
        for beam in beams:
            for batch in (1, args.batch_size):
                size = "b1" if batch == 1 else f"b{batch}"
                name = f"ours int8 {'greedy' if beam == 1 else f'beam{beam}'} padded {size}"
                configs[name] = ours_run(padded_m, beam, batch, name=name, model=ours_int8)

    ll_tokens: dict[str, dict[int, list[int]]] = {}  # like-for-like rows: tokens of the last timed round
    if "openai" not in args.skip:
        ref = whisper.model.Whisper(dims).to(device).eval()
        ref.load_state_dict(sd)
        for beam in beams:
            opts = DecodingOptions(language="en", without_timestamps=True, fp16=fp16,
                                   beam_size=None if beam == 1 else beam)

            def oa_run(idx, opts=opts):
                return {i: whisper.decode(ref, padded_m[i].to(device), opts).text for i in idx}
            name = f"openai {'greedy' if beam == 1 else f'beam{beam}'} padded b1"
            configs[name] = oa_run

        # like for like: same padded input, same batches, greedy, no runaway guard on either side
        greedy = DecodingOptions(language="en", without_timestamps=True, fp16=fp16)
        ll_opts = SearchOptions(precision=precision)
        assert not ll_opts.runaway_guard and ll_opts.max_new_tokens == 224  # openai's sample_len

        def ll_run(engine: str, batch: int):
            def run(idx):
                out, toks = {}, ll_tokens.setdefault(f"{engine} b{batch}", {})
                for g in batches_of([lengths[i] for i in idx], batch):
                    g = [idx[j] for j in g]
                    m = stack([padded_m[i] for i in g]).to(device)
                    if engine == "ours":
                        res = [(h.text, h.tokens) for h in decode_batch(ours, m, [prompt] * len(g), tok, ll_opts)]
                    else:
                        res = [(r.text, r.tokens) for r in whisper.decode(ref, m, greedy)]
                    for i, (text, tokens) in zip(g, res):
                        out[i], toks[i] = text, list(tokens)
                return out
            return run

        for engine in ("ours", "openai"):
            configs[f"ll {engine} greedy padded b{args.batch_size}"] = ll_run(engine, args.batch_size)

    if "ct2" not in args.skip:
        import ctranslate2

        suppress = suppressed_tokens(tok, SearchOptions())
        with tempfile.TemporaryDirectory() as tmp:
            for quant in ("int8", "float32"):
                d = export_ctranslate2(dims, sd, Path(tmp) / quant, quantization=quant)
                compute = quant if device.type == "cpu" else {"int8": "int8_float16", "float32": "float16"}[quant]
                model = ctranslate2.models.Whisper(str(d), device=device.type, compute_type=compute,
                                                   intra_threads=args.threads, inter_threads=1)
                for beam in beams:
                    for batch in (1, args.batch_size):
                        def ct2_run(idx, model=model, beam=beam, batch=batch):
                            out = {}
                            groups = [[i] for i in idx] if batch == 1 else [
                                [idx[j] for j in g] for g in batches_of([lengths[i] for i in idx], batch)]
                            for g in groups:
                                feats = ctranslate2.StorageView.from_array(
                                    np.ascontiguousarray(stack([padded_m[i] for i in g]).numpy()))
                                res = model.generate(feats, [prompt] * len(g), beam_size=beam,
                                                     max_length=224 + len(prompt), suppress_blank=True,
                                                     suppress_tokens=suppress, length_penalty=1.0)
                                for i, r in zip(g, res):
                                    out[i] = tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]).strip()
                            return out
                        name = f"ct2 {quant} {'greedy' if beam == 1 else f'beam{beam}'} padded " \
                               f"{'b1' if batch == 1 else f'b{batch}'}"
                        configs[name] = ct2_run

    results = measure(configs, utts, args.repeats, device)
    a, b = ll_tokens.get(f"ours b{args.batch_size}"), ll_tokens.get(f"openai b{args.batch_size}")
    if a is not None and b is not None:
        diff = [i for i in range(len(utts)) if a.get(i) != b.get(i)]
        if diff:
            raise SystemExit(f"like-for-like rows produced different tokens for {len(diff)} utterances (e.g. "
                             f"{utts[diff[0]]['id']}): the comparison is void")
        print(f"like for like: the same {sum(len(t) for t in a.values())} tokens from both engines", file=sys.stderr)
    print(f"\n{args.model} on {device} ({args.threads} threads): {len(utts)} utterances, {audio_s:.1f} s of audio, "
          f"batch {args.batch_size}, best of {args.repeats}\n")
    for name, n in n_tokens.items():
        results[name]["tokens"] = n
        results[name]["tokens_per_s"] = n / results[name]["seconds"]
    print("| configuration | audio s / s | tokens / s | seconds | peak MB | WER |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        tps = f"{r['tokens_per_s']:.1f}" if "tokens_per_s" in r else ""
        print(f"| {name} | {r['speed']:.2f} | {tps} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | {r['wer']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "device": str(device), "threads": args.threads,
                                               "utterances": len(utts), "audio_seconds": audio_s,
                                               "results": results}, indent=2) + "\n")

    def ratio(a: str, b: str) -> str:
        return f"{results[a]['speed'] / results[b]['speed']:.2f}" if a in results and b in results else "n/a"

    def wer_delta(a: str, b: str) -> str:
        return f"{results[a]['wer'] - results[b]['wer']:+.2f}" if a in results and b in results else "n/a"

    best = f"ours greedy varlen b{args.batch_size}"
    ll = f"greedy padded b{args.batch_size}"
    cost = f"mask-cost greedy varlen b{args.batch_size}"
    cost5 = f"mask-cost beam5 varlen b{args.batch_size}"
    print(f"vs_openai={ratio(best, 'openai greedy padded b1')} "
          f"vs_faster_whisper_int8={ratio(best, f'ct2 int8 greedy padded b{args.batch_size}')} "
          f"padded_vs_openai={ratio(f'ours greedy padded b{args.batch_size}', 'openai greedy padded b1')} "
          f"like_for_like={ratio(f'll ours {ll}', f'll openai {ll}')} "
          f"masked_vs_unmasked_beam5={ratio(f'{cost5} masked', cost5)} "
          f"masked_vs_unmasked={ratio(f'{cost} masked', cost)} "
          f"int8_vs_openai={ratio(f'ours int8 {ll}', 'openai greedy padded b1')} "
          f"int8_wer_delta={wer_delta(f'ours int8 {ll}', f'ours {ll}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
