"""Data identity: runs are told apart by the data they read, not by the folder it lies in."""

import shutil

import pytest

from lcbench.cli import main
from lcbench.core.errors import DataError
from lcbench.training.identity import identity, run_id
from lcbench.training.pipeline import check_data
from lcbench.training.resolve import make_config
from lcbench.zoo import fingerprint
from tests.conftest import fast_overrides, write_image_folder

RESNET = ["stage=pretrain", "dataset=imagefolder", "model=resnet18", "img_size=16"]


def _cfg(out, root, *extra):
    return make_config({}, [*RESNET, *fast_overrides(out, epochs=1), f"data_root={root}", *extra])


def test_a_subset_folder_is_other_data_and_a_moved_copy_is_the_same(tmp_path):
    full = write_image_folder(tmp_path / "full", per_class=6)
    subset = write_image_folder(tmp_path / "subset", per_class=2)
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(full, moved)
    out = tmp_path / "out"
    on_subset, on_full, on_copy = _cfg(out, subset), _cfg(out, full), _cfg(out, moved)
    assert on_subset.data_fingerprint.startswith("content:")  # a small set: its contents are hashed
    assert run_id(on_subset) != run_id(on_full)  # never taken for each other
    assert run_id(on_copy) == run_id(on_full)  # outputs move between machines with their data
    assert "data_root" not in identity(on_full)


def test_a_run_planned_on_a_subset_is_not_completed_for_the_full_folder(tmp_path, capsys):
    full = write_image_folder(tmp_path / "full", per_class=6)
    subset = write_image_folder(tmp_path / "subset", per_class=2)
    spec = tmp_path / "s.yaml"
    base = ", ".join(o.replace("=", ": ") for o in [*RESNET, *fast_overrides(tmp_path / "out", epochs=1)])
    spec.write_text(f"base: {{{base}}}\n")
    assert main(["launch", str(spec), f"data_root={subset}", "--executor", "local", "--wait"]) == 0
    capsys.readouterr()
    assert main(["status", str(spec), f"data_root={subset}"]) == 0
    assert "completed" in capsys.readouterr().out
    assert main(["status", str(spec), f"data_root={full}"]) == 0
    shown = capsys.readouterr().out
    assert "missing" in shown and "completed" not in shown.split("\n\n")[0]


def test_data_changed_after_planning_is_refused_before_the_run_reads_it(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    cfg = _cfg(tmp_path / "out", root)
    check_data(cfg)  # unchanged: fine
    write_image_folder(root, per_class=5)  # one more image per class
    with pytest.raises(DataError, match="not the data this run was planned with"):
        check_data(cfg)


def test_runs_made_before_fingerprints_keep_their_ids_when_not_checked(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    unchecked = _cfg(tmp_path / "out", root, "data_fingerprint=")
    checked = _cfg(tmp_path / "out", root)
    assert "data_fingerprint" not in identity(unchecked)  # the id it had before fingerprints existed
    assert run_id(unchecked) != run_id(checked)


def test_packaged_data_sets_have_no_fingerprint_and_keep_their_ids():
    cfg = make_config({}, ["dataset=digits", "model=digits_mlp"])
    assert cfg.data_fingerprint == "" and "data_fingerprint" not in identity(cfg)
    assert fingerprint.data_fingerprint("text_stdlib", "anywhere") == ""


def test_map_caches_written_beside_the_data_do_not_change_it(tmp_path):
    folder = tmp_path / "wikitext-103-raw-v1"
    folder.mkdir()
    (folder / "wiki.train.raw").write_text("a b c\n")
    (folder / "wiki.test.raw").write_text("d e\n")
    before = fingerprint.data_fingerprint("wikitext103", str(tmp_path))
    (folder / "cache-0123.arrow").write_bytes(b"x" * 10)
    fingerprint.data_fingerprint.cache_clear()
    assert fingerprint.data_fingerprint("wikitext103", str(tmp_path)) == before
    assert fingerprint.data_fingerprint("wikitext2", str(tmp_path)) == fingerprint.ABSENT
