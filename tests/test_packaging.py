"""What a user outside the checkout gets: a wheel with the baselines inside the lcbench namespace and the
specs and SLURM profiles found by name, optional dependencies that name their extra, and models, data sets
and methods from another installed package."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from lcbench.cli import main
from lcbench.core import bundled
from lcbench.core.errors import ConfigError
from lcbench.core.extras import EXTRAS
from lcbench.execution.sweep import plan_sweep
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
WHEEL_SOURCES = ("pyproject.toml", "README.md", "LICENSE", "lcbench", "runs", "slurm")


def test_every_subpackage_goes_into_the_wheel_and_nothing_outside_lcbench():
    setuptools = PYPROJECT["tool"]["setuptools"]
    folders = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "lcbench").rglob("__init__.py")}
    assert folders <= set(setuptools["packages"])
    assert all(p == "lcbench" or p.startswith("lcbench.") for p in setuptools["packages"])
    assert setuptools["package-dir"] == {"lcbench.specs": "runs", "lcbench.profiles": "slurm"}
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras) and "all" in extras  # every extra a message names exists


def test_specs_and_profiles_are_found_by_name_from_any_folder_and_a_path_still_works(tmp_path, capsys):
    assert bundled.find("digits") == REPO / "runs" / "digits.yaml"
    assert bundled.find("gpu", "profile") == REPO / "slurm" / "gpu.yaml"
    assert bundled.find("runs/digits.yaml") == Path("runs/digits.yaml")  # a path is taken as given
    with pytest.raises(ConfigError, match="no spec named 'digitz' .* digits, digits_compress"):
        bundled.find("digitz")
    before = Path.cwd()
    os.chdir(tmp_path)  # nowhere near runs/
    try:
        assert main(["plan", "digits", f"output_root={tmp_path / 'out'}"]) == 0
        assert "sweep digits" in capsys.readouterr().out
        assert main(["list", "specs", "digits*"]) == 0
        listed = capsys.readouterr().out
        assert listed.split()[0] == "digits"
        assert "digits.tuned" not in listed  # the spec's lock file (`lcbench search`) is not a spec
        # found by name, the spec comes with its lock: its runs take the selections
        assert any(r.cfg.selection for r in plan_sweep("digits", [f"output_root={tmp_path}"]).runs)
    finally:
        os.chdir(before)


def _without(modules: list[str], *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    """`lcbench argv` in a process where `modules` cannot be imported (as if not installed)."""
    script = (
        "import sys\n"
        f"for name in {modules!r}: sys.modules[name] = None\n"
        "from lcbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def test_image_only_use_needs_no_optional_dependency(tmp_path):
    optional = sorted(EXTRAS)
    done = _without(
        optional,
        "run",
        "stage=pretrain",
        "model=digits_mlp",
        "dataset=digits",
        "epochs=1",
        f"output_root={tmp_path}",
        "threads=1",
        "--no-progress",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"status": "completed"' in done.stdout


@pytest.mark.parametrize(
    "module, extra, argv",
    [
        ("transformers", "text", ["plan", "text"]),
        (
            "wandb",
            "wandb",
            [
                "run",
                "stage=pretrain",
                "model=digits_mlp",
                "dataset=digits",
                "epochs=1",
                "tracking.mode=offline",
                "--no-progress",
            ],
        ),
        (
            "torch_pruning",
            "pruning",
            [
                "run",
                "stage=compress",
                "method=magnitude_pruning",
                "scope=structured",
                "model=digits_vgg",
                "dataset=digits",
                "epochs=1",
                "pretrain.epochs=1",
                "--no-progress",
            ],
        ),
    ],
)
def test_a_missing_optional_dependency_names_the_extra_that_installs_it(tmp_path, module, extra, argv):
    done = _without([module], *argv, f"output_root={tmp_path}", "threads=1", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("lcbench: error: ") and f"pip install 'lcbench[{extra}]'" in last
    assert "Traceback" not in done.stderr


def _copy_sources(to: Path) -> Path:
    import shutil

    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    to.mkdir()
    for name in WHEEL_SOURCES:
        source = REPO / name
        (shutil.copytree if source.is_dir() else shutil.copy)(
            source, to / name, **({"ignore": ignore} if source.is_dir() else {})
        )
    return to


@pytest.mark.slow
def test_pip_install_in_a_fresh_venv_works_outside_the_checkout_without_a_top_level_baselines(tmp_path):
    """`pip install .` into a new venv (its dependencies borrowed from this one through a path line, never
    this venv's editable lcbench), then `lcbench plan digits` and a digits run from another folder."""
    import site
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)  # pip and setuptools come with the borrowed path
    python = env_dir / "bin" / "python"
    site_packages = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    borrowed = [p for p in site.getsitepackages() if Path(p).is_dir()]
    Path(site_packages, "borrowed.pth").write_text("\n".join(borrowed) + "\n")  # paths only: no hooks
    source = _copy_sources(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", str(source)],
        check=True,
        env=env,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([*argv], capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)

    lcbench = str(env_dir / "bin" / "lcbench")
    where = run(str(python), "-c", "import lcbench; print(lcbench.__file__)")
    assert where.stdout.startswith(site_packages), where  # the installed copy, not the checkout
    planned = run(lcbench, "plan", "digits", "output_root=out")
    assert planned.returncode == 0 and "sweep digits" in planned.stdout, planned.stderr[-2000:]
    trained = run(
        lcbench,
        "run",
        "stage=pretrain",
        "model=digits_mlp",
        "dataset=digits",
        "epochs=1",
        "threads=1",
        "--no-progress",
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert (elsewhere / "outputs").is_dir()
    assert run(str(python), "-c", "import baselines").returncode == 1  # the name is free for users
    assert run(str(python), "-c", "import lcbench.baselines.wanda").returncode == 0


@pytest.mark.slow
def test_models_datasets_and_methods_come_from_another_installed_package(tmp_path):
    """A tiny package declaring the three entry-point groups, installed with pip: its model, data set and
    method are listed and a run uses all three."""
    package = tmp_path / "pkg"
    (package / "lcbench_tiny").mkdir(parents=True)
    (package / "pyproject.toml").write_text(TINY_PYPROJECT)
    (package / "lcbench_tiny" / "__init__.py").write_text(TINY_MODULE)
    target = tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(package),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    env["PYTHONPATH"] = f"{REPO}:{target}"

    def lcbench(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "lcbench", *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )

    listing = (  # the three `lcbench list` commands in one interpreter (each alone pays torch's import)
        "from lcbench.cli import main\n"
        "for kind in ('models', 'datasets', 'methods'):\n"
        "    main(['list', kind, 'ext_*'])\n"
    )
    listed = subprocess.run(
        [sys.executable, "-c", listing], capture_output=True, text=True, env=env, check=True
    )
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == ["ext_linear", "ext_blobs", "ext_finetune"], listed.stdout
    done = lcbench(
        "run",
        "stage=compress",
        "method=ext_finetune",
        "model=ext_linear",
        "dataset=ext_blobs",
        "epochs=1",
        "pretrain.epochs=1",
        "threads=1",
        "output_root=out",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"status": "completed"' in done.stdout


TINY_PYPROJECT = """\
[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "lcbench-tiny"
version = "0.1"

[project.entry-points."lcbench.models"]
tiny = "lcbench_tiny"

[project.entry-points."lcbench.datasets"]
tiny = "lcbench_tiny"

[project.entry-points."lcbench.methods"]
ext_finetune = "lcbench_tiny:TinyFinetune"
"""

TINY_MODULE = '''\
"""A model, a data set and a method from outside lcbench."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

from lcbench.zoo.data import DatasetSpec, register_dataset
from lcbench.methods.finetune import Finetune
from lcbench.zoo.models import register_model


@register_model("ext_linear", "torch", "Linear 4-8-ReLU-3")
def ext_linear(num_classes=3, in_chans=1, img_size=None, hub=False):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, num_classes))


def _blobs(root, train_tf, eval_tf, download):
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    points = torch.randn(300, 1, 2, 2, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return TensorDataset(points[:240], labels[:240]), TensorDataset(points[240:], labels[240:])


register_dataset(
    DatasetSpec(
        "ext_blobs", _blobs, num_classes=3, in_chans=1, img_size=2, natural_images=False,
        how_to_get="generated", train_size=240,
    )
)


class TinyFinetune(Finetune):
    title = "Tiny fine-tune"
    summary = "fine-tuning, from another package"
'''
