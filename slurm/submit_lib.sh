# Shared by the decode wrappers (sourced): sbatch with the cluster's defaults, job ids collected for the
# final `whisper-flamingo results` job. DRY_RUN=1 prints the sbatch commands instead of submitting them.
# GPUS: GPUs per decode job (default auto: 1 when the cluster has GPU gres, else 0).
# SBATCH_OPTS: more sbatch options for every job (e.g. "--partition=gpu --account=me").
# DECODE_ARGS: more decode flags for every job (e.g. "--batch-bins 320000").
SUBMITTED=()
GPUS=${GPUS:-auto}
if [ "$GPUS" = auto ]; then
  GPUS=0
  if [ "${DRY_RUN:-0}" != 1 ] && timeout 10 sinfo -h -o %G 2>/dev/null | grep -q gpu; then GPUS=1; fi
fi
JOB_OPTS=()
[ "$GPUS" != 0 ] && JOB_OPTS+=("--gres=gpu:$GPUS")
# shellcheck disable=SC2206
JOB_OPTS+=(${SBATCH_OPTS:-})
# shellcheck disable=SC2206
EXTRA_DECODE_ARGS=(${DECODE_ARGS:-})

submit() {  # submit SCRIPT ARGS...: one job; its id is appended to SUBMITTED
  local id
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "sbatch ${JOB_OPTS[*]:+${JOB_OPTS[*]} }$*"
    id="JOB${#SUBMITTED[@]}"
  else
    mkdir -p slurm/logs
    id=$(sbatch --parsable "${JOB_OPTS[@]}" "$@")
    id=${id%%;*}
    echo "submitted job $id: $*"
  fi
  SUBMITTED+=("$id")
}

submit_results() {  # submit_results DECODE_PATH: tables/plots once every decode job ended well
  local deps
  deps=$(IFS=:; echo "${SUBMITTED[*]}")
  local opts=(--dependency="afterok:$deps" --kill-on-invalid-dep=yes)
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "sbatch ${opts[*]} ${SBATCH_OPTS:-}${SBATCH_OPTS:+ }slurm/whisper_results.sh $1"
  else
    local id
    # shellcheck disable=SC2206
    id=$(sbatch --parsable "${opts[@]}" ${SBATCH_OPTS:-} slurm/whisper_results.sh "$1")
    echo "submitted job ${id%%;*}: whisper-flamingo results $1 (after ${#SUBMITTED[@]} decode jobs)"
  fi
}
