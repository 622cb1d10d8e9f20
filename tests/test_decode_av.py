"""Audio-visual decoding (``--modalities asr|avsr|vsr``) of Whisper-Flamingo checkpoints.

With the gates at 0 every modality that keeps the audio decodes exactly like the stage-1 Whisper; with
open gates the cached search (video keys/values computed once per utterance) equals a search that
recomputes the whole decoder at every step, the video changes the result, and bad videos follow
``on_bad_sample``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints import build_stage2_model, load_stage2_checkpoint, save_openai_checkpoint
from whisper_flamingo.config import load_config
from whisper_flamingo.decoding.conditions import condition_dir, conditions
from whisper_flamingo.decoding.runner import DecodeSettings, run_decode
from whisper_flamingo.decoding.search import SearchOptions, decode_batch
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.whisper import Whisper

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


def _random_whisper() -> Whisper:
    torch.manual_seed(0)
    model = Whisper(DIMS)
    for name, p in model.named_parameters():  # spread-out logits: hypotheses of several tokens
        if p.ndim > 1:
            torch.nn.init.normal_(p, std=0.3 if "token_embedding" not in name else 1.0)
    return model


def _save_stage2(path: Path, whisper: Whisper, gate: float, root: Path) -> Path:
    """A stage-2 checkpoint in the layout the training task writes (Lightning state_dict + hparams)."""
    cfg = load_config(None, [f"model_name={root / 'w.pt'}", "add_gated_x_attn=1", "av_fusion=separate",
                             "use_av_hubert_encoder=true", "video_model_config=tiny", "freeze_video_model=false"])
    torch.manual_seed(1)
    model = build_stage2_model(cfg, whisper)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(gate)
            elif ".gated_x_attn." in name and p.ndim > 1:
                torch.nn.init.normal_(p, std=0.5)
        model.encoder.video_projection_scalar.fill_(3.0)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"dims": asdict(DIMS), "config": cfg.to_dict()}}, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("av_models")
    whisper = _random_whisper()
    save_openai_checkpoint(root / "w.pt", DIMS, whisper.state_dict())
    return {"audio": root / "w.pt", "closed": _save_stage2(root / "closed.ckpt", whisper, 0.0, root),
            "open": _save_stage2(root / "open.ckpt", whisper, 1.5, root)}


def _settings(root: Path, ckpt: Path, out: Path, modalities: list[str], **kw) -> DecodeSettings:
    base = dict(langs=["en"], model_type="tiny", checkpoint_path=str(ckpt), muavic_root=str(root),
                noise_snrs=[0.0], noise_fns=[str(root / "noise" / "test.tsv")], decode_path=str(out),
                modalities=modalities, batch_bins=48000, device="cpu", search=SearchOptions(max_new_tokens=10))
    base.update(kw)
    return DecodeSettings(**base)


def _hyps(summaries: list[dict], settings: DecodeSettings) -> dict[str, list[str]]:
    out = {}
    for cond in conditions(settings):
        rows = [json.loads(x) for x in (condition_dir(settings, cond) / "utterances.jsonl").read_text().splitlines()]
        out[cond.modality] = [r["hyp"] for r in sorted(rows, key=lambda r: r["index"])]
        assert {r["modality"] for r in rows} == {cond.modality}
    assert [s["modality"] for s in summaries] == settings.modalities
    return out


def test_closed_gates_decode_like_the_stage1_model(tiny_video_corpus, models, tmp_path):
    audio = run_decode(_settings(tiny_video_corpus, models["audio"], tmp_path / "a", ["asr"]))
    ref = _hyps(audio, _settings(tiny_video_corpus, models["audio"], tmp_path / "a", ["asr"]))["asr"]
    s = _settings(tiny_video_corpus, models["closed"], tmp_path / "av", ["asr", "avsr", "vsr"])
    got = _hyps(run_decode(s), s)
    assert any(len(h.split()) > 1 for h in ref)
    assert got["asr"] == ref and got["avsr"] == ref  # gates at 0: the video changes nothing
    assert got["vsr"] != ref  # no audio: something else


def test_open_gates_cached_search_equals_full_recompute(tiny_video_corpus, models, tmp_path):
    s = _settings(tiny_video_corpus, models["open"], tmp_path / "av", ["asr", "avsr", "vsr"])
    summaries = run_decode(s)
    got = _hyps(summaries, s)
    assert got["avsr"] != got["asr"]  # the video is read
    assert summaries[1]["provenance"]["architecture"] == "whisper-flamingo"

    # the runner's batches, decoded again without any cache: the decoder recomputed over the whole prefix
    from whisper_flamingo.data.dataset import Collator, SpeechDataset, TokenizerFactory
    from whisper_flamingo.decoding.runner import load_records

    model = load_stage2_checkpoint(models["open"])
    records = load_records(s, "en")
    ds = SpeechDataset(records, TokenizerFactory(False, 0), load_video=True)
    batch = Collator(ds.pad_token, 80, video="frames")([ds[(0, i)] for i in range(len(records))])
    xa, xv = model.encode(batch["mel"], batch["video"], batch["video_padding_mask"], "av")
    tok = TokenizerFactory(False, 0)("en", "transcribe")
    opts = SearchOptions(max_new_tokens=8, suppress_blank=False, suppress_tokens=None, loop_repeats=0)
    cached = decode_batch(model, None, batch["prompts"], tok, opts, audio_features=xa, xv=xv)
    for i, h in enumerate(cached):
        tokens = torch.tensor([list(batch["prompts"][i])])
        with torch.no_grad():
            for _ in range(len(h.tokens) + 1):
                nxt = model.logits(tokens, xa[i: i + 1], xv=xv[i: i + 1])[0, -1].argmax()
                tokens = torch.cat([tokens, nxt.view(1, 1)], dim=1)
                if nxt.item() == tok.eot:
                    break
        assert tokens[0, len(batch["prompts"][i]):].tolist()[: len(h.tokens)] == h.tokens, i


def test_bad_video_follows_on_bad_sample(tiny_video_corpus, models, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_video_corpus, corpus)
    tsv = corpus / "muavic" / "en" / "test.tsv"
    lines = tsv.read_text().splitlines()
    lines = [lines[0]] + [ln.replace(str(tiny_video_corpus), str(corpus)) for ln in lines[1:]]
    tsv.write_text("\n".join(lines) + "\n")
    victim = Path(corpus, lines[1].split("\t")[1])
    if not victim.is_absolute():
        victim = Path(lines[0]) / victim
    victim.write_bytes(b"not an mp4")
    with pytest.raises(DataError, match=victim.name):
        run_decode(_settings(corpus, models["open"], tmp_path / "e", ["avsr"]))
    summaries = run_decode(_settings(corpus, models["open"], tmp_path / "s", ["avsr"], on_bad_sample="skip"))
    assert summaries[0]["utterances"] == len(lines) - 2 and sum(summaries[0]["skipped"].values()) == 1
    # audio-only decoding of the same model does not read the videos at all
    assert run_decode(_settings(corpus, models["open"], tmp_path / "a", ["asr"]))[0]["utterances"] == len(lines) - 1


def test_released_layout_checkpoint_decodes_through_the_original_command_line(tiny_video_corpus, tmp_path, capsys):
    """A released-style file ({"state_dict": {"model.<key>": tensor}}, ResNet-18 video encoder) decodes avsr."""
    import whisper_decode_video
    from whisper_flamingo.models.flamingo import WhisperFlamingo

    torch.manual_seed(2)
    model = WhisperFlamingo.build(DIMS, use_av_hubert_encoder=False, av_fusion="separate", add_gated_x_attn=1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(1.5)
            elif name.startswith("decoder.") and p.ndim > 1:
                torch.nn.init.normal_(p, std=0.3 if "token_embedding" not in name else 1.0)
    path = tmp_path / "whisper-flamingo_en_tiny.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, path)
    args = ["--lang", "en", "--model-type", "tiny", "--checkpoint-path", str(path), "--muavic-root",
            str(tiny_video_corpus), "--noise-snr", "1000", "--noise-fn", str(tiny_video_corpus / "noise" / "test.tsv"),
            "--use_av_hubert_encoder", "0", "--av_fusion", "separate", "--fp16", "0", "--decode-path",
            str(tmp_path / "out")]
    hyps = {}
    for modality in ("asr", "avsr"):
        assert whisper_decode_video.main([*args, "--modalities", modality]) == 0, capsys.readouterr().err
        pred = next((tmp_path / "out").rglob(f"{modality}/snr-1000/**/pred.txt")).read_text().splitlines()
        hyps[modality] = [ln for ln in pred if ln.startswith("HYPO:")]
        assert len(hyps[modality]) == 3
    assert hyps["avsr"] != hyps["asr"]


def test_av_fusion_none_decodes_the_audio_part_as_the_original(tiny_video_corpus, models, tmp_path):
    """``--av_fusion None`` with a stage-2 checkpoint: the original built an audio-only Whisper and loaded
    the checkpoint non-strictly, i.e. the (frozen) stage-1 model; ``asr`` with open gates zeroes the video."""
    def hyps(ckpt: str, out: str, **kw) -> tuple[list[str], dict]:
        s = _settings(tiny_video_corpus, models[ckpt], tmp_path / out, ["asr"], **kw)
        summaries = run_decode(s)
        return _hyps(summaries, s)["asr"], summaries[0]

    stage1, _ = hyps("audio", "a")
    none, summary = hyps("open", "n", av_fusion="None")
    zeroed, _ = hyps("open", "z")
    assert none == stage1 and zeroed != stage1
    assert summary["provenance"]["architecture"].startswith("whisper (the audio part")
    with pytest.raises(ConfigError, match="--av_fusion None"):
        run_decode(_settings(tiny_video_corpus, models["open"], tmp_path / "x", ["avsr"], av_fusion="None"))


def test_audio_visual_decode_leaves_out_audio_only_rows_and_says_so(tiny_video_corpus, tmp_path, caplog):
    """A manifest row with 0 video frames (audio-only, legitimate for stage 1) is read by an asr decode
    and left out, with a warning naming the manifest, when the decode reads video."""
    from corpus_utils import write_manifest

    from whisper_flamingo.decoding.runner import load_records

    root = tmp_path / "root"
    shutil.copytree(tiny_video_corpus, root)
    tsv, lab = root / "muavic" / "en" / "test.tsv", root / "muavic" / "en" / "test.en"
    lines = tsv.read_text().splitlines()
    rows = [tuple(x.split("\t")) + (t,) for x, t in zip(lines[1:], lab.read_text().splitlines())]
    rows[0] = (rows[0][0], "-", rows[0][2], 0, rows[0][4], rows[0][5])
    write_manifest(tsv, lab, rows, root_line=lines[0])
    asr = _settings(root, tmp_path / "x.pt", tmp_path / "o", ["asr"])
    assert len(load_records(asr, "en")) == len(rows)
    with caplog.at_level("WARNING"):
        av = load_records(_settings(root, tmp_path / "x.pt", tmp_path / "o", ["asr", "avsr"]), "en")
    assert len(av) == len(rows) - 1 and rows[0][0] not in {r.id for r in av}
    assert "1 audio-only rows" in caplog.text and "test.tsv" in caplog.text
