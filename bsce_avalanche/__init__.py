"""bsce-avalanche: Balanced Softmax Cross-Entropy for class-incremental learning.

Reference implementation of Jodelet, Liu & Murata, "Balanced Softmax Cross-Entropy for
Incremental Learning" (ICANN 2021; CVIU 2022), as a plugin for Avalanche::

    from bsce_avalanche import BalancedSoftmaxPlugin
    strategy = Replay(model, optimizer, CrossEntropyLoss(), mem_size=2000,
                      plugins=[BalancedSoftmaxPlugin()])

``import bsce_avalanche`` imports neither torch nor Avalanche: the names below are imported from
their modules when first used (:pep:`562`), so that ``bsce-experiment --help`` answers at once.
"""

from __future__ import annotations

from ._lazy import lazy_exports


from .catalog import PRIOR_MODES

#: The one version number: setup.cfg's metadata reads it (``version = attr:``), CHANGELOG.md's top entry names it;
#: a release is the tag ``v<__version__>``.
__version__ = "0.1.0"

__all__ = ["BalancedSoftmaxPlugin", "PRIOR_MODES", "ClassPrior", "WindowPrior", "BalancedSoftmaxCrossEntropyLoss",
           "balanced_softmax_cross_entropy", "log_prior_adjustment", "class_counts", "dataset_labels",
           "loader_class_counts", "ConcatReplayPlugin", "herding_buffer", "LogitAdjustmentPlugin",
           "posthoc_adjustment", "logit_adjusted",
           "WeightAligningPlugin", "ERACE"]

#: The names imported on first use, by module (these modules import torch and Avalanche).
_LAZY: dict[str, tuple[str, ...]] = {
    "losses": ("BalancedSoftmaxCrossEntropyLoss", "balanced_softmax_cross_entropy", "log_prior_adjustment",
               "posthoc_adjustment", "logit_adjusted"),
    "posthoc": ("LogitAdjustmentPlugin",),
    "plugin": ("BalancedSoftmaxPlugin",),
    "priors": ("ClassPrior", "WindowPrior", "class_counts", "dataset_labels", "loader_class_counts"),
    "replay": ("ConcatReplayPlugin", "herding_buffer"),
    "weight_aligning": ("WeightAligningPlugin",),
    "er_ace": ("ERACE",),
}
__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
