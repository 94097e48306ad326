"""Small local copies of what the language track reads: GLUE-shaped parquet files, WikiText raw files, and
save_pretrained folders of the zoo's tiny BERT and GPT-2 with real (tiny) tokenizers. Nothing downloaded."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertTokenizerFast, GPT2LMHeadModel, GPT2TokenizerFast

from lcbench.zoo import text_models
from lcbench.zoo.models import create_model

WORDS = (
    "the a film movie story plot actor scene was is very not good bad great boring fun dull "
    "brilliant awful and but of with this that it a an loved hated man woman dog cat ran sat on mat "
    "quick brown fox jumps over lazy day night city house car tree river green red blue"
).split()


def sentence(rng: random.Random, n: int = 8) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_glue(root: Path, tasks: dict[str, int] | None = None, rows: int = 48, seed: int = 0) -> Path:
    """root/glue/<task>/{train,validation}-00000-of-00001.parquet in the hub's layout (MNLI: its two
    held-out splits). The SST-2 label follows a word ("good") so a model can learn it."""
    rng = random.Random(seed)
    fields = {
        "sst2": ("sentence",),
        "cola": ("sentence",),
        "mrpc": ("sentence1", "sentence2"),
        "stsb": ("sentence1", "sentence2"),
        "mnli": ("premise", "hypothesis"),
    }
    for task in tasks or {"sst2": 2, "stsb": 1}:
        folder = root / "glue" / task
        folder.mkdir(parents=True, exist_ok=True)
        splits = [
            "train",
            *(["validation_matched", "validation_mismatched"] if task == "mnli" else ["validation"]),
        ]
        for split in splits:
            records = []
            for i in range(rows):
                texts = {f: sentence(rng) for f in fields[task]}
                if task == "stsb":
                    label = float(len(set(texts["sentence1"].split()) & set(texts["sentence2"].split())))
                elif task == "mnli":
                    label = i % 3
                else:
                    label = int("good" in texts[fields[task][0]].split())
                records.append({**texts, "label": label, "idx": i})
            pd.DataFrame(records).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    return root


def write_wikitext(root: Path, config: str = "wikitext-2-raw-v1", lines: int = 400, seed: int = 0) -> Path:
    """root/<config>/wiki.{train,valid,test}.raw: WikiText's raw layout."""
    rng = random.Random(seed)
    folder = root / config
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", lines), ("valid", lines // 4), ("test", lines // 4)):
        text = "\n".join(
            f" = {sentence(rng, 3)} = " if i % 20 == 0 else sentence(rng, 12) for i in range(count)
        )
        (folder / f"wiki.{name}.raw").write_text(text + "\n")
    return root


def bert_folder(path: Path, num_labels: int = 2, seed: int = 0) -> Path:
    """A save_pretrained folder of the zoo's `bert-tiny` with a WordPiece tokenizer of WORDS."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(WORDS), "=", ",", "."]
    wordpiece = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(  # BERT's [CLS] A [SEP] B [SEP], segments 0/1
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    BertTokenizerFast(
        tokenizer_object=wordpiece,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(path)
    create_model("bert-tiny", num_labels).model.save_pretrained(path)
    return path


def gpt2_folder(path: Path, seed: int = 0) -> Path:
    """A save_pretrained folder of the zoo's `gpt2-tiny` (transformers' own Conv1D layout) with a
    byte-level BPE tokenizer trained on WORDS (under 1000 tokens)."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator([" ".join(WORDS)] * 10, trainer)
    GPT2TokenizerFast(tokenizer_object=bpe).save_pretrained(path)
    GPT2LMHeadModel(text_models.gpt2_config("gpt2-tiny")).save_pretrained(path)
    return path
