"""The config keys, declared once: each key's default, meaning (``--help`` and the docs read it), :data:`EFFECT`
(what it changes), valid interval (:data:`RANGES`) or names (:data:`CHOICES`), and the strategies or configs it acts
on. :class:`~.config.ExperimentConfig` checks them; the run's identity (:mod:`.identity`) is read off them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Optional, Union

from ..benchmarks import BENCHMARKS, CLASS_ORDER_NAMES
from ..catalog import AMP_MODES, ICARL_EVAL_MODES, MAX_TAU, MAX_WINDOW, MODELS, PRIOR_MODES
from .catalog import MEMORY_SELECTIONS, REPLAY_PROTOCOLS, STRATEGIES, uses_replay_option

__all__ = ["ConfigKeys", "CHOICES", "EFFECTS", "EFFECT", "RANGES", "RESOLVED_ENTRIES", "FIELD_NAMES", "DEFAULTS",
           "RUNNER_SET", "runner_set_error"]

#: Valid values of the name-like keys.
CHOICES: dict[str, tuple[str, ...]] = {
    "benchmark": tuple(BENCHMARKS),
    "strategy": tuple(STRATEGIES),
    "loss": ("ce", "bsce"),
    "prior": PRIOR_MODES,
    "model": ("auto", *MODELS),
    "icarl_eval": ICARL_EVAL_MODES,
    "replay": tuple(REPLAY_PROTOCOLS),
    "memory_selection": tuple(MEMORY_SELECTIONS),
    "device": ("auto", "cpu", "cuda"),
    "data_path": ("loader", "device"),
    "amp": tuple(AMP_MODES),
    "wandb_mode": ("online", "offline", "disabled"),
}


def _benchmarks_with(option: str, default: bool = False) -> str:
    return ", ".join(n for n, b in BENCHMARKS.items() if option in b.options and (b.fast_augment or not default))


#: What a config key changes (its ``effect``): the run name, the resume check, ``compare``'s grouping and the
#: first-experience key all derive from it.
EFFECTS = {
    "result": "changes the results, from the first experience on (in the first-experience key as it is)",
    "resolved": "changes the results; the first-experience key holds what it resolves to (the strategy's "
                "first-experience training, the loss it trains with, the model's name)",
    "later": "changes the results from the second experience on, or the evaluation only (not in the "
             "first-experience key, except for the strategies its field lists in first_experience)",
    "run": "bookkeeping or environment: never changes what a run computes (may differ when resuming)",
}


#: The entries of the first-experience key that ``resolved`` keys enter it as (``first_experience_key``
#: computes them: the strategy's first-experience training, the first-experience loss, the model's name,
#: the benchmark's fast_augment default resolved).
RESOLVED_ENTRIES = ("training", "loss", "model", "fast_augment")


def _key(default, help: str, *, effect: str = "result", range: Optional[str] = None, label: bool = False,
         only: tuple[str, ...] = (), applies: Optional[Callable[[Mapping], bool]] = None,
         first_experience: Union[tuple[str, ...], str] = (), set_from: Optional[str] = None):
    """A config key: its default, its meaning (``--help`` and the docs read it), its :data:`EFFECTS` entry,
    its valid interval (``range``, e.g. ``"[1, inf)"``), whether :func:`~.identity.method_label` shows it, and the
    strategies it acts on (``only``; empty: all) or, finer, the configs it acts on (``applies``, a predicate
    over the config dict): elsewhere it changes nothing, so it is no part of a run (:func:`~.identity.result_settings`
    sets it to its default).

    What the first experience depends on is declared here, once, by ``effect`` and ``first_experience``:
    ``result`` keys enter the first-experience key as they are; ``later`` keys do not, except for the
    strategies ``first_experience`` lists (e.g. BiC's validation split is made from its memory before it
    trains); ``resolved`` keys enter it as the :data:`RESOLVED_ENTRIES` that ``first_experience`` names
    (e.g. ``tau`` as the first-experience loss); ``run`` keys never. :func:`~.identity.first_experience_settings`
    reads it.

    ``set_from``: the key the runner sets this one from (:data:`RUNNER_SET`): no command-line option, and a
    config file, ``--set`` or a grid that sets it is refused (a config read back from results.json holds it)."""
    assert effect in EFFECTS, effect
    if effect == "resolved":
        names = (first_experience,) if isinstance(first_experience, str) else first_experience
        assert names and set(names) <= set(RESOLVED_ENTRIES), (first_experience, RESOLVED_ENTRIES)
        first_experience = names
    else:
        assert isinstance(first_experience, tuple) and (not first_experience or effect == "later"), first_experience
    metadata = {"help": help, "effect": effect, "range": range, "label": label, "only": only, "applies": applies,
                "first_experience": first_experience, "set_from": set_from}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _bsce(config: Mapping) -> bool:
    """Whether BSCE's settings (tau, prior) apply: with ``loss: ce`` no adjustment is built."""
    return config["loss"] == "bsce"


#: The strategies whose first experience depends on the memory's size: BiC holds out a validation split of
#: its memory before training, GDumb trains on its memory.
_MEMORY_FIRST = ("bic", "gdumb")



@dataclass
class ConfigKeys:
    """The keys of a run and their declarations (:func:`_key`), unchecked: build an
    :class:`~.config.ExperimentConfig`, which checks every key (this class is its schema)."""

    name: str = _key("digits-replay", "experiment name: the W&B runs' name prefix and group", effect="run")
    # data
    benchmark: str = _key("digits", "the class-incremental benchmark")
    protocol: str = _key("B0", "B<k>: k classes in the first experience, then n_steps equal steps "
                               "(B0: n_steps equal experiences); any k that splits the benchmark's classes")
    n_steps: int = _key(5, "number of incremental steps of the protocol", range="[1, inf)")
    class_order: Union[str, int, list] = _key(
        "icarl", f"order the classes arrive in: {', '.join(CLASS_ORDER_NAMES)}, an int seed, or a list of class ids")
    data_dir: Optional[str] = _key(None, f"folder holding the dataset ({_benchmarks_with('data_dir')}; null: "
                                         "$BSCE_DATA_DIR, else ~/.cache/bsce_avalanche)", effect="run")
    download: bool = _key(False, f"allow downloading the dataset ({_benchmarks_with('download')})", effect="run")
    fast_augment: Optional[bool] = _key(
        None, f"uint8 images cropped and flipped in batches on the device ({_benchmarks_with('fast_augment')}); "
              f"null: the benchmark's default (on for {_benchmarks_with('fast_augment', default=True)})",
        effect="resolved", first_experience="fast_augment")
    data_path: str = _key(
        "loader", "how batches are fetched: loader (Avalanche's per-sample DataLoader) or device (images kept on "
                  f"the training device, whole batches gathered there from the same sampler; "
                  f"{', '.join(n for n, b in BENCHMARKS.items() if b.in_memory)}, num_workers 0)")
    # model and method
    model: str = _key("auto", "the network (auto: the benchmark's default)", effect="resolved", first_experience="model")
    width: int = _key(16, "base width of the CIFAR ResNets: stages of width, 2x, 4x channels (16 in the papers)",
                      range="[1, inf)")
    incremental_head: bool = _key(True, "Avalanche's IncrementalClassifier, which masks the units of classes not "
                                        "seen yet; false: a fixed linear head over all classes")
    strategy: str = _key("replay", "the Avalanche strategy", effect="resolved", label=True,
                         first_experience=("training", "loss"))
    loss: str = _key("bsce", "training loss: ce (cross-entropy) or bsce (BalancedSoftmaxPlugin)", effect="resolved",
                     label=True, first_experience="loss")
    tau: float = _key(1.0, "strength of the BSCE adjustment, logits + tau * log(prior) (0: plain CE)",
                      effect="resolved", range=f"[0, {MAX_TAU:g}]", label=True, applies=_bsce, first_experience="loss")
    prior: str = _key("auto", "where BSCE's class prior comes from (see the README)", effect="resolved", label=True,
                      applies=_bsce, first_experience="loss")
    memory_size: int = _key(200, "replay memory, in samples, shared by all seen classes", effect="later",
                            range="[0, inf)", first_experience=_MEMORY_FIRST)
    memory_per_class: Optional[int] = _key(None, "memory per class instead of memory_size (B50 protocols: 20)",
                                           effect="later", range="[1, inf)", first_experience=_MEMORY_FIRST)
    prior_window: Optional[int] = _key(
        None, "with prior: window (only): the prior is the label frequency of the last prior_window training "
              "mini-batches, across steps (ER-LAS's l: 1 on CIFAR; at most MAX_WINDOW, the window holding window x classes "
              "counts)", effect="resolved", range=f"[1, {MAX_WINDOW}]", label=True,
        applies=lambda c: _bsce(c) and c["prior"] == "window", first_experience="loss")
    replay: str = _key("half_batch", "rehearsal protocol of replay, of lwf with lwf_memory and of bic: "
                       + "; ".join(f"{k}: {v}" for k, v in REPLAY_PROTOCOLS.items())
                       + " (the other strategies have their own)", effect="later", label=True, applies=uses_replay_option)
    memory_selection: str = _key("random", "how replay, lwf with lwf_memory and er_ace (random or reservoir) choose their memory: "
                                 + "; ".join(f"{k}: {v}" for k, v in MEMORY_SELECTIONS.items()), effect="later",
                                 label=True, applies=lambda c: uses_replay_option(c) or c["strategy"] == "er_ace")
    online: bool = _key(
        False, "the standard online protocol (ER-LAS, Mammoth, Avalanche's online baselines): each task's data "
               "split by Avalanche's split_online_stream into experiences of batch_size samples, each trained by "
               "one train() call (epochs: 1: every stream sample trained on once), so that the memory (replay's "
               "ReplayPlugin, er_ace's buffer) is updated after every mini-batch with the samples just trained on and "
               "the head grows with the classes seen in the stream; no task boundary reaches training (prior: auto "
               "becomes the prior of each mini-batch experience's loader; prior: window is boundary-free anyway); "
               "evaluation after each task; no first-experience cache; naive, replay and er_ace; use with "
               "memory_selection: reservoir", label=True)
    posthoc_window: Optional[int] = _key(
        None, "the prior of the post-hoc logit adjustment recorded for CE runs (results['posthoc']): null: the last "
              "training experience's loader distribution (auto); an int: the labels of the last posthoc_window "
              "training mini-batches (the window prior, boundary-free: the online protocol's)", effect="later",
        range="[1, inf)")
    weight_aligning: bool = _key(
        False, "Weight Aligning (WA; Zhao et al., CVPR 2020; bsce_avalanche.WeightAligningPlugin): after each step "
               "the new classes' head weights are rescaled to the old classes' mean norm, and the head's weights are "
               "clipped to >= 0 after every optimizer step from the first experience on (as DER's WA code; PyCIL "
               "does not clip), so its first experience differs from the run without it; meant for loss: ce",
        label=True, only=("replay", "lwf"))
    lwf_alpha: float = _key(1.0, "weight of LwF's distillation loss", effect="later", range="[0, inf)", only=('lwf',))
    lwf_temperature: float = _key(2.0, "temperature of LwF's distillation", effect="later", range="(0, inf)", only=('lwf',))
    lwf_memory: bool = _key(False, "LwF with a replay memory (memory_size)", effect="later", label=True, only=('lwf',))
    icarl_eval: str = _key("nme", "iCaRL's classifier at evaluation: nearest mean of exemplars or the trained head "
                                  "(results.json reports the other too)", effect="later", label=True, only=('icarl',))
    icarl_distillation_weight: float = _key(
        1.0, "iCaRL with loss bsce: weight of the distillation term, the sigmoid BCE between the old and the new "
             "model's outputs averaged over the old classes' units (loss ce is iCaRL's own loss, which has no "
             "weight: see the README)", effect="later", range="[0, inf)", only=('icarl',))
    bic_stage2_epochs: int = _key(200, "epochs of BiC's bias-correction stage (Avalanche's BiC: 200, lr / 10 at "
                                       "epochs 50, 100 and 150)", effect="later", range="[0, inf)", only=('bic',))
    bic_stage2_lr: float = _key(0.1, "learning rate of BiC's bias-correction stage (Avalanche's BiC: 0.1)",
                                effect="later", range="(0, inf)", only=('bic',))
    bic_val_fraction: float = _key(0.1, "fraction of BiC's memory held out for its bias correction",
                                   effect="later", range="(0, 1)", only=('bic',), first_experience=("bic",))
    ncm_diagnostic: bool = _key(False, "also report the accuracy of a nearest-class-mean classifier on the model's "
                                       "features, the class means from the replay memory (results.json's ncm): does "
                                       "BSCE change the representation or only the classifier's bias?", effect="run")
    recipes: dict = _key(
        {}, "per-method training recipes, applied to the runs of that method after the grid: {selector: {key: "
            "value}}, a selector being a strategy (icarl) or strategy-loss (icarl-ce), the more specific applied "
            "last; each run's results.json records the values it trained with", effect="run")
    recipe: Optional[str] = _key(None, "the recipes entries applied to this run (set by the runner)", effect="run",
                                 set_from="recipes")
    # optimisation
    epochs: int = _key(10, "training epochs per step", range="[1, inf)")
    batch_size: int = _key(32, "training mini-batch size (the global batch under torchrun)", range="[1, inf)")
    eval_batch_size: int = _key(256, "evaluation mini-batch size (thousands with data_path: device)", effect="run",
                                range="[1, inf)")
    batch_size_mem: Optional[int] = _key(None, "memory mini-batch size of replay (replay: half_batch) and er_ace, "
                                               "added to batch_size (online ER: 10 and 10); null: batch_size",
                                         effect="later", range="[1, inf)")  # the first experience has no memory
    amp: str = _key("none", "bf16: the feature extractor runs under bf16 autocast; logits and losses stay float32")
    compile: bool = _key(False, "torch.compile the feature extractor (inductor, no CUDA graphs; the head, BSCE's "
                                "adjustment and the losses stay eager float32): faster steps after a compilation "
                                "per batch shape and mode (5-20 s on an idle 2-core CPU)")
    lr: float = _key(0.05, "SGD learning rate", range="(0, inf)")
    momentum: float = _key(0.9, "SGD momentum", range="[0, 1)")
    weight_decay: float = _key(0.0, "SGD weight decay", range="[0, inf)")
    lr_milestones: list = _key([], "epochs at which the learning rate is multiplied by lr_gamma, each below "
                                   "epochs, e.g. [80, 120]")
    lr_gamma: float = _key(0.1, "learning-rate factor at each milestone", range="(0, 1]")
    # run
    seed: int = _key(0, "seed of everything (class order 'random' included)", range=f"[0, {2**32 - 1}]")
    device: str = _key("auto", "auto: cuda when available, else cpu", effect="run")
    num_workers: int = _key(0, "DataLoader worker processes (per-sample random transforms run in them)",
                            range="[0, inf)")
    threads: Optional[int] = _key(None, "torch CPU threads (null: torch's default)", effect="run", range="[1, inf)")
    output_dir: str = _key("outputs/default", "where results, W&B files and the comparison go", effect="run")
    progress: bool = _key(True, "show a progress bar", effect="run")
    checkpoint: bool = _key(True, "write checkpoint.pt after every step (for --resume)", effect="run")
    first_experience_cache: Union[bool, str] = _key(
        True, "train the first experience once per seed, and start the runs that train it alike from it (same "
              "numbers): true: cached in first_experience/ beside the run folders; a folder: cached there; false: off",
        effect="run")
    # logging
    wandb: bool = _key(True, "log to Weights & Biases (offline without an API key)", effect="run")
    wandb_project: str = _key("bsce-avalanche", "W&B project", effect="run")
    wandb_entity: Optional[str] = _key(None, "W&B entity (null: your default)", effect="run")
    wandb_mode: Optional[str] = _key(None, "W&B mode (null: $WANDB_MODE, else online with an API key, else offline)",
                                     effect="run")
    grid: dict = _key({}, "lists of values for some keys, one run per combination, e.g. {loss: [ce, bsce]}",
                      effect="run")


#: The config keys, in their order of declaration.
FIELD_NAMES = [f.name for f in fields(ConfigKeys)]
#: Each key's default.
DEFAULTS = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(ConfigKeys)}
#: Each key's :data:`EFFECTS` entry: the one table of what a setting changes.
EFFECT: dict[str, str] = {f.name: f.metadata["effect"] for f in fields(ConfigKeys)}
#: The keys the runner sets, each from the key a user sets instead (``recipe`` from ``recipes``).
RUNNER_SET: dict[str, str] = {f.name: f.metadata["set_from"] for f in fields(ConfigKeys) if f.metadata["set_from"]}


def runner_set_error(key: str, where: str = "") -> str:
    """Why a user may not set ``key`` of :data:`RUNNER_SET` (``where``: e.g. " in config.yaml"), and the fix."""
    source = RUNNER_SET[key]
    return (f"{key}{where} is set by the runner from {source} (each run's results.json records it): set {source} "
            f"instead, and leave {key} out.")


#: Valid values of the numeric keys, as intervals (``--help`` shows them; null stays valid where allowed).
RANGES: dict[str, str] = {f.name: f.metadata["range"] for f in fields(ConfigKeys) if f.metadata["range"]}
