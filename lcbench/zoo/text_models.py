"""Language models of the zoo: Hugging Face `transformers` BERT and GPT-2 families.

Each is wrapped so that, like every vision model, it takes one tensor and returns logits:
- `CausalLM`: token ids (B, T) -> next-token logits (B, T, vocab) (GPT-2; perplexity);
- `SequenceClassifier`: (B, 3, T) = token ids, token types, attention mask -> (B, classes) (BERT on GLUE;
  one output for a regression task such as STS-B).

A registered name fixes the architecture (the published configuration: `gpt2` is 12 layers of 768);
`pretrained=DIR` loads the weights (and the data sets take the tokenizer) from a local `save_pretrained`
folder, `pretrained=hub` from the offline Hugging Face cache. A folder whose configuration differs from the
name's is refused. transformers' GPT-2 keeps its layers as `Conv1D` (y = x W + b, W stored in x out); the zoo
turns every one into the `nn.Linear` it equals (weight transposed), so LayerCollapse, pruning, low-rank and
the measurements see the same layer class in every model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..core import extras
from ..core.errors import CheckpointError, ConfigError

BYTE_VOCAB = 256  # the embedded text models read raw bytes: token = byte value


class CausalLM(nn.Module):
    """A transformers causal LM as a tensor-in, logits-out module."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=ids, use_cache=False).logits

    @staticmethod
    def input_shape(seq_len: int) -> tuple[int, ...]:
        return (seq_len,)

    def example_input(self, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Random token ids of `shape` (the sequence length) for counting MACs and timing."""
        device = next(self.parameters()).device
        return torch.randint(0, self.lm.config.vocab_size, (batch, *shape), device=device)


class SequenceClassifier(nn.Module):
    """A transformers sequence classifier taking (B, 3, T): token ids, token type ids, attention mask."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=x[:, 0], token_type_ids=x[:, 1], attention_mask=x[:, 2]).logits

    @staticmethod
    def input_shape(seq_len: int) -> tuple[int, ...]:
        return (3, seq_len)

    def example_input(self, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
        """Random ids, one segment, no padding: the full sequence length is computed."""
        device = next(self.parameters()).device
        length = shape[-1]
        ids = torch.randint(0, self.model.config.vocab_size, (batch, length), device=device)
        return torch.stack([ids, torch.zeros_like(ids), torch.ones_like(ids)], dim=1)


def linears_from_conv1d(model: nn.Module) -> nn.Module:
    """Replace every transformers `Conv1D` (y = x W + b) by the equal `nn.Linear` (weight W^T)."""
    from transformers.pytorch_utils import Conv1D

    for name, module in list(model.named_modules()):
        if isinstance(module, Conv1D):
            weight = module.weight
            linear = nn.Linear(weight.shape[0], weight.shape[1], device=weight.device, dtype=weight.dtype)
            with torch.no_grad():
                linear.weight.copy_(weight.t())
                linear.bias.copy_(module.bias)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, linear)
    return model


# --------------------------------------------------------------------------------------------------------
# Tokenizers


class ByteTokenizer:
    """The embedded models' tokenizer: a text's UTF-8 bytes are its tokens (the `tokenizers` call shape)."""

    vocab_size = BYTE_VOCAB

    def __call__(self, texts: list[str], *_, **__) -> dict[str, list[list[int]]]:
        return {"input_ids": [list(text.encode("utf-8")) for text in texts]}

    def __len__(self) -> int:
        return BYTE_VOCAB


def load_tokenizer(model: str, pretrained: str, vocab_size: int):
    """The tokenizer of `model`: raw bytes for the byte-level models, else the one saved with its pretrained
    weights (`pretrained=FOLDER`, or `hub`: the offline Hugging Face cache)."""
    if vocab_size == BYTE_VOCAB:
        return ByteTokenizer()
    if not pretrained or Path(pretrained).expanduser().is_file():
        raise ConfigError(
            f"{model} reads text through its tokenizer: set pretrained=FOLDER (a save_pretrained folder with "
            "the tokenizer files; pretrain.pretrained=FOLDER for a compress run) or pretrained=hub"
        )
    extras.require("transformers", purpose=f"model {model}'s tokenizer")
    from transformers import AutoTokenizer

    source = model if pretrained == "hub" else str(Path(pretrained).expanduser())
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"pretrained={pretrained}: no tokenizer of {model} there ({e})") from e
    if len(tokenizer) > vocab_size:
        raise ConfigError(
            f"the tokenizer at {pretrained} has {len(tokenizer)} tokens but {model} embeds {vocab_size}: "
            "not this model's tokenizer"
        )
    return tokenizer


def vocab_size(model: nn.Module) -> int:
    inner = next(model.children())
    return inner.config.vocab_size


# --------------------------------------------------------------------------------------------------------
# Architectures: the published configurations, and small ones (the embedded default, tests)

GPT2_SHAPES = {  # n_layer, n_embd, n_head (vocab 50257, 1024 positions)
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
    "distilgpt2": (6, 768, 12),
}
BERT_SHAPES = {  # num_hidden_layers, hidden_size, num_attention_heads, vocab (intermediate: 4 x hidden)
    "bert-base-uncased": (12, 768, 12, 30522),
    "bert-base-cased": (12, 768, 12, 28996),
    "bert-large-uncased": (24, 1024, 16, 30522),
    "bert-large-cased": (24, 1024, 16, 28996),
}
# small models built here: the embedded byte-level GPT-2 (trained from scratch) and the test fixtures'
NO_SPECIAL = dict(bos_token_id=None, eos_token_id=None)  # (GPT-2's 50256 lies outside a small vocabulary)
TINY_GPT2 = {
    "text_gpt2": dict(vocab_size=BYTE_VOCAB, n_positions=128, n_embd=64, n_layer=4, n_head=4, **NO_SPECIAL),
    "gpt2-tiny": dict(vocab_size=1000, n_positions=128, n_embd=32, n_layer=3, n_head=2, **NO_SPECIAL),
}
TINY_BERT = {
    "bert-tiny": dict(
        vocab_size=1000,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
}
# configuration fields a pretrained folder must share with the named architecture
GPT2_ARCH_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "activation_function")
BERT_ARCH_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def gpt2_config(name: str):
    extras.require("transformers", purpose=f"model {name}")
    from transformers import GPT2Config

    if name in TINY_GPT2:
        return GPT2Config(**TINY_GPT2[name])
    n_layer, n_embd, n_head = GPT2_SHAPES[name]
    return GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head)


def bert_config(name: str, num_labels: int):
    extras.require("transformers", purpose=f"model {name}")
    from transformers import BertConfig

    kwargs = dict(TINY_BERT[name]) if name in TINY_BERT else {}
    if name in BERT_SHAPES:
        layers, hidden, heads, vocab = BERT_SHAPES[name]
        kwargs = dict(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            vocab_size=vocab,
        )
    problem = "regression" if num_labels == 1 else "single_label_classification"
    return BertConfig(num_labels=num_labels, problem_type=problem, **kwargs)


def max_positions(name: str) -> int | None:
    """The most tokens a registered language model embeds positions for (None: not one of them)."""
    if name in TINY_GPT2 or name in GPT2_SHAPES:
        return gpt2_config(name).n_positions
    if name in TINY_BERT or name in BERT_SHAPES:
        return bert_config(name, 2).max_position_embeddings
    return None


def _checked_folder(name: str, pretrained: str, config, fields: tuple[str, ...]) -> str:
    """The pretrained source for from_pretrained: the model's hub id (offline cache) or a local folder whose
    configuration matches the named architecture."""
    if pretrained == "hub":
        return name
    folder = Path(pretrained).expanduser()
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"pretrained={pretrained}: no config.json there. Give a folder written by `save_pretrained` "
            f"(or `huggingface-cli download {name} --local-dir DIR`), or pretrained=hub for the offline cache"
        )
    extras.require("transformers", purpose=f"model {name}")
    from transformers import AutoConfig

    found = AutoConfig.from_pretrained(folder, local_files_only=True)
    differ = [
        f"{f}: {getattr(found, f, None)} != {getattr(config, f)}"
        for f in fields
        if getattr(found, f, None) != getattr(config, f)
    ]
    if differ:
        raise CheckpointError(
            f"pretrained={folder} is not a {name} ({'; '.join(differ)}); "
            "pick the model name of its architecture"
        )
    return str(folder)


def _from_pretrained(cls, source: str, head: str, **kwargs) -> nn.Module:
    """`cls.from_pretrained` offline, refusing weights it would silently re-initialise: only the task head
    (`head.*`: a new classifier for another number of labels) may be missing or of another shape."""
    try:
        model, info = cls.from_pretrained(source, local_files_only=True, output_loading_info=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as e:  # no weights file, shapes that do not fit, offline
        raise CheckpointError(f"pretrained={source}: cannot load a {cls.__name__} from it ({e})") from e
    bad = sorted(
        str(key)
        for key in (
            *info["missing_keys"],
            *(k[0] if isinstance(k, tuple) else k for k in info["mismatched_keys"]),
        )
        if not str(key).startswith(f"{head}.")
    )
    if bad:
        raise CheckpointError(
            f"pretrained={source} lacks or has other shapes for {len(bad)} weights of {cls.__name__} "
            f"({', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''}): not a checkpoint of this architecture"
        )
    return model


def build_gpt2(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 0, pretrained: str = "", **_) -> nn.Module:
        from transformers import GPT2LMHeadModel

        config = gpt2_config(name)
        if pretrained:
            source = _checked_folder(name, pretrained, config, GPT2_ARCH_FIELDS)
            lm = _from_pretrained(GPT2LMHeadModel, source, head="lm_head")
        else:
            lm = GPT2LMHeadModel(config)
        return CausalLM(linears_from_conv1d(lm))

    return build


def build_bert(name: str) -> Callable[..., nn.Module]:
    def build(num_classes: int = 2, pretrained: str = "", **_) -> nn.Module:
        from transformers import BertConfig, BertForSequenceClassification

        config = bert_config(name, num_classes)
        if pretrained:
            source = _checked_folder(name, pretrained, config, BERT_ARCH_FIELDS)
            saved = BertConfig.from_pretrained(source, local_files_only=True)  # dropout etc. as saved
            saved.num_labels, saved.problem_type = num_classes, config.problem_type  # the task's head
            model = _from_pretrained(
                BertForSequenceClassification,
                source,
                head="classifier",
                config=saved,
                ignore_mismatched_sizes=True,  # a classifier fine-tuned for another label count
            )
        else:
            model = BertForSequenceClassification(config)
        return SequenceClassifier(model)

    return build
