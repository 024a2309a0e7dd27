#!/usr/bin/env bash
# The CPU analogy study (configs/experiment/analogy_cpu.yaml), one task after another so the cheap tasks finish
# first, 2 jobs at a time, then the report into experiments/analogy/results/. Name tasks to run a subset:
#   bash experiments/analogy/run_cpu.sh cpu_cartpole cpu_deepsea
# Extra Hydra overrides go in OVERRIDES, e.g. OVERRIDES="seed=0,1" (tiny CI run: see .ci/run); SWEEPS, OUT and
# JOBS set the sweep folder, the results folder and parallel jobs; REPORT_ONLY=1 skips training.
set -euo pipefail
cd "$(dirname "$0")/../.."
tasks=("$@")
[ ${#tasks[@]} -gt 0 ] || tasks=(cpu_cartpole cpu_deepsea cpu_minigrid_doorkey cpu_minatar_breakout cpu_minatar_space_invaders)
sweeps=${SWEEPS:-multirun/analogy_cpu}
out=${OUT:-experiments/analogy/results}
start=$(date +%s)
for task in "${tasks[@]}"; do
    [ -n "${REPORT_ONLY:-}" ] && break  # REPORT_ONLY=1: collect and report sweeps that already ran
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 python -m rlfocal.train +experiment=analogy_cpu "+task=$task" ${OVERRIDES:-} \
        hydra.sweep.dir="$sweeps/$task" hydra.launcher.n_jobs="${JOBS:-2}"
done
# keep each run's small files (metrics, resolved config, summary; not checkpoints) beside the report, and report
# on those copies so that the results folder can be re-reported from a clean checkout
mkdir -p "$out/runs"
for task in "${tasks[@]}"; do
    for run in "$sweeps/$task"/*/; do
        [ -f "$run/metrics.csv" ] || continue
        dest="$out/runs/$task/$(basename "$run")"
        mkdir -p "$dest"
        cp "$run/metrics.csv" "$run/config.yaml" "$dest/"
        [ -f "$run/summary.json" ] && cp "$run/summary.json" "$dest/"
    done
done
python -m rlfocal.report "$out/runs" --out "$out"
{
    echo "bash experiments/analogy/run_cpu.sh ${tasks[*]}${OVERRIDES:+  (OVERRIDES=$OVERRIDES)}"
    echo "wall time $(( $(date +%s) - start )) s"
    echo "git commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$out/command.txt"
