#!/usr/bin/env bash
# Stage-2 (Whisper-Flamingo, audio-visual) training under SLURM: one task per GPU (or CPU process), pre-emptible.
#
#   sbatch slurm/train_video.sh CONFIG.yaml [key=value ...]
#   sbatch --partition=gpu --gres=gpu:4 --ntasks-per-node=4 --cpus-per-task=8 --mem=100G --time=48:00:00 \
#       slurm/train_video.sh config/audio-visual/av_multi_small.yaml
#
# Cluster specifics come from sbatch options or their variables (SBATCH_PARTITION, SBATCH_GRES,
# SBATCH_TIMELIMIT, SBATCH_MEM_PER_NODE, SBATCH_ACCOUNT, SBATCH_QOS); tasks per node = devices per
# node (GPUs, or CPU processes with gloo), --nodes = nodes: num_devices/num_nodes follow the job.
# PY: the Python to run (default .venv/bin/python, else python3).
# Pre-emption: 120 s before the time limit (or on `scancel --signal=USR1 JOB`) the training saves
# last.ckpt at the end of the current step, runs `scontrol requeue`, and the restarted job resumes
# from it by itself. The log (slurm/logs/<name>-<jobid>.out) is appended to across restarts.
#SBATCH --job-name=wf-train-video
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=2
#SBATCH --time=48:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out
set -euo pipefail
CONFIG=${1:?usage: sbatch slurm/train_video.sh CONFIG.yaml [key=value ...]}
shift
ENTRY=whisper_ft_muavic_video.py
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
NODES=${SLURM_JOB_NUM_NODES:-1}
NDEV=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / NODES ))}
NDEV=${NDEV%%(*}  # "4(x2)" on some clusters
export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}  # srun (22.05+) does not inherit --cpus-per-task
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SRUN_CPUS_PER_TASK}
echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}" \
     "nodes=$NODES tasks_per_node=$NDEV host=$(hostname) config=$CONFIG $*"
srun --kill-on-bad-exit=1 "$PY" -u "$ENTRY" "$CONFIG" num_devices="$NDEV" num_nodes="$NODES" "$@"
echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} finished"
