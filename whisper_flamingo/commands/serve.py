"""``whisper-flamingo serve --model NAME|PATH``: a local web page in front of the Python API.

FastAPI + uvicorn serving one plain HTML page (inline script and style, nothing fetched from outside:
no CDN, fonts or analytics).  Upload or record audio/video, pick language, task and beam, optionally mix
in noise at an SNR, and get the transcript with timestamps, the audio that was decoded (playable, with
the noise in), the sound-tag timeline as a PNG (with ``--at-checkpoint``), audio-only next to
audio-visual decoding for videos (Whisper-Flamingo checkpoints), and srt/vtt/json downloads.

Every transcription is :meth:`whisper_flamingo.commands.api.Model.transcribe` (one implementation behind
the CLI, the API and this page), run one at a time on a worker thread; the page polls its progress.
Uploads go to a per-job temporary folder removed when the job ends; bodies above ``--max-upload-mb`` are
refused (413) before they are read; a file that cannot be decoded gives its one-line error on the page.
"""


import argparse
import io
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from whisper_flamingo.errors import ConfigError, WFError, one_line

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  whisper-flamingo serve --model tiny.en                      # then open http://127.0.0.1:7860
  whisper-flamingo serve --model base --at-checkpoint at_head.pt --babble babble.wav
  whisper-flamingo serve --model models/stage2.ckpt --port 8000 --max-upload-mb 500
"""

UPLOAD_PATH = "/api/jobs"
KEEP_JOBS = 16  # finished jobs (results, PNG, decoded audio) kept in memory for the page's links
LANGUAGES = ("auto", "en", "es", "fr", "de", "it", "pt", "ru", "zh", "ja", "ar", "hi", "ko", "nl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="base", help="a Whisper name (tiny.en, base, ...) or a checkpoint path "
                                                        "(as for transcribe; default: base)")
    parser.add_argument("--at-checkpoint", default=None, help="a Whisper-AT head: the page draws the sound-tag "
                                                              "timeline")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, ...")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to "
                             "the network)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--max-upload-mb", type=float, default=200.0,
                        help="larger uploads are refused (default: 200)")
    parser.add_argument("--babble", default=None, help="a noise file offered on the page as 'babble' (mixed at "
                                                       "the chosen SNR)")
    parser.add_argument("--at-time-res", type=float, default=2.0,
                        help="seconds per column of the tag timeline, a multiple of 0.4 (default: 2)")


class _LimitUploads:
    """ASGI middleware: refuse a POST to :data:`UPLOAD_PATH` by its Content-Length before any byte of the
    body is read: above ``limit`` bytes with 413, without the header with 411 (uvicorn does not let a
    body run past its declared length)."""

    def __init__(self, app: Any, limit_mb: float) -> None:
        self.app, self.limit_mb, self.limit = app, limit_mb, int(limit_mb * 2**20)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != UPLOAD_PATH:
            await self.app(scope, receive, send)
            return
        from fastapi.responses import JSONResponse

        length = dict(scope["headers"]).get(b"content-length")
        if length is None or not length.isdigit():
            await JSONResponse({"error": "upload refused: send a Content-Length header"},
                               status_code=411)(scope, receive, send)
        elif int(length) > self.limit:
            await JSONResponse({"error": f"upload refused: {int(length) / 2**20:.2f} MB is above the server's "
                                         f"limit of {self.limit_mb:g} MB (--max-upload-mb)"},
                               status_code=413)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def tag_timeline_png(result: dict[str, Any], top: int = 8) -> bytes:
    """The sound-tag timeline: the ``top`` classes by peak probability (rows) over time (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from whisper_flamingo.decoding.tags import label_names

    probs = torch.sigmoid(result["audio_tag"].float()).numpy()  # (rows, 527)
    order = np.argsort(-probs.max(axis=0))[:top]
    names = label_names("en")
    res = float(result["at_time_res"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * top + 1.2), dpi=100)
    image = ax.imshow(probs[:, order].T, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                      extent=(0, res * probs.shape[0], top - 0.5, -0.5))
    ax.set_yticks(range(top), [names[i] for i in order])
    ax.set_xlabel("time (s)")
    ax.set_title("sound tags (Whisper-AT)")
    fig.colorbar(image, ax=ax, label="probability")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


class Job:
    """One upload: its state, progress, results and downloads (kept in memory; no file outlives the job)."""

    def __init__(self, name: str, passes: int) -> None:
        self.id = uuid.uuid4().hex
        self.name, self.passes = name, passes
        self.state, self.error = "queued", None
        self.done = self.total = 0.0
        self.pass_index = 0
        self.results: list[dict[str, Any]] = []  # one per modality shown
        self.files: dict[str, tuple[bytes, str]] = {}  # name -> (content, media type)

    def progress(self, done: float, total: float) -> None:
        self.done, self.total = float(done), float(total)

    def fraction(self) -> float:
        within = self.done / self.total if self.total else 0.0
        return min(1.0, (self.pass_index + within) / self.passes) if self.state != "done" else 1.0


class Server:
    """The page's state: the loaded model, the temporary root, the jobs and the single worker thread."""

    def __init__(self, model: Any, babble: str | os.PathLike | None = None, at_time_res: float = 2.0) -> None:
        self.model, self.at_time_res = model, at_time_res
        self.babble = None if babble is None else Path(babble)
        if self.babble is not None and not self.babble.is_file():
            raise ConfigError(f"--babble {babble}: no such file; pass a noise audio file")
        self.temp_root = Path(tempfile.mkdtemp(prefix="whisper-flamingo-serve-"))
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wf-serve")

    def close(self) -> None:
        self.worker.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.temp_root, ignore_errors=True)

    def add(self, job: Job) -> None:
        with self.lock:
            self.jobs[job.id] = job
            while len(self.jobs) > KEEP_JOBS:
                self.jobs.popitem(last=False)

    def run_job(self, job: Job, folder: Path, media: Path, noise: str | None, snr: float | None,
                options: dict[str, Any]) -> None:
        """Transcribe ``media`` (once, or audio-only then audio-visual for a video and a Whisper-Flamingo
        model), fill ``job``, and remove ``folder`` whatever happens."""
        from whisper_flamingo.decoding.subtitles import render
        from whisper_flamingo.decoding.transcribe import _mix_noise, load_media_audio

        job.state, state = "running", "error"
        try:
            audio = load_media_audio(media)
            if audio.size == 0:
                raise ConfigError("the file holds no audio samples")
            if noise is not None:
                noise_source: Any = np.random.default_rng(0).normal(0, 0.1, 16000 * 10).astype(np.float32) \
                    if noise == "white" else (self.babble if noise == "babble" else folder / noise)
                audio = _mix_noise(audio, noise_source, float(snr))
            job.files["audio.wav"] = (_wav_bytes(audio), "audio/wav")
            modalities = ["asr", "auto"] if job.passes == 2 else ["auto"]
            for i, modality in enumerate(modalities):
                job.pass_index, job.done, job.total = i, 0.0, 0.0
                # the video is cropped from the uploaded file; the audio is the (noise-mixed) samples
                video = media if (modality != "asr" and self.model.audio_visual) else None
                result = self.model.transcribe(audio, video=video, modality=modality, at_time_res=self.at_time_res,
                                               progress=job.progress, **options)
                job.results.append(result)
            best = job.results[-1]
            for fmt, kind in (("srt", "application/x-subrip"), ("vtt", "text/vtt"), ("json", "application/json")):
                job.files[f"transcript.{fmt}"] = (render(best, fmt).encode("utf-8"), kind)
            if "audio_tag" in best:
                job.files["tags.png"] = (tag_timeline_png(best), "image/png")
            state = "done"
        except Exception as err:  # noqa: BLE001 - any failure must reach the page, the server keeps serving
            if isinstance(err, WFError):
                message = one_line(err)
            else:
                log.exception("job %s (%s) failed", job.id, job.name)
                message = f"cannot transcribe this file ({type(err).__name__}: {err})"
            # the message names our temporary copy: name the user's file instead
            message = message.removeprefix(f"{media}: ").replace(str(media), job.name)
            state, job.error = "error", f"{job.name}: {message.replace(str(folder), '(upload)')}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        job.state = state  # only now: a finished job has no file left on disk


def _summary(job: Job) -> dict[str, Any]:
    from whisper_flamingo.decoding.subtitles import json_ready

    out: dict[str, Any] = {"id": job.id, "name": job.name, "state": job.state, "error": job.error,
                           "progress": round(job.fraction(), 4), "passes": job.passes}
    if job.state == "done":
        out["results"] = [{k: v for k, v in json_ready(r).items() if k in
                           ("text", "language", "modality", "modality_note", "tags")} |
                          {"segments": [{"start": s["start"], "end": s["end"], "text": s["text"]}
                                        for s in r["segments"]]} for r in job.results]
        out["files"] = {name: f"/api/jobs/{job.id}/{name}" for name in job.files}
    return out


def create_app(model: Any, *, max_upload_mb: float = 200.0, babble: str | os.PathLike | None = None,
               at_time_res: float = 2.0) -> Any:
    """The ASGI app (FastAPI) for ``model`` (a :class:`~whisper_flamingo.commands.api.Model`); its
    :class:`Server` is ``app.state.server``."""
    from fastapi import FastAPI, File, Form, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    from whisper_flamingo.commands.serve_page import page
    from whisper_flamingo.commands.transcribe import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    server = Server(model, babble, at_time_res)
    app = FastAPI(title="whisper-flamingo", docs_url=None, redoc_url=None, openapi_url=None,
                  on_shutdown=[server.close])
    app.state.server = server
    html = page(model_name=model.name, audio_visual=model.audio_visual, tags=model.at_head is not None,
                babble=server.babble is not None, max_upload_mb=max_upload_mb, languages=LANGUAGES)

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return html

    @app.post(UPLOAD_PATH)
    def submit(file: UploadFile = File(...), language: str = Form("auto"),  # noqa: B008 - FastAPI's form fields
               task: str = Form("transcribe"), beam_size: int = Form(5), noise: str = Form("none"),  # noqa: B008
               snr: float = Form(10.0), noise_file: UploadFile | None = File(None)) -> JSONResponse:  # noqa: B008
        name = Path(file.filename or "upload").name
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            return JSONResponse({"error": f"{name}: unknown file type {suffix or '(none)'}; upload audio "
                                          f"({', '.join(AUDIO_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})"},
                                status_code=400)
        if task not in ("transcribe", "translate") or not 1 <= beam_size <= 10 or language not in LANGUAGES:
            return JSONResponse({"error": "options: task transcribe|translate, beam 1-10, a listed language"},
                                status_code=400)
        if noise not in ("none", "white", "babble", "file") or (noise == "babble" and server.babble is None):
            return JSONResponse({"error": f"noise {noise!r}: use none, white, file{', babble' * bool(server.babble)}"},
                                status_code=400)
        folder = Path(tempfile.mkdtemp(dir=server.temp_root))
        media = folder / f"upload{suffix}"
        with media.open("wb") as out:
            shutil.copyfileobj(file.file, out)
        noise_name = None if noise == "none" else noise
        if noise == "file":
            if noise_file is None or not noise_file.filename:
                shutil.rmtree(folder, ignore_errors=True)
                return JSONResponse({"error": "noise 'file': choose a noise file too"}, status_code=400)
            noise_name = "noise" + Path(noise_file.filename).suffix.lower()
            with (folder / noise_name).open("wb") as out:
                shutil.copyfileobj(noise_file.file, out)
        passes = 2 if (model.audio_visual and suffix in VIDEO_SUFFIXES) else 1
        job = Job(name, passes)
        server.add(job)
        options = {"language": None if language == "auto" else language, "task": task, "beam_size": beam_size,
                   "temperature": 0.0}
        server.worker.submit(server.run_job, job, folder, media, noise_name, snr if noise_name else None, options)
        return JSONResponse({"id": job.id})

    @app.get("/api/jobs/{job_id}")
    def status(job_id: str) -> JSONResponse:
        job = server.jobs.get(job_id)
        if job is None:
            return JSONResponse({"error": "no such job (finished jobs are kept for the last 16 uploads)"},
                                status_code=404)
        return JSONResponse(_summary(job))

    @app.get("/api/jobs/{job_id}/{name}")
    def download(job_id: str, name: str) -> Response:
        job = server.jobs.get(job_id)
        if job is None or name not in job.files:
            return JSONResponse({"error": "no such file"}, status_code=404)
        content, kind = job.files[name]
        headers = {} if kind.startswith(("image/", "audio/")) else \
            {"Content-Disposition": f'attachment; filename="{Path(job.name).stem}.{name.rsplit(".", 1)[-1]}"'}
        return Response(content, media_type=kind, headers=headers)

    return _LimitUploads(app, max_upload_mb) if max_upload_mb > 0 else app


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from whisper_flamingo.commands.api import load_model

    if args.port < 0 or args.port > 65535:
        raise ConfigError(f"--port {args.port}: use 0-65535")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: other machines can reach this page (no authentication)", args.host)
    model = load_model(args.model, None if args.device == "auto" else args.device, at_checkpoint=args.at_checkpoint)
    app = create_app(model, max_upload_mb=args.max_upload_mb, babble=args.babble, at_time_res=args.at_time_res)
    log.info("serving %s on http://%s:%d (Ctrl-C stops)", args.model, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
