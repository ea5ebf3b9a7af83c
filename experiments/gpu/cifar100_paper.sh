#!/usr/bin/env bash
# The paper's CIFAR-100 comparison on one GPU, from one command, in at most 9 minutes of wall time
# on an H100-class GPU.
#
#   bash experiments/gpu/cifar100_paper.sh --data-dir DIR [--epochs N] [--output-dir DIR]
#   bash experiments/gpu/cifar100_paper.sh --smoke [--output-dir DIR]   # synthetic data, ~1 minute on a CPU
#
# Protocol: experiments/configs/cifar100_b0_10steps.yaml, the paper's. Split CIFAR-100, B0 with 10
# steps of 10 classes, class order "icarl" (numpy seed 1993), ResNet-32, a memory of 2000 samples
# concatenated into each step's training set (replay: concat: every sample once per epoch, as in
# the paper, iCaRL, PyCIL and FACIL), SGD (lr 0.1, momentum 0.9, weight decay 5e-4), batch 128,
# random crop + flip. Methods: Replay + CE vs Replay + BSCE, iCaRL (NME) + CE vs iCaRL + BSCE;
# seed 0; the first experience is trained once per key and shared (runner/first_experience.py).
#
# Epochs: the paper trains 160 epochs per step (lr / 10 at epochs 80 and 120). Here --epochs per
# step (default 30: what fits 9 minutes of wall time on one H100 with the four runs sharing it,
# measured: see experiments/RESULTS.md), with the lr divided by 10 at 1/2 and 3/4 of them.
# Speed: images kept on the GPU and batches gathered there (data_path: device), bf16 autocast
# (amp: bf16), channels_last, evaluation in batches of 2000, the four runs at once (--jobs 4).
#
# The full 160-epoch protocol (hours; same command, the config's own schedule):
#   bsce-experiment grid --config experiments/configs/cifar100_b0_10steps.yaml --data-dir DIR \
#       --strategies replay icarl --losses ce bsce --seeds 0 --data-path device --amp bf16 \
#       --eval-batch-size 2000 --jobs 4 --output-dir outputs/cifar100-paper-160
#
# Writes OUTPUT_DIR/<run>/results.json, OUTPUT_DIR/comparison.md (+ PNG plots) and
# OUTPUT_DIR/summary.md (the table, the device, the epochs and the wall time).
# Relative --data-dir and --output-dir are the caller's (resolved before moving to the repository root);
# the default output directory is under the repository root.
set -euo pipefail

die() { echo "cifar100_paper.sh: $1" >&2; exit 2; }
value() { [[ $# -ge 2 && "$2" != --* ]] || die "$1 needs a value (see --help)"; }
epochs=30 data_dir="" out="" smoke=0 extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --epochs) value "$@"; epochs="$2"; shift 2 ;;
        --data-dir) value "$@"; data_dir="$(realpath -m -- "$2")"; shift 2 ;;
        --output-dir) value "$@"; out="$(realpath -m -- "$2")"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        --wandb) extra+=(--wandb); shift ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$epochs" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, got $epochs"
cd "$(dirname "$0")/../.."

args=(--strategies replay icarl --losses ce bsce --seeds 0 --data-path device --amp bf16 --jobs 4)
if [[ $smoke == 1 ]]; then
    # Same script path in about a minute on a CPU (or the GPU if there is one): synthetic
    # CIFAR-shaped data (12 images per class), a narrow ResNet-8, 1 epoch, memory 200, two runs
    # at a time.
    out=${out:-outputs/cifar100-paper-smoke}
    data_dir="$out/smoke-data"
    mkdir -p "$data_dir"
    python - "$data_dir/cifar100.npz" <<'EOF'
import sys
import numpy as np
rng = np.random.default_rng(0)
def split(per_class):
    y = np.repeat(np.arange(100), per_class)
    return rng.integers(0, 256, (len(y), 32, 32, 3), dtype=np.uint8), y
x_train, y_train = split(12)
x_test, y_test = split(4)
np.savez(sys.argv[1], x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
EOF
    epochs=1 jobs=2
    args+=(--model resnet8 --width 4 --memory-size 200 --eval-batch-size 400 --jobs 2)
    title="Smoke run: synthetic CIFAR-shaped data (12 images per class), ResNet-8 of width 4, memory 200 (concatenated), 1 epoch per step: checks the script, not the method"
else
    [[ -n "$data_dir" ]] || die "give --data-dir DIR (holding cifar100.npz), or --smoke"
    # before any worker starts: the data is there (the runner's own checks then read it)
    [[ -f "$data_dir/cifar100.npz" || -f "$data_dir/cifar100/cifar100.npz" || -d "$data_dir/cifar-100-python" ]] \
        || die "no CIFAR-100 in $data_dir: looked for cifar100.npz, cifar100/cifar100.npz and cifar-100-python/; give the folder holding it with --data-dir"
    out=${out:-outputs/cifar100-paper-${epochs}ep}
    args+=(--eval-batch-size 2000)
    jobs=4
    title="CIFAR-100 B0-10, ResNet-32, memory 2000 (concatenated), $epochs epochs per step"
fi
milestones="[$(( epochs / 2 > 0 ? epochs / 2 : 1 )), $(( epochs * 3 / 4 > epochs / 2 ? epochs * 3 / 4 : epochs / 2 + 1 ))]"
(( epochs >= 4 )) || milestones="[]"
# the protocol at these epochs, each method's recipe (iCaRL's own) scaled, milestones at the same fractions: one
# config file (a key set on the command line that a recipe also sets is an error, GUIDE.md)
mkdir -p "$out"
python "$(dirname "$0")/scaled_recipes.py" experiments/configs/cifar100_b0_10steps.yaml "$epochs" "$milestones" \
    > "$out/config.json"

start=$(date +%s)
python -m bsce_avalanche grid --config "$out/config.json" --data-dir "$data_dir" \
    --no-wandb "${extra[@]}" "${args[@]}" --output-dir "$out"
wall=$(( $(date +%s) - start ))

python - "$out" "$title" "$milestones" "$wall" "$jobs" <<'EOF'
import json, sys
from pathlib import Path
out, title, milestones, wall, jobs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
runs = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
env = runs[0]["environment"]
device = env.get("gpu") or env.get("cpu")
pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
lines = [
    f"# {title} (lr milestones {milestones})",
    "",
    f"Device: {device}; torch {env['torch']}; {jobs} runs sharing it; wall time of the whole grid: {wall} s.",
    "",
    "| method | avg. incremental acc. (%) | last acc. (%) | step-0 acc. (%) | predictions to the 10 newest classes, last step (%) | train time (s) |",
    "|---|---|---|---|---|---|",
]
for r in runs:
    c = r["config"]
    if not r.get("finished"):
        lines.append(f"| {c['strategy']} + {c['loss'].upper()} | not finished | | | | |")
        continue
    steps = r["steps"]
    lines.append(
        f"| {c['strategy']} + {c['loss'].upper()} | {pct(r['average_incremental_accuracy'])} | {pct(r['last_accuracy'])} "
        f"| {pct(steps[0]['accuracy_seen'])} | {pct(steps[-1]['new_class_prediction_share'])} | {r['train_time_s']:.0f} |"
    )
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
