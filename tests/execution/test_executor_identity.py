"""Issue 40, case 7: one run id, one record, whatever executes it.

A Fashion-MNIST run ended at val top-1 9.95% run alone and 10.55% in a local-queue worker: the queue (and
SLURM) replaced the run's `threads` by their own share of the cores, and on tensors large enough for ATen
to split a reduction between threads, the thread count changes the last bits, which an epoch of training
grows (digits' small tensors never split, so they stayed identical). A run now keeps its own `threads`
(its arithmetic) in every executor; the queue's share applies only to a config that leaves `threads=0`.
"""

import gzip
import json
import struct

import numpy as np
import pytest
import yaml

from lcbench.cli import main
from lcbench.core.store import RunDir
from lcbench.execution.sweep import plan_sweep

RUN = {"stage": "pretrain", "model": "digits_mlp", "epochs": 1, "warmup_epochs": 0, "threads": 2,
       "latency_repeats": 2, "latency_batch": 8}  # fmt: skip


def random_fashion_files(folder) -> None:
    """The four IDX files at the official sizes, random pixels and labels: a loss near chance, where
    the last bits of every step show."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())


def what_it_computed(root, run_id: str) -> dict:
    """The record's numbers and the bytes of its model and per-example records (not its timings)."""
    record = RunDir(root, run_id).result()
    assert record and record["status"] == "completed", record
    return {
        "final": {k: v for k, v in record["final"].items() if not k.startswith("latency_")},
        "model": record["model_file"]["sha256"],
        "examples": record["examples"]["sha256"],
        "epochs": [
            {k: v for k, v in e.items() if "seconds" not in k} for e in RunDir(root, run_id).events("epoch")
        ],
    }


def sweep_of_one(tmp_path, executor: str, base: dict):
    path = tmp_path / f"{executor}.yaml"
    spec = {
        "name": f"one-{executor}",
        "base": {**base, "output_root": str(tmp_path / executor)},
        "variants": {},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def run_alone(tmp_path, dataset: str, monkeypatch) -> tuple[dict, str, dict]:
    """The run's config as a spec's base, its id, and what `lcbench run` alone computed."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    base = {**RUN, "dataset": dataset}
    if dataset == "fashion_mnist":
        random_fashion_files(tmp_path / "fm")
        base["data_root"] = str(tmp_path / "fm")
    alone = [f"{k}={v}" for k, v in {**base, "output_root": tmp_path / "alone"}.items()]
    assert main(["run", *alone, "--no-progress"]) == 0
    (run_id,) = [p.name for p in (tmp_path / "alone").iterdir() if p.is_dir()]
    return base, run_id, what_it_computed(tmp_path / "alone", run_id)


@pytest.mark.slow
@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist"])
def test_one_run_id_gives_one_record_alone_and_in_a_warm_worker(tmp_path, dataset, monkeypatch):
    base, run_id, expected = run_alone(tmp_path, dataset, monkeypatch)
    queue = sweep_of_one(tmp_path, "local", base)
    assert [r.run_id for r in plan_sweep(queue).runs] == [run_id]  # threads are not in the id
    args = ["--executor", "local", "--cpu", "--max-parallel", "2", "--wait", "--poll", "0.5"]
    assert main(["launch", str(queue), *args]) == 0  # a warm worker of two, each one core's share
    assert what_it_computed(tmp_path / "local", run_id) == expected


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.parametrize("dataset", ["digits", "fashion_mnist"])
def test_one_run_id_gives_one_record_alone_and_under_slurm(tmp_path, dataset, slurm_cluster, monkeypatch):
    base, run_id, expected = run_alone(tmp_path, dataset, monkeypatch)
    slurm = sweep_of_one(tmp_path, "slurm", base)
    assert main(["launch", str(slurm), "--executor", "slurm", "--profile", "local"]) == 0  # 1 CPU a task
    assert main(["status", str(slurm), "--wait", "--poll", "2"]) == 0
    assert what_it_computed(tmp_path / "slurm", run_id) == expected
    env = json.loads((tmp_path / "slurm" / run_id / "env.json").read_text())
    assert env["torch_threads"] == 2 and env["scheduler"]["SLURM_JOB_ID"]
