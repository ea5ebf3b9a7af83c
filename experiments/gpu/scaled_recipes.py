"""Print a config scaled to another number of epochs, as JSON (a YAML config ``--config`` reads): ``epochs``,
the shared ``lr_milestones`` (given, or the file's scaled) and each recipe's lr milestones scaled to the same
fractions of the training (used by the GPU scripts' ``--epochs``). A whole config rather than ``--epochs
--lr-milestones --set recipes=...``: a key set on the command line that a recipe also sets is an error
(experiments/GUIDE.md, recipes).

    python experiments/gpu/scaled_recipes.py experiments/configs/cifar100_b0_10steps.yaml 30 "[15, 22]" > run.json
"""

import json
import sys

from bsce_avalanche.runner.config_files import load_yaml, parse_value


def _scaled(milestones, epochs: int, of: int) -> list:
    return sorted(m for m in {round(m * epochs / of) for m in milestones} if 1 <= m < epochs)


def scaled_recipes(config: dict, epochs: int) -> dict:
    recipes = config.get("recipes") or {}
    for values in recipes.values():
        if "lr_milestones" in values:
            values["lr_milestones"] = _scaled(values["lr_milestones"], epochs, config["epochs"])
    return recipes


def scaled_config(config: dict, epochs: int, milestones=None) -> dict:
    """``config`` with ``epochs``, the shared milestones (``milestones``, else the file's scaled) and the recipes'."""
    shared = _scaled(config.get("lr_milestones") or [], epochs, config["epochs"]) if milestones is None else milestones
    return {**config, "recipes": scaled_recipes(config, epochs), "epochs": epochs, "lr_milestones": shared}


if __name__ == "__main__":
    milestones = parse_value(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(scaled_config(load_yaml(sys.argv[1]), int(sys.argv[2]), milestones), indent=1))
