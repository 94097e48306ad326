"""`lcbench search`: equal trials per method, scored on a validation split carved from the training data,
the test split never read, and the lock file `plan` then uses."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch
import yaml

from lcbench.analysis.selection import tuning_section
from lcbench.core.errors import ConfigError
from lcbench.execution.search import candidates, lock_path, plan_search
from lcbench.execution.sweep import plan_sweep
from lcbench.zoo.data import (
    VALIDATION_FRACTION,
    DataTransforms,
    carve_validation,
    digits_tensors,
    load_data,
)
from tests.conftest import REPO, write_image_folder

# digits, whose held-out split refuses to be read: a search that finishes on it never read a test example
SEALED = """
import torch
from torch.utils.data import Dataset, TensorDataset

from lcbench.zoo.data import DatasetSpec, digits_tensors, register_dataset


class Sealed(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        raise RuntimeError("a test example was read")


def load(root, train_tf, eval_tf, download, split_seed=0):
    x, y, x_val, _ = digits_tensors(split_seed)
    return TensorDataset(x, y), Sealed(len(x_val))


register_dataset(DatasetSpec("sealed_digits", load, num_classes=10, in_chans=1, img_size=8,
                             natural_images=False, train_size=1437, seeded_split=True))
"""

SPEC = """
name: sealed
base: {stage: compress, dataset: sealed_digits, epochs: 3, batch_size: 64, optimizer: sgd, lr: 0.01,
       threads: 1, latency_repeats: 1, output_root: OUT, pretrain: {epochs: 2}}
grid: {model: [digits_mlp]}
seeds: [0, 1]
levels: [1]
search: {trials: 2}
variants:
  layercollapse: {method: layercollapse, k: "{level}", lam: 5.0}
  magnitude_pruning: {method: magnitude_pruning, match_collapse: "{level}"}
  lstsq_fold: {method: lstsq_fold, match_collapse: "{level}", epochs: 0}
"""


def _sealed_package(tmp_path) -> dict:
    (tmp_path / "sealed_data.py").write_text(SEALED)
    dist = tmp_path / "sealed_data-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: sealed-data\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lcbench.datasets]\nsealed = sealed_data\n")
    return {**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}", "WANDB_MODE": "disabled"}


def _lcbench(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lcbench", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


def test_validation_is_carved_from_the_training_split_stratified_and_seeded():
    x_train, y_train, x_test, _ = digits_tensors(3)
    train, val = carve_validation(
        torch.utils.data.TensorDataset(x_train, y_train), torch.utils.data.TensorDataset(x_train, y_train), 3
    )
    assert len(val) == round(len(x_train) * VALIDATION_FRACTION) and len(train) + len(val) == len(x_train)
    assert not set(train.indices) & set(val.indices)  # disjoint parts of the training split
    counts = torch.bincount(y_train[val.indices], minlength=10).float()
    assert (counts / counts.sum() - torch.bincount(y_train).float() / len(y_train)).abs().max() < 0.01
    again = carve_validation(torch.utils.data.TensorDataset(x_train, y_train), train.dataset, 3)[1]
    assert again.indices == val.indices  # the replicate's seed decides it
    # through load_data: the validation images are training images of that replicate, none a test image
    data = load_data("digits", "data", None, split_seed=3, holdout="validation")
    rows = {tuple(r.tolist()) for r in x_train.reshape(len(x_train), -1)}
    held = torch.stack([data.val[i][0] for i in range(len(data.val))]).reshape(len(data.val), -1)
    assert all(tuple(r.tolist()) in rows for r in held)
    assert len(data.train) + len(data.val) == len(x_train) and len(x_test) != len(data.val)


def test_a_language_models_validation_text_is_the_end_of_its_training_stream():
    blocks = torch.utils.data.TensorDataset(
        torch.arange(100).reshape(10, 10), torch.arange(100).reshape(10, 10)
    )
    train, val = carve_validation(blocks, blocks, 0, contiguous=True)
    assert val.tensors[0][0, 0] == 80 and len(train) == 8  # no block beside one it trains on, but the last


def test_trials_start_from_the_spec_and_are_drawn_the_same_for_every_cell():
    space = {"lam": [1.0, 5.0, 10.0], "lr_factor": [1.0, 0.5, 2.0]}
    order = candidates("layercollapse", space, {"lam": 10.0, "lr_factor": 1.0}, 1000)
    assert order[0] == {"lam": 10.0, "lr_factor": 1.0} and len(order) == 9
    assert len({tuple(c.values()) for c in order}) == 9  # every configuration once
    assert order == candidates("layercollapse", space, {"lam": 10.0, "lr_factor": 1.0}, 1000)
    assert order != candidates("layercollapse", space, {"lam": 10.0, "lr_factor": 1.0}, 1001)


def test_a_search_never_reads_the_test_split_and_plan_uses_its_lock(tmp_path, monkeypatch):
    env = _sealed_package(tmp_path)
    spec = tmp_path / "sealed.yaml"
    spec.write_text(SPEC.replace("OUT", str(tmp_path / "out")))

    done = _lcbench(["search", str(spec), "--executor", "local", "--cpu", "--max-parallel", "2"], env)
    assert done.returncode == 0, done.stdout + done.stderr
    status = _lcbench(["status", str(spec), "--search"], env)  # the trials' runs, not the sweep's
    assert status.returncode == 0 and "sweep sealed_search: " in status.stdout, status.stderr
    assert "missing" not in status.stdout.splitlines()[-1]
    cancel = _lcbench(["cancel", str(spec), "--search"], env)
    assert cancel.returncode == 0 and "sweep sealed_search: nothing to cancel" in cancel.stderr
    lock = yaml.safe_load(lock_path(spec).read_text())
    assert lock["protocol"]["holdout"] == "validation" and lock["protocol"]["tuning_replicates"] == [0, 1]
    variants = lock["variants"]
    # the same budget for every method whose space has that many configurations
    assert [len(variants[v]["trials"]) for v in ("layercollapse", "magnitude_pruning")] == [2, 2]
    assert variants["lstsq_fold"]["trials"] == [{}]  # nothing of its own to search, and no training
    for name, variant in variants.items():
        assert {(c["model"], c["level"], c["seed"]) for c in variant["cells"]} == {
            ("digits_mlp", "1", 0),
            ("digits_mlp", "1", 1),
        }
        for cell in variant["cells"]:
            scores = [s for s in cell["scores"] if s is not None]
            best = max(scores) if scores else None
            assert best is None or cell["scores"][cell["chosen"]] == best, (name, cell)

    # every trial ran on the validation split; the runs the spec plans now carry their selection
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("sealed_data")  # the data set, in this process too
    plan = plan_sweep(spec)
    compress = plan.stage("compress")
    assert all(r.cfg.holdout == "test" for r in plan.runs)
    for run in compress:
        cell = next(c for c in variants[run.variant]["cells"] if c["seed"] == run.cfg.seed)
        chosen = variants[run.variant]["trials"][cell["chosen"]]
        assert run.cfg.selection == f"sealed.tuned.yaml {run.variant} trial {cell['chosen']}"
        for key, value in chosen.items():
            if key == "lr_factor":
                assert run.cfg.lr == pytest.approx(0.01 * value)
            else:
                assert run.cfg.method_args[key] == value
    untuned = plan_sweep(spec, ["tuned=false"])
    assert all(r.cfg.selection == "" for r in untuned.runs)
    assert {r.run_id for r in untuned.runs} != {r.run_id for r in plan.runs}
    # the report states each variant's budget, space and source
    section = "\n".join(tuning_section(plan))
    assert (
        "up to 2 trials each" in section
        and "each replicate on its own training split (seeds 0, 1)" in section
    )
    assert "| magnitude_pruning |" in section and "scope in ['global', 'layerwise']" in section
    assert "ShrinkBench" in section and "| 2 of 2 " in section
    assert "No tuning protocol" in "\n".join(tuning_section(untuned))

    # the seal bites: the spec's own runs evaluate on the test split, and read it
    ran = _lcbench(["launch", str(spec), "--executor", "local", "--cpu", "--wait", "--poll", "0.5"], env)
    assert (
        ran.returncode != 0
        and "a test example was read"
        in (tmp_path / "out").joinpath(plan.stage("pretrain")[0].run_id, "result.json").read_text()
    )

    # a lock searched for another version of the spec is refused, with the fix
    spec.write_text(spec.read_text().replace("lam: 5.0", "lam: 6.0"))
    with pytest.raises(ConfigError, match="searched for another version of .*rerun `lcbench search"):
        plan_sweep(spec)


def test_a_search_spec_with_a_bad_budget_is_refused_in_one_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.replace("trials: 2", "trials: 0").replace("sealed_digits", "digits"))
    with pytest.raises(ConfigError, match=r"search.trials must be a whole number in 1..64, not 0"):
        plan_search(spec)
    assert plan_search(spec, ["search.trials=1"]).trials == 1  # the budget from the command line
    with pytest.raises(ConfigError, match="unknown key epochz .did you mean epochs"):  # as `plan` says it
        plan_search(spec, ["search.trials=1", "epochz=2"])


def test_a_selection_plan_refuses_for_the_real_run_falls_back_to_the_next_best_trial(tmp_path):
    """Trials train on 80% of the images: fewer steps, so a lam that folded there may be predicted not to
    fold on the whole training split. `plan` then takes the cell's next best trial and says so."""
    from lcbench.execution.search import Lock
    from lcbench.execution.sweep import expand

    spec = yaml.safe_load(SPEC.replace("sealed_digits", "digits").replace("OUT", str(tmp_path)))
    spec["variants"] = {"layercollapse": spec["variants"]["layercollapse"]}
    cell = {"model": "digits_mlp", "level": "1", "seed": 0, "chosen": 1, "scores": [96.0, 97.0, None]}
    trials = [{"lam": 5.0, "lr_factor": 1.0}, {"lam": 0.2, "lr_factor": 0.25}, {"lam": 1.0, "lr_factor": 1.0}]
    lock = Lock(tmp_path / "s.tuned.yaml", True, True, {"layercollapse": {"trials": trials, "cells": [cell]}})
    runs = {r.cfg.seed: r for r in expand(spec, "s.yaml", lock).stage("compress")}
    assert runs[0].cfg.method_args["lam"] == 5.0  # lam 0.2 at lr x 0.25 cannot fold in 3 epochs
    assert runs[0].cfg.selection == "s.tuned.yaml layercollapse trial 0 (trial 1 refused)"
    assert runs[1].cfg.selection == "" and runs[1].cfg.method_args["lam"] == 5.0  # no cell: as written
    cell["scores"] = [None, 97.0, None]  # nothing else counted: the plan's refusal, with the fix
    with pytest.raises(ConfigError, match="every trial of its selection is refused: rerun `lcbench search`"):
        expand(spec, "s.yaml", lock)


@pytest.mark.parametrize("decode", ["workers", "device"])
def test_an_image_folders_validation_images_are_training_files_seen_as_the_held_out_ones_are(
    tmp_path, decode
):
    root = write_image_folder(tmp_path / "imgs", classes=3, per_class=10, suffix=".jpg")
    tf = DataTransforms(img_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    data = load_data("imagefolder", root, tf, decode=decode, split_seed=1, holdout="validation")
    assert (len(data.train), len(data.val)) == (24, 6)
    held = [data.val.dataset.samples[i] for i in data.val.indices]
    assert all("/train/" in path for path, _ in held)  # never a file of val/
    assert sorted(label for _, label in held) == [0, 0, 1, 1, 2, 2]  # stratified
    assert not {p for p, _ in held} & {data.train.dataset.samples[i][0] for i in data.train.indices}
    if decode == "workers":  # evaluated as the held-out images are: resized and centre-cropped, no flip
        first = data.val[0][0]
        assert torch.equal(first, data.val[0][0]) and first.shape == (3, 16, 16)


def test_a_variant_that_decides_its_own_compression_is_not_tuned_toward_compressing_less():
    """Layer Folding on every block has no target: by accuracy alone the search would pick the trial that
    folded nothing. Its trials count only at trial 0's compression or beyond (within 2%)."""
    from lcbench.analysis.selection import _hold_compression

    cell = {
        "scores": [96.0, 98.5, 97.0, None],
        "compression": [2.34, 1.0, 2.30, None],
        "not_counted": {3: "failed"},
        "free": True,
    }
    _hold_compression(cell)
    assert cell["scores"] == [96.0, None, 97.0, None]  # 2.30x is within 2% of 2.34x; 1x is not
    assert cell["not_counted"][1] == "compressed less than trial 0 (1x, not 2.34x)"
    targeted = {"scores": [96.0, 98.5], "compression": [2.34, 1.0], "not_counted": {}, "free": False}
    _hold_compression(targeted)  # a variant with a match target is judged by it instead
    assert targeted["scores"] == [96.0, 98.5]


def test_a_decoupled_penalty_is_searched_on_its_own_scale():
    """Under AdamW the slope penalties act outside the optimizer (a step of about 2 lr lam), so the coupled
    grid (LayerCollapse's lam 0.2-100, Layer Folding's 0.25-100) would leave the text recipe's slopes short
    of folding: the decoupled grids are searched there, and the coupled ones under SGD."""
    from lcbench.execution.search import variant_space

    sgd = {"optimizer": "sgd", "epochs": 2}
    adamw = {"optimizer": "adamw", "epochs": 2}
    lc = {"method": "layercollapse", "k": "{level}"}
    assert variant_space(lc, sgd)[0]["lam"] == [0.2, 1.0, 5.0, 10.0, 100.0]
    assert min(variant_space(lc, adamw)[0]["lam"]) == 10.0 and max(variant_space(lc, adamw)[0]["lam"]) > 1000
    assert (
        variant_space({**lc, "regularizer": "decoupled"}, sgd)[0]["lam"] == variant_space(lc, adamw)[0]["lam"]
    )
    folding = {"method": "layer_folding", "k": "{level}", "regularizer": "auto"}
    assert variant_space(folding, sgd)[0]["lam"] == [0.25, 1.0, 10.0, 100.0]
    assert min(variant_space(folding, adamw)[0]["lam"]) >= 100
    text = plan_search("text")  # the bundled spec: LayerCollapse fills its trials like every method
    assert len(text.variants["layercollapse"].trials) == text.trials == 4
