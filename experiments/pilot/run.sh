#!/usr/bin/env bash
# Issue 14's pilot: which CPU tasks does PER beat DQN on at all? 10 paired seeds (one num_seeds=10 batch per arm)
# of DQN, PER (β annealed) and PER with β = 0 on CartPole (50k steps) and DoorKey-5x5 (100k steps), then the report
# and the keep/drop decision (PER − DQN ≥ 1 σ). DeepSea is not piloted: with ε fixed it tests exploration, and the
# "one optimal episode in the buffer" variant the issue asks for is not built yet.
#   bash experiments/pilot/run.sh                 # ~25 min on this 2-core machine
# OVERRIDES adds Hydra overrides (CI: a tiny version); SWEEPS and OUT set the sweep and results folders.
set -euo pipefail
cd "$(dirname "$0")/../.."
sweeps=${SWEEPS:-multirun/pilot}
out=${OUT:-experiments/pilot/results}
start=$(date +%s)
run_task() {  # task, total_steps
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 python -m rlfocal.train -m "+task=$1" +arm=dqn,per,per_beta0 num_seeds=10 seed=0 \
        "total_steps=$2" logger=csv progress=false device=cpu gauge.every=0 ${OVERRIDES:-} \
        hydra.sweep.dir="$sweeps/$1"
}
run_task cpu_cartpole "${CARTPOLE_STEPS:-50000}"
run_task cpu_minigrid_doorkey "${DOORKEY_STEPS:-100000}"
mkdir -p "$out/runs"
for run in "$sweeps"/*/*/seed_*/; do  # keep each seed's small files beside the report
    dest="$out/runs/${run#"$sweeps"/}"
    mkdir -p "$dest"
    cp "$run/metrics.csv" "$run/config.yaml" "$run/summary.json" "$dest/"
done
python -m rlfocal.report "$out/runs" --out "$out"
python experiments/pilot/decide.py "$out/scores.csv" --out "$out/decision.csv"
{
    echo "bash experiments/pilot/run.sh${OVERRIDES:+  (OVERRIDES=$OVERRIDES)}"
    echo "wall time $(( $(date +%s) - start )) s"
    echo "git commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
} > "$out/command.txt"
