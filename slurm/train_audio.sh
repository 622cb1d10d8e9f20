#!/usr/bin/env bash
# Stage-1 (audio-only) training under SLURM: one task per GPU (or CPU process), pre-emptible.
#
#   sbatch slurm/train_audio.sh CONFIG.yaml [key=value ...]
#   sbatch --partition=gpu --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=8 --mem=100G --time=48:00:00 \
#       slurm/train_audio.sh config/audio/audio_multi_small.yaml
#
# Cluster specifics come from sbatch options or their variables (SBATCH_PARTITION, SBATCH_GRES,
# SBATCH_TIMELIMIT, SBATCH_MEM_PER_NODE, SBATCH_ACCOUNT, SBATCH_QOS); tasks per node = devices per
# node (GPUs, or CPU processes with gloo), --nodes = nodes: num_devices/num_nodes follow the job.
# PY: the Python to run (default .venv/bin/python, else python3; see train_common.sh).
# Pre-emption: 120 s before the time limit (or on `scancel --signal=USR1 JOB`) the training saves
# last.ckpt at the end of the current step, runs `scontrol requeue`, and the restarted job resumes
# from it by itself. The log (slurm/logs/<name>-<jobid>.out) is appended to across restarts.
#SBATCH --job-name=wf-train-audio
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out
set -euo pipefail
# sbatch runs a copy of this script: train_common.sh is found from the submit directory
# shellcheck source=slurm/train_common.sh
. "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}/slurm/train_common.sh"
train_job whisper_ft_muavic.py slurm/train_audio.sh "$@"
