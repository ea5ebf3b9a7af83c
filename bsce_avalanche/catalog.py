"""The library's named choices and their facts, without torch or Avalanche: the networks, the
mixed-precision modes, BSCE's prior modes, iCaRL's evaluation modes and the bound on ``tau``.

The modules that build things import their names from here and attach what needs torch
(:mod:`~bsce_avalanche.models`, :mod:`~bsce_avalanche.priors`, :mod:`~bsce_avalanche.icarl`,
:mod:`~bsce_avalanche.losses`); the runner checks a config against them before importing
torch (``bsce-experiment --help`` and config errors answer at once). The benchmarks' facts are
:mod:`bsce_avalanche.benchmarks.catalog`, the runner's strategies :mod:`bsce_avalanche.runner.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._numbers import plain_number

__all__ = ["ModelInfo", "MODELS", "AMP_MODES", "PRIOR_MODES", "ICARL_EVAL_MODES", "ZERO_PRIOR_OFFSET", "MAX_TAU", "MAX_WINDOW",
           "check_tau"]


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`~bsce_avalanche.models.make_model` knows about one network."""

    description: str
    #: normalisation it gets with ``input_norm="auto"``
    input_norm: str | None
    #: blocks per stage of a CIFAR ResNet-(6n+2) (these take ``widths=``); None for the others
    blocks_per_stage: int | None = None


#: The networks :func:`~bsce_avalanche.models.make_model` builds, by name. ResNet-32 is the network of
#: iCaRL/LUCIR/PODNet; ResNet-20 and ResNet-8 are cheaper variants for CPU runs.
MODELS: dict[str, ModelInfo] = {
    "resnet32": ModelInfo("CIFAR ResNet-32 of iCaRL, LUCIR, PODNet (0.46M parameters)", "cifar100", 5),
    "resnet20": ModelInfo("CIFAR ResNet-20 (0.27M parameters)", "cifar100", 3),
    "resnet8": ModelInfo("CIFAR ResNet-8 (0.07M parameters), for CPU runs", "cifar100", 1),
    "resnet18": ModelInfo("torchvision's ImageNet ResNet-18, untrained (11.2M parameters)", "imagenet"),
    "resnet18_cifar": ModelInfo("ResNet-18 with a 3x3 stride-1 stem, no max-pool: for 32-64 px images", "cifar100"),
    "small_cnn": ModelInfo("three conv-BN-ReLU layers, for the 8x8 digits (0.09M parameters)", None),
}

#: Mixed precision (the runner's ``amp`` key): the name of the ``torch`` autocast dtype, or None for
#: float32 (:data:`bsce_avalanche.models.AMP_DTYPES` holds the dtypes).
AMP_MODES: dict[str, str | None] = {"none": None, "bf16": "bfloat16"}

#: Prior modes accepted by ``BalancedSoftmaxPlugin(prior=...)`` and :class:`~bsce_avalanche.ClassPrior`.
PRIOR_MODES = ("auto", "sampling", "dataset", "batch", "window")

#: iCaRL's classifier at evaluation (:func:`bsce_avalanche.icarl.set_icarl_eval`): nearest mean of
#: exemplars or the trained head.
ICARL_EVAL_MODES = ("nme", "head")

#: Offset added to the logits of classes with zero prior. Finite (unlike log(0)) so that
#: no NaN/inf can appear, and far below any real logit so their softmax mass and gradient are exactly 0.
ZERO_PRIOR_OFFSET = -1e30
#: Largest ``tau``: the adjustment ``tau * log(prior)`` of a class with one sample in 2**31
#: (``log(prior) >= -21.5``) stays above ``ZERO_PRIOR_OFFSET / 2``, so present classes never
#: look absent, and far inside the range of float32 (bf16 has the same range).
MAX_TAU = 1e28
#: The longest window (mini-batches) of ``prior="window"``: its ring holds ``window x classes`` int64 counts
#: (80 MB with 100 classes, 0.8 GB with 1,000 at the bound).
MAX_WINDOW = 100_000


def check_tau(tau: float) -> float:
    """``tau`` as a float if it is a real number in ``[0, MAX_TAU]`` (NumPy and torch scalars included);
    else an error saying why."""
    tau = plain_number(tau)
    if isinstance(tau, bool) or not isinstance(tau, (int, float)):
        raise TypeError(f"tau must be a real number, got {type(tau).__name__}.")
    if not 0 <= tau <= MAX_TAU:  # NaN fails too
        raise ValueError(f"tau must be finite and >= 0, at most {MAX_TAU:g} (0 = plain cross-entropy, 1 = BSCE), "
                         f"got {tau}: for priors down to 2**-31, tau * log(prior) must stay above "
                         f"{ZERO_PRIOR_OFFSET / 2:g}, half the offset that removes absent classes from the softmax "
                         "(in float32, and bf16, training).")
    return float(tau)
