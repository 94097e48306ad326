"""Shared fixtures: W&B disabled, fast digits configs, generated image-folder data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")


REPO = Path(__file__).resolve().parents[1]
# fixtures whose tests need the machine to themselves (a SLURM cluster, a second account): `make test` runs
# them after the parallel part, one at a time, with the tests marked `serial` (signals, timing)
SERIAL_FIXTURES = {"slurm_cluster", "second_user"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SERIAL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.serial)


def pytest_configure(config) -> None:
    """Under pytest-xdist every worker computes on one thread: two workers on two cores, not four threads
    spinning on two (a run's own `threads` still sets its arithmetic)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def fast_overrides(out: Path, **extra) -> list[str]:
    """A short digits run: few epochs, 1 thread (bit-reproducible), quick latency measurement."""
    values = {
        "output_root": str(out),
        "epochs": 2,
        "threads": 1,
        "latency_repeats": 2,
        "latency_batch": 8,
        "warmup_epochs": 0,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300, env: dict | None = None):
    """Run `python -m lcbench ...` in a subprocess and return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", "lcbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env={**os.environ, **(env or {})},
    )


def write_image_folder(
    root: Path,
    classes: int = 3,
    per_class: int = 4,
    size: int = 20,
    splits: tuple[str, ...] = ("train", "val"),
    suffix: str = ".png",
) -> Path:
    """A tiny ImageFolder data set of random RGB images: root/<split>/<class>/*.png (or `suffix`: .jpg)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                pixels[..., c % 3] = 200  # a class-dependent colour so the task is learnable
                Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "imgs")


def wait_until(predicate, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    """Poll `predicate` until it is true; fail the test after `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def interrupt_then_resume(cfg, method_cls, epoch: int, monkeypatch) -> dict:
    """Execute `cfg`, interrupted when `method_cls.on_epoch_end` reaches `epoch` (the checkpoint of the
    epoch before exists), then execute it again so it resumes; returns the final result."""
    import pytest

    from lcbench.training.pipeline import execute

    original_hook = method_cls.on_epoch_end

    def interrupt(self, e, model):
        if e == epoch:
            raise KeyboardInterrupt
        return original_hook(self, e, model)

    monkeypatch.setattr(method_cls, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute(cfg, progress_bar=False)
    monkeypatch.setattr(method_cls, "on_epoch_end", original_hook)
    return execute(cfg, progress_bar=False)


@pytest.fixture(scope="session")
def slurm_cluster():
    """A SLURM cluster to submit to: one already up, or the single-node one of slurm/local-cluster.sh
    (started here when running as root on a Debian system; stopped again at the end)."""
    import shutil

    script = str(REPO / "slurm" / "local-cluster.sh")
    if subprocess.run([script, "status"], capture_output=True).returncode == 0:
        yield "existing"
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "SLURM tests skipped: no cluster is up, and starting the local one needs root on Debian "
            "(run `sudo slurm/local-cluster.sh start`, then `make test` again)"
        )
    started = subprocess.run([script, "start"], capture_output=True, text=True, timeout=900)
    if started.returncode != 0:
        pytest.fail(f"slurm/local-cluster.sh start failed:\n{started.stdout}\n{started.stderr}")
    yield "started"
    subprocess.run([script, "stop"], capture_output=True, timeout=60)


TEX_PACKAGES = ["texlive-latex-base", "texlive-latex-recommended", "texlive-science"]  # siunitx: science


@pytest.fixture(scope="session")
def pdflatex(tmp_path_factory) -> str:
    """pdflatex with booktabs, siunitx and graphicx: the installed one, or TeX Live's Debian packages
    installed here when running as root on a Debian system (about a minute, once)."""
    import shutil

    def ready() -> bool:  # (on a machine without TeX, kpsewhich itself is missing)
        if shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None:
            return False
        found = subprocess.run(["kpsewhich", "siunitx.sty", "booktabs.sty"], capture_output=True, text=True)
        return len(found.stdout.split()) == 2

    if ready():
        return shutil.which("pdflatex")
    import fcntl

    # parallel workers install once: the others wait on a lock beside their shared base temp folder
    with open(tmp_path_factory.getbasetemp().parent / "tex-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            _install_tex(ready)
    return shutil.which("pdflatex")


def _install_tex(ready) -> None:
    """TeX Live's Debian packages, installed as root (skips the tests where that is impossible)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(
            "LaTeX tests skipped: pdflatex with siunitx is missing and installing it needs root on "
            f"Debian (`sudo apt-get install {' '.join(TEX_PACKAGES)}`, then `make test` again)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600, env=env)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *TEX_PACKAGES],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    if done.returncode != 0 or not ready():
        pytest.fail(f"installing {' '.join(TEX_PACKAGES)} failed:\n{done.stdout[-2000:]}\n{done.stderr}")
