#!/usr/bin/env bash
# The paper's full CIFAR-100 B0-10 comparison (160 epochs per step) on one GPU, resumable across
# calls of at most 9 minutes.
#
#   bash experiments/gpu/cifar100_paper_full.sh --data-dir DIR [--output-dir DIR] [--resume] [--jobs N]
#        [--epochs N] [--no-compile] [--copy-to DIR]
#   bash experiments/gpu/cifar100_paper_full.sh --smoke [--output-dir DIR] [--resume] [--compile]
#        # synthetic data, about a minute on a CPU (compile off: on a CPU it compiles for minutes)
#
# Protocol: experiments/configs/cifar100_b0_10steps.yaml (B0, 10 steps of 10 classes, class order
# "icarl", ResNet-32, memory 2000 concatenated into every step, SGD lr 0.1, batch 128, 160 epochs with
# lr / 10 at 80 and 120; the config's recipes give iCaRL and BiC their own), seed 0. The runs are listed in
# RUNS below (strategy, loss, tau, extra keys): Replay CE (which also reports post-hoc logit adjustment),
# Replay BSCE, iCaRL at its own recipe (sigmoid BCE, loss ce), iCaRL with softmax CE (loss bsce, tau 0),
# iCaRL + BSCE (loss bsce, tau 1), and the peers: LwF + memory CE / BSCE, WA (LwF + memory + weight
# aligning), Replay + WA, BiC (fixed: distillation over the classes, the concatenated rehearsal), ER-ACE
# (Replay's memory, updated after each step).
# Speed: compile: true, amp: bf16, data_path: device, evaluation in batches of 2000, --jobs runs
# (default 5: all) sharing the GPU, each in its own process with CPU cores // jobs threads.
#
# Resuming: every run writes results.json and checkpoint.pt after each step under --output-dir.
# --resume continues unfinished runs from their last finished step and skips finished ones. On
# SIGINT or SIGTERM (e.g. `timeout -s INT 540 bash ...`) the runs are stopped (SIGTERM), the
# summary of what is done is written, --copy-to gets the folder, and the script exits with 130:
# call it again with --resume. The compile cache (TORCHINDUCTOR_CACHE_DIR, default
# OUTPUT_DIR/compile-cache) lives in the folder too, so a later call skips most compilation.
# On the device tool: --output-dir outputs/paper-full (carried in by the next call) and
# --copy-to "$OUT" (carried back).
#
# Prints and writes OUTPUT_DIR/summary.md: per run the steps done, accuracies, training time and
# images/s (steps 1-9, which every run trains itself: the first experience is shared between the runs
# that train it alike), and the wall time of this call and of all calls (OUTPUT_DIR/wall_times_s.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."

# ---------------------------------------------------------------------------------------------------
# THE RUN LIST: one line per run, "strategy loss tau [key=value ...]" (tau acts with loss bsce only; the
# extra keys are --set overrides of the config).
RUNS=(
    "replay ce 1"     # Replay + CE (and its post-hoc logit adjustment, from the same evaluation)
    "replay bsce 1"   # Replay + BSCE
    "icarl ce 1"      # iCaRL at its own recipe: sigmoid BCE
    "icarl bsce 0"    # iCaRL with softmax CE (BSCE with tau 0)
    "icarl bsce 1"    # iCaRL + BSCE
    "lwf ce 1 lwf_memory=true"                         # LwF + memory + CE
    "lwf bsce 1 lwf_memory=true"                       # LwF + memory + BSCE
    "lwf ce 1 lwf_memory=true weight_aligning=true"    # WA as published: distillation, aligning, clipping
    "replay ce 1 weight_aligning=true"                 # Replay + WA: aligning alone
    "bic ce 1"        # BiC, fixed (compat.FixedBiCPlugin), concatenated rehearsal, at its recipe
    "er_ace ce 1"     # ER-ACE on Replay's memory, updated after each step
)
# ---------------------------------------------------------------------------------------------------

config=experiments/configs/cifar100_b0_10steps.yaml
data_dir="" out="" smoke=0 resume=() jobs=${#RUNS[@]} epochs="" compile="" copy_to=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data-dir) data_dir="$2"; shift 2 ;;
        --output-dir) out="$2"; shift 2 ;;
        --resume) resume=(--resume); shift ;;
        --jobs) jobs="$2"; shift 2 ;;
        --epochs) epochs="$2"; shift 2 ;;
        --compile) compile=--compile; shift ;;
        --no-compile) compile=--no-compile; shift ;;
        --copy-to) copy_to="$2"; shift 2 ;;
        --smoke) smoke=1; shift ;;
        -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "cifar100_paper_full.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "cifar100_paper_full.sh: --jobs must be a positive integer, got $jobs" >&2; exit 2; }
[[ -z "$epochs" || "$epochs" =~ ^[1-9][0-9]*$ ]] || { echo "cifar100_paper_full.sh: --epochs must be a positive integer, got $epochs" >&2; exit 2; }

args=(--seed 0 --data-path device --amp bf16 --no-wandb --no-progress)
if [[ $smoke == 1 ]]; then
    # the same path on synthetic CIFAR-shaped data (12 images per class), a narrow ResNet-8, 1 epoch,
    # memory 200, 4 steps of 25 classes (the memory is used, then shrunk: every step's path): a CPU runs
    # it in minutes
    out=${out:-outputs/cifar100-paper-full-smoke}
    data_dir="$out/smoke-data"
    mkdir -p "$data_dir"
    [[ -f "$data_dir/cifar100.npz" ]] || python - "$data_dir/cifar100.npz" <<'EOF'
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
    epochs=${epochs:-1} compile=${compile:---no-compile}
    args+=(--model resnet8 --width 4 --memory-size 200 --eval-batch-size 400 --set n_steps=4)
else
    [[ -n "$data_dir" ]] || { echo "cifar100_paper_full.sh: give --data-dir DIR (holding cifar100.npz), or --smoke" >&2; exit 2; }
    out=${out:-outputs/cifar100-paper-full}
    args+=(--eval-batch-size 2000)
fi
args+=("${compile:---compile}")
if [[ -n "$epochs" ]]; then
    # another length than the config's 160: the shared milestones at 1/2 and 3/4, each recipe's scaled
    milestones="[$(( epochs / 2 > 0 ? epochs / 2 : 1 )), $(( epochs * 3 / 4 > epochs / 2 ? epochs * 3 / 4 : epochs / 2 + 1 ))]"
    (( epochs >= 4 )) || milestones="[]"
    # one config file: a key set on the command line that a recipe also sets is an error (GUIDE.md)
    mkdir -p "$out"
    python "$(dirname "$0")/scaled_recipes.py" "$config" "$epochs" "$milestones" > "$out/config.json"
    config="$out/config.json"
fi
mkdir -p "$out/logs"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$out/compile-cache}
cores=$(python -c "import os; print(os.cpu_count() or 1)")
threads=$(( cores / (jobs < ${#RUNS[@]} ? jobs : ${#RUNS[@]}) ))
(( threads >= 1 )) || threads=1

start=$(date +%s) interrupted=0 pids=() names=()
stop() {
    interrupted=1
    echo "cifar100_paper_full.sh: interrupted: stopping the runs (each keeps its last finished step)" >&2
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
}
trap stop INT TERM

for spec in "${RUNS[@]}"; do
    read -r strategy loss tau extra <<< "$spec"
    while (( interrupted == 0 )) && (( $(jobs -rp | wc -l) >= jobs )); do sleep 1; done
    (( interrupted == 0 )) || break
    name="$strategy-$loss" && [[ $loss == ce ]] || name+="-tau$tau"
    sets=()
    for item in $extra; do sets+=(--set "$item"); name+="-${item%%=*}"; done
    python -m bsce_avalanche run --config "$config" --data-dir "$data_dir" \
        --set strategy="$strategy" --set loss="$loss" --set tau="$tau" "${sets[@]}" --threads "$threads" "${args[@]}" \
        "${resume[@]}" --output-dir "$out" > "$out/logs/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
    echo "started $name (log: $out/logs/$name.log)"
done
failed=0
for i in "${!pids[@]}"; do
    rc=0
    while true; do  # a trapped signal interrupts wait: wait again for the run to stop
        wait "${pids[$i]}" && rc=0 || rc=$?
        kill -0 "${pids[$i]}" 2>/dev/null || break
    done
    if (( rc != 0 )); then
        failed=1
        (( interrupted )) || { echo "${names[$i]} failed (exit $rc): last lines of its log:" >&2; tail -n 5 "$out/logs/${names[$i]}.log" >&2; }
    else
        echo "${names[$i]}: done"
    fi
done
wall=$(( $(date +%s) - start ))
echo "$wall" >> "$out/wall_times_s.txt"

python - "$out" "$wall" "$interrupted" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
from bsce_avalanche.runner.labels import readable_method
out, wall, interrupted = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
total_wall = sum(int(line) for line in (out / "wall_times_s.txt").read_text().split())
runs = [json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))]
pct = lambda v: "-" if v is None else f"{100 * v:.1f}"
lines, device, rates = [], None, []
for r in runs:
    c, steps = r["config"], r["steps"]
    device = device or r["environment"].get("gpu") or r["environment"].get("cpu")
    with np.load(Path(c["data_dir"]) / "cifar100.npz") as data:
        per_class = len(data["y_train"]) // r["n_classes"]
    # images trained per step: epochs x (the step's classes' images + the memory, from step 1 on)
    images = r.get("images_seen") or [c["epochs"] * (len(classes) * per_class + (c["memory_size"] if t else 0))
                                      for t, classes in enumerate(r["classes_per_step"][: len(steps)])]
    seconds = sum(r["step_times_s"][1:])
    rate = sum(images[1:]) / seconds if seconds else None
    rates.append(rate)
    method = readable_method(c)
    lines.append(f"| {method} | {len(steps)}/{len(r['classes_per_step'])} | {pct(r.get('average_incremental_accuracy'))} "
                 f"| {pct(r.get('last_accuracy'))} | {r.get('train_time_s', 0):.0f} | "
                 f"{'-' if rate is None else f'{rate:.0f}'} |")
epochs = runs[0]["config"]["epochs"] if runs else "?"
header = [
    f"# CIFAR-100 B0-10, {epochs} epoch(s) per step: Replay, LwF + memory and iCaRL with CE and BSCE; WA, BiC, "
    f"ER-ACE",
    "",
    (f"Device: {device}; {len(runs)} runs sharing it" if runs else "No run has finished a step yet")
    + f"; wall time of this call {wall} s, of all calls {total_wall} s"
    + (" (this call was interrupted: continue with --resume)" if interrupted else "") + ".",
    f"Images/s: training images of steps 1-9 over their training time, per run; sum over runs: "
    f"{sum(r for r in rates if r):.0f}.",
    "",
    "| method | steps done | avg. incremental acc. (%) | last acc. (%) | train time (s) | images/s (steps 1-9) |",
    "|---|---|---|---|---|---|",
]
(out / "summary.md").write_text("\n".join(header + lines) + "\n")
print("\n".join(header + lines))
EOF
if [[ -n "$copy_to" ]]; then
    mkdir -p "$copy_to" && cp -r "$out" "$copy_to"/ && echo "copied $out to $copy_to/"
fi
if (( interrupted )); then exit 130; fi
if (( failed == 0 )) && (( ${#pids[@]} > 0 )); then
    python -m bsce_avalanche compare "$out" --output "$out" > /dev/null && echo "comparison: $out/comparison.md"
fi
exit $failed
