"""Evaluate Avalanche's iCaRL with its trained head or with nearest-mean-of-exemplars (NME).

With BSCE the trained linear head is itself balanced, so it is worth evaluating too: iCaRL's eval classifier
becomes a switch holding both; iCaRL keeps updating the class means (``replace_class_means_dict``).
"""

from __future__ import annotations

from torch import nn

from .catalog import ICARL_EVAL_MODES

__all__ = ["ICARL_EVAL_MODES", "HeadOrNMEClassifier", "set_icarl_eval"]


class HeadOrNMEClassifier(nn.Module):
    """Eval classifier of iCaRL's ``TrainEvalModel``: NME class means or the trained head."""

    def __init__(self, nme: nn.Module, head: nn.Module, mode: str = "nme"):
        super().__init__()
        self.nme, self.head, self.mode = nme, head, mode

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in ICARL_EVAL_MODES:
            raise ValueError(f"iCaRL eval mode must be one of {ICARL_EVAL_MODES}, got {value!r}.")
        self._mode = value

    def forward(self, features):
        return self.nme(features) if self._mode == "nme" else self.head(features)

    def replace_class_means_dict(self, class_means_dict) -> None:
        self.nme.replace_class_means_dict(class_means_dict)


def set_icarl_eval(strategy_or_model, mode: str) -> None:
    """Make an ``ICaRL`` strategy (or its ``TrainEvalModel``) evaluate with ``mode``: ``"nme"`` (iCaRL's
    default) or ``"head"`` (the trained linear head); at any time, e.g. the same weights both ways."""
    model = getattr(strategy_or_model, "model", strategy_or_model)
    if not (hasattr(model, "eval_classifier") and hasattr(model, "train_classifier")):
        raise TypeError("set_icarl_eval expects an Avalanche ICaRL strategy or its TrainEvalModel (with "
                        f"eval_classifier/train_classifier), got {type(model).__name__}.")
    if not isinstance(model.eval_classifier, HeadOrNMEClassifier):
        model.eval_classifier = HeadOrNMEClassifier(model.eval_classifier, model.train_classifier)
    model.eval_classifier.mode = mode
