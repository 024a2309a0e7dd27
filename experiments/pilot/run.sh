#!/usr/bin/env bash
# Issue 14's pilot: which CPU tasks does PER beat DQN on at all? 10 paired seeds (one num_seeds=10 batch per arm)
# of DQN, PER (β annealed) and PER with β = 0 on CartPole (50k steps), DoorKey-5x5 (100k steps) and DeepSea N = 20
# with one demonstration in replay (cpu_deepsea_demo, 25k steps), then the report over every task's runs and the
# keep/drop decision (PER − DQN ≥ 1 σ).
#   bash experiments/pilot/run.sh                 # ~30 min on this 2-core machine
#   TASKS=cpu_deepsea_demo bash experiments/pilot/run.sh   # one task; the report still covers all runs kept
# OVERRIDES adds Hydra overrides (CI: a tiny version); SWEEPS and OUT set the sweep and results folders.
set -euo pipefail
cd "$(dirname "$0")/../.."
sweeps=${SWEEPS:-multirun/pilot}
out=${OUT:-experiments/pilot/results}
start=$(date +%s)
declare -A steps=([cpu_cartpole]="${CARTPOLE_STEPS:-50000}" [cpu_minigrid_doorkey]="${DOORKEY_STEPS:-100000}"
                  [cpu_deepsea_demo]="${DEEPSEA_STEPS:-25000}")
for task in ${TASKS:-cpu_cartpole cpu_minigrid_doorkey cpu_deepsea_demo}; do
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 python -m rlfocal.train -m "+task=$task" +arm=dqn,per,per_beta0 num_seeds=10 seed=0 \
        "total_steps=${steps[$task]}" logger=csv progress=false device=cpu gauge.every=0 ${OVERRIDES:-} \
        hydra.sweep.dir="$sweeps/$task"
done
mkdir -p "$out/runs"
for run in "$sweeps"/*/*/seed_*/; do  # keep each seed's small files beside the report
    dest="$out/runs/${run#"$sweeps"/}"
    mkdir -p "$dest"
    cp "$run/metrics.csv" "$run/config.yaml" "$run/summary.json" "$dest/"
done
python -m rlfocal.report "$out/runs" --out "$out"
python experiments/pilot/decide.py "$out/runs" --out "$out/decision.csv"
{
    echo "${TASKS:+TASKS=\"$TASKS\" }bash experiments/pilot/run.sh${OVERRIDES:+  (OVERRIDES=$OVERRIDES)}"
    echo "wall time $(( $(date +%s) - start )) s"
    echo "git commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$out/command.txt"
