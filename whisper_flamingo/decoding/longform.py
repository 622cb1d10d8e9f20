"""Long-form decoding by windows: audio longer than Whisper's 30-s window is cut into windows of at most
30 s, each decoded on its own, and the texts are joined.

Cut points are chosen by energy: a window that must end before the audio does ends at the quietest
25-ms frame of its last :data:`SEARCH_SECONDS` (a pause between words, where one exists), so that no
word is cut in two when the speaker pauses at all.  This is the small, reusable piece the ``decode``
command needs for manifest utterances over 30 s (``--long-form window``); it carries no text from one
window to the next (no prompt conditioning).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from whisper_flamingo.decoding.search import Hypothesis, SearchOptions, decode_batch

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
#: how far back from a window's 30-s limit the quietest frame is looked for
SEARCH_SECONDS = 5.0
FRAME = 400  # 25 ms at 16 kHz
LONG_FORM_MODES = ("off", "window")


def split_points(audio: np.ndarray, max_samples: int = WINDOW_SAMPLES,
                 search_seconds: float = SEARCH_SECONDS) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering ``audio``, each at most ``max_samples`` long.

    Each cut falls at the centre of the lowest-energy :data:`FRAME` within the last ``search_seconds``
    before the window's limit."""
    n = int(audio.shape[0])
    search = max(FRAME, min(int(search_seconds * SAMPLE_RATE), max_samples // 2))
    out, start = [], 0
    while n - start > max_samples:
        lo, hi = start + max_samples - search, start + max_samples
        seg = np.asarray(audio[lo:hi], dtype=np.float64)
        frames = seg[: len(seg) // FRAME * FRAME].reshape(-1, FRAME)
        quietest = int(np.argmin((frames ** 2).mean(axis=1)))
        cut = min(lo + quietest * FRAME + FRAME // 2, hi)
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def decode_long(model, audio: np.ndarray, prompt: Sequence[int], tokenizer, options: SearchOptions,
                device: torch.device, pad_to_30s: bool = True, video=None, modality: str = "asr") -> Hypothesis:
    """One hypothesis for ``audio`` (float, 16 kHz, any length): its windows decoded as one batch
    (each padded to 30 s when ``pad_to_30s``, as zero-shot Whisper), texts joined with a space.

    ``flags`` is the union of the windows' flags plus ``long_form``."""
    from whisper_flamingo.data.audio import log_mel, pad_or_trim

    spans = split_points(audio)
    chunks = [audio[a:b] for a, b in spans]
    frames = [max(1, (b - a) // 160) for a, b in spans]
    if pad_to_30s:
        chunks = [pad_or_trim(c) for c in chunks]
    mels = [torch.as_tensor(log_mel(c, model.dims.n_mels)) for c in chunks]
    width = max(m.shape[-1] for m in mels)
    mel = torch.zeros(len(mels), mels[0].shape[0], width)
    for i, m in enumerate(mels):
        mel[i, :, : m.shape[-1]] = m
    hyps = decode_batch(model, mel.to(device), [list(prompt)] * len(mels), tokenizer, options,
                        mel_frames=None if pad_to_30s else frames,
                        audio_seconds=[(b - a) / SAMPLE_RATE for a, b in spans], modality=modality)
    tokens = [t for h in hyps for t in h.tokens]
    text = " ".join(h.text.strip() for h in hyps if h.text.strip())
    sum_lp = sum(h.sum_logprob for h in hyps)
    n_tok = len(tokens) + 1
    flags = set().union(*(h.flags for h in hyps)) | {"long_form"}
    return Hypothesis(tokens=tokens, text=text, avg_logprob=sum_lp / n_tok, sum_logprob=sum_lp, flags=flags)


__all__ = ["WINDOW_SAMPLES", "LONG_FORM_MODES", "split_points", "decode_long"]
