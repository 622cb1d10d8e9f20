#!/usr/bin/env bash
# Tables and plots over decode outputs (submitted by the decode wrappers after their decode jobs):
#   sbatch --dependency=afterok:101:102 slurm/whisper_results.sh decode/ [--out DIR]
#SBATCH --job-name=wf-results
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out
set -euo pipefail
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
echo "$(date -u +%FT%TZ) job ${SLURM_JOB_ID:-none}: whisper-flamingo results $*"
exec "$PY" -m whisper_flamingo.cli results "$@"
