"""Export: each format reloaded the way its user loads it and re-evaluated against the run's model (a folded
GPT-2 and BERT through transformers in a fresh process, every embedded model through ONNX Runtime), the
smaller parameter count reported, and bad requests refused before anything is written."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from lcbench.measurement.export import TOLERANCE, export_run, load_export
from lcbench.methods import METHODS
from lcbench.training.pipeline import MODEL_FORMAT, load_model
from lcbench.zoo.collapse import find_blocks
from lcbench.zoo.measure import count_parameters, example_input
from lcbench.zoo.models import create_model
from tests.conftest import run_cli

# name -> (num_classes, in_chans, img_size, input_shape)
MODELS = {
    "digits_mlp": (10, 1, 8, [1, 8, 8]),
    "digits_vgg": (10, 1, 8, [1, 8, 8]),
    "digits_vit": (10, 1, 8, [1, 8, 8]),
    "digits_mixer": (10, 1, 8, [1, 8, 8]),
    "text_gpt2": (0, 3, None, [32]),
    "bert-tiny": (3, 3, None, [3, 16]),
}


def fake_run(root, name: str, fold: int = 1, method: str = "layercollapse", structure: dict | None = None):
    """A completed run's folder holding `name` with its last `fold` feed-forward blocks folded (random
    weights, then perturbed so that no layer is the identity)."""
    num_classes, in_chans, img_size, input_shape = MODELS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes, in_chans, img_size)
    original = count_parameters(model)[0]
    blocks = [b.name for b in find_blocks(model)][-fold:] if fold else []
    structure = structure if structure is not None else {"converted": [], "folded": blocks}
    model = METHODS.get(method).rebuild(model, structure)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    folder = root / f"run-{name}-{method}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("{}\n")
    saved = {
        "format": MODEL_FORMAT,
        "run_id": folder.name,
        "model": name,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "img_size": img_size,
        "method": method,
        "structure": structure,
        "state_dict": model.state_dict(),
    }
    torch.save(saved, folder / "model.pt")
    record = {
        "run_id": folder.name,
        "status": "completed",
        "final": {"top1": 0.0},
        "input_shape": input_shape,
        "original": {"params_dense": original},
        "config": {},
    }
    (folder / "result.json").write_text(json.dumps(record))
    return folder


def test_safetensors_rebuilds_the_same_model_from_its_json_and_reports_fewer_parameters(tmp_path):
    run = fake_run(tmp_path, "digits_vit")
    done = export_run(run, "safetensors")
    assert done.path == run / "export" / "safetensors"
    assert sorted(p.name for p in done.path.iterdir()) == [
        ".lcbench-export",
        "lcbench.json",
        "model.safetensors",
    ]
    meta = json.loads((done.path / "lcbench.json").read_text())
    assert meta["model"] == "digits_vit" and meta["structure"]["folded"]
    rebuilt, model = load_export(done.path), load_model(run / "model.pt").eval()
    x = example_input(model, [1, 8, 8], 5)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert done.max_abs_diff == 0 and done.same_predictions
    assert done.params == count_parameters(model)[0] < done.original_params  # the fold removed weights
    assert "x fewer)" in done.summary()


@pytest.mark.parametrize("name", list(MODELS))
def test_onnx_of_every_embedded_model_runs_in_onnxruntime_with_the_same_predictions(tmp_path, name):
    """Batch 7 (not the batch it was traced with): the batch dimension is dynamic."""
    import onnxruntime

    run = fake_run(tmp_path, name)
    done = export_run(run, "onnx")
    model = load_model(run / "model.pt").eval()
    x = example_input(model, MODELS[name][3], 7)
    session = onnxruntime.InferenceSession(str(done.path / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
    assert (got.argmax(-1) == expected.argmax(-1)).all()


LOAD_IN_TRANSFORMERS = """
import json, sys
import numpy as np, torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
folder, kind, remote = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
x = torch.from_numpy(np.load(folder + "/../x.npy"))
if kind == "gpt2":
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=remote, local_files_only=True)
    logits = model.eval()(input_ids=x).logits
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=remote)
    ids = tokenizer("héllo\\n")["input_ids"]
else:
    model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=remote,
                                                               local_files_only=True)
    logits = model.eval()(input_ids=x[:, 0], token_type_ids=x[:, 1], attention_mask=x[:, 2]).logits
    ids = []
np.save(folder + "/../got.npy", logits.detach().numpy())
print(json.dumps({"class": type(model).__name__, "ids": ids,
                  "params": sum(p.numel() for p in model.parameters())}))
"""


@pytest.mark.parametrize(
    ("name", "kind", "fold"), [("text_gpt2", "gpt2", 2), ("bert-tiny", "bert", 1), ("text_gpt2", "gpt2", 0)]
)
def test_a_folded_gpt2_and_bert_load_in_transformers_in_a_fresh_process(tmp_path, name, kind, fold):
    """Folded: the saved classes load with trust_remote_code (not lcbench's own module); unfolded: a stock
    class. The same logits as the run's model; GPT-2's byte tokenizer gives the bytes."""
    run = fake_run(
        tmp_path,
        name,
        fold=fold,
        method="layercollapse" if fold else "finetune",
        structure=None if fold else {},
    )
    done = export_run(run, "hf")
    model = load_model(run / "model.pt").eval()
    x = example_input(model, MODELS[name][3], 4)
    np.save(done.path.parent / "x.npy", x.numpy())
    shown = subprocess.run(
        [sys.executable, "-c", LOAD_IN_TRANSFORMERS, str(done.path), kind, "1" if fold else "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the checkout: the folder's own modelling file must be what loads
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert shown.returncode == 0, shown.stderr[-2000:]
    loaded = json.loads(shown.stdout.strip().splitlines()[-1])
    got = np.load(done.path.parent / "got.npy")
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= TOLERANCE * max(1.0, np.abs(expected).max())
    expected_class = {"gpt2": "GPT2LMHeadModel", "bert": "BertForSequenceClassification"}[kind]
    assert loaded["class"] == (f"Folded{expected_class}" if fold else expected_class)
    assert loaded["params"] == count_parameters(model)[0]
    if kind == "gpt2":
        assert loaded["ids"] == list("héllo\n".encode())
    assert (done.path / "hf_folded.py").exists() == bool(fold)


def test_bad_exports_are_refused_in_one_line_before_anything_is_written(tmp_path):
    vision = fake_run(tmp_path, "digits_mlp")
    done = run_cli("export", str(vision), "--format", "hf")
    assert done.returncode == 2 and "use --format safetensors or onnx" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (vision / "export").exists()
    assert run_cli("export", str(vision), "--format", "safetensors").returncode == 0
    again = run_cli("export", str(vision), "--format", "safetensors")
    assert again.returncode == 2 and "--force to replace it" in again.stderr
    record = json.loads((vision / "result.json").read_text())
    (vision / "result.json").write_text(json.dumps({**record, "status": "failed"}))
    failed = run_cli("export", str(vision), "--format", "onnx")
    assert failed.returncode == 2 and "not completed" in failed.stderr
    assert not (vision / "export" / "onnx").exists()
    # a block converted to PReLU but never folded (Layer Folding's, LayerCollapse's "not folded"): a
    # transformers folder cannot hold it, the other formats can
    probe = create_model("text_gpt2", 0, 3, None)
    converted = {"converted": [find_blocks(probe)[-1].name], "folded": []}
    unfolded = fake_run(tmp_path, "text_gpt2", fold=0, structure=converted)
    odd = run_cli("export", str(unfolded), "--format", "hf")
    assert odd.returncode == 2 and "holds stock and folded gpt2 layers only" in odd.stderr
    assert len(odd.stderr.strip().splitlines()) == 1 and not (unfolded / "export").exists()
    assert run_cli("export", str(unfolded), "--format", "safetensors").returncode == 0
