#!/usr/bin/env bash
# One decode job (one GPU). Takes the original 16 positional arguments, in the original order; any
# further arguments are passed on as flags (e.g. --muavic-root DIR --noise-snr -5 0 5).
# Decoding resumes where a pre-empted/requeued job stopped (utterances.jsonl is appended per batch):
# 60 s before the time limit the batch shell requeues the job (`scontrol requeue`) and the restart
# continues. Cluster specifics: sbatch options or SBATCH_PARTITION / SBATCH_GRES (e.g. gpu:1; the
# wrappers ask for one GPU when the cluster has any) / SBATCH_TIMELIMIT / SBATCH_MEM_PER_NODE.
# PY: the Python to run (default .venv/bin/python, else python3).
#
#   sbatch slurm/whisper_decode.sh en small 0 noise/babble/lrs3/test.tsv models/ckpt.pt 15 asr 0 None 1 \
#       decode/ av_hubert/avhubert/ models/large_noise_pt_noise_ft_433h_only_weights.pt transcribe fairseq 0 \
#       --muavic-root "$PWD"
#
#SBATCH --job-name=wf-decode
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=2
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --signal=B:USR1@60
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out
set -euo pipefail
if [ "$#" -lt 16 ]; then
  echo "usage: $0 LANG MODEL_TYPE NOISE_SNR NOISE_FN CHECKPOINT BEAM MODALITIES USE_AV_HUBERT AV_FUSION FP16" \
       "DECODE_PATH AV_HUBERT_PATH AV_HUBERT_CKPT TASK NORMALIZER USE_ORIGINAL_WHISPER [--flag ...]" >&2
  exit 2
fi
PY=${PY:-${VENV:-.venv}/bin/python}
[ -x "$PY" ] || [ "$PY" = echo ] || PY=python3
LANG_CODE=$1 MODEL_TYPE=$2 NOISE_SNR=$3 NOISE_FN=$4 CHECKPOINT=$5 BEAM=$6 MODALITIES=$7 USE_AVH=$8
AV_FUSION=$9 FP16=${10} DECODE_PATH=${11} AVH_PATH=${12} AVH_CKPT=${13} TASK=${14} NORMALIZER=${15}
ORIGINAL=${16}
shift 16
echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}" \
     "lang=$LANG_CODE model=$MODEL_TYPE snr=$NOISE_SNR noise=$NOISE_FN checkpoint=$CHECKPOINT beam=$BEAM" \
     "modalities=$MODALITIES av_hubert=$USE_AVH fusion=$AV_FUSION fp16=$FP16 out=$DECODE_PATH task=$TASK" \
     "normalizer=$NORMALIZER original=$ORIGINAL extra=$*"
ARGS=(--lang "$LANG_CODE" --model-type "$MODEL_TYPE" --noise-snr "$NOISE_SNR" --beam-size "$BEAM"
      --modalities "$MODALITIES" --use_av_hubert_encoder "$USE_AVH" --av_fusion "$AV_FUSION" --fp16 "$FP16"
      --decode-path "$DECODE_PATH" --task "$TASK" --normalizer "$NORMALIZER" --use-original-whisper "$ORIGINAL")
# AV_HUBERT_PATH (the fairseq user dir) is not needed: only a value other than the original default is
# passed on (and refused). AV_HUBERT_CKPT only chose the AV-HuBERT code path: passed with USE_AV_HUBERT=1,
# where the decoder checks it against the checkpoint.
if [ -n "$AVH_PATH" ] && [ "$AVH_PATH" != "None" ] && [ "${AVH_PATH%/}" != "av_hubert/avhubert" ]; then
  ARGS+=(--av-hubert-path "$AVH_PATH")
fi
if [ "$USE_AVH" = "1" ] && [ -n "$AVH_CKPT" ] && [ "$AVH_CKPT" != "None" ]; then ARGS+=(--av-hubert-ckpt "$AVH_CKPT"); fi
if [ -n "$NOISE_FN" ] && [ "$NOISE_FN" != "None" ]; then ARGS+=(--noise-fn "$NOISE_FN"); fi
if [ -n "$CHECKPOINT" ] && [ "$CHECKPOINT" != "None" ]; then ARGS+=(--checkpoint-path "$CHECKPOINT"); fi
if [ -z "${SLURM_JOB_ID:-}" ]; then exec "$PY" -u whisper_decode_video.py "${ARGS[@]}" "$@"; fi
# in a job: near the time limit (--signal=B:USR1) requeue; the restarted job resumes the decode
trap 'echo "$(date -u +%FT%TZ) time limit near: requeueing job $SLURM_JOB_ID"; scontrol requeue "$SLURM_JOB_ID"' USR1
"$PY" -u whisper_decode_video.py "${ARGS[@]}" "$@" &
child=$!
rc=0
while kill -0 "$child" 2>/dev/null; do wait "$child" && rc=0 || rc=$?; done
exit "$rc"
