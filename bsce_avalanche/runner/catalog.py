"""The runner's strategies and rehearsal options by name, and their facts, without torch or Avalanche:
config choices, ``--help``, the first-experience cache, ``compare`` and the README's table come from
:data:`STRATEGIES` (:mod:`.strategies` builds them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

__all__ = ["STRATEGIES", "StrategyInfo", "REPLAY_PROTOCOLS", "MEMORY_SELECTIONS", "uses_replay_option", "posthoc_applies",
           "online_keys_error", "online_error", "RESERVOIR_STRATEGIES", "ONLINE_STRATEGIES"]

#: The rehearsal protocols of ``replay``, ``lwf`` with ``lwf_memory`` and ``bic`` (config key ``replay``).
REPLAY_PROTOCOLS = {
    "half_batch": "Avalanche's ReplayPlugin (BiC: its ReplayDataLoader): half of every mini-batch drawn from the "
                  "memory, which is cycled",
    "concat": "the paper's (and iCaRL's, PyCIL's, FACIL's): the memory concatenated into the training set, "
              "each sample drawn once per epoch (ConcatReplayPlugin; BiC: compat.ConcatRehearsalBiCPlugin, its "
              "validation split inside the memory)",
}
#: How that memory is chosen (config key ``memory_selection``).
MEMORY_SELECTIONS = {
    "random": "class-balanced random samples (Avalanche's ClassBalancedBuffer)",
    "herding": "iCaRL's herding on the features, class-balanced (bsce_avalanche.herding_buffer)",
    "reservoir": "a reservoir over every sample trained on, not class-balanced (Avalanche's "
                 "ReservoirSamplingBuffer: a uniform sample of the stream so far), updated after each experience "
                 "(online: after every mini-batch); replay, lwf with lwf_memory and er_ace",
}
#: The strategies that take ``memory_selection: reservoir`` and ``online: true``.
RESERVOIR_STRATEGIES = ("replay", "lwf", "er_ace")
ONLINE_STRATEGIES = ("naive", "replay", "er_ace")


@dataclass(frozen=True)
class StrategyInfo:
    """One strategy: what the config checks, the first-experience cache and ``compare`` must know about it
    (its builder: :data:`bsce_avalanche.runner.strategies.BUILDERS`)."""

    description: str
    memory: bool  #: needs ``memory_size`` (or ``memory_per_class``) > 0
    without_bsce: Optional[str] = None  #: why it cannot train with ``loss: bsce``, or None
    #: how it trains the first experience (empty memory, no old model): ``"plain"`` for Naive's loop on the
    #: experience's data (such strategies share first-experience models), else its own name
    first_experience: str = "plain"
    # the config keys its first experience depends on besides the common ones (a memory filled or a validation
    # split made before training) are declared beside those keys: schema._key's first_experience
    ce_loss: str = "softmax_ce"  #: its training loss with ``loss: ce`` (``bsce`` is always a softmax CE)


def uses_replay_option(config: Mapping) -> bool:
    """Whether ``replay`` and ``memory_selection`` apply (Replay, LwF with memory, BiC; the others keep a
    memory of their own kind, or none). BiC keeps its memory in its plugin, Avalanche's with ``half_batch``."""
    return config["strategy"] in ("replay", "bic") or (config["strategy"] == "lwf" and config["lwf_memory"])


def posthoc_applies(config: Mapping) -> bool:
    """Whether a run also reports post-hoc logit adjustment (``results["posthoc"]``): it trains a softmax CE
    without adjustment (``loss: ce``, or ``bsce`` at ``tau: 0``) on a memory that covers the old classes
    (replay, LwF with memory, iCaRL's softmax-CE ablation, evaluated with its trained head), without weight
    aligning. Without a memory the old classes are absent from the training prior, so post-hoc adjustment
    would never predict them."""
    softmax_ce = (config["loss"] == "ce" and STRATEGIES[config["strategy"]].ce_loss == "softmax_ce") or \
        (config["loss"] == "bsce" and config["tau"] == 0.0)
    # not on top of another bias correction (BiC's layer, weight aligning)
    return softmax_ce and not config.get("weight_aligning") and config["strategy"] in ("replay", "lwf", "icarl") \
        and (uses_replay_option(config) or config["strategy"] == "icarl")


#: Every strategy, by the name the runner's ``strategy:`` key takes.
STRATEGIES: dict[str, StrategyInfo] = {
    "naive": StrategyInfo("fine-tuning on each experience, no memory (Avalanche's Naive)", memory=False),
    "replay": StrategyInfo("Naive + a rehearsal memory (replay: its protocol)", memory=True),
    "lwf": StrategyInfo("Learning without Forgetting (distillation); lwf_memory: true adds rehearsal",
                        memory=False),
    # iCaRL's first mini-batch also runs an extra forward pass in train mode (BatchNorm statistics)
    "icarl": StrategyInfo("iCaRL: herding memory, distillation; evaluates with icarl_eval", memory=True,
                          first_experience="icarl", ce_loss="sigmoid_bce"),
    # ER-ACE (bsce_avalanche.ERACE) fills its memory after training, as Replay: an empty memory is Naive's loop
    "er_ace": StrategyInfo("ER-ACE: replay with an asymmetric cross-entropy (bsce_avalanche.ERACE: "
                           "Replay's memory, updated after each experience)", memory=True,
                           without_bsce="ER-ACE uses its own loss"),
    # BiC holds out a validation split before training
    "bic": StrategyInfo("BiC: replay, then a bias-correction layer trained on held-out memory",
                        memory=True, first_experience="bic"),
    "gdumb": StrategyInfo("GDumb: trains from scratch on a class-balanced memory", memory=True,
                          first_experience="gdumb"),
}


def online_keys_error(cfg) -> Optional[str]:
    """Why ``batch_size_mem`` cannot apply to this run, or None (checked with the config)."""
    if cfg.batch_size_mem is not None and not (cfg.strategy == "er_ace" or (
            uses_replay_option(vars(cfg)) and cfg.strategy != "bic" and cfg.replay == "half_batch")):
        return "batch_size_mem applies to er_ace and to replay: half_batch (Avalanche's ReplayPlugin) only: remove it."
    return None


def online_error(cfg) -> Optional[str]:
    """Why ``online`` or ``memory_selection: reservoir`` cannot apply to this run, or None."""
    if cfg.memory_selection == "reservoir":
        if cfg.strategy not in RESERVOIR_STRATEGIES or (cfg.strategy == "lwf" and not cfg.lwf_memory):
            return ("memory_selection: reservoir applies to replay, lwf with lwf_memory and er_ace: use "
                    "memory_selection: random.")
        if cfg.memory_per_class:
            return "memory_selection: reservoir is not class-wise: set memory_size instead of memory_per_class."
    elif cfg.strategy == "er_ace" and cfg.memory_selection != "random":
        return "er_ace's memory is random (class-balanced) or a reservoir: set memory_selection: random or reservoir."
    if not cfg.online:
        return None
    if cfg.strategy not in ONLINE_STRATEGIES:
        return (f"online: true applies to {', '.join(ONLINE_STRATEGIES)} (strategies whose training is one "
                f"Avalanche experience at a time, with no task-end stage), not {cfg.strategy}.")
    if cfg.epochs != 1:
        return "online: true sees each mini-batch of the stream once: set epochs: 1."
    if cfg.replay != "half_batch" and uses_replay_option(vars(cfg)):
        return "online: true draws its rehearsal beside each stream mini-batch: set replay: half_batch."
    if cfg.weight_aligning:
        return "online: true has no task end to align the head at: set weight_aligning: false."
    if cfg.lr_milestones:
        return "online: true restarts nothing per mini-batch: set lr_milestones: []."
    return None
