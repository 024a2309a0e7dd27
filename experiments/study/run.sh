#!/usr/bin/env bash
# The study's main sweep (configs/experiment/study_cpu.yaml: every arm × the pilot's kept tasks × 30 paired seeds),
# 2 jobs at a time, resumable: rerun the same command after an interruption and finished arms are skipped, an
# interrupted one continues from its checkpoint (resume=auto). Then the analysis into experiments/study/results/.
#   bash experiments/study/run.sh                     # ~30 min on this 2-core machine
#   ARMS=dqn,per bash experiments/study/run.sh        # a part: some arms only (the analysis reads what has run)
# OVERRIDES adds Hydra overrides (CI: a tiny version); SWEEPS, OUT and JOBS set the sweep folder, the results
# folder and the parallel jobs; ANALYSE_ONLY=1 skips training.
set -euo pipefail
cd "$(dirname "$0")/../.."
sweeps=${SWEEPS:-multirun/study_cpu}
out=${OUT:-experiments/study/results}
start=$(date +%s)
if [ -z "${ANALYSE_ONLY:-}" ]; then
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 python -m rlfocal.train +experiment=study_cpu ${ARMS:++arm=$ARMS} resume=auto \
        ${OVERRIDES:-} hydra.sweep.dir="$sweeps" hydra.launcher.n_jobs="${JOBS:-2}"
fi
mkdir -p "$out/runs"
for run in "$sweeps"/*/*/seed_*/; do  # each seed's small files (not checkpoints), so the analysis can be rerun
    [ -f "$run/summary.json" ] || continue  # an unfinished arm: left out until it finishes
    dest="$out/runs/${run#"$sweeps"/}"
    mkdir -p "$dest"
    cp "$run/metrics.csv" "$run/config.yaml" "$run/summary.json" "$dest/"
done
python experiments/study/analyse.py "$out/runs" --out "$out"
{
    echo "${ARMS:+ARMS=$ARMS }bash experiments/study/run.sh${OVERRIDES:+  (OVERRIDES=$OVERRIDES)}"
    echo "wall time $(( $(date +%s) - start )) s"
    echo "git commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} >> "$out/command.txt"
