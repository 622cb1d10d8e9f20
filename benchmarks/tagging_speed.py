"""Sound-tagging speed: clips per second and peak memory of each tagger on the same 10-s clips.

Each system runs in its own child process (so one's peak memory does not hide another's), on the
same seeded clips (tones + noise, 16 kHz), random weights (speed does not depend on them), after one
warm-up batch.  Reported per system: clips/s (front end included), real-time factor (processing
seconds per audio second), peak memory: on CUDA ``max_memory_allocated``, on CPU the rise of the
process's peak resident set over its size just before the model was built.

Systems: ``ast`` (AST tiny224, 1024 frames, Kaldi fbank, batched); ``sat_t_1s`` / ``sat_t_2s`` (SAT-T
streaming each clip in 1-s / 2-s chunks with the memory, from the silence memory, one clip at a time as
``whisper-flamingo tag --stream`` does); ``whisper_at`` (tiny.en encoder on the 30-s padded window as the
Whisper-AT package does, every block's output pooled, TL-TR-512 head on the clip's 25 steps; no
decoding).  A system whose model is not in the package reports ``nan``.  The SAT README's memory
figures are printed next to ours (its table: SAT-T 9 MB at 2 s, 4.3 MB at 1 s; AST-B 2.2 GB); ours
include the fp32 weights (column ``weights MB``); ``work MB`` is the peak above what the process held once
the model was built (activations, memory, allocator caches).  Last line:
``ast_clips_s=<x> sat_t_2s_clips_s=<y> sat_t_2s_rtf=<z>``.

    python benchmarks/tagging_speed.py --clips 16 --batch 4 --device cpu
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
import multiprocessing as mp
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

log = logging.getLogger("tagging_speed")
SR = 16000


@dataclass
class Result:
    system: str
    clips_s: float = math.nan
    rtf: float = math.nan
    peak_mb: float = math.nan
    weights_mb: float = math.nan
    work_mb: float = math.nan  # peak above the memory held once the model was built (activations, buffers)
    note: str = ""


def make_clips(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    """``[n, seconds·16000]`` clips: two random tones, noise and a small DC offset each."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    freqs = torch.rand(n, 2, 1, generator=g) * 4000 + 100
    tones = (0.3 * torch.sin(2 * math.pi * freqs * t)).sum(1)
    return tones + 0.05 * torch.randn(n, t.numel(), generator=g) + 0.02


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _run_ast(clips: torch.Tensor, batch: int, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    from whisper_flamingo.data.fbank import ast_input
    from whisper_flamingo.models.registry import create

    model = create("ast-tiny224").eval().to(device)

    def tag(wavs: torch.Tensor) -> torch.Tensor:
        x = torch.stack([ast_input(w, target_length=1024) for w in wavs]).to(device)
        return torch.sigmoid(model(x))
    tag.weights_mb = _weights_mb(model)  # type: ignore[attr-defined]
    return tag


def _weights_mb(*models: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for m in models for t in m.state_dict().values()) / 2**20


def _run_sat(name: str, chunk_s: float) -> Callable[..., Callable[[torch.Tensor], torch.Tensor]]:
    def build(clips: torch.Tensor, batch: int, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
        from whisper_flamingo.models.registry import create
        from whisper_flamingo.models.sat import stream

        model = create(name).eval().to(device)
        silence = model.silence_cache()

        def tag(wavs: torch.Tensor) -> torch.Tensor:
            return torch.stack([stream(model, w.to(device), int(chunk_s * SR), cache=silence) for w in wavs])
        tag.weights_mb = _weights_mb(model)  # type: ignore[attr-defined]
        return tag
    return build


def _run_whisper_at(clips: torch.Tensor, batch: int, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    from whisper_flamingo.checkpoints.names import load_whisper
    from whisper_flamingo.data.audio import log_mel, pad_or_trim
    from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig, pool_layers

    model = load_whisper("tiny.en").eval().to(device)
    head = TLTR(TLTRConfig(n_layer=model.dims.n_audio_layer, rep_dim=model.dims.n_audio_state,
                           inter_dim=512)).eval().to(device)

    def tag(wavs: torch.Tensor) -> torch.Tensor:
        mel = torch.stack([log_mel(pad_or_trim(w.numpy())) for w in wavs]).to(device)
        _, layers = model.embed_audio_layers(mel)
        steps = wavs.shape[1] // SR * 100 // 40  # 10 s: 25 pooled steps of 0.4 s
        return torch.sigmoid(head(pool_layers(layers)[:, :, :steps]))
    tag.weights_mb = _weights_mb(model, head)  # type: ignore[attr-defined]
    return tag


#: name → (module that must exist, builder of a ``tag(wav batch) -> probabilities`` function)
SYSTEMS: dict[str, tuple[str, Callable[..., Callable[[torch.Tensor], torch.Tensor]]]] = {
    "ast": ("whisper_flamingo.models.ast", _run_ast),
    "sat_t_1s": ("whisper_flamingo.models.sat", _run_sat("sat-t-1s", 1.0)),
    "sat_t_2s": ("whisper_flamingo.models.sat", _run_sat("sat-t-2s", 2.0)),
    "whisper_at": ("whisper_flamingo.models.whisper_at", _run_whisper_at),
}
#: the SAT README's peak-memory column (reference §3.7), next to ours
CLAIMED = {"ast": "2.2 GB (AST-B, SAT README)", "sat_t_1s": "4.3 MB (SAT README)", "sat_t_2s": "9 MB (SAT README)"}


def _child(name: str, n: int, seconds: float, batch: int, device: str, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    clips = make_clips(n, seconds)
    base = _rss_mb()
    try:
        tag = SYSTEMS[name][1](clips, batch, dev)
        built = torch.cuda.memory_allocated() / 2**20 if dev.type == "cuda" else _rss_mb()
        with torch.inference_mode():
            tag(clips[:batch])  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for i in range(0, n, batch):
                tag(clips[i:i + batch])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - start
        top = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else _peak_rss_mb()
        queue.put(Result(name, n / wall, wall / (n * seconds), top - (0 if dev.type == "cuda" else base),
                         getattr(tag, "weights_mb", math.nan), top - built))
    except Exception as err:  # report and go on with the other systems
        queue.put(Result(name, note=f"failed: {type(err).__name__}: {err}"))


def run(name: str, args: argparse.Namespace) -> Result:
    module = SYSTEMS[name][0]
    if importlib.util.find_spec(module) is None:
        return Result(name, note=f"not available ({module} missing)")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, args.clips, args.seconds, args.batch, args.device, args.threads,
                                            queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16, help="clips per system (default 16)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--batch", type=int, default=4, help="clips per forward (default 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated ({', '.join(SYSTEMS)})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = {name: run(name, args) for name in args.systems.split(",") if name}
    print(f"{args.clips} clips of {args.seconds:g} s, batch {args.batch}, {args.device}, {args.threads} threads")
    print(f"{'system':<12} {'clips/s':>8} {'RTF':>7} {'peak MB':>8} {'weights MB':>10} {'work MB':>8}  "
          f"{'claimed peak':<27} note")
    for r in results.values():
        print(f"{r.system:<12} {r.clips_s:>8.2f} {r.rtf:>7.4f} {r.peak_mb:>8.1f} {r.weights_mb:>10.1f} "
              f"{r.work_mb:>8.1f}  {CLAIMED.get(r.system, '-'):<27} {r.note}")
    nan = Result("")
    ast, sat2 = results.get("ast", nan), results.get("sat_t_2s", nan)
    print(f"ast_clips_s={ast.clips_s:.2f} sat_t_2s_clips_s={sat2.clips_s:.2f} sat_t_2s_rtf={sat2.rtf:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
