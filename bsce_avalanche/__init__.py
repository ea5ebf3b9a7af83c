"""bsce-avalanche: Balanced Softmax Cross-Entropy for class-incremental learning.

Reference implementation of Jodelet, Liu & Murata, "Balanced Softmax Cross-Entropy for
Incremental Learning" (ICANN 2021; CVIU 2022), as a plugin for Avalanche::

    from bsce_avalanche import BalancedSoftmaxPlugin
    strategy = Replay(model, optimizer, CrossEntropyLoss(), mem_size=2000,
                      plugins=[BalancedSoftmaxPlugin()])
"""

from .losses import BalancedSoftmaxCrossEntropyLoss, balanced_softmax_cross_entropy, log_prior_adjustment
from .plugin import PRIOR_MODES, BalancedSoftmaxPlugin
from .priors import ClassPrior, class_counts, dataset_labels, loader_class_counts
from .replay import ConcatReplayPlugin, herding_buffer

__version__ = "0.1.0"

__all__ = ["BalancedSoftmaxPlugin", "PRIOR_MODES", "ClassPrior", "BalancedSoftmaxCrossEntropyLoss",
           "balanced_softmax_cross_entropy", "log_prior_adjustment", "class_counts", "dataset_labels",
           "loader_class_counts", "ConcatReplayPlugin", "herding_buffer"]
