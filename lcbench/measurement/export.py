"""`lcbench export RUN --format F`: hand a run's final (compressed) model to someone without lcbench's
training code.

- `safetensors`: `model.safetensors` (the state_dict; tied weights stored once) and `lcbench.json` (zoo
  architecture, method and recorded structure): `load_export(folder)` rebuilds it in any lcbench install.
- `hf`: a `save_pretrained` folder for the zoo's GPT-2 and BERT models, with the tokenizer. A model whose
  feed-forward blocks LayerCollapse folded gets the classes of `hf_folded.py` saved beside it (loaded with
  `trust_remote_code=True`); an unfolded one is a stock `GPT2LMHeadModel` / `BertForSequenceClassification`.
- `onnx`: `model.onnx` for every model of the zoo (torch.export; the batch dimension is dynamic).

Every export is written to a temporary folder beside its destination, reloaded from there the way its user
will load it and compared with the run's model on a random batch (the largest absolute difference of the
logits and whether the top predictions agree) before it replaces the destination.

A destination is refused before anything is read or written when replacing it could lose data: a link, a
file, the output root or a folder containing it, a folder inside the output root or inside a run folder
(but the run's own `export/`, the default place), and, with `--force`, any existing folder that is not an
earlier export of this user's (each export holds `.lcbench-export`).
"""

from __future__ import annotations

import fcntl
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core import extras
from ..core.errors import CheckpointError, ConfigError, LcbenchError
from ..core.integrity import read_verified
from ..core.store import RunDir, check_own_folder
from ..methods import METHODS
from ..training.pipeline import build_model, read_model_file
from ..zoo.measure import count_parameters, example_input
from ..zoo.models import create_model

FORMATS = ("safetensors", "hf", "onnx")
EXPORT_FORMAT = "lcbench-export-1"
META_FILE = "lcbench.json"
EXPORT_MARK = ".lcbench-export"  # in every export folder: what --force may replace
TOLERANCE = 1e-5  # the largest |difference| of the logits an export may have (relative to max |logit| > 1)
CHECK_BATCH = 3  # the batch a reloaded export is checked on (not the batch ONNX traced: 2)


@dataclass
class Exported:
    """What an export wrote and how well its reloaded copy agrees with the run's model."""

    format: str
    path: Path
    params: int
    original_params: int | None
    max_abs_diff: float
    same_predictions: bool
    logit_scale: float  # the largest |logit| of the run's model on the check batch
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        fewer = (
            f" (the original: {self.original_params:,}; {self.original_params / self.params:.2f}x fewer)"
            if self.original_params
            else ""
        )
        same = "identical" if self.same_predictions else "DIFFER"
        return "\n".join(
            [
                f"exported {self.format} to {self.path}",
                f"parameters: {self.params:,}{fewer}",
                f"reloaded and checked on a random batch of {CHECK_BATCH}: max |logit difference| "
                f"{self.max_abs_diff:.2e} ({self.max_abs_diff / max(self.logit_scale, 1e-30):.1e} of the "
                f"largest logit), top predictions {same}",
                *self.notes,
            ]
        )


# --------------------------------------------------------------------------------------------------------
# The run's model


@dataclass
class RunModel:
    saved: dict
    model: nn.Module
    record: dict
    run: RunDir


def run_model(path: str | Path) -> RunModel:
    """A completed run's final model, rebuilt from its model.pt (a link is refused)."""
    path = Path(path)
    run = RunDir(path.parent, path.name)
    run.check_trusted()
    record = run.result()
    if not record:
        raise LcbenchError(f"{path} is not an lcbench run folder (no result.json): give a run's folder")
    if record.get("status") != "completed":
        raise LcbenchError(
            f"run {path.name} is {record.get('status')}, not completed: only a final model exports"
        )
    if run.model_path.is_symlink() or path.is_symlink():
        raise CheckpointError(f"{run.model_path} is a symbolic link: lcbench reads only a run's own files")
    problem = run.record_problem(record)
    if problem:
        raise CheckpointError(f"run {path.name}: {problem}")
    data = read_verified(run.model_path, record.get("model_file"), "model file")  # exported as verified
    saved = read_model_file(run.model_path, data)
    return RunModel(saved, build_model(saved, run.model_path).eval(), record, run)


def _check_input(source: RunModel, batch: int) -> torch.Tensor:
    torch.manual_seed(0)
    return example_input(source.model, source.record["input_shape"], batch)


def _agreement(expected: torch.Tensor, got: np.ndarray | torch.Tensor) -> tuple[float, bool]:
    expected = expected.detach().float().cpu().numpy()
    got = got.detach().float().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got, np.float32)
    if got.shape != expected.shape:
        raise LcbenchError(f"the export's output has shape {got.shape}, the model's {expected.shape}")
    return float(np.abs(got - expected).max()), bool((got.argmax(-1) == expected.argmax(-1)).all())


def within_tolerance(difference: float, expected: torch.Tensor) -> bool:
    return difference <= TOLERANCE * max(1.0, float(expected.abs().max()))


# --------------------------------------------------------------------------------------------------------
# safetensors


def _meta(source: RunModel, **extra) -> dict:
    saved = source.saved
    keys = ("model", "num_classes", "in_chans", "img_size", "method", "structure", "run_id")
    return {
        "format": EXPORT_FORMAT,
        **{k: saved.get(k) for k in keys},
        "input_shape": source.record["input_shape"],
        **extra,
    }


def _write_safetensors(source: RunModel, folder: Path) -> nn.Module:
    from safetensors.torch import save_model

    save_model(source.model, str(folder / "model.safetensors"), metadata={"format": EXPORT_FORMAT})
    (folder / META_FILE).write_text(json.dumps(_meta(source), indent=2) + "\n")
    return load_export(folder)


def load_export(folder: str | Path) -> nn.Module:
    """Rebuild a `--format safetensors` export: the zoo architecture, the recorded structure, the weights."""
    from safetensors.torch import load_model

    folder = Path(folder)
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"{folder} has no readable {META_FILE}: not an lcbench safetensors export"
        ) from e
    if meta.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{folder / META_FILE} is not an lcbench export ({EXPORT_FORMAT})")
    model = create_model(meta["model"], meta["num_classes"], meta["in_chans"], meta["img_size"])
    model = METHODS.get(meta["method"]).rebuild(model, meta["structure"])
    load_model(model, str(folder / "model.safetensors"), strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------------------
# ONNX


def require_onnx() -> None:
    """onnx, onnxscript (torch's exporter) and onnxruntime, or a clear error naming the extra."""
    extras.require("onnx", "onnxscript", "onnxruntime", purpose="ONNX")


def onnx_export(model: nn.Module, traced: torch.Tensor, path: Path) -> str:
    """Write `model` as ONNX (traced on `traced`, batch dimension dynamic); returns its input's name."""
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):  # pass-by-pass progress lines
        logging.getLogger(name).setLevel(logging.WARNING)
    name = "input_ids" if traced.dtype == torch.long and traced.dim() == 2 else "input"
    program = torch.onnx.export(
        model,
        (traced,),
        dynamo=True,
        input_names=[name],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
        verbose=False,
    )
    program.save(str(path))
    return name


def onnx_session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session (`threads` intra-op threads; 0: its own default)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _write_onnx(source: RunModel, folder: Path) -> object:
    """model.onnx and lcbench.json; an ONNX Runtime session on the written file."""
    name = onnx_export(source.model, _check_input(source, 2), folder / "model.onnx")
    (folder / META_FILE).write_text(json.dumps(_meta(source, onnx_input=name), indent=2) + "\n")
    return onnx_session(folder / "model.onnx")


def onnx_runner(session) -> Callable[[torch.Tensor], np.ndarray]:
    """Run an ONNX Runtime session on a torch tensor; returns numpy logits."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x.detach().cpu().numpy()})[0]


# --------------------------------------------------------------------------------------------------------
# transformers


def _transformers_model(model: nn.Module) -> tuple[str, nn.Module]:
    """("gpt2" | "bert", the transformers model inside the zoo's wrapper)."""
    from transformers import BertForSequenceClassification, GPT2LMHeadModel

    inner = next(iter(model.children()), None)
    if isinstance(inner, GPT2LMHeadModel):
        return "gpt2", inner
    if isinstance(inner, BertForSequenceClassification):
        return "bert", inner
    raise ConfigError(
        "--format hf is for the zoo's GPT-2 and BERT models (transformers); this one is "
        f"{type(model).__name__}: use --format safetensors or onnx"
    )


def folded_layers(kind: str, inner: nn.Module) -> list[int]:
    """The transformer layers whose feed-forward block LayerCollapse folded."""
    if kind == "gpt2":
        return [i for i, block in enumerate(inner.transformer.h) if isinstance(block.mlp.c_proj, nn.Identity)]
    return [
        i for i, layer in enumerate(inner.bert.encoder.layer) if isinstance(layer.output.dense, nn.Identity)
    ]


def _hf_target(kind: str, inner: nn.Module, folded: list[int]) -> nn.Module:
    """An empty transformers model that holds `inner`'s weights: stock, or with the folded layers."""
    from transformers import BertForSequenceClassification, GPT2LMHeadModel

    from ..zoo import hf_folded

    config = inner.config.to_dict()
    for key in ("model_type", "architectures", "auto_map", "transformers_version"):
        config.pop(key, None)
    if kind == "gpt2":
        if not folded:
            return GPT2LMHeadModel(inner.config)
        hf_folded.FoldedGPT2Config.register_for_auto_class()
        hf_folded.FoldedGPT2LMHeadModel.register_for_auto_class("AutoModelForCausalLM")
        return hf_folded.FoldedGPT2LMHeadModel(hf_folded.FoldedGPT2Config(folded_layers=folded, **config))
    if not folded:
        return BertForSequenceClassification(inner.config)
    hf_folded.FoldedBertConfig.register_for_auto_class()
    hf_folded.FoldedBertForSequenceClassification.register_for_auto_class(
        "AutoModelForSequenceClassification"
    )
    return hf_folded.FoldedBertForSequenceClassification(
        hf_folded.FoldedBertConfig(folded_layers=folded, **config)
    )


def _hf_state(inner: nn.Module, target: nn.Module) -> dict:
    """`inner`'s weights laid out for `target`: the zoo keeps GPT-2's Conv1D layers as nn.Linear
    (weight transposed), so every weight of a Conv1D in `target` is transposed back."""
    from transformers.pytorch_utils import Conv1D

    conv = {f"{name}.weight" for name, m in target.named_modules() if isinstance(m, Conv1D)}
    return {k: (v.t().contiguous() if k in conv else v) for k, v in inner.state_dict().items()}


def _hf_model(source: RunModel) -> tuple[str, list[int], nn.Module]:
    """The transformers model holding the run's weights (kind, folded layers, model); refused with the
    weights it cannot hold."""
    kind, inner = _transformers_model(source.model)
    folded = folded_layers(kind, inner)
    target = _hf_target(kind, inner, folded)
    missing, unexpected = target.load_state_dict(_hf_state(inner, target), strict=False)
    tied = getattr(target, "_tied_weights_keys", None) or ()  # filled from the weight they share
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        odd = ", ".join([*unexpected[:2], *(f"{k} (missing)" for k in missing[:2])])
        raise ConfigError(
            f"--format hf holds stock and folded {kind} layers only; this {source.saved['method']} model "
            f"has others ({odd}): use --format safetensors or onnx"
        )
    return kind, folded, target.eval()


def _write_hf(source: RunModel, folder: Path, kind: str, folded: list[int], target: nn.Module):
    """save_pretrained with the tokenizer; returns the folder loaded back through transformers and a note."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target.save_pretrained(folder)
    note = _save_tokenizer(source, folder)
    auto = AutoModelForCausalLM if kind == "gpt2" else AutoModelForSequenceClassification
    loaded = auto.from_pretrained(folder, trust_remote_code=bool(folded), local_files_only=True).eval()
    return _HFWrapped(loaded, source.model), note


class _HFWrapped(nn.Module):
    """A loaded transformers model called as the zoo's wrapper is (one tensor in, logits out)."""

    def __init__(self, loaded: nn.Module, like: nn.Module) -> None:
        super().__init__()
        self.loaded = loaded
        self.kind = type(like).__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "CausalLM":
            return self.loaded(input_ids=x, use_cache=False).logits
        return self.loaded(input_ids=x[:, 0], token_type_ids=x[:, 1], attention_mask=x[:, 2]).logits


def byte_tokenizer():
    """A transformers tokenizer whose ids are a text's UTF-8 bytes, as the embedded models read them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]  # GPT-2's byte-to-character map
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    core = Tokenizer(models.BPE(vocab={chars[b]: b for b in range(256)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core)


def _save_tokenizer(source: RunModel, folder: Path) -> str:
    """The model's tokenizer into the folder: bytes for the embedded models, else the one saved with the
    pretrained weights. A note when it cannot be found."""
    from ..zoo.text_models import BYTE_VOCAB, load_tokenizer

    config = source.record.get("config") or {}
    vocab = next(iter(source.model.children())).config.vocab_size
    try:
        if vocab == BYTE_VOCAB:
            tokenizer = byte_tokenizer()
            tokenizer.model_max_length = next(iter(source.model.children())).config.n_positions
        else:
            pretrained = config.get("pretrained") or (config.get("pretrain") or {}).get("pretrained") or ""
            tokenizer = load_tokenizer(source.saved["model"], pretrained, vocab)
    except LcbenchError as e:
        return f"no tokenizer saved ({e}); add it to the export folder with tokenizer.save_pretrained(...)"
    tokenizer.save_pretrained(folder)
    return "tokenizer saved beside the weights"


# --------------------------------------------------------------------------------------------------------
# The command


def default_destination(run: str | Path, fmt: str) -> Path:
    return Path(run) / "export" / fmt


def check_destination(destination: Path, run: Path, force: bool) -> None:
    """Refuse a destination whose replacement could lose data (see the module's docstring), in one line."""
    if destination.is_symlink():
        raise LcbenchError(f"--out {destination} is a symbolic link; lcbench never writes through one")
    above = next((p for p in destination.parents if os.path.lexists(p) and not p.is_dir()), None)
    if above is not None:
        raise LcbenchError(f"--out {destination}: {above} is not a folder; choose another --out")
    target, run = Path(os.path.realpath(destination)), Path(os.path.realpath(run))
    root = run.parent
    if not _within(target, run / "export"):  # (the run's own export folder: the default place)
        if _within(root, target):
            raise LcbenchError(
                f"--out {destination} {'is' if target == root else 'contains'} the output root {root}: "
                "replacing it would delete every run; choose a folder outside it"
            )
        if _within(target, root):
            raise LcbenchError(
                f"--out {destination} lies inside the output root {root}, among its run folders: choose a "
                f"folder outside it (or leave --out out: {default_destination(run, '<format>')})"
            )
        folder = next((p for p in (target, *target.parents) if (p / "result.json").is_file()), None)
        if folder is not None:
            raise LcbenchError(
                f"--out {destination} lies inside run folder {folder}: choose a folder outside it"
            )
    if not os.path.lexists(destination):
        return
    if not force:
        raise LcbenchError(f"{destination} exists: remove it, give --out, or --force to replace it")
    if not destination.is_dir():
        raise LcbenchError(
            f"--out {destination} is a file, not an export folder: remove it or choose another"
        )
    check_own_folder(destination, "export folder", "choose another --out")
    if not (destination / EXPORT_MARK).is_file() or (destination / EXPORT_MARK).is_symlink():
        raise LcbenchError(
            f"--out {destination} is not an earlier lcbench export (no {EXPORT_MARK} in it): --force "
            "replaces only an export; remove it yourself or choose another --out"
        )


STAGING_LOCK = ".lcbench-staging-lock"


def _hold(staging: Path) -> int:
    """Lock a staging folder for the life of this export (the descriptor to close when done)."""
    fd = os.open(staging / STAGING_LOCK, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _remove_stale_staging(destination: Path) -> None:
    """The staging folders of exports to `destination` that were killed: this user's own, whose lock no
    live export holds."""
    for folder in destination.parent.glob(f".{glob.escape(destination.name)}.*"):
        try:
            check_own_folder(folder, "staging folder")
            fd = os.open(folder / STAGING_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except (LcbenchError, OSError):
            continue  # not ours, not a folder, or not yet locked by its export: left alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(folder, ignore_errors=True)
        except BlockingIOError:
            pass  # a live export's
        finally:
            os.close(fd)


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def export_run(run: str | Path, fmt: str, out: str | Path | None = None, force: bool = False) -> Exported:
    """Export a completed run's final model as `fmt` into `out` (default `<run>/export/<fmt>`), after
    reloading it from a temporary folder and checking it against the run's model."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    destination = Path(out) if out else default_destination(run, fmt)
    check_destination(destination, Path(run), force)
    source = run_model(run)
    if fmt == "onnx":
        require_onnx()
    hf = _hf_model(source) if fmt == "hf" else None  # refused before anything is written
    made = [p for p in (destination.parent, *destination.parent.parents) if not p.exists()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(destination)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    held = _hold(staging)  # (while held, no other export takes this folder for a killed one's)
    try:
        notes = []
        x = _check_input(source, CHECK_BATCH)
        with torch.no_grad():
            expected = source.model(x)
            if fmt == "safetensors":
                got = _write_safetensors(source, staging)(x)
            elif fmt == "onnx":
                got = onnx_runner(_write_onnx(source, staging))(x)
            else:
                kind, folded, target = hf
                reloaded, note = _write_hf(source, staging, kind, folded, target)
                got = reloaded(x)
                load = "load with trust_remote_code=True" if folded else "stock transformers classes"
                notes += [note, f"folded layers {folded}: {load}"]
        difference, same = _agreement(expected, got)
        if not within_tolerance(difference, expected):
            raise LcbenchError(
                f"the {fmt} export differs from the run's model by {difference:.3g} on its logits (more "
                f"than {TOLERANCE:g}): not written"
            )
        mark = {"format": fmt, "run": Path(run).name, "export_format": EXPORT_FORMAT}
        (staging / EXPORT_MARK).write_text(json.dumps(mark) + "\n")
        (staging / STAGING_LOCK).unlink()  # (still held through its descriptor until the end)
        if destination.exists():
            shutil.rmtree(destination)
        os.replace(staging, destination)
    except BaseException:
        for folder in made:  # the folders this export made, when it left nothing in them
            if folder.exists() and not any(folder.iterdir()):
                folder.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.close(held)
    original = (source.record.get("original") or {}).get("params_dense")
    scale = float(expected.abs().max())
    return Exported(
        fmt, destination, count_parameters(source.model)[0], original, difference, same, scale, notes
    )
