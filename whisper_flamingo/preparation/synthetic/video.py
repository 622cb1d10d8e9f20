"""Talking-mouth video: phoneme timings -> articulation track -> drawn 96x96 grayscale frames -> mp4.

A viseme table maps eSpeak phoneme mnemonics to five articulation parameters (lip opening, width,
rounding, visible teeth, visible tongue).  Targets are placed inside each phone's time span,
interpolated at 1 kHz, smoothed (coarticulation) and sampled at the frame centres, so the mouth
shapes follow the speech closely enough for a lip reader to learn words from them.  Frames are
drawn analytically (anti-aliased ellipses: skin, nostrils, lips, dark mouth interior, teeth, tongue,
chin fold) with per-speaker appearance and small head movements, then encoded with PyAV.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import DataError
from whisper_flamingo.preparation.synthetic.espeak import Phone

log = logging.getLogger(__name__)

SIZE = 96
FPS = 25
N_PARAMS = 5  # open, width, round, teeth, tongue

# articulation targets: (open, width, round, teeth, tongue), each in 0..1
_V = {
    "rest": (0.03, 0.5, 0.1, 0.0, 0.0),
    "bilabial": (0.0, 0.45, 0.05, 0.0, 0.0),
    "labiodental": (0.1, 0.55, 0.0, 1.0, 0.0),
    "dental": (0.2, 0.55, 0.0, 0.8, 1.0),
    "alveolar": (0.2, 0.55, 0.05, 0.6, 0.5),
    "sibilant": (0.1, 0.68, 0.0, 1.0, 0.0),
    "postalveolar": (0.18, 0.3, 0.75, 0.9, 0.0),
    "velar": (0.32, 0.5, 0.1, 0.3, 0.2),
    "glottal": (0.35, 0.5, 0.1, 0.2, 0.1),
    "r": (0.18, 0.35, 0.6, 0.3, 0.1),
    "w": (0.08, 0.15, 1.0, 0.0, 0.0),
    "j": (0.18, 0.72, 0.0, 0.6, 0.3),
    "i": (0.22, 0.82, 0.0, 0.75, 0.2),
    "e": (0.45, 0.72, 0.0, 0.55, 0.2),
    "a": (0.88, 0.6, 0.0, 0.35, 0.3),
    "schwa": (0.38, 0.55, 0.1, 0.3, 0.2),
    "er": (0.3, 0.45, 0.4, 0.3, 0.1),
    "O": (0.62, 0.35, 0.65, 0.2, 0.2),
    "o": (0.45, 0.28, 0.85, 0.1, 0.1),
    "u": (0.18, 0.18, 1.0, 0.0, 0.0),
}
_SINGLE = {
    "p": "bilabial", "b": "bilabial", "m": "bilabial",
    "f": "labiodental", "v": "labiodental",
    "T": "dental", "D": "dental",
    "t": "alveolar", "d": "alveolar", "n": "alveolar", "l": "alveolar",
    "s": "sibilant", "z": "sibilant",
    "S": "postalveolar", "Z": "postalveolar",
    "k": "velar", "g": "velar", "N": "velar", "x": "velar", "h": "glottal", "?": "glottal",
    "r": "r", "w": "w", "j": "j",
    "i": "i", "I": "i", "y": "i", "e": "e", "E": "e", "a": "a", "A": "a", "V": "schwa",
    "@": "schwa", "3": "er", "0": "O", "O": "O", "o": "o", "U": "u", "u": "u",
    "_": "rest", ";": None, "|": None,
}
_MULTI = {  # longest first
    "aI@": ("a", "i", "schwa"), "aU@": ("a", "u", "schwa"), "i@3": ("i", "schwa", "er"),
    "aI3": ("a", "i", "er"),
    "tS": ("postalveolar",), "dZ": ("postalveolar",), "aI": ("a", "i"), "aU": ("a", "u"),
    "OI": ("O", "i"), "eI": ("e", "i"), "oU": ("o", "u"), "e@": ("e", "schwa"),
    "i@": ("i", "schwa"), "A@": ("a", "er"), "O@": ("O", "er"), "o@": ("o", "er"),
    "U@": ("u", "schwa"), "3:": ("er",), "i:": ("i",), "u:": ("u",), "O:": ("O",), "A:": ("a",),
    "aa": ("a",), "@L": ("schwa", "alveolar"), "_:": ("rest",),
}
_VOWEL_CLASSES = {"i", "e", "a", "schwa", "er", "O", "o", "u"}


def phone_targets(symbol: str) -> list[str]:
    """Viseme classes for one eSpeak phoneme mnemonic (stress marks and suffixes ignored).

    An empty list means the phone has no visible target of its own (it inherits its neighbours').
    """
    s = symbol.lstrip("',=")
    if not s:
        return []
    for key in sorted(_MULTI, key=len, reverse=True):
        if s.startswith(key):
            return list(_MULTI[key])
    cls = _SINGLE.get(s[0], "schwa")
    return [] if cls is None else [cls]


def articulation_track(phones: list[Phone], n_frames: int, offset: float = 0.0, strength: float = 1.0,
                       fps: int = FPS, smooth_ms: float = 14.0) -> np.ndarray:
    """Per-frame articulation parameters ``(n_frames, 5)`` for phones shifted by ``offset`` seconds.

    ``strength`` scales the deviation of the lip opening from rest (hypo- vs hyper-articulation).
    """
    dur_ms = int(np.ceil(n_frames / fps * 1000)) + 1
    rest = np.array(_V["rest"], np.float64)
    times: list[float] = [0.0]
    values: list[np.ndarray] = [rest]
    visible = [ph for ph in phones if phone_targets(ph.symbol) not in ([], ["rest"])]
    if visible:  # the mouth rests until shortly before the first sound
        times.append(max(0.0, (visible[0].start + offset) * 1000 - 80.0))
        values.append(rest)
    for ph in phones:
        classes = phone_targets(ph.symbol)
        if not classes:
            continue
        start, end = (ph.start + offset) * 1000, (ph.end + offset) * 1000
        span = max(end - start, 1.0)
        stressed = ph.symbol.startswith("'")
        if len(classes) == 1:
            c = classes[0]
            # closures and long vowels hold their target over the middle of the phone
            anchors = (0.2, 0.8) if c in ("bilabial", "labiodental") or span > 120 else (0.5,)
            seq = [(a, c) for a in anchors]
        else:
            seq = [(0.15 + 0.75 * k / (len(classes) - 1), c) for k, c in enumerate(classes)]
        for a, c in seq:
            v = np.array(_V[c], np.float64)
            if c in _VOWEL_CLASSES:
                v[0] *= 1.15 if stressed else 0.88
            times.append(start + a * span)
            values.append(v)
    last = (phones[-1].end + offset) * 1000 if phones else 0.0
    times += [last + 60.0, float(dur_ms)]
    values += [rest, rest]
    t = np.asarray(times)
    order = np.argsort(t, kind="stable")
    t, vals = t[order], np.stack(values)[order]
    grid = np.arange(dur_ms, dtype=np.float64)
    track = np.stack([np.interp(grid, t, vals[:, k]) for k in range(N_PARAMS)], axis=1)
    # coarticulation: Gaussian smoothing in time
    half = int(3 * smooth_ms)
    kern = np.exp(-0.5 * (np.arange(-half, half + 1) / smooth_ms) ** 2)
    kern /= kern.sum()
    padded = np.pad(track, ((half, half), (0, 0)), mode="edge")
    smooth = np.stack([np.convolve(padded[:, k], kern, mode="valid") for k in range(N_PARAMS)], axis=1)
    centres = ((np.arange(n_frames) + 0.5) / fps * 1000).astype(int).clip(0, dur_ms - 1)
    out = smooth[centres]
    out[:, 0] = rest[0] + (out[:, 0] - rest[0]) * strength
    return np.clip(out, 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class FaceStyle:
    """Per-speaker appearance of the drawn mouth region."""

    skin: float = 150.0  # gray level of the skin
    lip_dark: float = 35.0  # how much darker the lips are than the skin
    lip_thick: float = 6.0  # px
    mouth_w: float = 26.0  # half-width at neutral, px
    max_open: float = 24.0  # px of lip separation at open = 1
    cx: float = 48.0
    cy: float = 52.0
    light_x: float = 0.3  # illumination gradient, gray levels per px
    light_y: float = -0.2
    interior: float = 28.0
    teeth: float = 215.0
    noise: float = 2.0  # sensor noise std
    jitter: float = 0.8  # head movement scale, px

    @classmethod
    def random(cls, rng: np.random.Generator) -> FaceStyle:
        return cls(skin=float(rng.uniform(105, 195)), lip_dark=float(rng.uniform(22, 50)),
                   lip_thick=float(rng.uniform(4.5, 7.5)), mouth_w=float(rng.uniform(23, 29)),
                   max_open=float(rng.uniform(20, 27)), cx=float(rng.uniform(46, 50)),
                   cy=float(rng.uniform(49, 54)), light_x=float(rng.uniform(-0.45, 0.45)),
                   light_y=float(rng.uniform(-0.35, 0.2)), interior=float(rng.uniform(15, 40)),
                   teeth=float(rng.uniform(185, 235)), noise=float(rng.uniform(0.5, 1.8)),
                   jitter=float(rng.uniform(0.4, 1.2)))


def _ellipse(x, y, cx, cy, a, b):
    """Anti-aliased coverage (0..1) of an axis-aligned ellipse (arrays broadcast over frames)."""
    dx, dy = x - cx, y - cy
    ia2, ib2 = 1.0 / (a * a), 1.0 / (b * b)
    ex, ey = dx * ia2, dy * ib2
    f = dx * ex + dy * ey - 1.0
    grad = 2.0 * np.sqrt(ex * ex + ey * ey) + 1e-6
    # f/|grad f| approximates the distance only near the outline; the bounding box keeps very
    # flat ellipses from bleeding along their axis
    box = np.clip(a + 0.5 - np.abs(dx), 0.0, 1.0) * np.clip(b + 0.5 - np.abs(dy), 0.0, 1.0)
    return np.clip(0.5 - f / grad, 0.0, 1.0) * box


def _smooth_walk(rng: np.random.Generator, n: int, scale: float, corr: int = 12) -> np.ndarray:
    steps = rng.normal(0.0, 1.0, n + 2 * corr)
    kern = np.hanning(2 * corr + 1)
    walk = np.convolve(steps, kern / np.sqrt((kern ** 2).sum()), mode="same")[corr:corr + n]
    return (walk * scale).astype(np.float32)


_NOSE_BOX = (0, 30)  # rows drawn for the nose
_MOUTH_BOX = (20, SIZE)  # rows drawn for the mouth, lips and chin fold


def render_frames(track: np.ndarray, style: FaceStyle, rng: np.random.Generator) -> np.ndarray:
    """Draw ``(T, 96, 96)`` uint8 frames from an articulation track ``(T, 5)``."""
    T = track.shape[0]
    f32 = np.float32
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(f32)

    def col(v):  # per-frame scalar -> broadcastable (T,1,1)
        return np.asarray(v, f32).reshape(T, 1, 1)

    op, wd, rd, th, tg = (track[:, k] for k in range(N_PARAMS))
    jx = _smooth_walk(rng, T, style.jitter)
    jy = _smooth_walk(rng, T, style.jitter * 0.7)
    cx, cy = style.cx + jx, style.cy + jy
    o = op * style.max_open
    y_up = cy - 0.3 * o  # upper inner lip edge
    y_lo = cy + 0.7 * o  # lower inner lip edge (the jaw drops)
    mid = (y_up + y_lo) / 2
    hi = np.maximum((y_lo - y_up) / 2, 0.05)
    w = style.mouth_w * (0.78 + 0.42 * wd) * (1.0 - 0.3 * rd)
    w_in = w * (0.9 - 0.12 * rd)
    t_up = style.lip_thick * (0.85 + 0.5 * rd)
    t_lo = style.lip_thick * (1.15 + 0.5 * rd)

    # skin with lighting and a faint flicker
    base = (style.skin + style.light_x * (xx - 48) + style.light_y * (yy - 48)).astype(f32)
    flick = rng.normal(0.0, 0.8, T).astype(f32)
    img = base[None] + col(flick)
    # nose: tip shading and two nostrils, attached to the head (jitter only)
    r0, r1 = _NOSE_BOX
    x, y = xx[None, r0:r1], yy[None, r0:r1]
    ncx, ncy = col(cx), col(cy - 46 + 0.3 * jy)
    nose = 14 * _ellipse(x, y, ncx, ncy - 1, 16, 8)
    for side in (-1, 1):
        nose -= (style.skin * 0.55) * _ellipse(x, y, ncx + side * 9.0, ncy + 4, 5.0, 2.8)
    img[:, r0:r1] += nose
    # mouth region
    r0, r1 = _MOUTH_BOX
    x, y = xx[None, r0:r1], yy[None, r0:r1]
    reg = img[:, r0:r1]
    ccx, cmid = col(cx), col(mid)
    dxa = np.abs(x - ccx)
    # philtrum groove
    reg -= 9 * np.exp(-(dxa / 2.5) ** 2) * (y < col(y_up - t_up))
    # chin / labiomental fold follows the jaw
    fold_y = col(y_lo + t_lo + 7)
    reg -= 14 * np.exp(-((y - fold_y) / 2.4) ** 2) * np.exp(-(dxa / 14) ** 2)
    # mouth-corner dimples
    reg -= 10 * np.exp(-(((dxa - col(w + 1.5)) / 2.0) ** 2 + ((y - cmid) / 3.0) ** 2))
    # lips: outer shape with separate upper/lower heights and a cupid's bow on the upper lip
    bow = 1.6 * np.exp(-((dxa - 5.5) / 3.5) ** 2) - 1.2 * np.exp(-(dxa / 2.5) ** 2)
    h_out = np.where(y < cmid, col(mid - y_up + t_up) + bow, col(y_lo - mid + t_lo))
    lips = _ellipse(x, y, ccx, cmid, col(w), h_out)
    lip_val = style.skin - style.lip_dark
    reg += (lip_val - reg) * lips
    # lower-lip highlight
    reg += 14 * lips * np.exp(-((y - col(y_lo + 0.45 * t_lo)) / col(0.35 * t_lo)) ** 2) \
        * np.exp(-(dxa / col(0.6 * w)) ** 2)
    # interior, teeth, tongue
    inner = _ellipse(x, y, ccx, cmid, col(w_in), col(hi))
    teeth_h = th * np.minimum(2 * hi, 8.0)
    low = th > 0.55
    teeth = np.clip(col(y_up + teeth_h) - y + 0.5, 0, 1)
    teeth += np.clip(y - col(y_lo - 0.45 * teeth_h * low) + 0.5, 0, 1) * col(low)
    teeth = np.clip(teeth, 0, 1)
    tongue = _ellipse(x, y, ccx, col(y_lo - tg * 1.1 * hi), col(w_in * 0.55), col(0.5 * hi + 1.0)) \
        * col(np.maximum(tg, 0.25))
    interior = style.interior + (style.skin * 0.45 + 35 - style.interior) * tongue
    interior += (style.teeth - interior) * teeth
    reg += (interior - reg) * inner
    # the seam between closed lips
    seam = np.exp(-((y - cmid) / 0.9) ** 2) * np.clip(col(0.85 * w_in) - dxa, 0, 1) \
        * col(np.clip(1.0 - hi / 1.5, 0, 1))
    reg -= (lip_val - style.interior) * 0.8 * seam
    img += rng.normal(0.0, style.noise, img.shape).astype(f32)
    return np.clip(img, 0, 255).round().astype(np.uint8)


_Y_LIMITED = np.round(16 + np.arange(256) * 219 / 255).astype(np.uint8)  # full -> video range luma


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS, codec: str = "mpeg4", quality: int = 4) -> None:
    """Encode grayscale ``(T, H, W)`` uint8 frames as an mp4 (yuv420p, neutral chroma).

    ``mpeg4`` (the default) is bit-for-bit reproducible; ``libx264`` through PyAV is not (its
    output changes with the state of the process heap), so it is not used for the corpus.
    ``quality`` is the MPEG-4 quantiser (2 best .. 31) or the x264 CRF.
    """
    from fractions import Fraction

    import av

    if codec not in av.codecs_available:
        raise DataError(f"this PyAV build has no {codec!r} encoder; install a PyAV wheel with it",
                        reason="missing_dependency", path=path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            stream.options = {"crf": str(quality), "preset": "veryfast"}
        else:  # a fixed quantiser
            stream.options = {"qmin": str(quality), "qmax": str(quality)}
        for i, img in enumerate(frames):
            yuv = np.full((h * 3 // 2, w), 128, np.uint8)  # neutral chroma planes
            yuv[:h] = _Y_LIMITED[img]
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
