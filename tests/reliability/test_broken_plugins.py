"""Third hardening round (issue 40), case 5: a plug-in package that raises on import, or that registers a
name lcbench (or another package) already has, broke every command (`list models`, `plan`, `run`) with a
traceback naming neither package. It is now left out with one warning naming its package and the error;
the rest of lcbench works."""

import os
import subprocess
import sys

from tests.conftest import REPO


def plugin(root, package: str, group: str, name: str, source: str) -> None:
    """An installed plug-in: a module and its distribution's entry point (found through sys.path)."""
    (root / f"{package}.py").write_text(source)
    dist = root / f"{package.replace('_', '-')}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1\n"
    )
    (dist / "top_level.txt").write_text(f"{package}\n")
    (dist / "entry_points.txt").write_text(f"[{group}]\n{name} = {package}\n")


def lcbench(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}"}
    return subprocess.run(
        [sys.executable, "-m", "lcbench", *args], capture_output=True, text=True, cwd=REPO, env=env
    )


def test_a_plugin_that_raises_on_import_is_named_and_left_out(tmp_path):
    plugin(tmp_path, "broken_models", "lcbench.models", "broken", "raise ImportError('needs libfoo.so')\n")
    plugin(
        tmp_path,
        "toy_methods",
        "lcbench.methods",
        "toy",
        "from lcbench.methods import METHODS, Method\n\n@METHODS.register('toy')\nclass Toy(Method):\n"
        "    title = 'Toy'\n",
    )
    done = lcbench(tmp_path, "list", "models")
    assert done.returncode == 0, done.stderr
    assert "digits_mlp" in done.stdout and "Traceback" not in done.stderr
    (warning,) = [line for line in done.stderr.splitlines() if "broken" in line]
    assert "plug-in 'broken' of package broken-models 0.1" in warning
    assert "is left out: ImportError: needs libfoo.so" in warning
    done = lcbench(tmp_path, "list", "methods")
    assert done.returncode == 0 and "toy" in done.stdout  # the working plug-in still loads


def test_a_plugin_registering_a_taken_name_names_both_packages(tmp_path):
    plugin(
        tmp_path,
        "clash_methods",
        "lcbench.methods",
        "clash",
        "from lcbench.methods import METHODS, Method\n\n@METHODS.register('layercollapse')\n"
        "class Mine(Method):\n    title = 'Mine'\n",
    )
    done = lcbench(tmp_path, "list", "methods")
    assert done.returncode == 0, done.stderr
    assert "layercollapse" in done.stdout and "Traceback" not in done.stderr
    assert (
        "method 'layercollapse' is registered twice: by lcbench and by package clash-methods "
        "(module clash_methods)" in done.stderr
    )
    assert "plug-in 'clash' of package clash-methods 0.1" in done.stderr
