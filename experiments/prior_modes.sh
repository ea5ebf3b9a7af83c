#!/usr/bin/env bash
# Which prior should BalancedSoftmaxPlugin use with Avalanche's replay loader?
# Replay on split digits (5 steps, 40-sample memory): plain CE, BSCE with the prior of
# the mini-batches really drawn (prior=auto, the default) and BSCE with the paper's
# "new data + memory" counts (prior=dataset), 3 seeds each. ~5 minutes on 2 CPU cores.
set -euo pipefail
out=${1:-experiments/results/prior_modes_digits}
bsce-experiment grid --output-dir "$out" --losses ce bsce --seeds 0 1 2 --no-wandb --no-progress
bsce-experiment grid --output-dir "$out" --losses bsce --prior dataset --seeds 0 1 2 --no-wandb --no-progress
bsce-experiment compare "$out"
