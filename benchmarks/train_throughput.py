"""Training throughput: length-bucketed variable-length batches versus batches padded to 30 s.

Both runs train the same Whisper model (``--dims``, random weights) with the same number of
utterances per step (the padded run on a random subset, since its cost per utterance is fixed);
the lengths follow an LRS3-like mix (log-normal, mean about 5 s, clipped to 1-15 s).
Reported: training audio-seconds per wall second for each mode, the speed-up, and the padding
efficiency (real / processed samples) of the bucketed batches.  Last line: ``speedup=<x> padding_efficiency=<y>``.

    python benchmarks/train_throughput.py --utterances 64 --dims tiny
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from whisper.model import ModelDimensions

from whisper_flamingo.data.sampler import LengthBatchSampler
from whisper_flamingo.models.whisper import Whisper

log = logging.getLogger("train_throughput")
SR = 16000
DIMS = {
    "tiny": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4,
                 n_vocab=51864, n_text_ctx=448, n_text_state=384, n_text_head=6, n_text_layer=4),
    "base": dict(n_mels=80, n_audio_ctx=1500, n_audio_state=512, n_audio_head=8, n_audio_layer=6,
                 n_vocab=51865, n_text_ctx=448, n_text_state=512, n_text_head=8, n_text_layer=6),
}


def lrs3_like_lengths(n: int, rng: np.random.Generator, mean_s: float = 5.0) -> np.ndarray:
    sigma = 0.5
    mu = np.log(mean_s) - sigma**2 / 2
    secs = np.clip(rng.lognormal(mu, sigma, size=n), 1.0, 15.0)
    return (secs * SR).astype(np.int64)


def make_batch(lengths: list[int], pad_frames: int | None, n_mels: int, rng: np.random.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    frames = [n // 160 for n in lengths]
    t = pad_frames or max(frames)
    mel = torch.zeros(len(lengths), n_mels, t)
    for i, f in enumerate(frames):
        mel[i, :, :f] = torch.from_numpy(rng.standard_normal((n_mels, f)).astype(np.float32)) * 0.3
    n_tok = [4 + max(2, int(n / SR * 3)) for n in lengths]  # ~3 tokens per second of speech
    L = max(n_tok)
    tokens = torch.full((len(lengths), L), 50256, dtype=torch.long)
    labels = torch.full((len(lengths), L), -100, dtype=torch.long)
    for i, k in enumerate(n_tok):
        seq = torch.from_numpy(rng.integers(0, 50000, size=k))
        tokens[i, :k] = seq
        labels[i, : k - 1] = seq[1:]
    return mel.to(device), tokens.to(device), labels.to(device)


def train_pass(model: Whisper, batches: list[list[int]], lengths: np.ndarray, pad_frames: int | None,
               device: torch.device, seed: int) -> float:
    """Seconds for forward + backward + optimizer step over all batches."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    prepared = [make_batch([int(lengths[i]) for i in b], pad_frames, model.dims.n_mels, rng, device)
                for b in batches]
    # one warm-up step (allocator, kernels) not counted
    mel, tok, lab = prepared[0]
    F.cross_entropy(model(mel, tok).transpose(1, 2), lab, ignore_index=-100).backward()
    opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for mel, tok, lab in prepared:
        loss = F.cross_entropy(model(mel, tok).transpose(1, 2), lab, ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--padded-utterances", type=int, default=32,
                        help="padded mode runs on a random subset of this many utterances (its cost per "
                             "utterance does not depend on the length: every input is 30 s)")
    parser.add_argument("--dims", choices=sorted(DIMS), default="tiny")
    parser.add_argument("--batch-seconds", type=float, default=40.0,
                        help="padded audio seconds per bucketed batch (batch_bins / 16000)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(args.seed)
    lengths = lrs3_like_lengths(args.utterances, rng)
    total_audio = float(lengths.sum()) / SR

    sampler = LengthBatchSampler(lengths.tolist(), args.batch_seconds * SR, shuffle=True, drop_last=False,
                                 seed=args.seed)
    bucketed = list(sampler)
    per_batch = max(1, round(len(lengths) / len(bucketed)))
    subset = rng.permutation(len(lengths))[: args.padded_utterances].tolist()
    padded = [subset[i:i + per_batch] for i in range(0, len(subset), per_batch)]
    padded_audio = float(lengths[subset].sum()) / SR
    eff_bucketed = sampler.padding_efficiency()
    eff_padded = float(lengths.sum()) / (len(lengths) * 30 * SR)

    torch.manual_seed(args.seed)
    model = Whisper(ModelDimensions(**DIMS[args.dims])).to(device).train()
    log.info("device=%s dims=%s utterances=%d audio=%.1f s mean=%.2f s batches: bucketed=%d padded=%d "
             "(%d utt/batch)", device, args.dims, len(lengths), total_audio, total_audio / len(lengths),
             len(bucketed), len(padded), per_batch)
    t_bucketed = train_pass(model, bucketed, lengths, None, device, args.seed)
    t_padded = train_pass(model, padded, lengths, 3000, device, args.seed)
    rate_b, rate_p = total_audio / t_bucketed, padded_audio / t_padded
    log.info("| mode | wall s | audio-s / s | padding efficiency |")
    log.info("|---|---|---|---|")
    log.info("| length-bucketed, variable length | %.2f | %.2f | %.3f |", t_bucketed, rate_b, eff_bucketed)
    log.info("| padded to 30 s | %.2f | %.2f | %.3f |", t_padded, rate_p, eff_padded)
    print(f"speedup={rate_b / rate_p:.2f} padding_efficiency={eff_bucketed:.3f}")  # noqa: T201


if __name__ == "__main__":
    main()
