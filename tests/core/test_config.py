import dataclasses

import pytest

from lcbench.core.config import load_yaml, parse_override, pretrain_config
from lcbench.core.errors import ConfigError
from lcbench.training.identity import run_id
from lcbench.training.resolve import make_config
from tests.conftest import REPO


def test_defaults_validate_and_overrides_coerce_types():
    cfg = make_config(
        {}, ["epochs=5", "lr=1e-3", "model=digits_vit", "channels_last=true", "tracking.tags=[a,b]"]
    )
    assert cfg.epochs == 5 and isinstance(cfg.epochs, int)
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.channels_last is True and cfg.tracking.tags == ["a", "b"]
    assert make_config({}, ["lr=1"]).lr == 1.0  # an int where a float is expected


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: digits_vit\nepochs: 3\nlr: 1e-2\n")
    cfg = make_config(load_yaml(path), ["epochs=4"])
    assert (cfg.model, cfg.epochs, cfg.lr) == ("digits_vit", 4, 0.01)


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=-1", "epochs: must be >= 0"),
        ("epochs=2.5", "epochs: expected an integer"),
        ("lr=fast", "lr: expected a number"),
        ("lr=0", "lr: must be > 0"),
        ("optimizer=adam", "optimizer: 'adam' is not one of sgd, adamw"),
        ("no_such_key=1", "unknown key no_such_key"),
        ("tracking.colour=red", "unknown key tracking.colour"),
        ("model=resnet_nonexistent", "unknown model"),
        ("dataset=mnist", "unknown dataset"),
        ("method=layer_colapse", "unknown method"),
        ("epochs", "not of the form key=value"),
        ("channels_last=maybe", "expected true or false"),
    ],
)
def test_bad_values_name_the_key_and_the_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        make_config({}, [override])


def test_unknown_key_names_close_keys_and_where_to_list_them_all():
    with pytest.raises(ConfigError) as e:
        make_config({}, ["weight_decy=0.1"])
    message = str(e.value)
    assert "unknown key weight_decy (did you mean weight_decay?)" in message
    assert "method none (it has none); `lcbench list keys` lists the run config keys" in message
    assert "warmup_epochs" not in message  # not every run key on one line


def test_stage_and_method_must_agree():
    with pytest.raises(ConfigError, match="takes no method"):
        make_config({}, ["stage=pretrain", "method=finetune"])
    with pytest.raises(ConfigError, match="needs a method"):
        make_config({}, ["stage=compress"])


def test_run_id_is_a_stable_content_hash():
    a, b = make_config({}, ["epochs=3"]), make_config({"epochs": 3})
    assert run_id(a) == run_id(b) and len(run_id(a)) == 12
    assert run_id(make_config({}, ["epochs=3", "seed=1"])) != run_id(a)
    assert run_id(make_config({}, ["epochs=3", "lr=0.01"])) != run_id(a)
    # where the run executes is not part of what it computes
    assert run_id(
        make_config({}, ["epochs=3", "output_root=/elsewhere", "threads=7", "device=cpu"])
    ) == run_id(a)


def test_pretrain_config_of_a_compress_run_matches_a_direct_pretrain_run():
    compress = make_config(
        {}, ["stage=compress", "method=finetune", "epochs=2", "pretrain.epochs=7", "model=digits_vit"]
    )
    derived = pretrain_config(compress)
    direct = make_config({}, ["stage=pretrain", "epochs=7", "model=digits_vit"])
    assert derived.stage == "pretrain" and derived.epochs == 7
    assert run_id(derived) == run_id(direct)
    # the compress run's own training settings never leak into its pretrain run
    other = make_config(
        {},
        [
            "stage=compress",
            "method=finetune",
            "epochs=3",
            "pretrain.epochs=7",
            "momentum=0.5",
            "model=digits_vit",
            "lr_cycle_epochs=3",
            "grad_clip=1",
            "optimizer=sgd",
            "seed=4",
        ],
    )
    assert run_id(pretrain_config(other)) == run_id(direct)


def test_method_parameters_are_bare_keys_validated_by_the_method(monkeypatch):
    from lcbench.methods import METHODS, Method

    @dataclasses.dataclass
    class DummyParams:
        k: int = 1

    class Dummy(Method):
        Params = DummyParams

    METHODS.names()  # discovered first, then the dummy added for this test only (removed after it)
    monkeypatch.setitem(METHODS._items, "dummy_for_config_test", Dummy)
    cfg = make_config({}, ["stage=compress", "method=dummy_for_config_test", "k=3"])
    assert cfg.method_args == {"k": 3}
    with pytest.raises(ConfigError, match="k: expected an integer"):
        make_config({}, ["stage=compress", "method=dummy_for_config_test", "k=x"])


def test_parse_override_reads_yaml_scalars():
    assert parse_override("a=1") == ("a", 1)
    assert parse_override("a=[1, 2]") == ("a", [1, 2])
    assert parse_override("a=") == ("a", "")


def test_fields_added_later_keep_every_published_run_id():
    """The committed digits results were produced before `decode` (and nproc) existed: planning the same
    sweep today gives the same run ids; a config that sets `decode` away from its default is another run."""
    import csv

    from lcbench.execution.sweep import plan_sweep

    repo = REPO
    with open(repo / "results" / "digits" / "runs.csv") as f:
        published = {row["run_id"] for row in csv.DictReader(f)}
    planned = {run.run_id for run in plan_sweep(repo / "runs" / "digits.yaml").runs}
    assert planned == published
    cfg = make_config({}, [])
    assert run_id(dataclasses.replace(cfg, nproc=2)) == run_id(cfg)  # where it runs, not what it computes
    assert run_id(dataclasses.replace(cfg, decode="device")) != run_id(cfg)
    assert run_id(dataclasses.replace(cfg, augment="none")) != run_id(cfg)


def test_epoch_counts_are_bounded_like_threads_and_batch_sizes():
    """`epochs=1000000000000` was accepted (an ETA of 38 billion hours)."""
    from lcbench.core.config import MAX_EPOCHS

    for key in ("epochs", "pretrain.epochs", "warmup_epochs", "lr_cycle_epochs", "step_epochs"):
        with pytest.raises(ConfigError, match=f"{key}: must be <= {MAX_EPOCHS}, got 1000000000000"):
            make_config({}, [f"{key}=1000000000000"])
    assert make_config({}, [f"epochs={MAX_EPOCHS}"]).epochs == MAX_EPOCHS


def test_a_sequence_longer_than_the_models_positions_is_refused_before_it_starts():
    """seq_len=512 on a 128-position model started, then failed in the position embedding (exit 70)."""
    with pytest.raises(
        ConfigError, match="seq_len=512 is longer than text_gpt2's 128 positions: set seq_len=128"
    ):
        make_config({}, ["model=text_gpt2", "dataset=text_stdlib", "seq_len=512"])
    with pytest.raises(ConfigError, match="longer than bert-tiny's"):
        make_config({}, ["model=bert-tiny", "dataset=glue_sst2", "seq_len=100000"])
    assert make_config({}, ["model=text_gpt2", "dataset=text_stdlib", "seq_len=128"]).seq_len == 128
