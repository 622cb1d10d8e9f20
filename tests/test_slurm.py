"""The job scripts on a real single-node Slurm cluster (``slurm/local_cluster.sh``, started per module).

(a) ``sbatch slurm/train_audio.sh`` trains a tiny model and writes checkpoints and TensorBoard events;
(b) the same job, sent SIGUSR1 mid-epoch, saves, requeues, restarts with ``SLURM_RESTART_COUNT=1``,
resumes mid-epoch and ends with exactly (a)'s weights; (c) two srun tasks train with DDP (gloo) on
disjoint batches; (d) the decode wrapper's jobs and the dependent results job write the table;
(e) ``whisper-flamingo tensorboard`` serves (a)'s ``val/wer`` on 127.0.0.1.  Slurm (Debian's
``slurm-wlm`` + ``munge``) is installed by the script when missing; the tests skip (fail under
``CI=true``) only where that cannot happen (not root, no apt-get).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from corpus_utils import make_tiny_corpus, tensorboard_scalars
from needs import need
from whisper.model import ModelDimensions

from whisper_flamingo.models.whisper import Whisper

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "slurm" / "local_cluster.sh"
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
STEPS = 12  # 4 batches per epoch: 3 epochs


def _as_root() -> tuple[list[str] | None, str]:
    """How to run the cluster script as root (directly, or through passwordless sudo), or why not."""
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        prefix = ["sudo", "-n"]
    else:
        return None, "root or passwordless sudo (slurm/local_cluster.sh runs slurmd as root)"
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        return None, "Slurm (slurmctld not installed and no apt-get to install slurm-wlm + munge)"
    return prefix, ""


def cluster_script(cluster: dict, action: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """``slurm/local_cluster.sh ACTION`` as root for this test cluster."""
    env = cluster["env"]
    cmd = [*cluster["sudo"], "env", f"WF_SLURM_DIR={env['WF_SLURM_DIR']}", f"WF_SLURM_PORT={env['WF_SLURM_PORT']}",
           "bash", str(SCRIPT), action]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("script, entry", [("train_audio.sh", "whisper_ft_muavic.py"),
                                           ("train_video.sh", "whisper_ft_muavic_video.py")])
def test_train_scripts_run_their_entry_point_from_a_spool_copy(tmp_path, script, entry):
    """No cluster: sbatch runs a copy of the script (so train_common.sh is found from the submit directory);
    a stub srun records what the job would run."""
    (tmp_path / "bin").mkdir()
    stub = tmp_path / "bin" / "srun"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$OMP_NUM_THREADS" "$@" > "$SRUN_ARGS"\n')
    stub.chmod(0o755)
    copy = tmp_path / "spool" / "slurm_script"
    copy.parent.mkdir()
    shutil.copy(ROOT / "slurm" / script, copy)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_JOB_ID": "7",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS_PER_NODE": "4(x2)", "SLURM_CPUS_PER_TASK": "3",
           "PY": "/bin/true", "SRUN_ARGS": str(tmp_path / "args")}
    out = subprocess.run(["bash", str(copy), "c.yaml", "a=1", "b=two words"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "args").read_text().splitlines() == [
        "3", "--kill-on-bad-exit=1", "/bin/true", "-u", entry, "c.yaml", "num_devices=4", "num_nodes=2", "a=1",
        "b=two words"]
    assert "job 7 SLURM_RESTART_COUNT=0 nodes=2 tasks_per_node=4" in out.stdout and "job 7 finished" in out.stdout
    out = subprocess.run(["bash", str(copy)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and f"usage: sbatch slurm/{script} CONFIG.yaml" in out.stderr


@pytest.fixture(scope="module")
def cluster():
    """A local cluster in a folder of its own (port 6827, so a user's cluster on 6817 is left alone)."""
    prefix, what = _as_root()
    need(prefix is not None, what)
    folder = Path(tempfile.mkdtemp(prefix="wf-slurm-test-"))
    folder.chmod(0o755)  # munged (the munge user) must reach its socket
    env = dict(os.environ, WF_SLURM_DIR=str(folder), WF_SLURM_PORT=os.environ.get("WF_SLURM_TEST_PORT", "6827"))
    c = {"env": env, "dir": folder, "sudo": prefix}
    out = cluster_script(c, "start", timeout=600)  # installs slurm-wlm + munge when missing
    assert out.returncode == 0, out.stderr[-3000:]
    env["SLURM_CONF"] = re.search(r"export SLURM_CONF=(\S+)", out.stdout)[1]
    yield c
    cluster_script(c, "stop")
    subprocess.run([*prefix, "rm", "-rf", str(folder)], capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def setup(cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    corpus = make_tiny_corpus(root / "corpus", n_train=12, n_valid=4, n_test=4, seed=3)
    torch.manual_seed(0)
    model = root / "tiny-random.pt"
    torch.save({"dims": asdict(DIMS), "model_state_dict": Whisper(DIMS).state_dict()}, model)
    # jobs inherit the submitter's environment: this Python, this checkout, one thread, logs in root
    env = dict(cluster["env"], PY=sys.executable, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               SBATCH_OUTPUT=str(root / "%x-%j.out"))
    return {"root": root, "corpus": corpus, "model": model, "env": env, "cluster": cluster}


def overrides(s: dict, run: str, **kw) -> list[str]:
    c = s["corpus"]
    values = dict(
        model_name=s["model"], muavic_root=c, lang="en", train_id=run, log_output_dir=s["root"] / "logs",
        check_output_dir=s["root"] / "ckpt", noise_fn=c / "noise/train.tsv", noise_fn_val=c / "noise/valid.tsv",
        noise_fn_test=c / "noise/test.tsv", audio_max_length=32000, batch_size=1.0, val_batch_bins_multiplier=4.0,
        num_worker=0, learning_rate=0.001, warmup_steps=2, num_train_steps=STEPS, validate_every_n_batches=6,
        validate_before_training=False, val_decode=True, limit_val_batches=1, log_every_n_steps=1,
        checkpoint_every_n_steps=4, accelerator="cpu", precision="32", noise_snr_train="[-5, 5]",
        spec_augment="ls-basic", trace_batches_dir=s["root"] / "trace" / run,
    )
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def sbatch(s: dict, *args: str, env: dict | None = None) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], cwd=ROOT, env=env or s["env"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def job(s: dict, jid: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (finished jobs are kept MinJobAge=600 s)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", jid], env=s["env"], capture_output=True, text=True,
                         timeout=30).stdout
    return dict(re.findall(r"(\w+)=(\S*)", out))


def log_of(s: dict, jid: str) -> str:
    return "\n".join(p.read_text(errors="replace") for p in s["root"].glob(f"*-{jid}.out"))


def diag(s: dict, jid: str) -> str:
    """The job's log tail and what slurmctld logged about it (for failure messages)."""
    ctld = s["cluster"]["dir"] / "slurmctld.log"
    lines = [line for line in ctld.read_text(errors="replace").splitlines() if f"JobId={jid} " in line + " "] \
        if ctld.is_file() else []
    info = job(s, jid)
    state = {k: info.get(k) for k in ("JobState", "Reason", "Restarts", "ExitCode", "Requeue")}
    return f"{state}\n{log_of(s, jid)[-2500:]}\n--- slurmctld:\n" + "\n".join(lines[-15:])


def node_idle(s: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%t"], env=s["env"], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    return out == "idle"


def wait(s: dict, jid: str, timeout: float = 240, hurry_requeue: bool = False) -> dict[str, str]:
    """Wait until the job ends.  ``hurry_requeue``: a requeued job pending on its ~2-min begin time is
    started at once, but only when the node is idle and 2 s have passed (Slurm's delay lets the old
    run's processes go; a restart launched while they linger can fail)."""
    deadline, pending_since = time.time() + timeout, None
    while time.time() < deadline:
        info = job(s, jid)
        state = info.get("JobState", "")
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            return info
        if hurry_requeue and state == "PENDING" and info.get("Reason") == "BeginTime":
            pending_since = pending_since or time.time()
            if time.time() - pending_since >= 2 and node_idle(s):
                subprocess.run(["scontrol", "update", f"JobId={jid}", "StartTime=now"], env=s["env"], timeout=30)
        time.sleep(0.5)
    subprocess.run(["scancel", jid], env=s["env"], timeout=30)
    pytest.fail(f"job {jid} did not end in {timeout} s:\n{diag(s, jid)}")


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def trace(s: dict, run: str, rank: int = 0) -> list[list[str]]:
    path = s["root"] / "trace" / run / f"rank{rank}.txt"
    return [line.split("\t") for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.fixture(scope="module")
def plain_run(setup) -> dict:
    """(a)'s job: train_audio.sh as it is, uninterrupted (also the reference of the pre-empted run)."""
    jid = sbatch(setup, "--cpus-per-task=1", "slurm/train_audio.sh", "config/audio/demo.yaml",
                 *overrides(setup, "plain"))
    return {"id": jid, "info": wait(setup, jid)}


def test_a_train_job_completes_with_checkpoints_and_tensorboard_events(setup, plain_run):
    jid, info = plain_run["id"], plain_run["info"]
    log = log_of(setup, jid)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert info["Restarts"] == "0" and "SLURM_RESTART_COUNT=0" in log
    ckpts = setup["root"] / "ckpt" / "plain"
    assert (ckpts / "last.ckpt").is_file() and (ckpts / "config.yaml").is_file()
    assert any(p.name.startswith("step-") for p in ckpts.iterdir())
    assert final_weights(ckpts / "last.ckpt") and torch.load(ckpts / "last.ckpt", weights_only=False)[
        "global_step"] == STEPS
    logs = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "plain")
    assert len(logs["train/loss"]) >= STEPS - 1 and len(logs["val/wer"]) == 2
    assert f"training finished at step {STEPS}" in log
    # the job completion log stands in for sacct (no slurmdbd)
    comp = (setup["cluster"]["dir"] / "jobcomp.txt").read_text()
    assert re.search(rf"JobId={jid} .*JobState=COMPLETED", comp)


def test_b_sigusr1_mid_epoch_requeues_and_resumes_bit_identically(setup, plain_run):
    run = "preempted"
    jid = sbatch(setup, "--cpus-per-task=1", "slurm/train_audio.sh", "config/audio/demo.yaml",
                 *overrides(setup, run))
    deadline = time.time() + 180
    while len(trace(setup, run)) < 6 and time.time() < deadline:  # the 6th batch (2nd of epoch 1) started
        time.sleep(0.05)
    assert len(trace(setup, run)) >= 6, log_of(setup, jid)[-3000:]
    subprocess.run(["scancel", "--signal=USR1", jid], env=setup["env"], check=True, timeout=30)
    info = wait(setup, jid, hurry_requeue=True)
    log = log_of(setup, jid)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diag(setup, jid)
    # one log over both runs: the first run's lines, then the restart's
    assert log.index("SLURM_RESTART_COUNT=0") < log.index("pre-empted at step") < log.index("SLURM_RESTART_COUNT=1")
    step = int(re.search(r"pre-empted at step (\d+)", log)[1])
    assert 6 <= step < STEPS
    resumed = re.search(r"resuming epoch (\d+) after (\d+) of (\d+) batches", log)
    assert resumed and 0 < int(resumed[2]) < int(resumed[3]), log[-3000:]  # mid-epoch
    assert "restart 1: resuming from" in log
    assert not list((setup["root"] / "ckpt" / run).glob("hpc_ckpt_*"))  # Lightning's own requeue is off
    # exactly the batches of the uninterrupted run, and exactly its weights
    assert trace(setup, run) == trace(setup, "plain")
    a = final_weights(setup["root"] / "ckpt" / "plain" / "last.ckpt")
    b = final_weights(setup["root"] / "ckpt" / run / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_c_two_srun_tasks_train_ddp_on_disjoint_batches(setup):
    run = "ddp"
    jid = sbatch(setup, "--ntasks-per-node=2", "--cpus-per-task=1", "slurm/train_audio.sh",
                 "config/audio/demo.yaml", *overrides(setup, run, num_train_steps=4, val_decode=False,
                                                      validate_every_n_batches=1000, monitor="val/acc"))
    info = wait(setup, jid)
    log = log_of(setup, jid)
    assert info["JobState"] == "COMPLETED", log[-3000:]
    assert "tasks_per_node=2" in log and "MEMBER: 2/2" in log  # Lightning's SLURM environment, 2 processes
    ranks = [trace(setup, run, r) for r in (0, 1)]
    assert [len(r) for r in ranks] == [4, 4]
    for epoch in {e for e, _, _ in ranks[0]}:
        a = {u for e, _, ids in ranks[0] if e == epoch for u in ids.split()}
        b = {u for e, _, ids in ranks[1] if e == epoch for u in ids.split()}
        assert a and b and not a & b, (epoch, a, b)
    assert (setup["root"] / "ckpt" / run / "last.ckpt").is_file()


def test_d_decode_wrapper_jobs_and_the_dependent_results_job(setup, plain_run):
    c, out = setup["corpus"], setup["root"] / "decode"
    env = dict(setup["env"], LANGS="en", SNRS="1000 0", TASK="transcribe", BEAM="1", MODEL_TYPE="tiny",
               CHECKPOINT=str(setup["root"] / "ckpt" / "plain" / "last.ckpt"), MODALITIES="asr", AV_FUSION="None",
               USE_AV_HUBERT="0", FP16="0", NOISE_FN=str(c / "noise" / "test.tsv"), DECODE_PATH=f"{out}/",
               MUAVIC_ROOT=str(c), SBATCH_OPTS="--cpus-per-task=1", DECODE_ARGS="--max-new-tokens 4 --device cpu")
    sub = subprocess.run(["bash", "slurm/whisper_decode_wrapper.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert sub.returncode == 0, sub.stderr
    ids = re.findall(r"submitted job (\d+)", sub.stdout)
    assert len(ids) == 3, sub.stdout  # two conditions + results
    dependency = job(setup, ids[2]).get("Dependency", "")  # read while the decodes run
    assert f"afterok:{ids[0]}" in dependency and f"afterok:{ids[1]}" in dependency, dependency
    infos = [wait(setup, j) for j in ids]
    assert all(i["JobState"] == "COMPLETED" for i in infos), [log_of(setup, j)[-2000:] for j in ids]
    results = infos[-1]
    assert results["JobName"] == "wf-results"
    assert results["StartTime"] >= max(i["EndTime"] for i in infos[:2])  # it waited for both decodes
    table = (out / "results" / "results.md").read_text()
    assert re.search(r"\| lang \| modality \| noise \| 0 dB \| clean \|", table), table
    assert re.search(r"\| en \| Audio \| noise \| [\d.]+ \| [\d.]+ \|", table), table
    assert "SLURM_RESTART_COUNT=0" in log_of(setup, ids[0])


def test_d_decode_job_requeues_itself_near_the_time_limit(setup, plain_run, tmp_path):
    """The time-limit warning (--signal=B:USR1@60) reaches the batch shell, which requeues the job; the
    restart (SLURM_RESTART_COUNT=1) decodes (its utterances.jsonl would let it continue where it stopped)."""
    c, out = setup["corpus"], setup["root"] / "decode_requeued"
    slow = tmp_path / "python.sh"  # the first run waits (as a long decode would) until it is warned
    slow.write_text(f'#!/bin/bash\n[ "${{SLURM_RESTART_COUNT:-0}}" = 0 ] && sleep 60\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    jid = sbatch(setup, "--cpus-per-task=1", "slurm/whisper_decode.sh", "en", "tiny", "0",
                 str(c / "noise" / "test.tsv"), str(setup["root"] / "ckpt" / "plain" / "last.ckpt"), "1", "asr", "0",
                 "None", "0", f"{out}/", "None", "None", "transcribe", "fairseq", "0", "--muavic-root", str(c),
                 "--max-new-tokens", "4", "--device", "cpu", env=dict(setup["env"], PY=str(slow)))
    deadline = time.time() + 60
    while "SLURM_RESTART_COUNT=0" not in log_of(setup, jid) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # the shell is waiting for its child now
    subprocess.run(["scancel", "--batch", "--signal=USR1", jid], env=setup["env"], check=True, timeout=30)
    info = wait(setup, jid, hurry_requeue=True)
    log = log_of(setup, jid)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", diag(setup, jid)
    assert log.index("time limit near: requeueing") < log.index("SLURM_RESTART_COUNT=1")
    assert len(list(out.rglob("summary.json"))) == 1


def test_e_tensorboard_serves_val_wer_on_localhost(setup, plain_run):
    logdir = setup["root"] / "logs"
    proc = subprocess.Popen([sys.executable, "-m", "whisper_flamingo.cli", "tensorboard", str(logdir), "--port", "0"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        base = url[0]
        deadline, tags = time.time() + 60, {}
        while time.time() < deadline and "val/wer" not in tags.get("whisper/plain", {}):
            with urllib.request.urlopen(base + "data/plugin/scalars/tags", timeout=10) as r:
                tags = json.load(r)
            time.sleep(0.5)
        assert "val/wer" in tags.get("whisper/plain", {}), tags
        query = urllib.parse.urlencode({"run": "whisper/plain", "tag": "val/wer"})
        with urllib.request.urlopen(f"{base}data/plugin/scalars/scalars?{query}", timeout=10) as r:
            series = json.load(r)
        expected = tensorboard_scalars(logdir / "whisper" / "plain")["val/wer"]
        assert sorted((int(step), round(v, 4)) for _, step, v in series) == \
            sorted((step, round(v, 4)) for step, v in expected)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_z_stop_leaves_no_daemons(setup):
    cluster = setup["cluster"]
    pids = [int((cluster["dir"] / f"{d}.pid").read_text()) for d in ("munged", "slurmctld", "slurmd")]
    assert all(Path(f"/proc/{p}").exists() for p in pids)
    out = cluster_script(cluster, "stop")
    assert out.returncode == 0, out.stderr
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    mark = f"WF_SLURM_LOCAL={cluster['dir']}".encode()
    left = []
    for env_file in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in env_file.read_bytes().split(b"\0"):
                left.append(env_file.parent.name)
        except OSError:
            pass
    assert not left, f"processes of the stopped cluster still running: {left}"
