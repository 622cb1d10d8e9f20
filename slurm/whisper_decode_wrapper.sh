#!/usr/bin/env bash
# En-X sweep: one job per language x SNR (Whisper-Flamingo En-X small, MuAViC babble, beam 15).
# Set the variables below (environment); DRY_RUN=1 prints the sbatch commands instead of submitting them.
# A last job, started when every decode job has ended well, runs `whisper-flamingo results DECODE_PATH`.
# GPUS, SBATCH_OPTS, DECODE_ARGS: see slurm/submit_lib.sh.
set -euo pipefail
CHECKPOINT=${CHECKPOINT:-models/whisper-flamingo_en-x_small.pt}
MODEL_TYPE=${MODEL_TYPE:-small}
MODALITIES=${MODALITIES:-avsr}          # asr for audio-only checkpoints
AV_FUSION=${AV_FUSION:-separate}        # None for audio-only checkpoints
USE_AV_HUBERT=${USE_AV_HUBERT:-1}
NOISE_FN=${NOISE_FN:-noise/babble/muavic/test.tsv}
TASK=${TASK:-En-X}
BEAM=${BEAM:-15}
FP16=${FP16:-1}
DECODE_PATH=${DECODE_PATH:-decode/}
AV_HUBERT_PATH=${AV_HUBERT_PATH:-av_hubert/avhubert/}
AV_HUBERT_CKPT=${AV_HUBERT_CKPT:-models/large_noise_pt_noise_ft_433h_only_weights.pt}
NORMALIZER=${NORMALIZER:-fairseq}
USE_ORIGINAL_WHISPER=${USE_ORIGINAL_WHISPER:-0}
MUAVIC_ROOT=${MUAVIC_ROOT:-$PWD}
LANGS=${LANGS:-"en ru el es fr it pt"}
SNRS=${SNRS:-"1000 0"}
# shellcheck source=slurm/submit_lib.sh
. "$(dirname "$0")/submit_lib.sh"
for lang in $LANGS; do
  for snr in $SNRS; do
    submit slurm/whisper_decode.sh "$lang" "$MODEL_TYPE" "$snr" "$NOISE_FN" "$CHECKPOINT" "$BEAM" "$MODALITIES" \
      "$USE_AV_HUBERT" "$AV_FUSION" "$FP16" "$DECODE_PATH" "$AV_HUBERT_PATH" "$AV_HUBERT_CKPT" "$TASK" \
      "$NORMALIZER" "$USE_ORIGINAL_WHISPER" --muavic-root "$MUAVIC_ROOT" "${EXTRA_DECODE_ARGS[@]}"
  done
done
submit_results "$DECODE_PATH"
