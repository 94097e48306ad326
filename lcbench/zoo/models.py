"""The model zoo: small digits models built from timm/torchvision classes, torchvision VGG/ResNet, and every
timm model by name. Pretrained weights come from a local file (`pretrained=PATH`, loaded with
`weights_only=True`) or the timm/torchvision cache (`pretrained=hub`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
import torchvision
from safetensors.torch import load_file
from timm.models.mlp_mixer import MlpMixer
from timm.models.mlp_mixer import _init_weights as mixer_init
from timm.models.vision_transformer import VisionTransformer, init_weights_vit_timm
from torch import nn
from torchvision.models.vgg import VGG, make_layers

from ..core import extras
from ..core.errors import CheckpointError, ConfigError, first_line
from ..core.registry import Registry, load_entry_points
from . import text_models


@dataclass
class ModelSpec:
    """`build(num_classes, in_chans, img_size, hub)` returns the model; `source` names its library."""

    name: str
    build: Callable[..., nn.Module]
    source: str
    description: str = ""
    # collapsible MLPs in what the LayerCollapse paper calls one "block" (a Mixer block holds a token MLP
    # and a channel MLP: 2; a ViT block or a VGG classifier activation: 1)
    mlps_per_block: int = 1
    # `build(..., pretrained=FOLDER|hub)` loads the weights itself (transformers' `from_pretrained`)
    loads_pretrained: bool = False


ENTRY_POINT_GROUP = "lcbench.models"  # another package's models: a module that calls register_model


def _discover() -> None:
    load_entry_points(ENTRY_POINT_GROUP, MODELS, ModelSpec)


MODELS: Registry[ModelSpec] = Registry("model", discover=_discover)


def register_model(
    name: str, source: str, description: str = "", mlps_per_block: int = 1, loads_pretrained: bool = False
) -> Callable:
    """Decorator adding a builder `build(num_classes, in_chans, img_size, hub)` to the zoo as `name`
    (`source` names its library; see ModelSpec). Another package calls it from a module it names in the
    `lcbench.models` entry-point group."""

    def decorator(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.register(name)(ModelSpec(name, build, source, description, mlps_per_block, loads_pretrained))
        return build

    return decorator


def mlps_per_block(name: str) -> int:
    """How many collapsible MLPs make one of the paper's "blocks" in model `name`."""
    return MODELS.get(name).mlps_per_block


# --------------------------------------------------------------------------------------------------------
# Digits models (8x8 greyscale, 10 classes)


@register_model(
    "digits_mlp", "torch", "MLP 64-512-512-10: Linear-ReLU-Dropout-BatchNorm1d-Linear-ReLU-Dropout-Linear"
)
def digits_mlp(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, hub: bool = False):
    size = img_size or 8
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_chans * size * size, 512),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.BatchNorm1d(512),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(512, num_classes),
    )


@register_model("digits_vit", "timm", "timm VisionTransformer: 8x8, patch 2, dim 64, depth 4, 4 heads")
def digits_vit(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, hub: bool = False):

    return VisionTransformer(
        img_size=img_size or 8,
        patch_size=2,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4.0,
        global_pool="avg",
        class_token=False,
    )


@register_model("digits_mixer", "timm", "timm MlpMixer: 8x8, patch 2, dim 64, 4 blocks", mlps_per_block=2)
def digits_mixer(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, hub: bool = False):

    return MlpMixer(
        num_classes=num_classes,
        img_size=img_size or 8,
        in_chans=in_chans,
        patch_size=2,
        num_blocks=4,
        embed_dim=64,
    )


DIGITS_VGG_FEATURES = [32, "M", 64, "M", 128]
DIGITS_VGG_HIDDEN = 256


@register_model(
    "digits_vgg", "torchvision", "torchvision VGG: conv 32-M-64-M-128 (BN) + Linear 512-256-256-10"
)
def digits_vgg(num_classes: int = 10, in_chans: int = 1, img_size: int | None = None, hub: bool = False):

    # Build VGG's own class without its 25088x4096 classifier: swap the parts VGG.__init__ would create.
    with torch.device("meta"):
        model = VGG(
            make_layers(DIGITS_VGG_FEATURES, batch_norm=True), num_classes=num_classes, init_weights=False
        )
    model.features = make_layers(DIGITS_VGG_FEATURES, batch_norm=True)
    model.features[0] = nn.Conv2d(in_chans, DIGITS_VGG_FEATURES[0], kernel_size=3, padding=1)
    model.avgpool = nn.AdaptiveAvgPool2d((2, 2))
    h = DIGITS_VGG_HIDDEN
    model.classifier = nn.Sequential(
        nn.Linear(DIGITS_VGG_FEATURES[-1] * 4, h),
        nn.ReLU(True),
        nn.Dropout(0.3),
        nn.Linear(h, h),
        nn.ReLU(True),
        nn.Dropout(0.3),
        nn.Linear(h, num_classes),
    )
    for m in model.modules():  # VGG's own initialisation scheme
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


# --------------------------------------------------------------------------------------------------------
# torchvision VGG and ResNet (Linear classifiers; timm's vgg uses a conv head)


def _torchvision_builder(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, hub: bool = False):

        if in_chans != 3:
            raise ConfigError(f"{name} takes 3-channel images; the data set has {in_chans}")
        model = torchvision.models.get_model(name, weights="DEFAULT" if hub else None)
        if num_classes != 1000:
            head_name, head = last_linear(model)
            _set_module(model, head_name, nn.Linear(head.in_features, num_classes))
        return model

    return build


for _name in [
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "vgg11_bn",
    "vgg13_bn",
    "vgg16_bn",
    "vgg19_bn",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]:
    register_model(_name, "torchvision", f"torchvision {_name}")(_torchvision_builder(_name))


# --------------------------------------------------------------------------------------------------------
# Every timm model by name


def _timm_lookup(name: str) -> ModelSpec | None:

    if not timm.is_model(name):
        return None

    def build(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, hub: bool = False):
        kwargs = {"img_size": img_size} if img_size else {}
        return timm.create_model(name, pretrained=hub, num_classes=num_classes, in_chans=in_chans, **kwargs)

    # timm's MLP-Mixers: a block is a token MLP plus a channel MLP (gMLP/ResMLP use other layers)
    per_block = 2 if name.startswith("mixer_") else 1
    return ModelSpec(name, build, "timm", "timm model", per_block)


def _timm_names() -> list[str]:

    return timm.list_models()


MODELS.add_fallback(_timm_lookup, _timm_names)


# --------------------------------------------------------------------------------------------------------
# transformers BERT and GPT-2 (`text_models`)

for _name in text_models.GPT2_SHAPES:
    register_model(_name, "transformers", f"transformers GPT-2 {_name} (causal LM)", loads_pretrained=True)(
        text_models.build_gpt2(_name)
    )
for _name in text_models.BERT_SHAPES:
    register_model(_name, "transformers", f"transformers {_name} sequence classifier", loads_pretrained=True)(
        text_models.build_bert(_name)
    )
register_model(
    "text_gpt2",
    "transformers",
    "byte-level GPT-2: 4 layers of 64, 256-token vocabulary (embedded text)",
    loads_pretrained=True,
)(text_models.build_gpt2("text_gpt2"))
register_model(
    "gpt2-tiny", "transformers", "GPT-2: 3 layers of 32, 1000 tokens (test fixtures)", loads_pretrained=True
)(text_models.build_gpt2("gpt2-tiny"))
register_model(
    "bert-tiny", "transformers", "BERT: 3 layers of 32, 1000 tokens (test fixtures)", loads_pretrained=True
)(text_models.build_bert("bert-tiny"))


# --------------------------------------------------------------------------------------------------------


def create_model(
    name: str, num_classes: int, in_chans: int = 3, img_size: int | None = None, pretrained: str = ""
) -> nn.Module:
    """Build a zoo model; `pretrained` is '' (random init), 'hub', a weights file or (transformers models)
    a `save_pretrained` folder."""
    spec = MODELS.get(name)
    if spec.source == "transformers":
        extras.require("transformers", purpose=f"model {name}")
    if spec.loads_pretrained and pretrained and not Path(pretrained).expanduser().is_file():
        return spec.build(num_classes=num_classes, pretrained=pretrained)  # a from_pretrained folder, or hub
    model = spec.build(num_classes=num_classes, in_chans=in_chans, img_size=img_size, hub=pretrained == "hub")
    if pretrained and pretrained != "hub":
        load_weights(model, pretrained, name)
    return model


@torch.no_grad()
def fresh_init(model: nn.Module, path: str) -> None:
    """Re-initialise the layer at `path` as the model's own constructor initialises its layers.

    transformers models: their `_init_weights`; timm ViTs: truncated normal (std 0.02); timm Mixers: their
    per-name scheme; torchvision VGG: N(0, 0.01) with zero bias; anything else: the layer's own
    `reset_parameters` (torch's default).
    """

    layer = model.get_submodule(path)
    if isinstance(model, (text_models.CausalLM, text_models.SequenceClassifier)):
        next(model.children())._init_weights(layer)  # transformers' own scheme: N(0, 0.02), zero bias
    elif isinstance(model, VisionTransformer):
        init_weights_vit_timm(layer, path)
    elif isinstance(model, MlpMixer):
        mixer_init(layer, path)
    elif isinstance(model, VGG) and isinstance(layer, nn.Linear):
        nn.init.normal_(layer.weight, 0, 0.01)
        nn.init.zeros_(layer.bias)
    else:
        layer.reset_parameters()


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classifier: the last nn.Linear in module order (timm's `get_classifier()` where defined)."""
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
        for name, module in model.named_modules():
            if module is head and isinstance(module, nn.Linear):
                return name, module
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no Linear classifier")
    return linears[-1]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch state_dict (also one nested under 'state_dict', 'model', ...)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file fails in many ways (EOF, zip, unpickling, index)
        raise CheckpointError(
            f"cannot read {path}: it is truncated, corrupt or not a PyTorch/safetensors weights file "
            f"({first_line(e)})"
        ) from e
    for key in ("state_dict", "model", "model_state", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | Path, name: str = "") -> None:
    """Load a weights file strictly; a classifier of another size is re-initialised (fine-tuning)."""
    state = read_state_dict(path)
    own = model.state_dict()
    head_name, _ = last_linear(model)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and state[k].shape != own[k].shape]
    head_keys = {f"{head_name}.weight", f"{head_name}.bias"}
    if set(mismatched) <= head_keys and not missing and not unexpected:
        for key in mismatched:  # another number of classes: keep the fresh head
            state[key] = own[key]
        mismatched = []
    if missing or unexpected or mismatched:
        details = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if keys:
                details.append(
                    f"{label}: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''} ({len(keys)})"
                )
        raise CheckpointError(
            f"{path} does not fit model {name or type(model).__name__}: {'; '.join(details)}. "
            "Is it a checkpoint of another architecture?"
        )
    model.load_state_dict(state)
