"""`make bench`: benchmarks whose figures are ratios measured side by side in one process.

Each benchmark writes `results/bench/<name>.json` with the device, torch version and thread count, and
`results/bench/README.md` is regenerated from every JSON file there.

    python -m lcbench.measurement.bench [NAME ...] [--out results/bench] [--repeats N]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset
from torchvision.datasets import ImageFolder

from ..core.errors import ConfigError
from ..core.store import RunDir, atomic_torch_save, atomic_write_json, atomic_write_text, read_json
from ..execution.queue_server import QUEUE_FILE
from ..execution.runner import LaunchOptions, launch
from ..execution.slurm import check_sbatch
from ..execution.status import cancel_sweep
from ..execution.sweep import plan_sweep
from ..methods import METHODS, RunContext
from ..training.callbacks import LiveControl
from ..training.control import ControlChannel
from ..training.pipeline import execute
from ..training.provenance import NUMERICS_VARIABLES
from ..training.resolve import make_config, method_params
from ..training.train import Trainer
from ..zoo import collapse
from ..zoo.data import DataSplits, DataTransforms, load_data
from ..zoo.loaders import make_loader
from ..zoo.measure import count_macs, count_parameters, device_name, latency_ms
from ..zoo.models import create_model
from ..zoo.text_data import TEXT_SEQ_LEN
from ..zoo.text_models import ByteTokenizer, CausalLM
from . import sweep_profile

BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict]] = {}


def benchmark(name: str) -> Callable:
    def decorator(fn: Callable[[argparse.Namespace], dict]) -> Callable:
        BENCHMARKS[name] = fn
        return fn

    return decorator


def environment() -> dict:
    device = torch.device("cpu")
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def _convert_to_identity(model: torch.nn.Module, k: int | None = None) -> list[str]:
    """Convert the last k blocks (all if None) to PReLUs with slope exactly 1 (as after regularization)."""
    blocks = collapse.select_blocks(model, k or len(collapse.find_blocks(model)))
    for b in blocks:
        with torch.no_grad():
            collapse.convert(model, b).weight.fill_(1.0)
    return [b.name for b in blocks]


@benchmark("collapse")
def bench_collapse(args: argparse.Namespace) -> dict:
    """Convert-and-fold time and error on vit_base; latency of original vs collapsed models against MACs."""
    torch.manual_seed(0)
    out: dict = {"vit_base_fold": _fold_time_and_error()}
    # latency of original vs collapsed models, beside the MAC ratio
    # (model, blocks folded, latency batches): vit_base with all 12 MLPs folded; VGG has 2 classifier blocks
    cases = [
        ("vit_base_patch16_224", 12, (1, 8)),
        ("vit_tiny_patch16_224", 6, (1, 32)),
        ("vgg11_bn", 2, (1, 32)),
    ]
    for name, k, batches in cases:
        out[name] = _collapsed_latency(name, k, batches, args)
    return out


def _fold_time_and_error() -> dict:
    """Convert + fold all 12 MLPs of vit_base_patch16_224, and the fold's output error. The error compares
    the converted model (slopes 1, i.e. what the regularizer converges to) with the folded one: the fold's
    own error (against the GELU original the output changes, of course)."""
    model = create_model("vit_base_patch16_224", 1000).eval()
    x = torch.randn(2, 3, 224, 224)
    start = time.perf_counter()
    names = _convert_to_identity(model)
    convert_seconds = time.perf_counter() - start
    with torch.no_grad():
        before = model(x)
    start = time.perf_counter()
    collapse.collapse(model, names)
    fold_seconds = time.perf_counter() - start
    with torch.no_grad():
        after = model(x)
    return {
        "blocks": len(names),
        "convert_seconds": convert_seconds,
        "fold_seconds": fold_seconds,
        "convert_and_fold_seconds": convert_seconds + fold_seconds,
        "max_abs_output_diff": (after - before).abs().max().item(),
        "max_rel_output_diff": ((after - before).abs().max() / before.abs().max()).item(),
    }


def _collapsed_latency(name: str, k: int, batches: tuple[int, ...], args: argparse.Namespace) -> dict:
    """Latency of `name` against its last k blocks folded, interleaved, beside the MAC ratio."""
    original = create_model(name, 1000).eval()
    collapsed = create_model(name, 1000).eval()
    collapsed.load_state_dict(original.state_dict())
    collapse.collapse(collapsed, _convert_to_identity(collapsed, k))
    shape = (3, 224, 224)
    row = {"k": k}
    macs_o, macs_c = count_macs(original, shape)["gmacs"], count_macs(collapsed, shape)["gmacs"]
    row.update(
        gmacs_original=macs_o,
        gmacs_collapsed=macs_c,
        mac_ratio=macs_o / macs_c,
        params_original=count_parameters(original)[0],
        params_collapsed=count_parameters(collapsed)[0],
    )
    for batch in batches:
        # interleave original and collapsed so both see the same machine state
        lo, lc = [], []
        for _ in range(args.rounds):
            lo.append(latency_ms(original, shape, batch, repeats=args.repeats, warmup=1))
            lc.append(latency_ms(collapsed, shape, batch, repeats=args.repeats, warmup=1))
        lo_ms, lc_ms = sorted(lo)[len(lo) // 2], sorted(lc)[len(lc) // 2]
        row[f"b{batch}"] = {
            "latency_ms_original": lo_ms,
            "latency_ms_collapsed": lc_ms,
            "speedup_measured": lo_ms / lc_ms,
            "measured_over_theoretical": (lo_ms / lc_ms) / row["mac_ratio"],
        }
    return row


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _bare_epoch(model, loader, optimizer, scheduler, label_smoothing: float) -> None:
    """The plain PyTorch loop the trainer is compared with (a language model: transformers' own loss)."""

    model.train()
    for x, y in loader:
        if isinstance(model, CausalLM):  # `labels=` makes transformers shift the tokens and score them
            loss = model.lm(input_ids=x, labels=x, use_cache=False).loss
        else:
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def _trainer_case(name: str, batch: int, synthetic: int | None) -> tuple:
    """(config, training set, model, input shape, classes) of one trainer benchmark case."""
    dataset = "text_stdlib" if name == "text_gpt2" else "digits"
    cfg = make_config(
        {}, [f"model={name}", f"dataset={dataset}", f"batch_size={batch}", "warmup_epochs=0", "threads=0"]
    )
    torch.manual_seed(0)
    if synthetic:
        train = TensorDataset(torch.randn(synthetic, 3, 224, 224), torch.randint(0, 1000, (synthetic,)))
        return cfg, train, create_model(name, 1000), (3, 224, 224), 1000
    if dataset == "text_stdlib":
        train = load_data(dataset, Path("."), None, tokenizer=ByteTokenizer()).train
        return cfg, train, create_model(name, 0), (TEXT_SEQ_LEN,), 0
    return cfg, load_data("digits", Path("."), None).train, create_model(name, 10, 1), (1, 8, 8), 10


@benchmark("trainer")
def bench_trainer(args: argparse.Namespace) -> dict:
    """lcbench's training step (the Trainer, with its accounting, NaN check and control check) against a
    bare PyTorch loop (for the byte-level GPT-2, a bare transformers loop: `model(input_ids, labels)`):
    same model, data, optimizer kind, batch; epochs interleaved, median ratio."""

    out: dict = {}
    cases = [
        ("digits_vit", 64, None, 5),
        ("vit_tiny_patch16_224", 32, 128, 3),  # 4 steps of 32 synthetic 224 px images per epoch
        ("text_gpt2", 32, None, 3),  # the embedded corpus: 31 steps of 32 sequences of 64 bytes
    ]
    for name, batch, synthetic, rounds in cases:
        cfg, train, model, shape, classes = _trainer_case(name, batch, synthetic)
        bare_model = copy.deepcopy(model)
        with tempfile.TemporaryDirectory() as tmp:
            run = RunDir(tmp, "bench")
            run.create()
            data = DataSplits(train, train, classes, shape[0])  # (no evaluation is timed)
            ctx = RunContext(cfg, run, torch.device("cpu"), data, model, shape, val_loader=None)
            method = METHODS.get("finetune")(method_params(cfg), ctx)
            trainer = Trainer(model, method, (LiveControl(run.path),), progress_bar=False)  # as a run has
            trainer.rebuild_optimizer()
            optimizer = torch.optim.AdamW(bare_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
            loader = DataLoader(train, batch_size=batch, shuffle=True)

            def bare_epoch() -> None:
                _bare_epoch(bare_model, loader, optimizer, scheduler, cfg.label_smoothing)  # noqa: B023

            trainer.train_epoch()  # warm-up, both
            bare_epoch()
            ours, bare = [], []
            for _ in range(rounds):
                start = time.perf_counter()
                trainer.train_epoch()
                ours.append(time.perf_counter() - start)
                start = time.perf_counter()
                bare_epoch()
                bare.append(time.perf_counter() - start)
        steps = len(loader)
        out[name] = {
            "batch": batch,
            "steps_per_epoch": steps,
            "lcbench_step_ms": _median(ours) / steps * 1e3,
            "bare_step_ms": _median(bare) / steps * 1e3,
            "samples_per_s": batch * steps / _median(ours),
            "ratio": _median(ours) / _median(bare),
            "target": "<= 1.03",
        }
    return out


@benchmark("data")
def bench_data(args: argparse.Namespace) -> dict:
    """lcbench's loaders against plain torchvision/PyTorch ones: digits tensors and an ImageFolder."""

    def epoch_seconds(loader) -> float:
        start = time.perf_counter()
        for _ in loader:
            pass
        return time.perf_counter() - start

    out: dict = {}
    digits = load_data("digits", Path("."), None).train
    ours = make_loader(digits, 64, True, 0, torch.Generator().manual_seed(0))
    plain = DataLoader(digits, batch_size=64, shuffle=True)
    a, b = [], []
    for _ in range(20):  # interleaved (20 epochs of one, then of the other, measured the order: 1.6x)
        a.append(epoch_seconds(ours))
        b.append(epoch_seconds(plain))
    out["digits"] = {
        "lcbench_ms": _median(a) * 1e3,
        "plain_ms": _median(b) * 1e3,
        "ratio": _median(a) / _median(b),
    }
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            for c in range(4):
                folder = Path(tmp) / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(64):
                    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(
                        folder / f"{i}.jpg"
                    )
        transforms = DataTransforms(img_size=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        ours_set = load_data("imagefolder", Path(tmp), transforms).train
        plain_set = ImageFolder(str(Path(tmp) / "train"), transform=transforms.train())
        ours = make_loader(ours_set, 32, True, 0, torch.Generator().manual_seed(0))
        plain = DataLoader(plain_set, batch_size=32, shuffle=True)
        a, b = [], []
        for _ in range(3):  # interleaved
            a.append(epoch_seconds(ours))
            b.append(epoch_seconds(plain))
        out["imagefolder_256_jpegs_64px"] = {
            "lcbench_ms": _median(a) * 1e3,
            "plain_ms": _median(b) * 1e3,
            "ratio": _median(a) / _median(b),
        }
    return out


# Training throughput (images/s) on one RTX 3090 with AMP, from timm's published benchmark
# (huggingface/pytorch-image-models, results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv): what a
# GPU consumes when no GPU was lent to measure it here.
TIMM_TRAIN_IMAGES_PER_S_RTX3090_AMP = {
    "vit_tiny_patch16_224": 2293.54,
    "vit_small_patch16_224": 1052.92,
    "vit_base_patch16_224": 390.86,
    "mixer_b16_224": 528.02,
    "vgg11_bn": 703.05,
    "vgg13_bn": 468.37,
    "vgg16_bn": 388.69,
    "vgg19_bn": 330.96,
}


@benchmark("pipeline")
def bench_pipeline(args: argparse.Namespace) -> dict:
    """The ImageNet training pipeline on this CPU (JPEG decode, RandomResizedCrop 224, flip, normalise):
    images/s of one loader worker and of two (PIL), of decode=device's tensor pipeline run on this CPU,
    and the workers a GPU needs for each model of runs/imagenet.yaml to be fed at timm's published
    training throughput."""
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for c in range(4):  # ImageNet-sized JPEGs (500x375, quality 90)
            folder = Path(tmp) / "train" / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(48):
                smooth = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
                Image.fromarray(smooth[:375, :500]).save(folder / f"{i}.jpg", quality=90)
        (Path(tmp) / "val").symlink_to(Path(tmp) / "train")
        imagenet = DataTransforms(img_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        out: dict = {"image_size": "500x375 JPEG", "img_size": 224}
        # workers 0: decoded in the loop's own process, i.e. what one worker does; decode=device on the
        # CPU: torchvision's decode_jpeg + transforms.v2 on tensors (the CUDA path's code, on this CPU)
        for decode, workers in (("workers", 0), ("workers", 2), ("device", 0)):
            train = load_data("imagefolder", Path(tmp), imagenet, decode=decode).train
            loader = make_loader(
                train, 32, True, workers, torch.Generator().manual_seed(0), torch.device("cpu")
            )
            seconds = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                for _ in loader:
                    pass
                seconds.append(time.perf_counter() - start)
            out[f"decode_{decode}_{workers}_workers_images_per_s"] = len(train) / _median(seconds)
        out["images"] = len(train)
    per_worker = out["decode_workers_0_workers_images_per_s"]
    out["per_worker_images_per_s"] = per_worker
    out["workers_per_gpu"] = {
        model: {"gpu_images_per_s": rate, "workers": math.ceil(rate / per_worker)}
        for model, rate in TIMM_TRAIN_IMAGES_PER_S_RTX3090_AMP.items()
    }
    out["gpu_throughput_source"] = "timm results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv"
    return out


@benchmark("ddp")
def bench_ddp(args: argparse.Namespace) -> dict:
    """One digits_vit run on 2 DDP ranks (gloo, 1 thread each) against one process with 2 threads, at
    the same global batch (64), through the local queue: training time, images/s, and the numbers."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for nproc in (1, 2):
            spec = {
                "name": f"ddp{nproc}",
                "base": {
                    "dataset": "digits",
                    "model": "digits_vit",
                    "stage": "pretrain",
                    "epochs": 5,
                    "warmup_epochs": 0,
                    "latency_repeats": 2,
                    "nproc": nproc,
                    "output_root": str(tmp / f"ddp{nproc}"),
                },
            }
            path = tmp / f"ddp{nproc}.yaml"
            path.write_text(yaml.safe_dump(spec))
            plan = plan_sweep(path)
            launch(plan, LaunchOptions(executor="local", max_parallel=nproc, threads=2, cpu=True, wait=True))
            record = json.loads((tmp / f"ddp{nproc}" / plan.runs[0].run_id / "result.json").read_text())
            cost = record["cost"]
            out[f"nproc{nproc}"] = {
                "threads_per_rank": 2 // nproc,
                "train_seconds": cost["train_seconds"],
                "images_per_s": cost["samples_seen"] / cost["train_seconds"],
                "top1": record["final"]["top1"],
                "val_loss": record["final"]["loss"],
            }
    out["speedup_2_ranks"] = out["nproc1"]["train_seconds"] / out["nproc2"]["train_seconds"]
    return out


@benchmark("runner")
def bench_runner(args: argparse.Namespace) -> dict:
    """Plan (and, where sbatch exists, submit as held arrays) a 104-run sweep; local-queue overhead per
    run against executing the same runs directly in this process (`_queue_overhead`)."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = {
            "name": "bench100",
            "base": {"dataset": "digits", "epochs": 1, "output_root": str(tmp / "plan")},
            "grid": {"model": ["digits_mlp", "digits_vit", "digits_mixer", "digits_vgg"]},
            "seeds": [0, 1, 2, 3, 4],
            "variants": {
                "lc": {"method": "layercollapse", "k": [1, 2]},
                "kd": {"method": "kd", "student": "collapsed:1"},
                "prune": {"method": "magnitude_pruning", "target_compression": 1.5},
                "ft": {"method": "finetune"},
            },
        }
        path = tmp / "bench100.yaml"
        path.write_text(yaml.safe_dump(spec))
        start = time.perf_counter()
        plan = plan_sweep(path)
        out["plan_runs"] = len(plan.runs)
        out["plan_seconds"] = time.perf_counter() - start
        try:
            check_sbatch()
        except ConfigError as e:
            out["submit_arrays_seconds"] = f"skipped: {e}"
        else:
            profile = tmp / "held.yaml"  # submitted on hold, then cancelled: nothing runs
            held = {"cpus_per_task": 1, "mem_gb": 1, "additional": {"hold": True}}
            profile.write_text(yaml.safe_dump(held))
            start = time.perf_counter()
            sub = launch(plan, LaunchOptions(executor="slurm", profile=str(profile)))
            out["submit_arrays_seconds"] = time.perf_counter() - start
            out["submitted_jobs"] = len(sub.jobs)
            cancel_sweep(plan)
        out.update(_queue_overhead(spec, tmp))
    return out


def _queue_overhead(spec: dict, tmp: Path, n_runs: int = 16) -> dict:
    """The same short digits runs through the local queue (warm workers, launched detached) and called
    directly in this process, one at a time. Per run: from the first run's start to the last run's end,
    divided by the runs (the queue's dispatch and each worker's run); once per queue: from `launch` to the
    first run's start (a new supervisor, and its fork server importing torch, timm and lcbench, which this
    process had imported before timing)."""
    out: dict = {}
    small = {**spec, "name": "overhead", "grid": {"model": ["digits_mlp"]}, "seeds": list(range(n_runs))}
    small["variants"] = {"ft": {"method": "finetune"}}
    small["base"] = {**spec["base"], "latency_repeats": 2, "pretrain": {"epochs": 1}, "threads": 1}
    path = tmp / "overhead.yaml"
    for where in ("direct", "queue"):
        small["base"]["output_root"] = str(tmp / where)
        path.write_text(yaml.safe_dump(small))
        plan = plan_sweep(path)
        execute(plan.stage("pretrain")[0].cfg, progress_bar=False)  # both start from a trained original
        runs = plan.stage("compress")
        start, wall = time.perf_counter(), time.time()
        if where == "direct":
            trained = [execute(r.cfg, progress_bar=False) for r in runs]
            out["direct_seconds_per_run"] = (time.perf_counter() - start) / len(runs)
        else:
            # detached, as `make reproduce` launches: a fresh supervisor and fork server (this process's
            # own fork server may be warm from another benchmark)
            sub = launch(plan, LaunchOptions(executor="local", threads=1))
            queue = read_json(Path(sub.folder) / QUEUE_FILE)
            while any(r["state"] != "done" for r in queue["runs"]):
                time.sleep(0.05)
                queue = read_json(Path(sub.folder) / QUEUE_FILE) or queue
            total = max(r["ended"] for r in queue["runs"]) - wall
            first = min(r["started"] for r in queue["runs"])
            last = max(r["ended"] for r in queue["runs"])
            out["queue_startup_seconds"] = first - wall
            out["queue_seconds_per_run"] = (last - first) / len(runs)
            out["queue_seconds_per_run_with_startup"] = total / len(runs)
            out["queue_workers"] = len({r["pid"] for r in queue["runs"]})
            trained = [json.loads((tmp / where / r.run_id / "result.json").read_text()) for r in runs]
        out[f"{where}_train_seconds_per_run"] = sum(t["cost"]["train_seconds"] for t in trained) / len(runs)
    out["runs"] = n_runs
    out["queue_overhead_seconds_per_run"] = out["queue_seconds_per_run"] - out["direct_seconds_per_run"]
    out["queue_over_direct"] = out["queue_seconds_per_run"] / out["direct_seconds_per_run"]
    with_startup = out["queue_seconds_per_run_with_startup"] / out["direct_seconds_per_run"]
    out["queue_over_direct_with_startup"] = with_startup
    digits_runs = 154  # runs/digits.yaml: the fork server's start shared by the whole sweep
    out["queue_over_direct_digits_sweep"] = (
        out["queue_seconds_per_run"] + out["queue_startup_seconds"] / digits_runs
    ) / out["direct_seconds_per_run"]
    return out


@benchmark("control")
def bench_control(args: argparse.Namespace) -> dict:
    """The live-tuning check's cost per training step, with no request and with one pending request,
    beside a digits_vit training step (batch 64)."""
    model = create_model("digits_vit", 10, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))

    def train_step() -> None:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        train_step()
    steps = 50
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    step_s = (time.perf_counter() - start) / steps
    out: dict = {"train_step_ms": step_s * 1e3}
    with tempfile.TemporaryDirectory() as tmp:
        channel = ControlChannel(Path(tmp), interval_s=1.0)
        calls = 200_000
        start = time.perf_counter()
        for _ in range(calls):
            channel.due()
        due_s = (time.perf_counter() - start) / calls
        looks = 2000
        start = time.perf_counter()
        for _ in range(looks):
            channel.pending()
        look_s = (time.perf_counter() - start) / looks
        # one pending request: read, validate, answer (the trainer then also writes a checkpoint)
        serve = []
        for i in range(200):
            atomic_write_json(channel.requests / f"{i:05d}.json", {"id": str(i), "set": {"lr": 0.01}})
            start = time.perf_counter()
            for path, request, _ in channel.pending():
                channel.answer(path, request, {"accepted": True})
            serve.append(time.perf_counter() - start)
        checkpoint = []
        state = {"model": model.state_dict(), "opt": optimizer.state_dict()}
        for _ in range(5):
            start = time.perf_counter()
            atomic_torch_save(Path(tmp) / "ckpt.pt", state)
            checkpoint.append(time.perf_counter() - start)
    serve_s, ckpt_s = _median(serve), _median(checkpoint)
    # no request: a clock read every step plus one folder look per second of training
    idle_per_step = due_s + look_s * step_s
    out.update(
        due_check_us=due_s * 1e6,
        folder_look_us=look_s * 1e6,
        idle_overhead_per_step_us=idle_per_step * 1e6,
        idle_overhead_fraction=idle_per_step / step_s,
        pending_request_serve_ms=serve_s * 1e3,
        pending_request_checkpoint_ms=ckpt_s * 1e3,
        pending_request_step_cost_over_train_step=(serve_s + ckpt_s) / step_s,
    )
    return out


# The settings that pick the CPU kernels (and so the last bits): each alone, the portable set `make reproduce
# NUMERICS=portable` uses (the only MKL branch MKL keeps for non-Intel CPUs, and AVX2, which Intel Xeons and
# AMD EPYCs both have, for ATen and oneDNN), and everything at its most basic
NUMERICS_SETTINGS = {
    "native": {},
    "mkl_compatible": {"MKL_CBWR": "COMPATIBLE"},
    "aten_default": {"ATEN_CPU_CAPABILITY": "default"},
    "onednn_sse41": {"ONEDNN_MAX_CPU_ISA": "SSE41"},
    "portable": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "scalar": {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


@benchmark("sweep_profile")
def bench_sweep_profile(args: argparse.Namespace) -> dict:
    """The embedded sweeps at one seed, each run as `make reproduce` runs it (alone on the machine, 2 warm
    workers): where their runs' time goes, the queue's start and idle workers, the quiet latency pass and
    the report, and the training's FLOP/s beside one core's on the same GEMMs (`sweep_profile.py`);
    `sweep_profile.md` beside the JSON."""
    sweeps, models = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in ("digits", "text"):
            root = Path(tmp) / spec
            ran = sweep_profile.run_sweep(spec, root, ["seeds=[0]"], parallel=2)
            sweeps[spec] = {**sweep_profile.breakdown(root, ran), "parallel": 2}
            models.update(sweeps[spec]["models"])
    result = {
        "environment": {"cpu": device_name(torch.device("cpu")), "cores": os.cpu_count()},
        "sweeps": sweeps,
        "roofline": sweep_profile.roofline(models),
    }
    sweep_profile.dump(result, Path(args.out))
    return result


@benchmark("numerics")
def bench_numerics(args: argparse.Namespace) -> dict:
    """The cost of each kernel-pinning setting: a 5-epoch digits pretrain of three models (1 thread, each
    setting in its own process, settings interleaved, `--rounds` rounds) timed against the native kernels,
    and the final loss's bits, which repeat within a setting and differ between settings (so each setting
    does change the kernels run; whether one gives the same bits on another CPU family needs that CPU)."""
    rounds = max(2, args.rounds)
    seconds: dict[str, dict[str, list[float]]] = {s: {} for s in NUMERICS_SETTINGS}
    losses: dict[str, dict[str, set[str]]] = {s: {} for s in NUMERICS_SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for model in ("digits_vit", "digits_vgg", "digits_mlp"):
                for setting, variables in NUMERICS_SETTINGS.items():
                    out = Path(tmp) / f"{setting}-{model}-{round_}"
                    run = [
                        "run",
                        "stage=pretrain",
                        f"model={model}",
                        "epochs=5",
                        "threads=1",
                        f"output_root={out}",
                    ]
                    cmd = [sys.executable, "-m", "lcbench", *run, "--no-progress"]
                    env = {k: v for k, v in os.environ.items() if k not in NUMERICS_VARIABLES}
                    subprocess.run(cmd, env={**env, **variables}, check=True, capture_output=True)
                    record = next(out.glob("*/result.json"))
                    result = json.loads(record.read_text())
                    seconds[setting].setdefault(model, []).append(result["cost"]["train_seconds"])
                    losses[setting].setdefault(model, set()).add(repr(result["final"]["loss"]))
    native = {m: _median(v) for m, v in seconds["native"].items()}
    return {
        setting: {
            "env": " ".join(f"{k}={v}" for k, v in NUMERICS_SETTINGS[setting].items()) or "(none)",
            **{f"{m}_seconds_ratio": _median(v) / native[m] for m, v in seconds[setting].items()},
            "repeats_bit_for_bit": all(len(v) == 1 for v in losses[setting].values()),
            "bits_differ_from_native": all(
                losses[setting][m] != losses["native"][m] for m in losses[setting]
            ) if setting != "native" else False,
        }
        for setting in NUMERICS_SETTINGS
    }  # fmt: skip


def write_readme(folder: Path) -> None:
    """A Markdown table of every figure in the folder's JSON files."""
    lines = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`python -m lcbench.measurement.bench`); every ratio was "
        "measured side by side in one process.",
        "",
    ]
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if path.with_suffix(".md").exists():  # a page of its own (calibration, sweep_profile)
            lines += [f"## {path.stem}", "", f"See `{path.stem}.md`.", ""]
            continue
        env = data.get("environment", {})
        lines += [
            f"## {path.stem}",
            "",
            f"{env.get('device')}, torch {env.get('torch')}, "
            f"{env.get('threads')} threads, measured {data.get('measured_at')}",
            "",
            "| figure | value |",
            "|---|---|",
        ]
        for key, value in _flatten(data.get("results", {})):
            if isinstance(value, float):
                value = f"{value:.4g}"
            lines.append(f"| {key} | {value} |")
        lines.append("")
    atomic_write_text(folder / "README.md", "\n".join(lines))


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for key, value in data.items():
        if isinstance(value, dict):
            rows += _flatten(value, f"{prefix}{key}.")
        else:
            rows.append((f"{prefix}{key}", value))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lcbench.measurement.bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHMARKS)})")
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--repeats", type=int, default=5, help="timed forward passes per latency figure")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median taken)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in args.names or list(BENCHMARKS):
        print(f"bench {name} ...", flush=True)
        start = time.perf_counter()
        env = environment()  # before the benchmark: runs inside it may set their own thread count
        results = BENCHMARKS[name](args)
        torch.set_num_threads(args.threads)
        atomic_write_json(
            folder / f"{name}.json",
            {
                "benchmark": name,
                "environment": env,
                "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
                "seconds": time.perf_counter() - start,
                "results": results,
            },
        )
        print(f"bench {name}: {time.perf_counter() - start:.1f} s -> {folder / (name + '.json')}", flush=True)
    write_readme(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
