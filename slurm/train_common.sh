# Shared by train_audio.sh and train_video.sh (sourced): `train_job ENTRY SCRIPT CONFIG.yaml [key=value ...]`
# runs the entry point once per task with srun, num_devices/num_nodes from the allocation (tasks per node =
# devices per node), one OpenMP thread per allocated CPU, and a start and an end line in the log.
# Run from the repository root (sbatch's working directory): ENTRY and PY are relative to it.
# PY: the Python to run (default .venv/bin/python, else python3).
train_job() {  # train_job ENTRY SCRIPT CONFIG.yaml [key=value ...]
  local entry=$1 script=$2
  shift 2
  [ "$#" -ge 1 ] || { echo "usage: sbatch $script CONFIG.yaml [key=value ...]" >&2; exit 1; }
  local config=$1
  shift
  local py=${PY:-.venv/bin/python}
  [ -x "$py" ] || py=python3
  local nodes=${SLURM_JOB_NUM_NODES:-1}
  local ndev=${SLURM_NTASKS_PER_NODE:-$(( ${SLURM_NTASKS:-1} / nodes ))}
  ndev=${ndev%%(*}  # "4(x2)" on some clusters
  export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}  # srun (22.05+) does not inherit --cpus-per-task
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$SRUN_CPUS_PER_TASK}
  echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} SLURM_RESTART_COUNT=${SLURM_RESTART_COUNT:-0}" \
       "nodes=$nodes tasks_per_node=$ndev host=$(hostname) config=$config $*"
  srun --kill-on-bad-exit=1 "$py" -u "$entry" "$config" num_devices="$ndev" num_nodes="$nodes" "$@"
  echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none} finished"
}
