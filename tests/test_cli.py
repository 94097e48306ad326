"""The `lcbench` command, and every bad input of the foundation: a clear error, a non-zero exit, and no
record marked completed."""

import json
import subprocess
import sys

import pytest
import torch

from lcbench.cli import main
from lcbench.core.record import IDENTITY, SUMMARY, summary_paths
from lcbench.core.store import RunDir, load_records
from lcbench.training.identity import run_id
from lcbench.training.resolve import make_config
from lcbench.zoo.models import create_model
from tests.conftest import fast_overrides, run_cli


def completed(root):
    return [r for r in load_records(root) if r["status"] == "completed"] if root.exists() else []


def test_run_then_results_table(tmp_path, capsys):
    assert main(["run", *fast_overrides(tmp_path, epochs=1), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["status"] == "completed" and summary["top1"] > 10
    assert set(summary) == {*IDENTITY, *(name for name, m in SUMMARY.items() if m.headline)}
    assert main(["results", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run_id,status") and summary["run_id"] in out[1]
    header = out[0].split(",")  # the same headline metrics, under their record paths
    in_run = "final.latency_ms_b1"  # timed beside other runs: the quiet pass (`measure`) is the latency
    assert [c for c in header if c in summary_paths()] == [p for p in summary_paths() if p != in_run]


def test_results_show_a_language_models_perplexity_not_its_next_token_top1():
    import pandas as pd

    from lcbench.core.store import headline_columns

    columns = ["run_id", "status", "metric", "final.top1", "delta_top1", "final.perplexity"]
    columns += ["delta_perplexity", "compression", "final.latency_ms_b1", "cost.train_seconds"]
    text = pd.DataFrame(
        [["a", "completed", "perplexity", 40.0, -1.0, 23.9, 0.4, 1.35, 3.0, 8.0]], columns=columns
    )
    assert headline_columns(text) == [
        "run_id", "status", "final.perplexity", "delta_perplexity", "compression", "cost.train_seconds"
    ]  # fmt: skip
    both = pd.concat([text, text.assign(metric="top1", **{"final.perplexity": None})])
    assert headline_columns(both)[2:6] == ["final.top1", "delta_top1", "final.perplexity", "delta_perplexity"]


def test_list_commands(capsys):
    assert main(["list", "models", "digits_*"]) == 0
    assert capsys.readouterr().out.split() == ["digits_mixer", "digits_mlp", "digits_vgg", "digits_vit"]
    assert main(["list", "datasets"]) == 0
    assert {"digits", "imagenet", "cifar10", "tiny_imagenet"} <= set(capsys.readouterr().out.split())
    assert main(["list", "methods"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "finetune" in lines and "Layer Folding: PReLU from 0" in lines["layer_folding"]  # what each is
    assert main(["list", "datasets", "text_stdlib"]) == 0
    assert (
        capsys.readouterr().out.split(None, 1)[1].strip()
        == "language_modeling, headline perplexity, 64 tokens"
    )
    assert main(["list", "keys"]) == 0
    assert "lr" in capsys.readouterr().out
    assert main(["list", "keys", "layercollapse"]) == 0
    assert {"k", "lam", "threshold", "schedule"} <= {
        line.split()[0] for line in capsys.readouterr().out.splitlines()
    }


@pytest.mark.parametrize(
    "override, message",
    [
        ("model=digits_vt", "unknown model 'digits_vt'. Did you mean: digits_vit"),
        ("dataset=digit", "unknown dataset 'digit'"),
        ("method=kd_typo", "unknown method"),
        ("lerning_rate=0.1", "unknown key lerning_rate"),
        ("lamm=2", "unknown key lamm"),
        ("lam=2", "unknown key lam (lam is a parameter of method layer_folding, layercollapse)"),
        ("tracking.mdoe=offline", "unknown key tracking.mdoe (did you mean tracking.mode?)"),
        ("epochs=-1", "epochs: must be >= 0"),
        ("lr=nan", "lr: must be a finite number"),
        ("label_smoothing=nan", "label_smoothing: must be a finite number"),  # it once completed with null
        ("momentum=inf", "momentum: must be a finite number"),
        ("batch_size=big", "batch_size: expected an integer"),
        ("device=cuda:7", "device=cuda:7"),
        ("precision=fp16", "fp16 needs a CUDA device"),
    ],
)
def test_bad_config_exits_nonzero_with_a_clear_error(tmp_path, capsys, override, message):
    assert main(["run", *fast_overrides(tmp_path), override, "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert completed(tmp_path) == []


def test_missing_data_root(tmp_path, capsys):
    code = main(
        [
            "run",
            *fast_overrides(tmp_path / "out"),
            "dataset=imagefolder",
            "model=resnet18",
            f"data_root={tmp_path / 'nowhere'}",
            "--no-progress",
        ]
    )
    assert code == 2 and "nowhere does not exist" in capsys.readouterr().err
    assert completed(tmp_path / "out") == []


@pytest.mark.parametrize(
    "content, message",
    [
        (b"garbage" * 100, "truncated, corrupt or not"),
        ("truncated", "truncated, corrupt or not"),
        ("other_arch", "another architecture"),
    ],
)
def test_bad_pretrained_file(tmp_path, capsys, content, message):
    path = tmp_path / "weights.pt"
    if content == "truncated":
        torch.save(create_model("digits_mlp", 10, 1).state_dict(), path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "other_arch":
        torch.save(create_model("digits_vit", 10, 1).state_dict(), path)
    else:
        path.write_bytes(content)
    code = main(
        ["run", *fast_overrides(tmp_path / "out"), "model=digits_mlp", f"pretrained={path}", "--no-progress"]
    )
    assert code == 2 and message in capsys.readouterr().err
    failed = load_records(tmp_path / "out")
    assert [r["status"] for r in failed] == ["failed"] and failed[0]["error"]["type"] == "CheckpointError"


def test_garbage_run_checkpoint_is_reported_not_silently_restarted(tmp_path, capsys):
    cfg = make_config({}, fast_overrides(tmp_path))
    run = RunDir(tmp_path, run_id(cfg))
    run.create()
    run.checkpoint_path.write_bytes(b"\x00" * 64)
    assert main(["run", *fast_overrides(tmp_path), "--no-progress"]) == 2
    assert "delete it to restart" in capsys.readouterr().err
    assert run.result()["status"] == "failed"


def test_output_root_not_writable(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["run", *fast_overrides(blocker), "--no-progress"]) == 2
    assert "cannot write run records" in capsys.readouterr().err


def test_nan_loss_exits_nonzero(tmp_path, capsys):
    assert main(["run", *fast_overrides(tmp_path), "optimizer=sgd", "lr=10", "--no-progress"]) == 2
    assert "the loss became" in capsys.readouterr().err
    assert [r["status"] for r in load_records(tmp_path)] == ["failed"]


def test_console_entry_point_exit_code(tmp_path):
    proc = run_cli("run", "model=nope", f"output_root={tmp_path}")
    assert proc.returncode == 2 and "unknown model 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_errors_found_late_are_found_before_the_run_folder_exists(tmp_path, capsys):
    """A failed run folder used to be left behind for a config that could never run."""
    out = tmp_path / "out"
    lc = ["stage=compress", "method=layercollapse", "model=digits_vit", "k=3", "schedule=progressive"]
    assert main(["run", *fast_overrides(out, epochs=4), *lc, "--no-progress"]) == 2
    assert "epochs (4) must be a multiple of 3 (e.g. epochs=3)" in capsys.readouterr().err
    missing = ["dataset=imagefolder", "model=resnet18", f"data_root={tmp_path / 'nowhere'}"]
    assert main(["run", *fast_overrides(out), *missing, "--no-progress"]) == 2
    assert not out.exists() or not any(out.iterdir())


def test_version_print_config_and_dotted_keys(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("lcbench 0.")
    assert main(["run", *fast_overrides(tmp_path / "out", epochs=7), "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "epochs: 7" in printed and printed.startswith("# run ")
    assert not (tmp_path / "out").exists()  # nothing ran
    assert main(["list", "keys"]) == 0
    keys = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert {"tracking.mode", "pretrain.epochs"} <= keys and "tracking" not in keys


def test_exit_codes_tell_a_negative_answer_from_a_bug(capsys, monkeypatch):
    assert main(["list", "models", "no_such_*"]) == 1  # a question answered "no"
    capsys.readouterr()

    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("lcbench.cli.cmd_list", broken)
    assert main(["list", "models"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "internal error" in err


def test_a_reader_that_stops_early_is_no_internal_error():
    """`lcbench list models | head -1`: the pipe closes under the writer, which then ends quietly."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "lcbench", "list", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # gone before the command (seconds of imports) writes its first line
    assert proc.wait(timeout=120) == 0
    assert b"internal error" not in proc.stderr.read()
