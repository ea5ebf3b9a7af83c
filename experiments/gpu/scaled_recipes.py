"""Print a config's ``recipes`` as JSON with each recipe's lr milestones scaled to another number of epochs
(the same fractions of the training), for ``--set recipes=...`` (used by the GPU scripts' ``--epochs``).

    python experiments/gpu/scaled_recipes.py experiments/configs/cifar100_b0_10steps.yaml 30
"""

import json
import sys

from bsce_avalanche.runner.config import load_yaml


def scaled_recipes(config: dict, epochs: int) -> dict:
    recipes = config.get("recipes") or {}
    for values in recipes.values():
        if "lr_milestones" in values:
            scaled = {round(m * epochs / config["epochs"]) for m in values["lr_milestones"]}
            values["lr_milestones"] = sorted(m for m in scaled if 1 <= m < epochs)
    return recipes


if __name__ == "__main__":
    print(json.dumps(scaled_recipes(load_yaml(sys.argv[1]), int(sys.argv[2]))))
