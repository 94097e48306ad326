"""The catalogue of bad inputs (tests/reliability/README.md): every one gets a clear error naming the problem,
a non-zero exit where a command fails, and never a completed record."""

import json
from pathlib import Path

import pytest
import yaml

from lcbench.cli import main
from lcbench.core.store import load_records
from lcbench.training.control import ControlChannel, control_dir
from tests.conftest import fast_overrides, write_image_folder

HERE = Path(__file__).parent
IMAGES = ["model=resnet18", "dataset=imagefolder", "img_size=32", "batch_size=4", "eval_batch_size=4"]


def spec(tmp, **values):
    path = tmp / "spec.yaml"
    base = {"dataset": "digits", "output_root": str(tmp / "out")}
    path.write_text(yaml.safe_dump({"base": base, **values}))
    return str(path)


def write(tmp, name, text):
    path = tmp / name
    path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return str(path)


def corrupt_image_folder(tmp):
    root = write_image_folder(tmp / "imgs")
    (root / "train" / "class0" / "0.png").write_bytes(b"\x89PNG not really")
    return root


def empty_class_folder(tmp):
    root = write_image_folder(tmp / "imgs")
    (root / "train" / "class9").mkdir()
    return root


def label_mismatch(tmp):
    """The original is trained on 3 classes; the folder then gains a 4th: the compress run must refuse."""
    from lcbench.core.config import pretrain_config
    from lcbench.training.pipeline import execute
    from lcbench.training.resolve import make_config

    root = write_image_folder(tmp / "imgs")
    compress = make_config({}, LABEL_MISMATCH_RUN(tmp)[1:-1])
    execute(pretrain_config(compress), progress_bar=False)  # the original, on 3 classes
    write_image_folder(tmp / "imgs", classes=4)
    return root


def LABEL_MISMATCH_RUN(tmp):  # noqa: N802 - one command used twice
    # the data unchecked (`data_fingerprint=`, as runs made before fingerprints): with its fingerprint the
    # 4-class folder is other data, whose runs start from their own original; unchecked, the label check
    # is what refuses the 3-class original
    extra = ["stage=compress", "method=finetune", "epochs=1", "pretrain.epochs=0", "data_fingerprint="]
    return run(tmp, *IMAGES, f"data_root={tmp / 'imgs'}", *extra)


def garbage_checkpoint(tmp):
    from lcbench.core.store import RunDir
    from lcbench.training.identity import run_id
    from lcbench.training.resolve import make_config

    run = RunDir(tmp / "out", run_id(make_config({}, fast_overrides(tmp / "out"))))
    run.create()
    run.checkpoint_path.write_bytes(b"\x00" * 64)


def fake_sbatch(tmp, monkeypatch):
    """An `sbatch` on PATH that must never be reached (the profile is checked first)."""
    binary = tmp / "bin"
    binary.mkdir()
    (binary / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (binary / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{binary}:/usr/bin:/bin")


def no_sbatch(tmp, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp))


def run(tmp, *extra):
    return ["run", *fast_overrides(tmp / "out"), *extra, "--no-progress"]


# (case id, area, input, expected message, argv builder)
CASES = [
    ("unknown-key", "config", "`epochz=3`", "unknown key epochz", lambda t: run(t, "epochz=3")),
    ("wrong-type", "config", "`epochs=abc`", "epochs: expected an integer", lambda t: run(t, "epochs=abc")),
    ("out-of-range", "config", "`lr=-1`", "lr: must be > 0", lambda t: run(t, "lr=-1")),
    ("bad-choice", "config", "`optimizer=adam`", "one of", lambda t: run(t, "optimizer=adam")),
    ("unknown-model", "config", "`model=digits_vitt`", "digits_vit", lambda t: run(t, "model=digits_vitt")),
    ("unknown-dataset", "config", "`dataset=cifar11`", "cifar10", lambda t: run(t, "dataset=cifar11")),
    (
        "unknown-method",
        "config",
        "`stage=compress method=lc`",
        "unknown method 'lc'",
        lambda t: run(t, "stage=compress", "method=lc"),
    ),
    (
        "pretrain-with-method",
        "config",
        "`method=finetune` (stage pretrain)",
        "takes no method",
        lambda t: run(t, "method=finetune"),
    ),
    (
        "method-param-range",
        "config",
        "`stage=compress method=kd alpha=2`",
        "alpha",
        lambda t: run(t, "stage=compress", "method=kd", "alpha=2"),
    ),
    (
        "missing-config-file",
        "config",
        "`lcbench run nope.yaml`",
        "does not exist",
        lambda t: run(t, "nope.yaml"),
    ),
    (
        "yaml-not-mapping",
        "config",
        "a YAML list as config",
        "must hold a mapping",
        lambda t: run(t, write(t, "c.yaml", "- a\n- b\n")),
    ),
    (
        "invalid-yaml",
        "config",
        "unparsable YAML",
        "not valid YAML",
        lambda t: run(t, write(t, "c.yaml", "a: [\n")),
    ),
    ("empty-override-key", "cli", "`=3`", "empty key", lambda t: run(t, "=3")),
    ("nan-lr", "config", "`lr=nan`", "lr: must be a finite number", lambda t: run(t, "lr=nan")),
    (
        "threads-typo",
        "config",
        "`threads=100000` (crashed torch)",
        "threads: must be <= 1024",
        lambda t: run(t, "threads=100000"),
    ),
    (
        "eval-batch-typo",
        "config",
        "`eval_batch_size=1000000000000` (failed after training)",
        "eval_batch_size: must be <= 1048576",
        lambda t: run(t, "eval_batch_size=1000000000000"),
    ),
    ("inf-momentum", "config", "`momentum=inf`", "must be a finite number", lambda t: run(t, "momentum=inf")),
    (
        "nan-label-smoothing",
        "config",
        "`label_smoothing=nan` (once completed, recording null)",
        "must be a finite number",
        lambda t: run(t, "label_smoothing=nan"),
    ),
    (
        "fp16-on-cpu",
        "config",
        "`precision=fp16` without CUDA",
        "fp16 needs a CUDA device",
        lambda t: run(t, "precision=fp16"),
    ),
    (
        "spec-unknown-key",
        "sweep spec",
        "`grids:` in a spec",
        "unknown sweep key(s) grids",
        lambda t: ["plan", spec(t, grids={"model": ["digits_mlp"]})],
    ),
    (
        "spec-empty-grid",
        "sweep spec",
        "`grid: {model: []}`",
        "'model' is an empty list",
        lambda t: ["plan", spec(t, grid={"model": []})],
    ),
    (
        "spec-variant-no-method",
        "sweep spec",
        "a variant without `method`",
        "must be a mapping with a 'method'",
        lambda t: ["plan", spec(t, variants={"lc": {"k": 1}})],
    ),
    (
        "spec-level-without-levels",
        "sweep spec",
        '`k: "{level}"` without `levels`',
        "no 'levels' list",
        lambda t: ["plan", spec(t, variants={"lc": {"method": "layercollapse", "k": "{level}"}})],
    ),
    (
        "slurm-without-sbatch",
        "runner",
        "`--executor slurm`, no sbatch on PATH",
        "use --executor local",
        lambda t: ["launch", spec(t), "--executor", "slurm"],
    ),
    (
        "missing-profile",
        "runner",
        "`--profile nope`",
        "profile 'nope' does not exist",
        lambda t: ["launch", spec(t), "--executor", "slurm", "--profile", "nope"],
    ),
    (
        "missing-gpu",
        "runner",
        "`--gpus 5` on a machine without GPU 5",
        "do not exist",
        lambda t: ["launch", spec(t), "--executor", "local", "--gpus", "5"],
    ),
    (
        "garbage-pretrained-file",
        "checkpoint",
        "`pretrained=` a file of garbage",
        "truncated, corrupt or not",
        lambda t: run(t, f"pretrained={write(t, 'w.pt', b'garbage' * 50)}"),
    ),
    (
        "garbage-run-checkpoint",
        "checkpoint",
        "a run's checkpoint.pt overwritten with zeros",
        "delete it to restart",
        lambda t: run(t),
    ),
    (
        "collapse-without-model",
        "checkpoint",
        "`lcbench collapse` on a folder without model.pt",
        "has no model.pt",
        lambda t: ["collapse", str(t)],
    ),
    (
        "missing-data-root",
        "data",
        "`data_root=` a folder that does not exist",
        "does not exist",
        lambda t: run(t, *IMAGES, f"data_root={t / 'nowhere'}"),
    ),
    (
        "corrupt-image",
        "data",
        "a PNG file that is not an image",
        "is not a readable image",
        lambda t: run(t, *IMAGES, f"data_root={t / 'imgs'}", "epochs=1"),
    ),
    (
        "empty-class-folder",
        "data",
        "an empty class folder",
        "hold no images",
        lambda t: run(t, *IMAGES, f"data_root={t / 'imgs'}"),
    ),
    (
        "label-count-mismatch",
        "data",
        "4 classes for a model trained on 3",
        "predicts 3 classes but imagefolder has 4",
        LABEL_MISMATCH_RUN,
    ),
    (
        "tune-unknown-run",
        "live tune",
        "`lcbench tune` with a run id that does not exist",
        "no run",
        lambda t: ["tune", "0123456789ab", "--root", str(t / "out"), "lr=0.1"],
    ),
    (
        "tune-finished-run",
        "live tune",
        "`lcbench tune` on a run that is not running",
        "is not running",
        lambda t: ["tune", str(t), "--root", str(t / "out")],
    ),
    (
        "rehearse-nan-budget",
        "cli",
        "`lcbench rehearse SPEC --budget nan` (a ValueError traceback)",
        "--budget nan: give the rehearsal's seconds, a finite number above 0",
        lambda t: ["rehearse", spec(t), "--budget", "nan"],
    ),
    (
        "rehearse-inf-budget",
        "cli",
        "`lcbench rehearse SPEC --budget inf`",
        "--budget inf: give the rehearsal's seconds, a finite number above 0",
        lambda t: ["rehearse", spec(t), "--budget", "inf"],
    ),
]
SETUP = {
    "corrupt-image": corrupt_image_folder,
    "empty-class-folder": empty_class_folder,
    "label-count-mismatch": label_mismatch,
    "garbage-run-checkpoint": garbage_checkpoint,
}
ENV = {"missing-profile": fake_sbatch, "slurm-without-sbatch": no_sbatch}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    name, _, _, message, argv = case
    if name in SETUP:
        SETUP[name](tmp_path)
    if name in ENV:
        ENV[name](tmp_path, monkeypatch)
    if name == "tune-finished-run":
        (tmp_path / "config.yaml").write_text("{}")
    capsys.readouterr()
    assert main(argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    out = tmp_path / "out"
    records = load_records(out) if out.exists() else []
    # only the label-count case has a completed record: the 3-class original it starts from
    assert [r for r in records if r["status"] == "completed" and r["config"]["stage"] == "compress"] == []
    if name != "label-count-mismatch":
        assert [r for r in records if r["status"] == "completed"] == []


def test_malformed_tune_requests_are_refused_and_logged(tmp_path):
    """Live-tune requests that are not JSON, too large or with unknown fields never reach the trainer."""
    channel = ControlChannel(tmp_path, interval_s=0)
    requests = control_dir(tmp_path) / "requests"
    (requests / "1.json").write_text("lr=0.1; import os")
    (requests / "2.json").write_text(json.dumps({"set": {"lr": 0.1}, "code": "__import__('os')"}))
    problems = [problem for _, _, problem in channel.pending()]
    assert "not JSON" in problems[0] and "unknown field" in problems[1]


def test_catalogue_is_documented():
    readme = (HERE / "README.md").read_text()
    for name, area, given, message, _ in CASES:
        assert f"| {name} | {area} | {given} | {message} |" in readme, name
    assert len(CASES) >= 25
