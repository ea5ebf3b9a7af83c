"""Networks of the class-incremental literature, each a :class:`FeatureClassifier`
(``classifier(feature_extractor(x))``: iCaRL takes the two parts separately, and the head may be
Avalanche's ``IncrementalClassifier``). The feature extractor starts with :class:`InputNormalize`,
so every path, iCaRL's direct calls on exemplars included, sees the same input (see
:mod:`bsce_avalanche.benchmarks.augment`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from avalanche.models import IncrementalClassifier
from torch import Tensor, nn
from torchvision.models import resnet18 as tv_resnet18

from ._choices import check_choice
from ._numbers import plain_number
from .benchmarks.augment import NORMALIZATIONS, InputNormalize
from .catalog import AMP_MODES, MODELS, ModelInfo


class FeatureClassifier(nn.Module):
    """``classifier(feature_extractor(x))`` with both parts as named attributes."""

    def __init__(self, feature_extractor: nn.Module, classifier: nn.Module, feature_dim: int):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.classifier = classifier
        self.feature_dim = feature_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.feature_extractor(x))


#: Mixed precision (the runner's ``amp`` key, :data:`~bsce_avalanche.catalog.AMP_MODES`): the autocast dtype, or
#: None for float32.
AMP_DTYPES: dict[str, torch.dtype | None] = {name: getattr(torch, dtype) if dtype else None
                                             for name, dtype in AMP_MODES.items()}


class Autocast(nn.Module):
    """``module`` run under ``torch.autocast(dtype=bfloat16)``, returning float32.

    Wrap the feature extractor (``model.feature_extractor = Autocast(...)``): every caller then
    runs it in bf16 (training, evaluation, iCaRL's herding and class means, the deep-copied old
    models of LwF / iCaRL / BiC) while the head, the logits and every loss (BSCE's
    ``tau * log prior`` with its -1e30 for absent classes) stay float32.
    """

    def __init__(self, module: nn.Module, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.module = module
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.module(x)
        return out.float()

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


def compile_model(model: nn.Module, *, one_graph_per_mode: bool = False, **compile_kwargs) -> nn.Module:
    """Compile ``model.feature_extractor`` with :func:`torch.compile`, in place; return ``model``.

    Only the feature extractor is compiled (its ``Module.compile()``): the head stays eager, so an
    ``IncrementalClassifier`` that grows at a new experience recompiles nothing, and the logits,
    BSCE's ``tau * log prior`` and every loss stay float32 eager code. Wrap with :class:`Autocast`
    first (the autocast region is then compiled too). The parameters are the same objects, so the
    optimiser, ``state_dict`` keys (no ``_orig_mod.`` prefix) and checkpoints are those of the
    uncompiled model, and load into one. ``copy.deepcopy`` (the old model of LwF, iCaRL, BiC)
    gives an uncompiled copy (``Module.__getstate__`` drops the compiled call): correct, run eager.

    ``compile_kwargs`` go to :func:`torch.compile` (``mode``, ``dynamic``, ``backend``...). Defaults
    to torch's: inductor, no CUDA graphs; a new batch size (the last partial batch, evaluation)
    compiles once more with the batch dimension dynamic, and eval mode once (BatchNorm differs); the
    dynamic graph's guards (``5 <= batch <= 15``, ``batch >= 16``, ``batch > 64``: inductor's CPU
    kernels) make a later last-batch size compile again.

    ``one_graph_per_mode=True`` (the runner's ``compile: true``): static shapes (``dynamic=False``)
    and one graph per mode, the mode being ``(module.training, torch.is_grad_enabled())``: a mode's
    first call compiles for its batch size, a call with a larger batch than any compiled in its mode
    compiles once more, and any other batch size (the last, smaller batch of an epoch, a small
    evaluation set) runs eager, the module's own call. Every sample is still trained on; the eager
    batches round like eager code.

    ``mode="reduce-overhead"`` (CUDA graphs) is not safe with iCaRL: its herding and class means
    keep the features of successive calls, which a CUDA graph's next replay overwrites.

    Works for the ``feature_extractor`` passed to ``avalanche.training.ICaRL`` too: compile the
    model, then take ``model.feature_extractor`` and ``model.classifier``.
    """
    feature_extractor = getattr(model, "feature_extractor", None)
    if not isinstance(feature_extractor, nn.Module):
        raise TypeError(f"compile_model needs a model with a feature_extractor module (a FeatureClassifier of "
                        f"make_model), not {type(model).__name__}: call module.compile() on other modules.")
    if not one_graph_per_mode:
        feature_extractor.compile(**compile_kwargs)
        return model
    compiled = torch.compile(feature_extractor._call_impl, **{"dynamic": False, **compile_kwargs})
    sizes: dict[tuple[bool, bool], set[int]] = {}  # per mode, the batch sizes compiled for

    def call(*args, **kwargs):
        mode = (feature_extractor.training, torch.is_grad_enabled())
        batch = args[0].shape[0] if args and isinstance(args[0], Tensor) and args[0].dim() else 0
        seen = sizes.setdefault(mode, set())
        if batch in seen or batch > max(seen, default=-1):
            seen.add(batch)
            return compiled(*args, **kwargs)
        with _buffers_saved_as_copies(feature_extractor):  # eager: the module's own call
            return feature_extractor._call_impl(*args, **kwargs)

    # Module._wrapped_call_impl calls it; Module.__getstate__ drops it (a deep copy is eager)
    feature_extractor._compiled_call_impl = call
    return model


def _buffers_saved_as_copies(module: nn.Module) -> torch.autograd.graph.saved_tensors_hooks:
    """Saved-tensor hooks for an eager call of a compiled module: its buffers are saved as copies.

    Training-mode BatchNorm saves its running statistics for a backward that does not read them, and updates
    them in place without counting a version; a compiled call before that backward updates them with a counted
    copy, so an eager batch followed by a compiled one (ER-ACE's last, smaller new batch, then its memory
    batch) failed with "modified by an inplace operation". Other tensors keep autograd's version check."""
    buffers = {id(b) for b in module.buffers()}  # per call: Module.to() and _apply replace the buffer tensors

    def pack(tensor: Tensor):
        if id(tensor) in buffers:
            return tensor.detach().clone(), None
        return tensor.detach(), tensor._version  # detach: no reference cycle; shares the version counter

    def unpack(packed) -> Tensor:
        tensor, version = packed
        if version is not None and tensor._version != version:
            raise RuntimeError(f"one of the variables needed for gradient computation has been modified by an "
                               f"inplace operation: {tensor.type()} {list(tensor.shape)} is at version "
                               f"{tensor._version}; expected version {version} instead.")
        return tensor

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (stride 1, padding 1, no bias), BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _ShortcutA(nn.Module):
    """Option-A shortcut: subsample spatially, zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int, stride: int):
        super().__init__()
        self.extra_channels, self.stride = extra_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        half = self.extra_channels // 2
        return nn.functional.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU-3x3 conv-BN plus shortcut, then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = _ShortcutA(out_channels - in_channels, stride)
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, section 4.2); returns pooled features
    ``(N, widths[-1])``. Shortcut ``"A"`` is parameter-free, as in the paper and PyCIL; ``"B"`` a 1x1 conv."""

    def __init__(self, blocks_per_stage: int = 5, widths: Sequence[int] = (16, 32, 64), shortcut: str = "A",
                 in_channels: int = 3):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero-padding) or 'B' (1x1 conv), got {shortcut!r}")
        self.stem = _conv_bn_relu(in_channels, widths[0])
        stages = []
        channels = widths[0]
        for i, width in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(channels, width, stride, shortcut)]
            blocks += [BasicBlock(width, width, 1, shortcut) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = channels
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.pool(self.stages(self.stem(x))), 1)


def _resnet18_backbone(cifar_stem: bool) -> tuple[nn.Module, int]:
    net = tv_resnet18(weights=None)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    feature_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, feature_dim


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU layers (one max-pool) + global pooling, for tiny images."""

    def __init__(self, in_channels: int = 1, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        c1, c2, c3 = widths
        self.body = nn.Sequential(*_conv_bn_relu(in_channels, c1), *_conv_bn_relu(c1, c2), nn.MaxPool2d(2),
                                  *_conv_bn_relu(c2, c3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c3

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


def _canonical_name(name: str) -> str:
    return check_choice("model", str(name).strip().lower().replace("-", "_"), MODELS)


def _input_normalize(spec) -> InputNormalize | None:
    if spec is None or isinstance(spec, InputNormalize):
        return spec
    if isinstance(spec, str):
        return InputNormalize.named(spec)
    try:
        mean, std = spec
    except (TypeError, ValueError):
        raise ValueError(f"input_norm must be None, 'auto', one of {sorted(NORMALIZATIONS)}, or (mean, std); "
                         f"got {spec!r}") from None
    return InputNormalize(mean, std)


def make_backbone(name: str, **kwargs) -> tuple[nn.Module, int]:
    """``(feature network, feature dimension)`` without normalisation or head. ``kwargs``: ``shortcut``,
    ``widths`` and ``in_channels`` for the CIFAR ResNets; ``in_channels`` and ``widths`` for ``small_cnn``."""
    name = _canonical_name(name)
    if MODELS[name].blocks_per_stage:
        net = CifarResNet(blocks_per_stage=MODELS[name].blocks_per_stage, **kwargs)
        return net, net.out_dim
    if kwargs and name != "small_cnn":
        raise TypeError(f"{name} takes no extra arguments, got {sorted(kwargs)}")
    if name in ("resnet18", "resnet18_cifar"):
        return _resnet18_backbone(cifar_stem=name == "resnet18_cifar")
    net = SmallCNN(**kwargs)
    return net, net.out_dim


def make_model(
    name: str, num_classes: int, *, incremental: bool = False, input_norm="auto", **backbone_kwargs
) -> FeatureClassifier:
    """Build a :class:`FeatureClassifier`.

    :param name: one of :data:`MODELS` (``-`` and ``_`` are interchangeable).
    :param num_classes: outputs of the fixed ``nn.Linear`` head (all classes of the benchmark, e.g.
        100 for CIFAR-100 with original labels); with ``incremental=True``, the *initial* size of the
        ``IncrementalClassifier``, which Avalanche grows to ``max(label seen) + 1`` (unseen units masked).
    :param incremental: Avalanche ``IncrementalClassifier`` head instead of a fixed ``nn.Linear``.
    :param input_norm: ``"auto"`` (the model's default, see :data:`MODELS`), ``"cifar100"``,
        ``"imagenet"``, ``(mean, std)``, or ``None`` (no normalisation layer).
    :param backbone_kwargs: passed to :func:`make_backbone`.
    """
    canonical = _canonical_name(name)
    num_classes = plain_number(num_classes)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    backbone, feature_dim = make_backbone(canonical, **backbone_kwargs)
    if isinstance(input_norm, str) and input_norm == "auto":
        input_norm = MODELS[canonical].input_norm
    normalize = _input_normalize(input_norm)
    layers = {"backbone": backbone} if normalize is None else {"normalize": normalize, "backbone": backbone}
    feature_extractor = nn.Sequential(OrderedDict(layers))
    classifier = (IncrementalClassifier(feature_dim, initial_out_features=num_classes) if incremental
                  else nn.Linear(feature_dim, num_classes))
    return FeatureClassifier(feature_extractor, classifier, feature_dim)


def make_icarl_parts(name: str, num_classes: int, **kwargs) -> tuple[nn.Module, nn.Module]:
    """``(feature_extractor, classifier)`` for ``avalanche.training.ICaRL``; the feature extractor
    includes :class:`InputNormalize`, so iCaRL's herding and class means see the training inputs."""
    model = make_model(name, num_classes, **kwargs)
    return model.feature_extractor, model.classifier


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters; buffers such as BN statistics are not counted."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
