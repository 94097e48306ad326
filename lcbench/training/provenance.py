"""What produced a run: code version, library versions, machine (written to env.json)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from ..zoo.measure import device_name

PACKAGES = (
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scikit-learn",
    "torch-pruning",
    "wandb",
    "submitit",
    "transformers",
    "datasets",
)


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lcbench/


SNAPSHOT_INFO = "SNAPSHOT.json"  # beside a code snapshot's packages: the git info taken at submission


def git_info(path: Path = PACKAGE_DIR) -> dict:
    """Commit and dirty flag of the repository holding lcbench (None outside a git checkout).

    Code running from a sweep's snapshot reports the commit the snapshot was taken from.
    """
    snapshot = path.parent / SNAPSHOT_INFO
    if snapshot.exists():
        return {**json.loads(snapshot.read_text()), "snapshot": str(path.parent)}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def versions() -> dict:
    found = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


# The settings that decide which CPU kernels run (and so the last bits of every number): recorded per run
NUMERICS_VARIABLES = (
    "MKL_CBWR",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; the platform's word elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info() -> dict:
    """The CPU and the instruction-set level ATen dispatches to: what cross-machine drift depends on."""
    return {
        "model": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "numerics": {k: os.environ[k] for k in NUMERICS_VARIABLES if k in os.environ},
    }


def environment(device: torch.device) -> dict:
    return {
        "cpu": cpu_info(),
        "git": git_info(),
        "versions": versions(),
        "device": str(device),
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "code": str(PACKAGE_DIR),
        "scheduler": {k: v for k, v in os.environ.items() if k in SCHEDULER_VARIABLES},
    }


SCHEDULER_VARIABLES = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_RESTART_COUNT",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "CUDA_VISIBLE_DEVICES",
)
