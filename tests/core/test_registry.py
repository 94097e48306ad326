import pytest

from lcbench.core.errors import ConfigError
from lcbench.core.registry import Registry
from lcbench.methods import METHODS, method_order
from lcbench.zoo.data import DATASETS
from lcbench.zoo.models import MODELS


def test_register_get_and_list():
    reg = Registry("widget")

    @reg.register()
    def alpha():
        return 1

    reg.register("beta")(len)
    assert reg.get("alpha") is alpha and reg.get("beta") is len
    assert reg.names() == ["alpha", "beta"]
    assert reg.names("a*") == ["alpha"]


def test_registering_twice_is_an_error():
    reg = Registry("widget")
    reg.register("x")(len)
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("x")(len)


def test_unknown_name_lists_close_matches():
    with pytest.raises(ConfigError, match="digits_vit") as e:
        MODELS.get("digits_vt")
    assert "unknown model" in str(e.value)
    with pytest.raises(ConfigError, match="cifar10"):
        DATASETS.get("cifar01")
    with pytest.raises(ConfigError, match="unknown method"):
        METHODS.get("no_such_method")


def test_timm_models_resolve_through_the_fallback():
    assert MODELS.get("vit_tiny_patch16_224").source == "timm"
    assert MODELS.get("vgg11_bn").source == "torchvision"  # torchvision's Linear classifier, not timm's
    assert "vit_base_patch16_224" in MODELS.names("vit_base_patch16_*", include_fallbacks=True)
    assert set(MODELS.names("digits_*")) == {"digits_mlp", "digits_vit", "digits_mixer", "digits_vgg"}


def test_methods_are_discovered_from_their_packages_and_entry_points(tmp_path):
    """Nothing lists the methods: a fresh process finds every module of lcbench.methods and lcbench.baselines,
    and a method another package declares in the `lcbench.methods` entry-point group."""
    import subprocess
    import sys

    from tests.conftest import REPO

    package = tmp_path / "toy_methods"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from lcbench.methods import METHODS, Method\n\n\n"
        "@METHODS.register('toy')\nclass Toy(Method):\n    title = 'Toy'\n"
    )
    dist = tmp_path / "toy_methods-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-methods\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[lcbench.methods]\ntoy = toy_methods\n")
    script = "from lcbench.methods import method_order; print(' '.join(method_order()))"
    found = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": f"{REPO}:{tmp_path}"},
        check=True,
    ).stdout.split()
    assert found[-1] == "toy"  # the entry point, after the packages' own methods
    assert found[:-1] == method_order()  # this process imported some method modules first: same order
    assert {"layercollapse", "kd", "layer_fusion", "magnitude_pruning", "finetune"} <= set(found)
