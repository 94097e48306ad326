"""The transformers zoo (BERT, GPT-2) and LayerCollapse on their feed-forward blocks: exact folds, the
paper's parameter counts, local pretrained folders."""

import copy

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2LMHeadModel

from lcbench.core.errors import CheckpointError
from lcbench.zoo import collapse, text_models
from lcbench.zoo.measure import count_macs, count_parameters
from lcbench.zoo.models import create_model, fresh_init


def ffn_saving(d: int) -> int:
    """Parameters one fold saves: Linear(d, 4d) + Linear(4d, d) become one Linear(d, d)."""
    return (d * 4 * d + 4 * d) + (4 * d * d + d) - (d * d + d)


# The official LayerCollapse notebooks' counts (results/paper/layercollapse_language.csv): model, labels,
# MLPs folded (the last ones), width, parameters before and after, as printed there (millions, 2 decimals)
PAPER_COUNTS = [
    ("bert-base-uncased", 2, 4, 768, 109.48, 92.96),
    ("bert-large-uncased", 2, 4, 1024, 335.14, 305.77),
    ("gpt2", 0, 1, 768, 124.44, 120.31),
    ("gpt2", 0, 2, 768, 124.44, 116.18),
    ("gpt2-large", 0, 3, 1280, 774.03, 739.61),
    ("distilgpt2", 0, 1, 768, 81.91, 77.78),
]


@pytest.mark.parametrize("name,labels,k,width,before,after", PAPER_COUNTS)
def test_folding_the_last_k_ffns_gives_the_papers_parameter_counts(name, labels, k, width, before, after):
    with torch.device("meta"):  # shapes only: gpt2-large's 774M parameters take no memory
        model = create_model(name, labels)
    dense, found = count_parameters(model)[0], len(collapse.find_blocks(model))
    blocks = collapse.select_blocks(model, k)
    for block in blocks:
        collapse.convert(model, block)
        collapse.fold(model, block)
    folded = count_parameters(model)[0]
    assert folded == dense - k * ffn_saving(width)  # the closed form, to the parameter
    assert (round(dense / 1e6, 2), round(folded / 1e6, 2)) == (before, after)
    assert len(collapse.find_blocks(model)) == found - k  # a folded block is no longer collapsible


@pytest.mark.parametrize("name,k", [("bert-base-uncased", 4), ("gpt2", 2)])
def test_a_fold_at_slope_one_is_exact_in_float64_on_full_size_models(name, k):
    torch.manual_seed(0)
    model = create_model(name, 2 if name.startswith("bert") else 0).double().eval()
    blocks = collapse.select_blocks(model, k)
    assert [b.name.split(".")[-3] for b in blocks] == [
        str(i) for i in range(11, 11 - k, -1)
    ]  # the last k layers, nearest the output first
    for block in blocks:
        collapse.convert(model, block).weight.data.fill_(1.0)
    x = model.example_input(2, (32,))
    linear_ffn = model(x)
    reports = collapse.collapse(model, [b.name for b in blocks], calibration=x)
    assert all(r["folded"] for r in reports)
    folded = model(x)
    assert (folded - linear_ffn).abs().max() <= 1e-12 * linear_ffn.abs().max()
    # the check can fail: the same fold at slope 0.9 (GELU's kink dropped) changes the output
    other = create_model(name, 2 if name.startswith("bert") else 0).double().eval()
    block = collapse.select_blocks(other, 1)[0]
    collapse.convert(other, block).weight.data.fill_(0.9)
    before = other(x)
    collapse.collapse(other, [block.name], force=True)
    assert (other(x) - before).abs().max() > 1e-6 * before.abs().max()


def test_bert_fold_keeps_layernorm_and_residual_and_gpt2_fold_keeps_its_dropout():
    bert = create_model("bert-tiny", 3)
    (block,) = collapse.select_blocks(bert, 1)
    layer = bert.get_submodule(block.container)
    collapse.convert(bert, block)
    collapse.fold(bert, block)
    assert (
        isinstance(layer.intermediate.dense, torch.nn.Linear) and layer.intermediate.dense.out_features == 32
    )
    assert isinstance(layer.output.dense, torch.nn.Identity)
    assert isinstance(layer.output.LayerNorm, torch.nn.LayerNorm)  # kept, with the residual of its forward
    gpt = create_model("gpt2-tiny", 0)
    (block,) = collapse.select_blocks(gpt, 1)
    collapse.convert(gpt, block)
    collapse.fold(gpt, block)
    mlp = gpt.get_submodule(block.container)
    assert (mlp.c_fc.in_features, mlp.c_fc.out_features) == (32, 32)
    assert isinstance(mlp.c_proj, torch.nn.Identity) and isinstance(mlp.dropout, torch.nn.Dropout)


def test_gpt2_conv1d_layers_become_the_linear_layers_they_equal():
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(text_models.gpt2_config("gpt2-tiny")).double().eval()
    converted = text_models.CausalLM(text_models.linears_from_conv1d(copy.deepcopy(hf))).eval()
    assert not any(type(m).__name__ == "Conv1D" for m in converted.modules())
    ids = torch.randint(0, 1000, (2, 24))
    reference = hf(input_ids=ids).logits
    assert (converted(ids) - reference).abs().max() <= 1e-12 * reference.abs().max()
    assert count_parameters(converted) == count_parameters(hf)  # the tied embedding counted once


def test_macs_are_counted_at_the_stated_sequence_length():
    gpt = create_model("gpt2-tiny", 0)
    short, long = count_macs(gpt, (16,))["gmacs"], count_macs(gpt, (32,))["gmacs"]
    # the Linear layers scale with the length, attention's scores with its square
    assert 2.0 <= long / short < 2.2
    bert = create_model("bert-tiny", 2)
    assert count_macs(bert, (3, 32))["gmacs"] > count_macs(bert, (3, 16))["gmacs"]


def test_a_local_pretrained_folder_loads_and_a_foreign_one_is_refused(tmp_path):
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(text_models.gpt2_config("gpt2-tiny")).eval()  # what a user's folder holds
    hf.save_pretrained(tmp_path / "gpt")
    loaded = create_model("gpt2-tiny", 0, pretrained=str(tmp_path / "gpt")).eval()
    ids = torch.randint(0, 1000, (2, 10))
    assert torch.allclose(loaded(ids), hf(input_ids=ids).logits, atol=1e-5)

    # the zoo model's own Linear layers saved as a transformers folder: transformers would re-initialise them
    create_model("gpt2-tiny", 0).lm.save_pretrained(tmp_path / "converted")
    with pytest.raises(CheckpointError, match="cannot load a GPT2LMHeadModel"):
        create_model("gpt2-tiny", 0, pretrained=str(tmp_path / "converted"))

    create_model("bert-tiny", 2).model.save_pretrained(tmp_path / "bert")
    with pytest.raises(CheckpointError, match="is not a gpt2-tiny"):
        create_model("gpt2-tiny", 0, pretrained=str(tmp_path / "bert"))
    with pytest.raises(CheckpointError, match="no config.json"):
        create_model("gpt2", 0, pretrained=str(tmp_path / "nothing"))
    bert = create_model("bert-tiny", 5, pretrained=str(tmp_path / "bert"))  # a new head for 5 classes
    assert bert.model.classifier.out_features == 5

    weights = (
        tmp_path / "bert" / "model.safetensors"
    )  # a folder missing a layer's weights: never re-initialised
    state = load_file(weights)
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(
        CheckpointError, match="lacks or has other shapes for 1 weights.*layer.1.output.dense"
    ):
        create_model("bert-tiny", 2, pretrained=str(tmp_path / "bert"))


def test_transformers_layers_are_reinitialised_by_their_own_scheme():
    torch.manual_seed(0)
    bert = create_model("bert-tiny", 2)
    layer = bert.model.bert.encoder.layer[2].output.dense
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.bias.fill_(1.0)
    fresh_init(bert, "model.bert.encoder.layer.2.output.dense")
    assert torch.all(layer.bias == 0) and abs(layer.weight.std().item() - 0.02) < 0.004
