"""Start-up hook for test subprocesses whose PYTHONPATH names this folder: with
``BSCE_WANDB_RECORD`` set, each W&B run's public state is appended to that file when it
finishes (``fake_wandb.recording_init``); wandb itself stays real."""

import os
import sys

if os.environ.get("BSCE_WANDB_RECORD"):
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import fake_wandb
    import wandb

    wandb.init = fake_wandb.recording_init(wandb.init, os.environ["BSCE_WANDB_RECORD"])
