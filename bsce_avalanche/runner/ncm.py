"""A diagnostic of the representation: the accuracy of a nearest-class-mean (NCM) classifier on the model's
features, the class means taken from the replay memory (what a rehearsal method can use at test time).

BSCE and post-hoc logit adjustment change the classifier's bias; if BSCE's gain over post-hoc adjustment came
from better features, NCM on BSCE's features would beat NCM on CE's. The test features are taken from the
evaluation's own forward pass (a hook on ``model.feature_extractor``): one extra pass over the memory only.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.training.plugins import SupervisedPlugin
from avalanche.training.storage_policy import ExemplarsBuffer
from torch.utils.data import DataLoader

__all__ = ["NCMDiagnostic", "memory_dataset"]


def memory_dataset(strategy):
    """The replay memory of ``strategy`` (a plugin's ``storage_policy.buffer``), or None."""
    for owner in (strategy, *strategy.plugins):
        policy = vars(owner).get("storage_policy")
        if isinstance(policy, ExemplarsBuffer) and len(policy.buffer) > 0:
            return policy.buffer
    return None


class NCMDiagnostic(SupervisedPlugin):
    """Records, at every evaluation, the NCM predictions on the test features (cosine to the L2-normalised
    class means of the memory's features, iCaRL's rule); classes without a sample in memory are never
    predicted. ``predictions()`` after ``strategy.eval``: None when the strategy has no memory."""

    def __init__(self):
        super().__init__()
        self._means: Optional[torch.Tensor] = None
        self._hook = None
        self._features: list = []
        self._predictions: list = []

    def before_eval(self, strategy, **kwargs):
        self._predictions, self._means = [], None
        memory = memory_dataset(strategy)
        extractor = getattr(strategy.model, "feature_extractor", None)
        if memory is None or extractor is None:
            return
        self._means = self._class_means(strategy, extractor, memory)
        self._hook = extractor.register_forward_hook(lambda module, inputs, output: self._features.append(output))

    @torch.no_grad()
    def _class_means(self, strategy, extractor, memory) -> torch.Tensor:
        data = memory.eval()
        # its own generator: a loader draws its base seed from the global RNG, which the training goes on with
        loader = DataLoader(data, batch_size=strategy.eval_mb_size, collate_fn=getattr(data, "collate_fn", None),
                            generator=torch.Generator())
        modes = {module: module.training for module in extractor.modules()}
        extractor.eval()  # BatchNorm statistics untouched
        features, labels = [], []
        try:
            for x, y, *_ in loader:
                features.append(F.normalize(extractor(x.to(strategy.device)).flatten(1).float(), dim=1))
                labels.append(y.to(strategy.device))
        finally:
            for module, training in modes.items():
                module.training = training
        features, labels = torch.cat(features), torch.cat(labels).long()
        n = int(labels.max()) + 1
        sums = torch.zeros(n, features.shape[1], device=features.device).index_add_(0, labels, features)
        counts = torch.bincount(labels, minlength=n).float()
        means = F.normalize(sums / counts.clamp_min(1).unsqueeze(1), dim=1)
        means[counts == 0] = float("nan")  # never the nearest
        return means

    def after_eval_iteration(self, strategy, **kwargs):
        if self._means is None or not self._features:
            return
        features = F.normalize(self._features.pop().flatten(1).float(), dim=1)
        self._features.clear()
        similarity = torch.nan_to_num(features @ self._means.T, nan=-2.0)  # cosine >= -1: absent classes lose
        self._predictions.append(similarity.argmax(1).cpu())

    def after_eval(self, strategy, **kwargs):
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._features.clear()

    def predictions(self) -> Optional[np.ndarray]:
        return torch.cat(self._predictions).numpy() if self._predictions else None
