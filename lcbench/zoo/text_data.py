"""Text data sets: the embedded corpus (the Python standard library's own source, byte level), WikiText-2 and
WikiText-103 (language modelling) and the nine GLUE tasks, read with Hugging Face `datasets`.

Samples are tensors like every other data set's, so loaders, samplers and DDP work unchanged:
- language modelling: the token stream cut into blocks of `seq_len + 1` (stride `seq_len`, the recipe of
  transformers' `run_clm.py`); input = the first `seq_len` tokens, target = the next token at each place;
- GLUE: (3, seq_len) = token ids, token type ids, attention mask, padded to `seq_len` (`run_glue.py`'s
  `pad_to_max_length`); target = the label (a float for STS-B).

Local copies (`data_root`), nothing downloaded unless `download=true`: a `save_to_disk` folder, or the
Hugging Face hub's parquet files, or (WikiText) the raw `wiki.{train,valid,test}.raw` files; see
`LAYOUTS`. The tokenizer is the model's (`pretrained=FOLDER`), or raw bytes for the embedded models.
"""

from __future__ import annotations

import codecs
import hashlib
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from ..core import extras
from ..core.errors import ConfigError, DataError, first_line
from .data import DATASETS, DatasetSpec

# --------------------------------------------------------------------------------------------------------
# The embedded corpus: the standard library's top-level modules, read at run time, never stored here

TEXT_SEQ_LEN = 64
TEXT_TRAIN_BYTES = 40_000  # what the embedded default trains on (2 CPU cores, minutes)
TEXT_VAL_BYTES = 16_000
TEXT_VAL_EVERY = 10  # every 10th module (sorted by name) is held out

IGNORE_INDEX = -100  # a target token that is not scored (padding)


def stdlib_files() -> list[Path]:
    """The standard library's top-level `.py` modules, sorted by name (the same list on every run)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.is_file())
    if len(files) < TEXT_VAL_EVERY:
        raise DataError(
            f"text_stdlib: found {len(files)} modules under {root}; is this Python's standard library?"
        )
    return files


def stdlib_corpus() -> tuple[bytes, bytes, str]:
    """(train bytes, held-out bytes, sha256 of both): whole modules, held-out ones never trained on."""
    train, val = bytearray(), bytearray()
    for i, path in enumerate(stdlib_files()):
        part = val if i % TEXT_VAL_EVERY == 0 else train
        limit = TEXT_VAL_BYTES if part is val else TEXT_TRAIN_BYTES
        if len(part) < limit:
            part += path.read_bytes()[: limit - len(part)]
    digest = hashlib.sha256(bytes(train) + b"\0" + bytes(val)).hexdigest()
    return bytes(train), bytes(val), digest


def lm_blocks(tokens: torch.Tensor, seq_len: int) -> TensorDataset:
    """(inputs, next-token targets) of `seq_len` tokens each, from consecutive blocks of a token stream."""
    blocks = (len(tokens) - 1) // seq_len
    if blocks < 1:
        raise DataError(f"{len(tokens)} tokens do not fill one block of seq_len={seq_len}")
    used = tokens[: blocks * seq_len + 1]
    inputs = used[:-1].reshape(blocks, seq_len)
    targets = used[1:].reshape(blocks, seq_len)
    return TensorDataset(inputs.clone(), targets.clone())


def strided_windows(blocks: TensorDataset, stride: int) -> TensorDataset:
    """The same token stream as `blocks`, as windows of seq_len tokens starting every `stride` tokens; each
    target token is scored once, in the first window that predicts it with the most context (the others
    are IGNORE_INDEX): transformers' strided perplexity (its "perplexity of fixed-length models" guide)."""
    inputs, targets = blocks.tensors
    seq_len = inputs.shape[1]
    if not 1 <= stride <= seq_len:
        raise ConfigError(f"eval_stride={stride} must lie in 1..seq_len ({seq_len})")
    stream = torch.cat([inputs.reshape(-1), targets[-1, -1:]])
    starts = torch.arange(0, len(stream) - seq_len, stride)
    index = starts[:, None] + torch.arange(seq_len)
    windows, scored = stream[index], stream[index + 1].clone()
    scored[1:, : seq_len - stride] = IGNORE_INDEX  # already scored by the window before, with less context
    return TensorDataset(windows, scored)


def byte_tokens(data: bytes) -> torch.Tensor:
    """The byte-level tokenisation of the embedded models: token = byte value (256 tokens)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def _load_stdlib(root: Path, tokenizer: Any, seq_len: int, download: bool) -> tuple[Dataset, Dataset]:
    train, val, _ = stdlib_corpus()
    return lm_blocks(byte_tokens(train), seq_len), lm_blocks(byte_tokens(val), seq_len)


# --------------------------------------------------------------------------------------------------------
# Hugging Face data sets from a local copy


@dataclass(frozen=True)
class HubSet:
    """Where a Hugging Face data set lives: hub id, configuration, the splits used, local folder names."""

    hub_id: str
    config: str
    folder: str  # under data_root: `<folder>` (WikiText) or `glue/<folder>` (GLUE)
    train_split: str = "train"
    val_split: str = "validation"  # the held-out split lcbench evaluates on


LAYOUTS = """\
  - DATA_ROOT/{folder}/ written by `datasets`' save_to_disk (a DatasetDict with the splits), or
  - DATA_ROOT/{folder}/{{split}}-*.parquet (the hub's files: `huggingface-cli download {hub_id} --repo-type
    dataset --include '{config}/*' --local-dir DIR`, then DATA_ROOT=DIR/..., or `download=true`)"""


def _split_files(folder: Path, split: str) -> list[str]:
    return sorted(str(p) for p in folder.glob(f"{split}-*.parquet")) or sorted(
        str(p) for p in folder.glob(f"{split}/*.parquet")
    )


def load_splits(root: Path, hub: HubSet, name: str, download: bool, raw: dict[str, str] | None = None):
    """The train and held-out splits of `hub` as `datasets.Dataset`s, from the first local layout found."""
    extras.require("datasets", purpose=f"data set {name}")
    import datasets

    folder = root / hub.folder
    found = None
    try:
        if (folder / "dataset_dict.json").is_file():
            found = datasets.load_from_disk(str(folder))
        elif _split_files(folder, hub.train_split) and _split_files(folder, hub.val_split):
            files = {s: _split_files(folder, s) for s in (hub.train_split, hub.val_split)}
            found = datasets.load_dataset("parquet", data_files=files)
        elif raw and all((folder / f).is_file() for f in raw.values()):
            files = {split: str(folder / f) for split, f in raw.items()}
            found = datasets.load_dataset("text", data_files=files)
        elif download:
            found = datasets.load_dataset(hub.hub_id, hub.config)
    except Exception as e:  # noqa: BLE001 - datasets and Arrow fail on a garbled file in many ways
        if raw and all((folder / f).is_file() for f in raw.values()):
            _check_text_files([folder / f for f in raw.values()], name)  # names the file that is not text
        cause = e.__cause__ or e.__context__ or e
        raise DataError(
            f"{name}: the copy under {folder} cannot be read ({type(cause).__name__}: {first_line(cause)}); "
            f"replace it with {hub.hub_id} ({hub.config}) as lcbench reads it (`lcbench list datasets`)"
        ) from e
    if found is None:
        raw_note = f"\n  - DATA_ROOT/{hub.folder}/{{{','.join(raw.values())}}}" if raw else ""
        raise DataError(
            f"{name}: no local copy under {folder}. lcbench reads:\n"
            + LAYOUTS.format(folder=hub.folder, hub_id=hub.hub_id, config=hub.config)
            + raw_note
            + f"\nSet data_root=DATA_ROOT, or download=true to fetch {hub.hub_id} ({hub.config})."
        )
    missing = [s for s in (hub.train_split, hub.val_split) if s not in found]
    if missing:
        raise DataError(
            f"{name}: the copy under {folder} has no split {', '.join(missing)} (it has {list(found)})"
        )
    return found[hub.train_split], found[hub.val_split]


def _check_text_files(paths: list[Path], name: str) -> None:
    """Why `datasets` could not read raw text files: the one that is empty or not UTF-8, named (read in 16 MB
    chunks: WikiText-103's training file is 500 MB; only after a failure, never on the way to a run)."""
    for path in paths:
        decoder, seen, offset = codecs.getincrementaldecoder("utf-8")(), False, 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(1 << 24):
                    seen = seen or bool(decoder.decode(chunk).strip())
                    offset += len(chunk)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name}: {path} is not UTF-8 text (near byte {offset + e.start}); replace it with the data "
                "set's raw file"
            ) from None
        if not seen:
            raise DataError(f"{name}: {path} is empty; replace it with the data set's raw file")


def _tokens(split, tokenizer: Any) -> torch.Tensor:
    """Every line of a text split tokenised and concatenated (`run_clm.py`'s recipe, no separators added).

    Through `datasets.map`, whose cache (keyed by the data and the tokenizer) spares every later run of a
    sweep the tokenisation (minutes for WikiText-103's 1.8M lines); the ids are read back through Arrow,
    not as Python lists (117M of them)."""

    def tokenize(batch: dict) -> dict:
        return {"input_ids": tokenizer(batch["text"])["input_ids"]}

    try:
        mapped = split.map(tokenize, batched=True, remove_columns=split.column_names, desc="tokenising")
    except OSError:  # a cache that cannot be written (a read-only copy): tokenise in memory
        mapped = split.map(tokenize, batched=True, remove_columns=split.column_names, keep_in_memory=True)
    ids = mapped.data.column("input_ids").combine_chunks().flatten().to_numpy()
    return torch.from_numpy(ids.astype(np.int64))


def _hf_text(hub: HubSet, raw: dict[str, str]):
    def load(root: Path, tokenizer: Any, seq_len: int, download: bool) -> tuple[Dataset, Dataset]:
        train, val = load_splits(root, hub, hub.folder, download, raw)
        return lm_blocks(_tokens(train, tokenizer), seq_len), lm_blocks(_tokens(val, tokenizer), seq_len)

    return load


# --------------------------------------------------------------------------------------------------------
# GLUE


@dataclass(frozen=True)
class GlueTask:
    name: str
    fields: tuple[str, ...]  # one sentence or a pair
    num_classes: int  # 1: regression (STS-B)
    metric: str
    val_split: str = "validation"
    train_size: int = 0


GLUE_TASKS = [
    GlueTask("cola", ("sentence",), 2, "mcc", train_size=8551),
    GlueTask("sst2", ("sentence",), 2, "top1", train_size=67349),
    GlueTask("mrpc", ("sentence1", "sentence2"), 2, "f1", train_size=3668),
    GlueTask("qqp", ("question1", "question2"), 2, "top1", train_size=363846),
    GlueTask("stsb", ("sentence1", "sentence2"), 1, "pearson", train_size=5749),
    GlueTask("mnli", ("premise", "hypothesis"), 3, "top1", "validation_matched", 392702),
    GlueTask("mnli_mm", ("premise", "hypothesis"), 3, "top1", "validation_mismatched", 392702),
    GlueTask("qnli", ("question", "sentence"), 2, "top1", train_size=104743),
    GlueTask("rte", ("sentence1", "sentence2"), 2, "top1", train_size=2490),
    GlueTask("wnli", ("sentence1", "sentence2"), 2, "top1", train_size=635),
]
GLUE_SEQ_LEN = 128


def glue_tensors(split, task: GlueTask, tokenizer: Any, seq_len: int) -> TensorDataset:
    """(N, 3, seq_len) token ids / token types / attention mask, and the labels."""
    columns = [list(split[f]) for f in task.fields]  # (a datasets Column is not a list)
    encoded = tokenizer(
        *columns,
        padding="max_length",
        truncation=True,
        max_length=seq_len,
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    x = torch.stack(
        [
            torch.tensor(encoded[k], dtype=torch.long)
            for k in ("input_ids", "token_type_ids", "attention_mask")
        ],
        dim=1,
    )
    labels = list(split["label"])
    y = torch.tensor(labels, dtype=torch.float32 if task.num_classes == 1 else torch.long)
    if task.num_classes > 1 and (y.min() < 0 or y.max() >= task.num_classes):
        raise DataError(
            f"glue_{task.name}: labels outside 0..{task.num_classes - 1} in this split (GLUE's test "
            "splits are unlabelled (-1): evaluate on the validation split)"
        )
    return TensorDataset(x, y)


def _glue_hub(task: GlueTask) -> HubSet:
    config = task.name.removesuffix("_mm")  # MNLI mismatched: MNLI's own files, the other held-out split
    return HubSet("nyu-mll/glue", config, f"glue/{config}", "train", task.val_split)


def hub_files(hub: HubSet):
    """The data fingerprint's files: everything in the data set's folder under data_root."""

    def files(root: Path) -> tuple[Path, list[Path]]:
        from .fingerprint import folder_files

        folder = root / hub.folder
        if not folder.is_dir():
            raise DataError(f"no folder {folder}")
        return folder, folder_files(folder)

    return files


def _glue(task: GlueTask):
    hub = _glue_hub(task)

    def load(root: Path, tokenizer: Any, seq_len: int, download: bool) -> tuple[Dataset, Dataset]:
        train, val = load_splits(root, hub, f"glue_{task.name}", download)
        return glue_tensors(train, task, tokenizer, seq_len), glue_tensors(val, task, tokenizer, seq_len)

    return load


# --------------------------------------------------------------------------------------------------------
# Registration

# WikiText is evaluated on its test split, as the reference numbers were (results/paper/): the test split is
# the same file for WikiText-2 and -103
WIKITEXT_RAW = {"train": "wiki.train.raw", "test": "wiki.test.raw"}
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def register() -> None:
    """Add the text data sets to the zoo (called by the data set registry's discovery)."""
    DATASETS.register("text_stdlib")(
        DatasetSpec(
            "text_stdlib",
            _load_stdlib,
            num_classes=0,
            natural_images=False,
            how_to_get=f"the running Python's standard library ({PYTHON}); nothing to download",
            train_size=TEXT_TRAIN_BYTES // TEXT_SEQ_LEN,
            task="language_modeling",
            metric="perplexity",
            seq_len=TEXT_SEQ_LEN,
        )
    )
    # nominal training samples (for cost estimates): about 2.4M and 117M GPT-2 tokens in blocks of 128
    for name, config, size in (
        ("wikitext2", "wikitext-2-raw-v1", 18_700),
        ("wikitext103", "wikitext-103-raw-v1", 917_000),
    ):
        hub = HubSet("Salesforce/wikitext", config, config, val_split="test")
        DATASETS.register(name)(
            DatasetSpec(
                name,
                _hf_text(hub, WIKITEXT_RAW),
                num_classes=0,
                natural_images=False,
                how_to_get=f"Salesforce/wikitext ({config}) under data_root/{config}/",
                files=hub_files(hub),
                train_size=size,
                task="language_modeling",
                metric="perplexity",
                seq_len=128,
            )
        )
    for task in GLUE_TASKS:
        DATASETS.register(f"glue_{task.name}")(
            DatasetSpec(
                f"glue_{task.name}",
                _glue(task),
                num_classes=task.num_classes,
                natural_images=False,
                how_to_get=f"nyu-mll/glue ({task.name.removesuffix('_mm')}) under data_root/glue/",
                files=hub_files(_glue_hub(task)),
                train_size=task.train_size,
                task="regression" if task.num_classes == 1 else "classification",
                metric=task.metric,
                seq_len=GLUE_SEQ_LEN,
            )
        )
