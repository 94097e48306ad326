"""Third hardening round (issue 40), cases 1 and 2: what `report` and `export` write outside a run folder.

1. A figure was written through a fixed temp name (`.<name>.tmp.png`) by matplotlib, which follows links:
   a link planted at that name made `report` overwrite any file its user could write. Figures now go
   through exclusively created random names, and `--out` must be the user's own folder.
2. `export RUN --out <another run | the run itself | the output root> --force` deleted that folder. An
   `--out` that could lose data is now refused before anything is read or written, and `--force` replaces
   only an earlier export (it holds `.lcbench-export`).
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from lcbench.analysis.plots import save  # noqa: E402
from lcbench.cli import main  # noqa: E402
from tests.measurement.test_export import fake_run  # noqa: E402

SPEC = (
    "name: empty\nbase: {dataset: digits, epochs: 1}\ngrid: {model: [digits_mlp]}\nseeds: [0]\nvariants: {}\n"
)


def test_a_link_planted_at_any_figure_temp_name_is_never_followed(tmp_path):
    """The old fixed temp names (and the final names' neighbours) planted as links to a file of ours: the
    figures are written, the victim keeps its bytes, no temp file is left."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "report"
    out.mkdir()
    for name in ("fig.png", "fig.pdf"):
        os.symlink(victim, out / f".{name}.tmp{Path(name).suffix}")  # the names lcbench used to write
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    written = save(fig, out / "fig")
    assert victim.read_text() == "precious\n"
    assert [p.name for p in written] == ["fig.png", "fig.pdf"] and all(
        p.stat().st_size > 1000 for p in written
    )
    assert sorted(p.name for p in out.iterdir()) == [
        ".fig.pdf.tmp.pdf",
        ".fig.png.tmp.png",
        "fig.pdf",
        "fig.png",
    ]


def test_a_report_folder_another_user_made_is_refused_before_anything_is_written(
    tmp_path, capsys, second_user
):
    """A real second account makes the `--out` folder first in a shared (1777) folder and plants a link in
    it: `report` refuses it in one line (exit 2) and writes nothing into it or through the link."""
    uid, as_second_user = second_user
    shared = Path(tempfile.mkdtemp(prefix="lcbench-shared-"))
    os.chmod(shared, 0o1777)
    try:
        victim = tmp_path / "ours.txt"
        victim.write_text("precious\n")
        out = shared / "results"
        as_second_user(
            f"mkdir {out} && ln -s {victim} {out}/README.md && ln -s {victim} {out}/.runs.csv.x.tmp"
        )
        spec = tmp_path / "empty.yaml"
        spec.write_text(SPEC)
        assert main(["report", str(spec), f"output_root={tmp_path / 'runs'}", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert (
            f"report folder {out} is owned by uid {uid}, not by you" in err and "choose another --out" in err
        )
        assert victim.read_text() == "precious\n" and sorted(os.listdir(out)) == [
            ".runs.csv.x.tmp",
            "README.md",
        ]
    finally:
        shutil.rmtree(shared)


def test_a_report_folder_every_user_can_write_or_a_link_is_refused(tmp_path, capsys):
    spec = tmp_path / "empty.yaml"
    spec.write_text(SPEC)
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    os.chmod(open_to_all, 0o777)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "linked")
    for out, why in ((open_to_all, "is writable by every user"), (tmp_path / "linked", "is a symbolic link")):
        assert main(["report", str(spec), f"output_root={tmp_path / 'runs'}", "--out", str(out)]) == 2
        assert why in capsys.readouterr().err
    assert not os.listdir(open_to_all) and not os.listdir(tmp_path / "elsewhere")


@pytest.fixture
def root_with_runs(tmp_path):
    root = tmp_path / "outputs"
    run = fake_run(root, "digits_mlp")
    other = fake_run(root, "digits_vit")
    (root / ".sweeps").mkdir()
    (root / ".sweeps" / "keep.txt").write_text("a sweep's records\n")
    return root, run, other


@pytest.mark.parametrize(
    "where, why",
    [
        (lambda root, run, other: run, "lies inside the output root"),
        (lambda root, run, other: other, "lies inside the output root"),
        (lambda root, run, other: root, "is the output root"),
        (lambda root, run, other: root.parent, "contains the output root"),
        (lambda root, run, other: other / "export" / "safetensors", "lies inside the output root"),
    ],
    ids=["the-run-itself", "another-run", "the-output-root", "its-parent", "another-runs-export"],
)
def test_an_export_onto_a_run_or_the_output_root_is_refused_with_or_without_force(
    root_with_runs, capsys, where, why
):
    root, run, other = root_with_runs
    out = where(root, run, other)
    before = sorted(str(p.relative_to(root.parent)) for p in root.parent.rglob("*"))
    for force in ([], ["--force"]):
        assert main(["export", str(run), "--format", "safetensors", "--out", str(out), *force]) == 2
        err = capsys.readouterr().err
        assert why in err and len(err.strip().splitlines()) == 1
    assert sorted(str(p.relative_to(root.parent)) for p in root.parent.rglob("*")) == before  # nothing lost


def test_force_replaces_only_an_earlier_export_never_a_folder_a_file_or_a_link(
    root_with_runs, tmp_path, capsys
):
    root, run, _ = root_with_runs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("months of work\n")
    afile = tmp_path / "afile"
    afile.write_text("a file\n")
    os.symlink(mine, tmp_path / "link")
    inside_a_run = tmp_path / "copied-run"
    inside_a_run.mkdir()
    (inside_a_run / "result.json").write_text(json.dumps({"status": "completed"}))
    cases = [
        (mine, "is not an earlier lcbench export (no .lcbench-export in it)"),
        (afile, "is a file, not an export folder"),
        (tmp_path / "link", "is a symbolic link"),
        (inside_a_run / "export", "lies inside run folder"),
    ]
    for out, why in cases:
        assert main(["export", str(run), "--format", "safetensors", "--out", str(out), "--force"]) == 2
        assert why in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "months of work\n" and afile.read_text() == "a file\n"
    fresh = tmp_path / "exports" / "mlp"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(fresh)]) == 0
    assert json.loads((fresh / ".lcbench-export").read_text())["run"] == run.name
    assert (
        main(["export", str(run), "--format", "safetensors", "--out", str(fresh), "--force"]) == 0
    )  # its own
    assert (
        main(["export", str(run), "--format", "safetensors"]) == 0
    )  # the default place, in the run's folder
    assert main(["export", str(run), "--format", "safetensors", "--force"]) == 0


def test_an_out_below_a_file_or_a_dangling_link_is_one_line(root_with_runs, tmp_path, capsys):
    """`--out` under a file crashed with NotADirectoryError (exit 70)."""
    _, run, _ = root_with_runs
    afile = tmp_path / "afile"
    afile.write_text("a file\n")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    for out, why in [
        (afile / "sub", f"{afile} is not a folder"),
        (tmp_path / "dangling", "is a symbolic link"),
    ]:
        for force in ([], ["--force"]):
            assert main(["export", str(run), "--format", "safetensors", "--out", str(out), *force]) == 2
            err = capsys.readouterr().err
            assert why in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert afile.read_text() == "a file\n" and not (tmp_path / "nowhere").exists()


@pytest.mark.serial
def test_a_killed_export_leaves_a_staging_folder_the_next_export_removes(root_with_runs, tmp_path):
    """A SIGKILLed `export --force` left its `.<name>.*` staging folder forever."""
    import subprocess
    import sys

    _, run, _ = root_with_runs
    out = tmp_path / "exports" / "mlp"
    killed = (
        "import os, signal, sys\n"
        "import lcbench.measurement.export as export\n"
        "export._agreement = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from lcbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = ["export", str(run), "--format", "safetensors", "--out", str(out)]
    assert subprocess.run([sys.executable, "-c", killed, *args]).returncode == -9
    (left,) = [p.name for p in out.parent.iterdir()]
    assert left.startswith(".mlp.")
    live = out.parent / ".mlp.live"  # another export's, in progress: its lock is held
    live.mkdir()
    holder = os.open(live / ".lcbench-staging-lock", os.O_WRONLY | os.O_CREAT, 0o600)
    import fcntl

    fcntl.flock(holder, fcntl.LOCK_EX)
    assert main(args) == 0
    os.close(holder)
    assert sorted(p.name for p in out.parent.iterdir()) == [".mlp.live", "mlp"]
    assert sorted(p.name for p in out.iterdir()) == [".lcbench-export", "lcbench.json", "model.safetensors"]


# Case 4: a report is published whole, by one writer at a time.


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != ".lcbench-lock"}


@pytest.mark.serial
def test_a_report_killed_midway_leaves_the_previous_report_as_it_was(tmp_path, capsys):
    """SIGKILLed after its tables, a report left new tables under the old README ("3 missing" beside a
    runs.csv of completed runs). Now the folder keeps the previous report byte for byte, and the next
    report removes what the killed one left."""
    import subprocess
    import sys

    from tests.execution.test_runner import digits_sweep

    spec = digits_sweep(tmp_path, {"ft": {"method": "finetune"}})
    out = tmp_path / "report"
    assert main(["report", str(spec), "--out", str(out)]) == 0
    before = _snapshot(out)
    assert "2 missing" in before["README.md"].decode()
    assert main(["launch", str(spec), "--executor", "local", "--wait", "--poll", "0.2"]) == 0
    killed = (
        "import os, signal, sys\n"
        "import lcbench.analysis.report as report\n"
        "report._plots = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from lcbench.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run([sys.executable, "-c", killed, "report", str(spec), "--out", str(out)])
    assert done.returncode == -9
    assert _snapshot(out) == before  # nothing of the killed report reached the folder
    assert main(["report", str(spec), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "2 completed" in readme and (out / "runs.csv").read_text().count("completed") == 2
    assert not [p.name for p in out.iterdir() if "staging" in p.name or p.name.endswith(".tmp")]


def test_a_second_report_into_one_folder_waits_for_the_first(tmp_path, capsys):
    """Two reports at once: one exited 70 on the shared temp name and the folder mixed both."""
    import fcntl
    import threading

    spec = tmp_path / "empty.yaml"
    spec.write_text(SPEC)
    out = tmp_path / "report"
    out.mkdir()
    holder = os.open(out / ".lcbench-lock", os.O_WRONLY | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a report in progress
    codes = []
    second = threading.Thread(
        target=lambda: codes.append(main(["report", str(spec), f"output_root={tmp_path}", "--out", str(out)]))
    )
    second.start()
    second.join(timeout=5)
    assert second.is_alive() and not (out / "README.md").exists()  # waiting, nothing written
    os.close(holder)
    second.join(timeout=60)
    assert codes == [0] and (out / "README.md").exists()
    assert f"another report is writing into {out}: waiting for it" in capsys.readouterr().err


def test_a_report_replaces_its_own_files_and_no_one_else_s(tmp_path):
    """The files an earlier report made and this one does not are removed (a figure no longer drawn);
    a file the user put in the folder is kept."""
    from lcbench.core.staging import MANIFEST, staged_folder

    out = tmp_path / "report"
    with staged_folder(out, "report folder", "fix") as stage:
        for name in ("README.md", "old.png", "table.csv"):
            (stage / name).write_text(f"first {name}\n")
    (out / "notes.txt").write_text("mine\n")
    with staged_folder(out, "report folder", "fix") as stage:
        for name in ("README.md", "table.csv"):
            (stage / name).write_text(f"second {name}\n")
    assert sorted(p.name for p in out.iterdir()) == [
        ".lcbench-lock",
        MANIFEST,
        "README.md",
        "notes.txt",
        "table.csv",
    ]
    assert (out / "table.csv").read_text() == "second table.csv\n"
    assert json.loads((out / MANIFEST).read_text()) == {"files": ["README.md", "table.csv"]}
