#!/usr/bin/env bash
# One-command GPU check (issue 13 §3): bash benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--wheels DIR]
#
# Runs, each step under `timeout` and all within 8 minutes (GPU_CHECK_BUDGET_S, default 470 s, caps every step):
#   1. nvidia-smi's GPU line and torch's view of the device;
#   2. pytest tests/test_cuda.py, then every CUDA test (`-k cuda` over the test files that mention cuda);
#   3. CUDA training smokes, PER + focal, 5k steps: MinAtar Breakout and Atari Pong (python -m rlfocal.train);
#   4. many seeds in one process: MinAtar Breakout PER, 256 seeds in lockstep against one (seed-steps/s);
#   5. the Atari throughput cells: rlfocal uniform vs PER, b32, 1 and 8 envs, 1M replay (agent steps/s, updates/s,
#      peak GPU memory; benchmarks/atari_throughput.py);
#   6. the same at 8 envs on the GPU path (--gpu-path: async envs stepping while the learner learns, replay storage
#      on the GPU, deferred priority write-back, the update replayed as a CUDA graph): atari_gpu_path.json;
#   7. what acting's sync costs: acting idle vs right after queueing an iteration's updates, one update's GPU time
#      (benchmarks/act_sync.py): act_sync.json.
# It writes OUT_DIR/summary.json (one entry per step: ok | failed | timeout | skipped, with why), OUT_DIR/gpu_check.log
# (everything the steps printed), the pytest JUnit XML, the smoke runs' directories, atari_throughput.json,
# atari_gpu_path.json and act_sync.json.
# A missing optional package skips the steps that need it ("skipped: <why>") and the check goes on; the exit status
# is 1 if a step failed or timed out, else 0. --dry-run runs the same steps on CPU at tiny sizes (CI: about 100 s on
# 2 cores, most of it the CPU runs of the CUDA tests); its figures mean nothing.
#
# A GPU machine without network needs what its image lacks carried in as wheels. For this workplace's H200 image
# (Python 3.12 with torch, numpy, numba, matplotlib, psutil, opencv, pytest: /work/.library/device/KINDS.md) that is
# gymnasium, hydra-core and their needs, ale-py, minatar (and setuptools), 4.7 MB, which benchmarks/gpu_wheels.sh
# gets at the versions installed where it runs; --wheels DIR installs them and rlfocal (editable) into a temporary
# directory:
#   bash benchmarks/gpu_wheels.sh .whl --python-version 3.12      # where pip reaches a registry
#   bash benchmarks/gpu_check.sh OUT_DIR --wheels .whl             # on the GPU machine, .whl carried in
# Another image: add what it lacks of numba, matplotlib, psutil, PyYAML, opencv-python-headless (the Atari steps)
# to DIR; a missing one shows in the log as an import error or a skipped step. wandb is not needed (logger=csv).
# Where only a few files come back from the machine, keep OUT_DIR elsewhere and bring back the two that hold every
# figure and error: summary.json and gpu_check.log, e.g. (the workplace's device tool, carry [".whl"]):
#   bash benchmarks/gpu_check.sh /tmp/gc --wheels .whl; rc=$?; cp /tmp/gc/summary.json /tmp/gc/gpu_check.log "$OUT"; exit $rc
set -uo pipefail

usage() {
  echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [--dry-run] [--wheels DIR]" >&2
  exit 2
}
OUT="" DRY=0 WHEELS=""
while (($#)); do
  case $1 in
    --dry-run) DRY=1 ;;
    --wheels) [[ $# -ge 2 ]] || { echo "--wheels needs a directory of wheels" >&2; usage; }; WHEELS=$2 && shift ;;
    -h | --help) usage ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [[ -z $OUT ]] || { echo "unexpected argument: $1" >&2; usage; }; OUT=$1 ;;
  esac
  shift
done
[[ -n $OUT ]] || usage
if [[ -n $WHEELS ]]; then
  [[ -d $WHEELS ]] || { echo "--wheels: $WHEELS is not a directory" >&2; exit 2; }
  WHEELS=$(cd "$WHEELS" && pwd)
fi
cd "$(dirname "$0")/.." || exit 2
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
PY=${PYTHON:-python}
if [[ -n $WHEELS ]]; then
  # The carried wheels and rlfocal (editable) go into a directory of their own, first on the path. The editable
  # install maps rlfocal.configs to configs/ through a .pth file, which Python reads only in a site directory: the
  # sitecustomize below makes this directory one.
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/rlfocal_site.XXXXXX") || exit 2
  trap 'rm -rf "$SITE"' EXIT
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  shopt -u nullglob
  ((${#wheels[@]})) || { echo "--wheels: no .whl files in $WHEELS (make them with benchmarks/gpu_wheels.sh)" >&2; exit 2; }
  export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}  # the editable install builds with the carried setuptools
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}" &&
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$SITE" -e . || {
    echo "--wheels: installing into $SITE failed" >&2
    exit 2
  }
  echo "import site; site.addsitedir('$SITE')" >"$SITE/sitecustomize.py"
fi
BUDGET_S=${GPU_CHECK_BUDGET_S:-470}
LOG=$OUT/gpu_check.log STEPS=$OUT/steps.tsv
: >"$LOG"
: >"$STEPS"
T0=$SECONDS

if ((DRY)); then
  DEVICE=cpu
  SMOKE=(total_steps=150 agent.learning_starts=100 replay.capacity=1000 logger.log_every=50)
  TESTS=()  # every test, the CPU stand-ins of the CUDA ones included
  SEEDS=(1 4) MANY=(total_steps=150 agent.learning_starts=100 replay.capacity=200 logger.log_every=50)
  CELLS=(--contenders rlfocal-per --num-envs 1 --steps 32 --learning-starts 64 --capacity 1000)
  FAST=(--contenders rlfocal-per --num-envs 2 --steps 32 --learning-starts 64 --capacity 1000)
  ACT=(--quick)
else
  DEVICE=cuda
  SMOKE=(total_steps=5000 agent.learning_starts=1000 replay.capacity=100000 logger.log_every=1000)
  TESTS=(-k "not cpu-in-place-of-cuda")  # CI runs those
  SEEDS=(1 256) MANY=(total_steps=3000 agent.learning_starts=1000 replay.capacity=3000 logger.log_every=1000)
  CELLS=(--contenders rlfocal-uniform,rlfocal-per --num-envs 1,8 --steps 8000 --learning-starts 2000 --capacity 1000000)
  FAST=(--contenders rlfocal-uniform,rlfocal-per --num-envs 8 --steps 16000 --learning-starts 2000 --capacity 1000000)
  ACT=(--rounds 3 --iterations 200)
fi

log() { echo "[gpu_check +$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5//[$'\t\n']/ }" >>"$STEPS"; }  # name status rc s detail
skip() {
  record "$1" skipped "" 0 "$2"
  log "$1: skipped: $2"
}
have() { "$PY" -c "import $1" >/dev/null 2>&1; }

# step NAME MAX_S CMD...: CMD under timeout (at most MAX_S and what is left of the budget); its status recorded
step() {
  local name=$1 max_s=$2 left limit start rc status
  shift 2
  left=$((BUDGET_S - (SECONDS - T0)))
  limit=$((max_s < left ? max_s : left))
  if ((limit < 5)); then
    skip "$name" "out of time (the whole check is capped at ${BUDGET_S}s)"
    return
  fi
  log "$name (timeout ${limit}s): $*"
  start=$SECONDS
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout && echo | tee -a "$LOG" ;;  # a killed step may stop mid-line
    *) status=failed ;;
  esac
  record "$name" "$status" "$rc" $((SECONDS - start)) "$*"
  log "$name: $status (rc $rc, $((SECONDS - start))s)"
}

# 1. the device
if command -v nvidia-smi >/dev/null; then
  step nvidia-smi 20 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader
else
  skip nvidia-smi "no nvidia-smi on PATH"
fi
step torch-device 60 "$PY" -c "
import json, torch
info = {'torch': torch.__version__, 'cuda': torch.version.cuda, 'available': torch.cuda.is_available(),
        'devices': [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
print(json.dumps(info)); open('$OUT/torch.json', 'w').write(json.dumps(info))"
if ! have rlfocal.configs; then
  log "rlfocal is not installed (--wheels DIR, or pip install --no-deps --no-build-isolation -e .): the steps below will fail"
fi

# 2. tests
if have pytest; then
  step test_cuda 100 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py "${TESTS[@]}" \
    --junitxml="$OUT/test_cuda.xml"
  mapfile -t cuda_files < <(grep -l cuda tests/test_*.py)
  step cuda_tests 100 "$PY" -m pytest -q -rs -p no:cacheprovider "${cuda_files[@]}" -k cuda \
    --junitxml="$OUT/cuda_tests.xml"
else
  skip test_cuda "pytest is not installed"
  skip cuda_tests "pytest is not installed"
fi

# 3. training smokes: PER + focal
smoke() {  # smoke NAME ENV MAX_S
  step "$1" "$3" "$PY" -m rlfocal.train "env=$2" replay=per loss=focal "device=$DEVICE" "${SMOKE[@]}" \
    eval_every=0 eval_episodes=1 checkpoint_every=1000000 logger=csv progress=false "hydra.run.dir=$OUT/$1"
}
if have minatar; then smoke train_minatar minatar/breakout 75; else skip train_minatar "minatar is not installed"; fi
if have ale_py && have cv2; then
  smoke train_atari atari/pong 90
else
  skip train_atari "ale-py or opencv-python-headless is not installed"
fi

# 4. many seeds in one process (issue 12): MinAtar Breakout PER, S seeds in lockstep against one seed alone
if have minatar; then
  for s in "${SEEDS[@]}"; do
    step "many_seeds_$s" 45 "$PY" -m rlfocal.train env=minatar/breakout replay=per "num_seeds=$s" "device=$DEVICE" \
      "${MANY[@]}" gauge.every=0 eval_every=0 eval_episodes=1 checkpoint_every=1000000 logger=csv progress=false \
      "hydra.run.dir=$OUT/many_seeds_$s"
  done
else
  skip many_seeds "minatar is not installed"
fi

# 5. Atari throughput cells
if have ale_py && have cv2 && have psutil; then
  step atari_throughput 170 "$PY" benchmarks/atari_throughput.py --device "$DEVICE" --games pong --variants b32 \
    --repeats 1 "${CELLS[@]}" --out "$OUT/atari_throughput.json"
  step atari_gpu_path 120 "$PY" benchmarks/atari_throughput.py --device "$DEVICE" --games pong --variants b32 \
    --repeats 1 --vector-mode async --gpu-path "${FAST[@]}" --out "$OUT/atari_gpu_path.json"
else
  skip atari_throughput "ale-py, opencv-python-headless or psutil is not installed"
  skip atari_gpu_path "ale-py, opencv-python-headless or psutil is not installed"
fi

# 7. acting's sync
step act_sync 60 "$PY" benchmarks/act_sync.py --device "$DEVICE" "${ACT[@]}" --out "$OUT/act_sync.json"

# summary
"$PY" - "$OUT" "$DRY" "$((SECONDS - T0))" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
from pathlib import Path

out, dry, wall = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, rc, seconds, detail = line.split("\t")
    entry = {"name": name, "status": status, "seconds": int(seconds)}
    entry.update({"rc": int(rc), "command": detail} if rc else {"why": detail})
    steps.append(entry)
summary = {"mode": "dry-run (cpu, tiny sizes)" if dry else "gpu", "wall_s": wall, "steps": steps}
log = (out / "gpu_check.log").read_text(errors="replace").splitlines()
smi = [s for s in steps if s["name"] == "nvidia-smi" and s["status"] == "ok"]
if smi:  # the line nvidia-smi printed: the one after its step header
    header = next(i for i, line in enumerate(log) if line.startswith("[gpu_check") and "nvidia-smi (timeout" in line)
    summary["nvidia_smi"] = log[header + 1]
if (out / "torch.json").exists():
    summary["torch"] = json.loads((out / "torch.json").read_text())
for name in ("test_cuda", "cuda_tests"):
    if (out / f"{name}.xml").exists():
        suite = ET.parse(out / f"{name}.xml").getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        summary[name] = {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]}
for name in ("train_minatar", "train_atari"):
    if (out / name / "summary.json").exists():
        run = json.loads((out / name / "summary.json").read_text())
        summary[name] = {k: run.get(k) for k in ("env", "arm", "global_step", "updates", "sps", "wall_time_s")}
for name, file in (("atari_throughput", "atari_throughput.json"), ("atari_gpu_path", "atari_gpu_path.json")):
    if not (out / file).exists():
        continue
    keys = ("contender", "num_envs", "batch_size", "sps_median", "updates_per_s", "peak_gpu_mib", "gpu", "error")
    cells = json.loads((out / file).read_text())["results"]
    summary[name] = [{k: c.get(k) for k in keys if k in c} for c in cells]
    failed = [c for c in cells if "error" in c]
    for s in steps:  # the benchmark exits 0 when a cell fails; the check does not
        if s["name"] == name and failed and s["status"] == "ok":
            s.update(status="failed", why=f"{len(failed)} of {len(cells)} cells failed: {failed[0]['error']}")
if (out / "act_sync.json").exists():
    summary["act_sync"] = json.loads((out / "act_sync.json").read_text())["results"]
many = {}  # seed-steps/s = S x the batch's env steps/s (every seed steps in lockstep)
for run_dir in sorted(out.glob("many_seeds_*")):
    seeds = int(run_dir.name.rsplit("_", 1)[1])
    result = run_dir / ("seed_0" if seeds > 1 else "") / "summary.json"
    if result.exists():
        sps = json.loads(result.read_text())["sps"]
        many[seeds] = {"num_seeds": seeds, "env_steps_per_s": sps, "seed_steps_per_s": seeds * sps}
if many:
    one = many.get(1, {}).get("seed_steps_per_s")
    for cell in many.values():
        cell["x_one_seed"] = cell["seed_steps_per_s"] / one if one else None
    summary["many_seeds"] = list(many.values())
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
bad = [s["name"] for s in steps if s["status"] in ("failed", "timeout")]
print(f"gpu_check: {len(steps)} steps, {wall}s, " + (f"FAILED: {', '.join(bad)}" if bad else "no failures"))
sys.exit(1 if bad else 0)
EOF
