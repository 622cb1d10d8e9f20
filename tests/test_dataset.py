"""SpeechDataset (tokens, noise, determinism, bad samples), collate, and the data module."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from corpus_utils import make_tiny_corpus, tiny_config
from lightning.fabric.utilities.data import _set_sampler_epoch

from whisper_flamingo.data.audio import load_audio, log_mel, to_unit_range
from whisper_flamingo.data.datamodule import AV_EVAL_ORDER, EpochBatchSampler, MuavicDataModule
from whisper_flamingo.data.dataset import BadItem, SpeechDataset, TokenizerFactory, collate
from whisper_flamingo.data.manifest import load_split, manifest_spec, read_manifest, resolve_selection
from whisper_flamingo.data.noise import NoiseBank
from whisper_flamingo.errors import DataError

SOT, EOT, EN, ES, TRANSCRIBE, TRANSLATE, NOTS = 50258, 50257, 50259, 50262, 50359, 50358, 50363


@pytest.fixture(scope="module")
def records(tiny_corpus):
    return load_split(tiny_config(tiny_corpus), "train").records


@pytest.fixture(scope="module")
def bank(tiny_corpus):
    return NoiseBank.from_list(tiny_corpus / "noise" / "train.tsv")


def _ds(records, **kw):
    kw.setdefault("noise_prob", 1.0)
    return SpeechDataset(records, TokenizerFactory(True), 80, **kw)


# ---------------------------------------------------------------------------- tokens
def test_tokens_transcribe(records):
    ds = _ds(records)
    item = ds[0]
    text_ids = ds.tokenizer_factory("en", "transcribe").encode(" " + records[0].text)
    assert item["prompt"] == [SOT, EN, TRANSCRIBE, NOTS]
    assert item["dec_input"] == [SOT, EN, TRANSCRIBE, NOTS] + text_ids
    assert item["labels"] == [EN, TRANSCRIBE, NOTS] + text_ids + [EOT]
    assert ds.pad_token == EOT


def test_tokens_en_x_and_x_en(tiny_corpus):
    # the tiny corpus holds en and es only: read the Spanish file of the multi_en-st selection
    spec = manifest_spec(resolve_selection("multi_en-st"), "es", "test", tiny_corpus)
    ds = _ds(read_manifest(spec)[:1])
    assert ds[0]["prompt"] == [SOT, ES, TRANSCRIBE, NOTS]
    x_en = load_split(tiny_config(tiny_corpus, lang="es", whisper_task="X-En"), "test").records
    item = _ds(x_en[:1])[0]
    assert item["prompt"] == [SOT, ES, TRANSLATE, NOTS] and item["task"] == "translate"


def test_tokens_english_only_and_v3(records):
    ds = SpeechDataset(records[:1], TokenizerFactory(False), 80)
    item = ds[0]
    assert item["prompt"] == [50257, 50362]  # <|startoftranscript|><|notimestamps|> (GPT-2 vocab)
    assert item["labels"][-1] == 50256 and ds.pad_token == 50256
    v3 = SpeechDataset(records[:1], TokenizerFactory(True, num_languages=100), 128)
    it = v3[0]
    assert it["prompt"] == [SOT, EN, 50360, 50364] and it["mel"].shape[0] == 128


def test_text_with_special_token_text_is_plain(records):
    rec = records[0].__class__(**{**records[0].__dict__, "text": "say <|endoftext|> now"})
    item = _ds([rec])[0]
    assert EOT not in item["dec_input"]


# ---------------------------------------------------------------------------- audio, noise
def test_clean_sample_matches_direct_computation(records):
    ds = _ds(records, noise=None)
    item = ds[3]
    audio = to_unit_range(load_audio(records[3].audio_path))
    torch.testing.assert_close(item["mel"], log_mel(audio, 80))
    assert item["mel_frames"] == records[3].n_samples // 160 == item["mel"].shape[1]
    assert item["n_samples"] == records[3].n_samples


def test_noise_prob(records, bank):
    clean = _ds(records, noise=None)[2]["mel"]
    noisy = _ds(records, noise=bank, snr=0, noise_prob=1.0)[2]["mel"]
    never = _ds(records, noise=bank, snr=0, noise_prob=0.0)[2]["mel"]
    assert not torch.allclose(clean, noisy)
    torch.testing.assert_close(clean, never)
    half, plain = _ds(records, noise=bank, snr=0, noise_prob=0.5), _ds(records, noise=None)
    noisy_count = sum(not torch.allclose(half[i]["mel"], plain[i]["mel"]) for i in range(len(records)))
    assert 0 < noisy_count < len(records)


def test_determinism_per_seed_epoch_index(records, bank):
    kw = dict(noise=bank, snr=[-5, 5], noise_offset="random", spec_augment="ls-double", seed=7)
    a, b = _ds(records, **kw), _ds(records, **kw)
    order = [5, 1, 3]
    first = {i: a[(2, i)]["mel"] for i in order}
    for i in reversed(order):  # other order, other instance
        torch.testing.assert_close(b[(2, i)]["mel"], first[i])
    b.set_epoch(2)
    torch.testing.assert_close(b[1]["mel"], first[1])
    assert not torch.allclose(a[(3, 1)]["mel"], first[1])  # another epoch: other noise/masks
    c = _ds(records, **{**kw, "seed": 8})
    assert not torch.allclose(c[(2, 1)]["mel"], first[1])


def test_spec_augment_only_when_asked(records):
    plain = _ds(records, noise=None)[4]["mel"]
    masked = _ds(records, noise=None, spec_augment="ls-double", seed=1)
    diffs = [not torch.equal(masked[(e, 4)]["mel"], plain) for e in range(5)]
    assert any(diffs)
    for e in range(5):
        m = masked[(e, 4)]["mel"]
        changed = m != plain
        assert torch.all(m[changed] == 0)


def test_pad_to_30s(records):
    item = SpeechDataset(records[:1], TokenizerFactory(True), 80, pad_to_30s=True)[0]
    assert item["mel"].shape == (80, 3000) and item["mel_frames"] == 3000


# ---------------------------------------------------------------------------- bad samples
def test_bad_sample_error_and_skip(tmp_path, caplog):
    root = make_tiny_corpus(tmp_path, 4, 2, 2, noise=False)
    recs = load_split(tiny_config(root), "train").records
    Path(recs[1].audio_path).unlink()
    with pytest.raises(DataError) as exc:
        _ds(recs, noise=None)[1]
    assert exc.value.reason == "missing_file" and recs[1].audio_path in str(exc.value)
    assert recs[1].where in str(exc.value)
    ds = _ds(recs, noise=None, on_bad_sample="skip")
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(4)]
    assert isinstance(items[1], BadItem) and items[1].reason == "missing_file"
    batch = collate(items)
    assert batch["mel"].shape[0] == 3 and batch["bad"] == [(recs[1].id, "missing_file")]
    empty = collate([items[1]])
    assert empty["mel"].shape == (0, 80, 0) and empty["dec_input"].shape == (0, 0)
    assert empty["mel_frames"].shape == (0,) and empty["bad"] == [(recs[1].id, "missing_file")]


# ---------------------------------------------------------------------------- collate
def test_collate_shapes_and_padding(records):
    ds = _ds(records, noise=None)
    items = [ds[i] for i in (0, 1, 2)]
    batch = collate(items)
    t_max = max(it["mel"].shape[1] for it in items)
    l_max = max(len(it["dec_input"]) for it in items)
    assert batch["mel"].shape == (3, 80, t_max) and batch["mel"].dtype == torch.float32
    assert batch["dec_input"].shape == batch["labels"].shape == (3, l_max)
    assert batch["dec_input"].dtype == batch["labels"].dtype == torch.long
    for i, it in enumerate(items):
        t, n = it["mel"].shape[1], len(it["dec_input"])
        torch.testing.assert_close(batch["mel"][i, :, :t], it["mel"])
        assert torch.all(batch["mel"][i, :, t:] == 0.0)
        assert batch["dec_input"][i, :n].tolist() == it["dec_input"]
        assert torch.all(batch["dec_input"][i, n:] == EOT)
        assert batch["labels"][i, :n].tolist() == it["labels"]
        assert torch.all(batch["labels"][i, n:] == -100)
        assert batch["mel_frames"][i] == t and batch["n_samples"][i] == records[i].n_samples
    assert batch["prompts"] == [[SOT, EN, TRANSCRIBE, NOTS]] * 3
    assert batch["ids"] == [r.id for r in records[:3]] and batch["langs"] == ["en"] * 3
    assert batch["texts"] == [r.text for r in records[:3]] and batch["bad"] == []


# ---------------------------------------------------------------------------- data module
@pytest.fixture(scope="module")
def dm(tiny_corpus):
    m = MuavicDataModule(tiny_config(tiny_corpus, spec_augment="ls-basic"), n_mels=80, multilingual=True)
    m.setup("fit")
    return m


def test_datamodule_val_loaders(dm):
    assert dm.val_names == ["val_noisy_multi_babble", "val", "test_noisy_multi_babble", "test"]
    loaders = dm.val_dataloader()
    assert len(loaders) == 4
    ids = []
    for name, dl in zip(dm.val_names, loaders):
        batches = list(dl)
        seen = [i for b in batches for i in b["ids"]]
        assert sorted(seen) == sorted(r.id for r in dm.eval_datasets[name].records)
        lens = [b["n_samples"].max().item() for b in batches]
        assert lens == sorted(lens, reverse=True)  # longest batches first
        ids.append(batches)
    # noisy and clean val hold the same utterances, the noisy mels differ, deterministically
    noisy, clean = ids[0][0], ids[1][0]
    assert noisy["ids"] == clean["ids"] and not torch.allclose(noisy["mel"], clean["mel"])
    torch.testing.assert_close(next(iter(dm.val_dataloader()[0]))["mel"], noisy["mel"])


def test_datamodule_stage2_order_and_no_noise(tiny_corpus, caplog):
    m = MuavicDataModule(tiny_config(tiny_corpus), 80, True, eval_order=AV_EVAL_ORDER, noise_name="en_babble")
    m.setup()
    assert m.val_names == ["test_noisy_en_babble", "test", "val_noisy_en_babble", "val"]
    cfg = tiny_config(tiny_corpus, noise_fn="", noise_fn_val="", noise_fn_test="")
    with caplog.at_level(logging.WARNING):
        m = MuavicDataModule(cfg, 80, True)
        m.setup()
    assert m.val_names == ["val", "test"] and len(m.val_dataloader()) == 2
    assert m.train_dataset.noise is None
    assert any("noise_fn" in r.getMessage() for r in caplog.records)


def test_datamodule_train_epoch_wiring(dm):
    dl = dm.train_dataloader()
    assert isinstance(dl.batch_sampler, EpochBatchSampler)
    _set_sampler_epoch(dl, 3)  # what Lightning's fit loop calls each epoch
    assert dm.train_sampler.epoch == 3 and dm.train_dataset.epoch == 3
    keys = list(dl.batch_sampler)
    assert all(k[0] == 3 for b in keys for k in b)
    assert len(keys) == len(dm.train_sampler) == len(dl)
    bins = int(dm.cfg.audio_max_length * dm.cfg.batch_size)
    lens = dm.train_dataset.lengths
    for b in keys:  # batch_bins rule: only the closing item may exceed the budget
        assert len(b) == 1 or (len(b) - 1) * max(lens[i] for _, i in b[1:]) <= bins
    batch = next(iter(dl))
    first = keys[0]
    expected = dm.train_dataset[first[0]]
    assert batch["ids"][0] == expected["id"]
    torch.testing.assert_close(batch["mel"][0, :, : expected["mel_frames"]], expected["mel"])
    _set_sampler_epoch(dl, 4)
    assert list(dl.batch_sampler) != keys


def test_datamodule_worker_sees_epoch(dm):
    dm.cfg.num_worker = 1
    try:
        dl = dm.train_dataloader()
        _set_sampler_epoch(dl, 5)
        batch = next(iter(dl))
    finally:
        dm.cfg.num_worker = 0
    key = next(iter(dl.batch_sampler))[0]
    assert key[0] == 5
    expected = dm.train_dataset[key]
    torch.testing.assert_close(batch["mel"][0, :, : expected["mel_frames"]], expected["mel"])


def test_datamodule_resume_mid_epoch(tiny_corpus):
    cfg = tiny_config(tiny_corpus, batch_size=0.5)
    a = MuavicDataModule(cfg, 80, True)
    a.setup()
    dl = a.train_dataloader()
    _set_sampler_epoch(dl, 1)
    full = [tuple(k for k in b) for b in dl.batch_sampler]
    assert len(full) >= 4
    it = iter(dl.batch_sampler)
    next(it), next(it)
    a.train_sampler.set_consumed(2)
    state = a.state_dict()
    assert state["train_sampler"]["epoch"] == 1 and state["train_sampler"]["consumed"] == 2
    b = MuavicDataModule(cfg, 80, True)
    b.load_state_dict(state)  # before setup: kept until setup
    b.setup()
    dl2 = b.train_dataloader()
    _set_sampler_epoch(dl2, 1)
    rest = [tuple(k for k in batch) for batch in dl2.batch_sampler]
    assert rest == full[2:]
    assert [tuple(batch) for batch in dl2.batch_sampler] == full  # the epoch after resume is whole


def test_datamodule_ranks(tiny_corpus):
    m = MuavicDataModule(tiny_config(tiny_corpus, batch_size=0.5), 80, True)
    m.setup()  # before a trainer is attached (as the train command does)
    assert (m.train_sampler.num_replicas, m.train_sampler.rank) == (1, 0)
    m.trainer = SimpleNamespace(world_size=2, global_rank=1)
    m.setup("fit")  # the Trainer's own call: the sampler follows its ranks
    assert (m.train_sampler.num_replicas, m.train_sampler.rank) == (2, 1)
    keys1 = [k for b in m.train_dataloader().batch_sampler for k in b]
    m.trainer = SimpleNamespace(world_size=2, global_rank=0)
    keys0 = [k for b in m.train_dataloader().batch_sampler for k in b]
    assert len(keys0) and len(keys1) and not set(keys0) & set(keys1)  # disjoint shares
    assert m.bad_counts == {}


def test_datamodule_skip_counts(tmp_path):
    root = make_tiny_corpus(tmp_path, 6, 2, 2)
    recs = load_split(tiny_config(root), "train").records
    Path(recs[0].audio_path).unlink()
    with pytest.raises(DataError, match="missing_file|does not exist"):
        MuavicDataModule(tiny_config(root), 80, True).setup()
    m = MuavicDataModule(tiny_config(root, on_bad_sample="skip"), 80, True)
    m.setup()
    assert m.bad_counts == {"missing_file": 1} and len(m.train_dataset) == 5
    np.testing.assert_array_equal(sorted(m.train_dataset.lengths), sorted(r.n_samples for r in recs[1:]))


def test_lightning_fit_epochs_and_mid_epoch_resume(tiny_corpus, tmp_path):
    """A real Trainer: set_epoch reaches the sampler and the dataset; a mid-epoch checkpoint resumes
    with exactly the remaining batches of that epoch."""
    import lightning as L

    seen: list[tuple[int, int, tuple[str, ...]]] = []

    class Task(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, i):
            dm = self.trainer.datamodule
            seen.append((self.current_epoch, dm.train_dataset.epoch, tuple(batch["ids"])))
            dm.train_sampler.set_consumed(i + 1)
            return (self.w * batch["mel"].mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Crash(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
            if trainer.global_step == 4:
                raise RuntimeError("simulated crash")

    def trainer(**kw):
        return L.Trainer(use_distributed_sampler=False, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, accelerator="cpu", **kw)

    cfg = tiny_config(tiny_corpus, batch_size=0.5, noise_fn_val="", noise_fn_test="")
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(max_epochs=2, callbacks=[Crash()]).fit(Task(), datamodule=MuavicDataModule(cfg, 80, True))
    before = [ids for _, _, ids in seen[:3]]
    seen.clear()
    trainer(max_epochs=2).fit(Task(), datamodule=MuavicDataModule(cfg, 80, True),
                              ckpt_path=tmp_path / "mid.ckpt")
    ref = MuavicDataModule(cfg, 80, True)
    ref.setup()
    dl = ref.train_dataloader()
    per_epoch = []
    for epoch in (0, 1):
        _set_sampler_epoch(dl, epoch)
        per_epoch.append([tuple(ref.train_dataset.records[i].id for _, i in b) for b in dl.batch_sampler])
    resumed0 = [ids for e, _, ids in seen if e == 0]
    assert before + resumed0 == per_epoch[0]
    assert [ids for e, _, ids in seen if e == 1] == per_epoch[1]
    assert all(e == de for e, de, _ in seen)  # the dataset's epoch follows the trainer's
