"""Weight Aligning (WA): Zhao et al., "Maintaining Discrimination and Fairness in Class Incremental
Learning", CVPR 2020 (arXiv:1911.07053), as plain functions and an Avalanche plugin.

WA corrects the bias of the last linear layer towards the new classes after each incremental step:
the new classes' weight vectors are rescaled so that their mean L2 norm equals the old classes',

    gamma = mean_{c old} ||W_c|| / mean_{c new} ||W_c||,        W_c <- gamma * W_c  for c new,

and, during training, the layer's weights are clipped to be non-negative after every optimizer step.

What the reference code does (read for this module; the WA authors released no code that we could find:
runhang/Incremental-Learning-with-Weight-Aligning, an unofficial port, lists "Add weight clipping" as TODO):

* PyCIL (G-U-N/PyCIL @ 87cc411), ``utils/inc_net.py`` ``IncrementalNet.weight_align`` (lines 142-150)::

      newnorm = torch.norm(weights[-increment:, :], p=2, dim=1)
      oldnorm = torch.norm(weights[:-increment, :], p=2, dim=1)
      gamma = meanold / meannew
      self.fc.weight.data[-increment:, :] *= gamma

  old = every row before the last ``increment`` (all classes seen before), new = this task's; the weight
  only (the fc has a bias, left as it is). ``models/wa.py`` calls it when ``_cur_task > 0``: at the end
  of ``_train`` (line 112) and again in ``after_task`` (line 40), the second time with gamma = 1 up to
  rounding. PyCIL does **not** clip.
* DER's reimplementation (Rhyssiyan/DER-ClassIL.pytorch @ dd4af61), ``inclearn/convnet/imbalance.py``
  ``WA.update`` (lines 113-117): the same gamma (``classifier.weight[:-task_size]`` over
  ``[-task_size:]``, weight only), applied at inference to the new classes' logits (``post_process``),
  which equals scaling their weight rows and bias. Clipping, ``inclearn/models/align.py`` lines 166-169
  (and ``incmodel.py`` 205-208), right after every ``self._optimizer.step()``, in **every** task, the
  first included::

      for p in self._network.classifier.parameters():
          p.data.clamp_(0.0)

  i.e. every parameter of the classifier (its WA config has ``use_bias: False``: the weight).
* A FACIL-based port (Tsebeb/cvww_cir_horde, ``src/networks/wa_network.py``, ``src/approach/wa.py``):
  the same gamma over explicit old / new class lists (new = the classes of this experience), weight only
  (bias optional), and an optional ``--clip-head-weights``: ``weight[weight < 0] = 0`` after every
  optimizer step of every task.

What this module does, and where it deviates:

* gamma as above, old = every class seen in earlier experiences, new = the classes of this experience not
  seen before (PyCIL's rows, by class id rather than position: Avalanche's ``IncrementalClassifier`` has
  a row per class id up to the largest seen, so rows of classes not seen yet are neither); applied to the
  **weight rows only**, baked into the weights (as PyCIL and the paper; DER keeps gamma aside and scales
  the logits, bias included). Once per experience, from the second on (no old classes: nothing to align).
* clipping ``weight.clamp_(min=0)`` after every optimizer step (Avalanche's ``after_update``), from the
  first experience on, as DER and the FACIL port do; the **bias is not clipped** (DER clips every
  classifier parameter, but trains without a bias). ``clip=False`` gives PyCIL's WA (aligning only).
* the knowledge distillation WA trains with is not part of this plugin: combine it with ``LwF`` (and a
  memory, e.g. ``ConcatReplayPlugin``), or use it on replay alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import Tensor, nn

__all__ = ["WeightAligningPlugin", "weight_aligning_gamma", "align_weights_", "clip_weights_", "find_linear_head"]


def _rows(classes: Sequence[int], n_rows: int, name: str) -> Tensor:
    rows = torch.as_tensor(list(classes), dtype=torch.long)
    if rows.numel() == 0:
        raise ValueError(f"{name} is empty: weight aligning needs old and new classes.")
    if int(rows.min()) < 0 or int(rows.max()) >= n_rows:
        raise ValueError(f"{name} {list(classes)} holds ids outside the head's {n_rows} rows.")
    return rows


def weight_aligning_gamma(weight: Tensor, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
    """WA's gamma: the mean L2 norm of the old classes' weight rows over the mean of the new classes'."""
    old = _rows(old_classes, weight.shape[0], "old_classes")
    new = _rows(new_classes, weight.shape[0], "new_classes")
    if set(old.tolist()) & set(new.tolist()):
        raise ValueError(f"old_classes and new_classes share {sorted(set(old.tolist()) & set(new.tolist()))}.")
    with torch.no_grad():
        w = weight.detach().float()
        new_norm = w[new].norm(dim=1).mean()
        if new_norm == 0:
            raise ValueError("The new classes' weight rows are all zero: gamma is undefined.")
        return float(w[old].norm(dim=1).mean() / new_norm)


@torch.no_grad()
def align_weights_(linear: nn.Linear, old_classes: Sequence[int], new_classes: Sequence[int]) -> float:
    """Scale the new classes' weight rows of ``linear`` by :func:`weight_aligning_gamma`, in place (the bias
    stays); return gamma."""
    gamma = weight_aligning_gamma(linear.weight, old_classes, new_classes)
    linear.weight[torch.as_tensor(list(new_classes), dtype=torch.long)] *= gamma
    return gamma


@torch.no_grad()
def clip_weights_(linear: nn.Linear) -> None:
    """WA's weight clipping: the weights of ``linear`` made non-negative, in place (the bias stays)."""
    linear.weight.clamp_(min=0)


def find_linear_head(model: nn.Module, head: str = "classifier") -> nn.Linear:
    """The ``nn.Linear`` at attribute path ``head`` of ``model`` (``""``: the model itself), or the
    ``nn.Linear`` that module wraps as ``.classifier`` (Avalanche's ``IncrementalClassifier``)."""
    model = getattr(model, "module", model) if isinstance(model, nn.parallel.DistributedDataParallel) else model
    try:
        module = model.get_submodule(head)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} has no module {head!r}: pass head= the attribute path of its "
                         f"linear classifier, e.g. one of {[n for n, _ in model.named_children()]}.") from None
    inner = getattr(module, "classifier", None)
    if not isinstance(module, nn.Linear) and isinstance(inner, nn.Linear):
        module = inner  # IncrementalClassifier: the nn.Linear it grows
    if not isinstance(module, nn.Linear):
        raise ValueError(f"Module {head!r} of {type(model).__name__} is a {type(module).__name__}, not an nn.Linear "
                         "(nor an IncrementalClassifier): weight aligning needs a linear head; pass head= its path.")
    return module


class WeightAligningPlugin(SupervisedPlugin, supports_distributed=True):
    """Weight Aligning (Zhao et al., CVPR 2020) of a linear head, for class-incremental strategies.

    ``Naive(model, opt, CrossEntropyLoss(), plugins=[ConcatReplayPlugin(2000), WeightAligningPlugin()])``

    After each training experience (from the second on), the weight rows of the classes new in it are
    scaled so that their mean norm equals that of the classes seen before (the bias stays); with
    ``clip``, the head's weights are clipped to be non-negative after every optimizer step, from the
    first experience on. See the module's docstring for the reference code and the deviations.

    :param head: attribute path of the classifier in the model (``""``: the model is the head): an
        ``nn.Linear`` or Avalanche's ``IncrementalClassifier`` (its ``.classifier``).
    :param clip: clip the head's weights to >= 0 after every optimizer step (WA's weight clipping);
        False: aligning only, as PyCIL.

    ``gamma_history``: each training experience's gamma (None: nothing aligned, e.g. the first);
    ``seen_classes``: the classes trained so far. ``state_dict()`` / ``load_state_dict()`` hold both
    (the runner's checkpoints save them with the plugin).
    """

    def __init__(self, head: str = "classifier", clip: bool = True):
        super().__init__()
        if not isinstance(head, str):
            raise ValueError(f"head must be the attribute path of the model's linear classifier (a str, e.g. "
                             f"'classifier'), got {head!r}.")
        if not isinstance(clip, bool):
            raise ValueError(f"clip must be True or False, got {clip!r}.")
        self.head, self.clip = head, clip
        self.seen_classes: list[int] = []
        self.gamma_history: list[Optional[float]] = []

    def state_dict(self) -> dict:
        return {"seen_classes": list(self.seen_classes), "gamma_history": list(self.gamma_history)}

    def load_state_dict(self, state: dict) -> None:
        self.seen_classes = [int(c) for c in state["seen_classes"]]
        self.gamma_history = [None if g is None else float(g) for g in state["gamma_history"]]

    def before_training(self, strategy, **kwargs):
        listed = sum(plugin is self for plugin in strategy.plugins)
        if listed > 1:
            raise ValueError(f"This WeightAligningPlugin is listed {listed} times in the strategy's plugins (it would "
                             "align twice); list it once.")
        find_linear_head(strategy.model, self.head)  # a model without the head fails now, not after an experience

    def after_update(self, strategy, **kwargs):
        if self.clip:  # looked up at each step: IncrementalClassifier replaces its nn.Linear when it grows
            clip_weights_(find_linear_head(strategy.model, self.head))

    def after_training_exp(self, strategy, **kwargs):
        classes = sorted({int(c) for c in strategy.experience.classes_in_this_experience})
        seen = set(self.seen_classes)
        new = [c for c in classes if c not in seen]
        gamma = None
        if seen and new:
            gamma = align_weights_(find_linear_head(strategy.model, self.head), sorted(seen), new)
        self.gamma_history.append(gamma)
        self.seen_classes = sorted(seen.union(classes))
