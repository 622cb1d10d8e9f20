#!/usr/bin/env bash
# Stage-1 training under SLURM. Lightning reads the SLURM environment for DDP and requeues the job
# on SIGUSR1 (sent 90 s before the time limit); resume_training=true then continues from last.ckpt.
#
#   sbatch --gres=gpu:4 --ntasks-per-node=4 slurm/train_audio.sh config/audio/audio_multi_small.yaml
#   sbatch --gres=gpu:1 --ntasks-per-node=1 slurm/train_audio.sh config/audio/audio_lrs2_medium.yaml num_devices=1
#
#SBATCH --job-name=wf-train-audio
#SBATCH --nodes=1
#SBATCH --cpus-per-task=8
#SBATCH --mem=100G
#SBATCH --time=48:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --output=slurm/train_audio_slurm/%x-%j.out
#SBATCH --error=slurm/train_audio_slurm/%x-%j.err
set -euo pipefail
CONFIG=${1:?usage: sbatch slurm/train_audio.sh CONFIG.yaml [key=value ...]}
shift
VENV=${VENV:-.venv}
# number of GPUs = tasks per node, so that every rank is one SLURM task
NDEV=${SLURM_NTASKS_PER_NODE:-1}
srun "$VENV/bin/python" -u whisper_ft_muavic.py "$CONFIG" num_devices="$NDEV" num_nodes="${SLURM_JOB_NUM_NODES:-1}" \
  resume_training=true "$@"
