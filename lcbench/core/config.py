"""Typed run configs: dataclasses, YAML files, `key=value` overrides, validation and content-hash run ids.

A run is one `RunConfig`. Every field may carry validation metadata (`choices`, `min`, `max`,
`min_exclusive`) through `option()`. A method's parameters are a dataclass of the same kind, declared by
the method (`Method.Params`); on the command line they are given as bare keys (`k=2`) once the method is
known. `pretrain.*` keys describe how the original model of a `compress` run is obtained: the compress
stage derives that pretrain run's config, and so its id, from them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .fields import option

# Sizes beyond these are typos, not experiments: caught at config time, never after hours of training
# (`eval_batch_size=10**12` failed only at the final evaluation; `threads=100000` crashed torch).
MAX_BATCH = 1 << 20
MAX_EPOCHS = 100_000  # far beyond any recipe (ImageNet: 300); a typo's 10**12 epochs is refused at once


@dataclass
class TrackingConfig:
    """Weights & Biases settings. The run record on disk stays the source of truth."""

    mode: str = option("disabled", choices=["online", "offline", "disabled"])
    project: str = "lcbench"
    entity: str = ""
    group: str = option("", help="W&B group (a sweep's runs: the sweep's name)")
    tags: list[str] = option(default_factory=list)
    variant: str = option(
        "", help="the sweep variant this run belongs to (set by the sweep; W&B name and config)"
    )
    level: str = option("", help="the variant's compression level (set by the sweep; W&B name and config)")


@dataclass
class RunConfig:
    """Everything that defines one run (and, outside the hash, where and how it executes)."""

    stage: str = option("pretrain", choices=["pretrain", "compress"])
    method: str = option("none", help="compression method (stage=compress); 'none' for pretrain")
    method_args: dict = option(default_factory=dict, help="the method's parameters (validated by it)")
    model: str = "digits_mlp"
    dataset: str = "digits"
    data_root: str = "data"
    data_fingerprint: str = option(
        "auto",
        help="the data's fingerprint (file names and sizes; contents for small sets), part of the run id in "
        "place of data_root; auto: read from the files when the config is made; '' (empty): not checked, "
        "as runs made before fingerprints were",
    )
    download: bool = False
    pretrained: str = option(
        "",
        help="'' (train from scratch), 'hub' (timm/torchvision/Hugging Face cache), a weights file, or a "
        "transformers save_pretrained folder (its tokenizer too) (pretrain runs)",
    )
    img_size: int | None = option(None, min=1, help="override the model's input size")
    seq_len: int | None = option(None, min=2, help="text: tokens per sample (default: the data set's)")
    eval_stride: int | None = option(
        None,
        min=1,
        help="language modelling: score the held-out text in windows of seq_len tokens every eval_stride "
        "tokens, each token once (transformers' strided perplexity); default: non-overlapping blocks",
    )
    seed: int = option(0, min=0)
    epochs: int = option(40, min=0, max=MAX_EPOCHS)
    batch_size: int = option(64, min=1, max=MAX_BATCH)
    eval_batch_size: int = option(256, min=1, max=MAX_BATCH)
    optimizer: str = option("adamw", choices=["sgd", "adamw"])
    lr: float = option(3e-3, min_exclusive=0, max=10.0, tunable=True)
    momentum: float = option(0.9, min=0, max=1, tunable=True, help="SGD only (live: with optimizer=sgd)")
    weight_decay: float = option(0.1, min=0, max=10.0, tunable=True)
    lr_schedule: str = option(
        "cosine", choices=["cosine", "linear", "step", "constant"], help="after the warm-up (linear: to zero)"
    )
    lr_cycle_epochs: int = option(
        0,
        min=0,
        max=MAX_EPOCHS,
        help="restart warm-up + cosine every N epochs (0: one cycle); "
        "e.g. epochs/k for progressive LayerCollapse",
    )
    step_epochs: int = option(10, min=1, max=MAX_EPOCHS, help="lr_schedule=step: epochs between lr decays")
    step_steps: int = option(
        0, min=0, help="lr_schedule=step: optimizer steps between decays (overrides step_epochs)"
    )
    step_gamma: float = option(0.1, min_exclusive=0, max=1)
    warmup_epochs: int = option(2, min=0, max=MAX_EPOCHS)
    warmup_steps: int = option(0, min=0, help="optimizer steps of linear warm-up (overrides warmup_epochs)")
    label_smoothing: float = option(0.1, min=0, max=0.99)
    grad_clip: float = option(
        0.0, min=0, max=1e6, tunable=True, help="max gradient norm; 0 disables clipping"
    )
    device: str = option("auto", help="auto, cpu, cuda or cuda:N")
    precision: str = option("fp32", choices=["fp32", "bf16", "fp16"])
    channels_last: bool = False
    threads: int = option(2, min=0, max=1024, help="torch CPU threads; 0 leaves torch's default")
    workers: int = option(0, min=0, max=256)
    augment: str = option(
        "default",
        choices=["default", "none"],
        help="training images: the data set's own augmentation (ImageNet-style random resized crop and flip "
        "for natural images; padded random crop and flip for Fashion-MNIST) or none",
    )
    holdout: str = option(
        "test",
        choices=["test", "validation"],
        help="what the run is evaluated on: the data set's held-out (test) split, or a validation split "
        "carved from its training split (`lcbench search`'s trials: the test split is never loaded)",
    )
    selection: str = option(
        "",
        help="the tuning selection the run's settings come from (`lcbench search`'s lock file and trial); "
        "set by the sweep",
    )
    decode: str = option(
        "workers",
        choices=["workers", "device"],
        help="image folders: decode and augment JPEGs with PIL in the loader workers, or on the run's "
        "device (torchvision decode_jpeg + transforms.v2; for CUDA)",
    )
    nproc: int = option(
        1, min=1, max=1024, help="DDP processes per node (one per GPU; gloo on the CPU); batch_size is global"
    )
    nodes: int = option(1, min=1, max=4096, help="nodes of a DDP run (SLURM); nproc processes on each")
    latency_batch: int = option(32, min=1, max=MAX_BATCH, help="the large batch for latency measurement")
    latency_repeats: int = option(20, min=1)
    output_root: str = "outputs"
    tracking: TrackingConfig = option(default_factory=TrackingConfig)
    pretrain: PretrainRecipe = option(default_factory=lambda: PretrainRecipe())


# How the original model of a `compress` run is obtained (its own `pretrain` run): these RunConfig fields,
# with the same defaults and checks, under `pretrain.*`.
RECIPE_FIELDS = (
    "pretrained",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "weight_decay",
    "lr_schedule",
    "warmup_epochs",
    "warmup_steps",
    "label_smoothing",
    "grad_clip",
    "seed",
)
PretrainRecipe = dataclasses.make_dataclass(
    "PretrainRecipe",
    [
        (f.name, RunConfig.__annotations__[f.name], dataclasses.field(default=f.default, metadata=f.metadata))
        for f in dataclasses.fields(RunConfig)
        if f.name in RECIPE_FIELDS
    ],
)
PretrainRecipe.__module__ = __name__
PretrainRecipe.__doc__ = (
    "How the original model a `compress` run starts from is trained (RunConfig's fields)."
)

# Fields that say where or how a run executes, not what it computes: excluded from the run id.
EXECUTION_FIELDS = (
    "data_root",
    "download",
    "device",
    "threads",
    "workers",
    "nproc",
    "nodes",
    "output_root",
    "tracking",
)


# --------------------------------------------------------------------------------------------------------
# Loading, overrides, resolution


def parse_override(text: str) -> tuple[str, Any]:
    """`key=value` -> (key, value parsed as YAML: numbers, booleans, lists)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. epochs=5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None and raw.strip().lower() not in ("null", "none", "~"):
        value = raw
    return key, value


def _set_dotted(target: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        target = node
    target[parts[-1]] = value


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping, with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}): is it a config file?") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML: {getattr(e, 'problem', None) or e}{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, not {type(data).__name__}")
    return data


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


# Fields added after run ids were first published: hashed only when set away from their default, so every
# earlier run keeps its id (its folder, its record, its row in the committed results).
LATER_FIELDS = (
    "decode",
    "seq_len",
    "eval_stride",
    "step_steps",
    "warmup_steps",
    "augment",
    "holdout",
    "selection",
)
LATER_RECIPE_FIELDS = (
    "warmup_steps",
    "grad_clip",
)  # added to `pretrain.*` later (grad_clip itself is not new)


# What a compress run passes on to the pretrain run it starts from; its training recipe comes from
# `pretrain.*` and every other training setting from the defaults, never from the compress run.
INHERITED_BY_PRETRAIN = (
    "model",
    "dataset",
    "data_fingerprint",
    "augment",
    "holdout",
    "img_size",
    "seq_len",
    "eval_stride",
    "precision",
    "channels_last",
    "eval_batch_size",
    "latency_batch",
    "latency_repeats",
    *EXECUTION_FIELDS,
)


def pretrain_config(cfg: RunConfig) -> RunConfig:
    """The pretrain run that a compress run starts from."""
    inherited = {key: getattr(cfg, key) for key in INHERITED_BY_PRETRAIN}
    inherited["tracking"] = dataclasses.replace(cfg.tracking, variant="", level="")  # not the compress run's
    return RunConfig(stage="pretrain", **inherited, **dataclasses.asdict(cfg.pretrain))


def replicate_seed(cfg: RunConfig) -> int:
    """The seed of the replicate a run belongs to: its original model's (a pretrain run's own seed, a
    compress run's `pretrain.seed`). It draws the held-out split of a data set that has no official one, so
    a compress run is evaluated on exactly the examples its original was."""
    return cfg.seed if cfg.stage == "pretrain" else cfg.pretrain.seed


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def __getattr__(name: str):
    """`run_id` and `identity` moved to `lcbench.training.identity` (they ask each method for its
    parameters); the old path works for one release, with a warning."""
    if name in ("run_id", "identity"):
        import warnings

        warnings.warn(
            f"lcbench.config.{name} moved to lcbench.training.identity.{name} (the old path goes in 0.2)",
            DeprecationWarning,
            stacklevel=2,
        )
        from ..training import identity

        return getattr(identity, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
