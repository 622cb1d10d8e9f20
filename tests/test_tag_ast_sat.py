"""``whisper-flamingo tag`` with AST and SAT: clip tags, JSON Lines, resampling notice, ``--stream`` from
files and from a pipe on standard input, memory carry-over between files, one-line errors."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from needs import need

from whisper_flamingo.checkpoints.ast import save_ast_released
from whisper_flamingo.cli import main
from whisper_flamingo.data.audio import resample_to_16k
from whisper_flamingo.data.fbank import ast_input
from whisper_flamingo.decoding.clip_tags import ast_window_probs, parse_norm_stats
from whisper_flamingo.decoding.tags import label_names
from whisper_flamingo.decoding.transcribe import load_media_audio
from whisper_flamingo.models.ast import AST
from whisper_flamingo.models.registry import create
from whisper_flamingo.models.sat import SAT, build_sat, stream

ROOT = Path(__file__).resolve().parents[1]
JFK = ROOT.parent / "shared" / "data" / "jfk.flac"
NAMES = label_names("en")
LINE = re.compile(r"^\[(\d+\.\d+)s\]-\[(\d+\.\d+)s\] Topk-(\d) (.{30}) (\d\.\d{4})$")


def save_fixture(model, path: Path) -> Path:
    torch.save({"cfg": asdict(model.cfg), "model": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Random-weight checkpoints: a full-size sat-t-2s, a tiny SAT, a short AST, a released-layout ast-tiny224."""
    d = tmp_path_factory.mktemp("tagckpt")
    torch.manual_seed(0)
    paths = {"sat-t-2s": save_fixture(create("sat-t-2s"), d / "sat_t_2s.pt"),
             "sat": save_fixture(build_sat(embed_dim=32, depth=2, num_heads=2), d / "sat_tiny.pt"),
             "ast": d / "ast_short.pt",
             "ast-tiny224": save_ast_released(create("ast-tiny224"), d / "audioset_10_10_0.0000.pth")}
    short = create("ast-tiny224", input_tdim=128)
    torch.save({"cfg": {**vars(short.cfg)}, "model": short.state_dict()}, paths["ast"])
    return paths


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--log-level", "WARNING", "tag", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def parse_stream(text: str) -> list[list[tuple[str, float]]]:
    """Chunks of ``[(label, prob), ...]`` from the upstream lines; checks the format and chunk times."""
    chunks: list[list[tuple[str, float]]] = []
    for line in text.splitlines():
        if not line or line.startswith("====="):
            continue
        m = LINE.match(line)
        assert m, line
        start, end, rank = float(m[1]), float(m[2]), int(m[3])
        if rank == 1:
            chunks.append([])
        assert (start, end) == (2.0 * (len(chunks) - 1), 2.0 * len(chunks)) and rank == len(chunks[-1]) + 1
        chunks[-1].append((m[4].rstrip(), float(m[5])))
    return chunks


def assert_chunks_equal(chunks, expected: torch.Tensor, top_k: int = 3) -> None:
    assert len(chunks) == expected.shape[0]
    for got, probs in zip(chunks, expected):
        values, idx = probs.topk(top_k)
        assert [v for _, v in got] == pytest.approx(values.tolist(), abs=1.5e-4)
        assert all(abs(float(probs[NAMES.index(n)]) - v) <= 1.5e-4 for n, v in got)


def test_sat_and_ast_tag_jfk(ckpts, capsys, one_thread):
    need(JFK.is_file(), f"{JFK} (real test audio)")
    wav = torch.from_numpy(load_media_audio(JFK))
    # SAT by registry name: one clip-level segment, JSON of Whisper-AT's shape without a transcript
    code, out, _ = run_cli(capsys, JFK, "--model", "sat-t-2s", "--checkpoint", ckpts["sat-t-2s"], "--json")
    record = json.loads(out)
    assert code == 0 and set(record) == {"file", "text", "language", "segments"}
    assert record["text"] is None and record["language"] is None and record["file"] == str(JFK)
    [segment] = record["segments"]
    assert (segment["start"], segment["end"]) == (0.0, 11.0) and len(segment["tags"]) == 3
    with torch.no_grad():
        probs = SAT.from_checkpoint(ckpts["sat-t-2s"])(wav[None])[0]
    values, idx = probs.topk(3)
    assert [n for n, _ in segment["tags"]] == [NAMES[i] for i in idx]
    assert [v for _, v in segment["tags"]] == pytest.approx(values.tolist(), abs=1e-4)
    # AST by path (128 frames = 1.28 s): 1098 frames -> 9 windows, the first equal to the original's input
    code, out, _ = run_cli(capsys, JFK, "--model", ckpts["ast"], "--json", "--top-k", "2")
    segments = json.loads(out)["segments"]
    assert code == 0 and len(segments) == math.ceil(1098 / 128) == 9
    assert [s["start"] for s in segments[:2]] == [0.0, 1.28] and segments[-1]["end"] == 11.0
    model = AST.from_checkpoint(ckpts["ast"])
    with torch.no_grad():
        first = model(ast_input(wav, target_length=128)[None])[0].sigmoid()
    assert [v for _, v in segments[0]["tags"]] == pytest.approx(first.topk(2).values.tolist(), abs=1e-4)


def test_ast_by_registry_name_from_a_released_file(ckpts, tmp_path, capsys, one_thread):
    """Text output: one line per 10.24-s window (11 s: two), --top-k probabilities each."""
    sf.write(tmp_path / "n.wav", np.random.default_rng(3).standard_normal(176000).astype(np.float32) * 0.1, 16000)
    code, out, _ = run_cli(capsys, tmp_path / "n.wav", "--model", "ast-tiny224", "--checkpoint",
                           ckpts["ast-tiny224"], "--top-k", "4")
    lines = out.splitlines()
    assert code == 0 and lines[0] == f"{tmp_path / 'n.wav'}:" and len(lines) == 3
    assert lines[1].split()[:3] == ["0.0-", "10.2", "s"] and lines[2].split()[:3] == ["10.2-", "11.0", "s"]
    assert all(len(re.findall(r"\(\d\.\d{4}\)", line)) == 4 for line in lines[1:])


def test_ast_windows_pad_the_last_one_like_a_short_clip(ckpts, one_thread):
    model = AST.from_checkpoint(ckpts["ast"])
    wav = torch.randn(16000 * 2) * 0.1 + 0.05  # 198 frames: windows of 128 frames, the 2nd padded
    probs, spans = ast_window_probs(model, wav)
    assert spans == [(0.0, 1.28), (1.28, 2.0)]
    fbank = ast_input(wav, target_length=256)  # the same fbank padded to two windows, normalised
    with torch.no_grad():
        expected = model(fbank.reshape(2, 128, 128)).sigmoid()
    assert torch.allclose(probs, expected, atol=1e-6)
    esc, _ = ast_window_probs(model, wav, parse_norm_stats("esc50"))  # --norm-stats esc50
    with torch.no_grad():
        assert torch.allclose(esc[0], model(ast_input(wav, 128, stats="esc50")[None])[0].sigmoid(), atol=1e-6)


def test_an_8khz_file_is_resampled_with_one_notice(ckpts, tmp_path, capsys, one_thread):
    t = np.arange(8000 * 5) / 8000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.random.default_rng(0).standard_normal(t.size))
    sf.write(tmp_path / "tone8k.wav", audio.astype(np.float32), 8000, subtype="PCM_16")
    code, out, err = run_cli(capsys, tmp_path / "tone8k.wav", "--model", ckpts["sat"], "--stream")
    assert code == 0 and err.count("resampled to 16000 Hz") == 1 and "8000 Hz" in err
    read, _ = sf.read(tmp_path / "tone8k.wav", dtype="float32")
    wav = torch.from_numpy(resample_to_16k(read * 32768, 8000) / 32768)
    expected = stream(SAT.from_checkpoint(ckpts["sat"]), wav, 32000)
    chunks = parse_stream(out)
    assert len(chunks) == 3 and out.startswith(f"===== {str(tmp_path / 'tone8k.wav'):^20} =====\n")
    assert_chunks_equal(chunks, expected)
    code, out, err = run_cli(capsys, tmp_path / "tone8k.wav", "--model", ckpts["ast"], "--json")
    segments = json.loads(out)["segments"]
    assert code == 0 and len(segments) == math.ceil((1 + (80000 - 400) // 160) / 128)
    assert all(len(s["tags"]) == 10 for s in segments)  # AST's default: the top 10, as its inference.py


def test_stream_from_a_pipe_is_printed_chunk_by_chunk(ckpts, tmp_path, one_thread):
    """Raw s16le PCM on stdin: the first chunk's lines come out before the pipe is closed; 6.1 s in
    2-s chunks gives floor(6.1 / 2) = 3 chunks (the 0.1-s tail holds no patch), equal to stream()."""
    rng = np.random.default_rng(1)
    ints = (np.sin(np.arange(97600) * 0.05) * 8000 + rng.standard_normal(97600) * 1000).astype("<i2")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # the command must flush itself
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "whisper_flamingo.cli", "--log-level", "ERROR", "tag", "-",
                             "--model", str(ckpts["sat"]), "--stream", "--chunk", "2.0"], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False)
    first: list[bytes] = []
    reader = threading.Thread(target=lambda: first.extend(proc.stdout.readline() for _ in range(5)))
    reader.start()
    proc.stdin.write(ints[:32000].tobytes())  # exactly one chunk, pipe kept open
    proc.stdin.flush()
    reader.join(timeout=60)
    assert not reader.is_alive(), "the first chunk was not printed while the pipe stayed open"
    rest, err = proc.communicate(ints[32000:].tobytes(), timeout=120)
    assert proc.returncode == 0, err.decode()
    text = b"".join(first + [rest]).decode()
    assert text.startswith("=====          -           =====\n[0.0s]-[2.0s] Topk-1 ")
    chunks = parse_stream(text)
    wav = torch.from_numpy(ints.astype(np.float32) / 32768)
    expected = stream(SAT.from_checkpoint(ckpts["sat"]), wav, 32000)
    assert len(chunks) == math.floor(6.1 / 2.0) == expected.shape[0]
    assert_chunks_equal(chunks, expected)


def test_memory_carries_over_between_files_unless_reset(ckpts, tmp_path, capsys, one_thread):
    rng = np.random.default_rng(2)
    clips = [(rng.standard_normal(16000 * 4) * 0.1).astype(np.float32) for _ in range(2)]
    for i, clip in enumerate(clips):
        sf.write(tmp_path / f"c{i}.wav", clip, 16000, subtype="FLOAT")
    model = SAT.from_checkpoint(ckpts["sat"])
    a, b = (torch.from_numpy(c) for c in clips)
    first, memory = stream(model, a, 32000, return_cache=True)
    carried, alone = stream(model, b, 32000, cache=memory), stream(model, b, 32000)
    for flag, second in ((), carried), (("--reset-memory",), alone):
        code, out, _ = run_cli(capsys, tmp_path / "c0.wav", tmp_path / "c1.wav", "--model", ckpts["sat"], "--stream",
                               "--json", "--top-k", "527", *flag)
        records = [json.loads(line) for line in out.splitlines()]
        files = [str(tmp_path / "c0.wav")] * 2 + [str(tmp_path / "c1.wav")] * 2
        assert code == 0 and [r["file"] for r in records] == files
        assert all(set(r) == {"file", "text", "language", "segments"} and r["text"] is None for r in records)
        assert [(r["segments"][0]["start"], r["segments"][0]["end"]) for r in records] == [(0, 2), (2, 4)] * 2
        for r, probs in zip(records, torch.cat([first, second])):
            got = torch.tensor([dict(r["segments"][0]["tags"])[n] for n in NAMES])
            assert torch.allclose(got, probs, atol=1e-4)
    assert not torch.allclose(carried[0], alone[0], atol=1e-3)  # the carry-over is visible


def test_bad_checkpoints_and_wrong_families_are_one_line_errors(ckpts, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    sf.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    wav = tmp_path / "a.wav"
    cases = [
        ((wav, "--model", "sat-t-2s", "--checkpoint", tmp_path / "junk.pt"), "junk.pt: "),
        ((wav, "--model", tmp_path / "junk.pt"), "junk.pt: "),
        ((wav, "--model", "sat-t-2s", "--checkpoint", ckpts["ast"]), "holds an AST checkpoint, but --model sat-t-2s"),
        ((wav, "--model", "ast-tiny224", "--checkpoint", ckpts["sat"]), "holds a SAT / SAT ViT checkpoint"),
        ((wav, "--model", "sat-t-2s", "--checkpoint", ckpts["sat"]), "different architecture than model 'sat-t-2s'"),
        ((wav, "--model", "sat-t-2s"), "pass its weights as --checkpoint PATH"),
        ((wav, "--model", ckpts["ast"], "--stream"), "--stream needs a SAT model"),
        ((wav, "--model", "sat-t-9s", "--checkpoint", ckpts["sat"]), "unknown model 'sat-t-9s'"),
        ((wav, "--model", ckpts["sat"], "--labels", tmp_path / "none.csv"), "none.csv: cannot read the label CSV"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), (argv, err)
        assert message in err, (argv, err)


def test_offline_vit_counts_every_full_piece():
    """README: a clip that is an exact multiple of the ViT's length is the mean of all its pieces (upstream
    drops the last one)."""
    torch.manual_seed(7)
    vit = build_sat(embed_dim=32, depth=2, num_heads=2, target_length=32, cache_length=0, streaming=False,
                    pad_last=True).eval()
    lm = torch.randn(1, 64, 96) * 10 - 20
    with torch.no_grad():
        x = vit._normalised(lm)
        pieces = torch.stack([vit._head(vit.forward_features(x[..., i:i + 32])) for i in (0, 32, 64)])
        assert torch.allclose(vit.forward_spectrogram(lm), pieces.mean(0), atol=1e-6)
        assert not torch.allclose(vit.forward_spectrogram(lm), pieces[:2].mean(0), atol=1e-4)


def test_labels_csv_and_probability_threshold(ckpts, tmp_path, capsys, one_thread):
    sf.write(tmp_path / "a.wav", np.random.default_rng(4).standard_normal(32000).astype(np.float32) * 0.1, 16000)
    rows = "".join(f'{i},/m/x{i},"class {i}, renamed"\n' for i in range(527))
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n" + rows)
    code, out, _ = run_cli(capsys, tmp_path / "a.wav", "--model", ckpts["sat"], "--json", "--labels",
                           tmp_path / "labels.csv", "--top-k", "527")
    tags = json.loads(out)["segments"][0]["tags"]
    assert code == 0 and len(tags) == 527 and all(re.fullmatch(r"class \d+, renamed", n) for n, _ in tags)
    middle = sorted(v for _, v in tags)[263]
    code, out, _ = run_cli(capsys, tmp_path / "a.wav", "--model", ckpts["sat"], "--json", "--top-k", "527",
                           "--threshold", str(middle))
    kept = json.loads(out)["segments"][0]["tags"]
    assert code == 0 and 0 < len(kept) < 527 and all(v > middle for _, v in kept)
    code, out, _ = run_cli(capsys, tmp_path / "a.wav", "--model", ckpts["sat"], "--threshold", "1")
    assert code == 0 and out.splitlines()[1].endswith("s  -")
