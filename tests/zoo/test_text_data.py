"""Text data sets: the embedded standard-library corpus, GLUE and WikiText from local copies (generated
fixtures in the hub's layouts), and the errors a missing or wrong copy gives."""

import pandas as pd
import pytest
import torch

from lcbench.core.errors import ConfigError, DataError
from lcbench.training.tasks import IGNORE_INDEX
from lcbench.zoo import text_data, text_models
from lcbench.zoo.data import DATASETS, load_data
from tests import text_fixtures


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """GLUE (SST-2, STS-B, MNLI) and WikiText-2 copies, with tiny BERT and GPT-2 folders."""
    root = tmp_path_factory.mktemp("text")
    text_fixtures.write_glue(root / "data", {"sst2": 2, "stsb": 1, "mnli": 3})
    text_fixtures.write_wikitext(root / "data")
    return {
        "data": root / "data",
        "bert": text_fixtures.bert_folder(root / "bert"),
        "gpt": text_fixtures.gpt2_folder(root / "gpt"),
    }


def test_the_embedded_corpus_holds_out_whole_modules_and_is_the_same_every_time():
    files = text_data.stdlib_files()
    held_out = {p.name for i, p in enumerate(files) if i % text_data.TEXT_VAL_EVERY == 0}
    assert held_out and len(held_out) < len(files)
    train, val, digest = text_data.stdlib_corpus()
    assert (len(train), len(val)) == (text_data.TEXT_TRAIN_BYTES, text_data.TEXT_VAL_BYTES)
    assert text_data.stdlib_corpus()[2] == digest
    first_held_out = files[0].read_bytes()[:200]
    assert val.startswith(first_held_out) and first_held_out not in train  # never trained on
    data = load_data("text_stdlib", ".", None, tokenizer=text_models.ByteTokenizer())
    x, y = data.train[0]
    assert x.shape == (text_data.TEXT_SEQ_LEN,) and torch.equal(x[1:], y[:-1])  # y is x shifted by one
    assert len(data.train) == (text_data.TEXT_TRAIN_BYTES - 1) // text_data.TEXT_SEQ_LEN


def test_glue_pairs_become_ids_token_types_and_masks(local):
    tokenizer = text_models.load_tokenizer("bert-tiny", str(local["bert"]), 1000)
    sst2 = load_data("glue_sst2", local["data"], None, tokenizer=tokenizer, seq_len=24)
    x, y = sst2.train[0]
    assert x.shape == (3, 24) and x.dtype == torch.long and y.dtype == torch.long
    ids, types, mask = x
    length = int(mask.sum())
    assert ids[0] == 2 and ids[length - 1] == 3 and not types.any()  # [CLS] ... [SEP], one segment
    assert (ids[length:] == 0).all() and not mask[length:].any()  # padded to seq_len
    stsb = load_data("glue_stsb", local["data"], None, tokenizer=tokenizer, seq_len=40)
    x, y = stsb.train[0]
    assert y.dtype == torch.float32 and stsb.num_classes == 1
    assert x[1].any() and (x[1][x[2].bool()].diff() >= 0).all()  # the second sentence is segment 1
    mnli = DATASETS.get("glue_mnli_mm")
    assert mnli.task == "classification" and mnli.metric == "top1"
    mm = load_data("glue_mnli_mm", local["data"], None, tokenizer=tokenizer, seq_len=24)
    assert mm.num_classes == 3 and len(mm.val) == 48  # the mismatched held-out split of MNLI's files


def test_glue_headline_metrics_are_the_official_ones():
    metrics = {name: DATASETS.get(name).metric for name in DATASETS.names("glue_*")}
    assert metrics == {
        "glue_cola": "mcc",
        "glue_sst2": "top1",
        "glue_mrpc": "f1",
        "glue_qqp": "top1",
        "glue_stsb": "pearson",
        "glue_mnli": "top1",
        "glue_mnli_mm": "top1",
        "glue_qnli": "top1",
        "glue_rte": "top1",
        "glue_wnli": "top1",
    }
    assert DATASETS.get("glue_stsb").task == "regression"


def test_wikitext_raw_files_become_next_token_blocks_of_the_test_split(local):
    tokenizer = text_models.load_tokenizer("gpt2-tiny", str(local["gpt"]), 1000)
    data = load_data("wikitext2", local["data"], None, tokenizer=tokenizer, seq_len=32)
    x, y = data.train[0]
    assert x.shape == (32,) and torch.equal(x[1:], y[:-1])
    test_text = (local["data"] / "wikitext-2-raw-v1" / "wiki.test.raw").read_text().splitlines()
    expected = sum(len(tokenizer([line])["input_ids"][0]) for line in test_text)
    assert len(data.val) == (expected - 1) // 32  # the held-out blocks come from wiki.test.raw


def test_a_missing_copy_says_where_it_looked_and_how_to_get_it(tmp_path, local):
    tokenizer = text_models.load_tokenizer("bert-tiny", str(local["bert"]), 1000)
    with pytest.raises(DataError) as error:
        load_data("glue_cola", tmp_path, None, tokenizer=tokenizer)
    message = str(error.value)
    assert str(tmp_path / "glue" / "cola") in message and "nyu-mll/glue" in message
    assert "save_to_disk" in message and "download=true" in message
    with pytest.raises(DataError, match="wiki.train.raw"):
        load_data("wikitext103", tmp_path, None, tokenizer=tokenizer)


def test_unlabelled_test_splits_and_foreign_tokenizers_are_refused(tmp_path, local):
    text_fixtures.write_glue(tmp_path, {"sst2": 2})
    validation = tmp_path / "glue" / "sst2" / "validation-00000-of-00001.parquet"
    frame = pd.read_parquet(validation)
    frame["label"] = -1  # what GLUE's test split holds
    frame.to_parquet(validation)
    tokenizer = text_models.load_tokenizer("bert-tiny", str(local["bert"]), 1000)
    with pytest.raises(DataError, match="unlabelled"):
        load_data("glue_sst2", tmp_path, None, tokenizer=tokenizer)
    with pytest.raises(ConfigError, match="has 401 tokens but bert-tiny embeds 64"):
        text_models.load_tokenizer("bert-tiny", str(local["gpt"]), 64)
    with pytest.raises(ConfigError, match="set pretrained=FOLDER"):
        text_models.load_tokenizer("gpt2", "", 50257)


def test_strided_windows_score_every_token_once_with_more_context(local):
    blocks = text_data.lm_blocks(torch.arange(1000), 64)
    same = text_data.strided_windows(blocks, 64)
    assert all(torch.equal(a, b) for a, b in zip(same.tensors, blocks.tensors))  # stride = seq_len: blocks
    x, y = text_data.strided_windows(blocks, 16).tensors
    scored = y[y != IGNORE_INDEX]
    assert torch.equal(scored, torch.arange(1, 961))  # every target of the blocks, once, in order
    assert (
        torch.equal(y[1:, -16:], x[1:, -16:] + 1) and (y[1:, :48] == IGNORE_INDEX).all()
    )  # 48 tokens of context
    with pytest.raises(ConfigError, match="eval_stride=65 must lie in 1..seq_len"):
        text_data.strided_windows(blocks, 65)
    tokenizer = text_models.load_tokenizer("bert-tiny", str(local["bert"]), 1000)
    with pytest.raises(DataError, match="eval_stride scores a language model's held-out text"):
        load_data("glue_sst2", local["data"], None, tokenizer=tokenizer, eval_stride=8)


@pytest.mark.parametrize("garbage", ["empty", "random bytes", "garbled parquet"])
def test_language_data_that_is_empty_or_not_text_is_one_line_naming_the_file(tmp_path, capsys, garbage):
    """WikiText raw files of 0 bytes or random bytes, or garbage GLUE parquet, ended in exit 70 with
    datasets' tracebacks and a record saying only "An error occurred while generating the dataset"."""
    import os

    from lcbench.cli import main

    if garbage == "garbled parquet":
        text_fixtures.write_glue(tmp_path, {"sst2": 2})
        for f in tmp_path.rglob("*.parquet"):
            f.write_bytes(os.urandom(500))
        name, says = "glue_sst2", "cannot be read (ArrowInvalid: Parquet magic bytes not found"
    else:
        text_fixtures.write_wikitext(tmp_path)
        for f in tmp_path.rglob("*.raw"):
            f.write_bytes(b"" if garbage == "empty" else b"\xff\xfe" + os.urandom(3000))
        name, says = "wikitext2", "is empty" if garbage == "empty" else "is not UTF-8 text (near byte 0)"
    with pytest.raises(DataError) as refused:
        DATASETS.get(name).load(tmp_path, text_models.ByteTokenizer(), 64, False)
    assert says in str(refused.value) and "\n" not in str(refused.value)
    if name == "wikitext2":  # the run: exit 2 and that line, no traceback
        run = ["run", "model=text_gpt2", "dataset=wikitext2", f"data_root={tmp_path}", "epochs=1"]
        capsys.readouterr()
        assert main([*run, f"output_root={tmp_path / 'out'}", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
