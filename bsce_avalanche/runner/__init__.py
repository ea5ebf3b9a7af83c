"""The experiment runner: configs, the training loop, results, checkpoints, W&B, sweeps, DDP.

``bsce-experiment`` (:mod:`bsce_avalanche.runner.cli`) is its entry point. The library
(:mod:`bsce_avalanche`: loss, priors, plugin, models, benchmarks) never imports it.
"""
