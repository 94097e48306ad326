"""Executing one run: pretrain (train or load the original model) or compress (a method from that model).

`execute(cfg)` owns the run folder: it writes config.yaml and env.json, trains through the one Trainer,
measures the original and the final model, saves the final model, and writes result.json last (status
`completed`, or `failed` with the error). A completed run is returned as recorded unless forced.
"""

from __future__ import annotations

import copy
import io
import logging
import sys
import time
import traceback
from pathlib import Path

import torch
from timm.data import resolve_data_config
from torch import nn

from ..core.config import RunConfig, pretrain_config, replicate_seed, to_dict, to_yaml
from ..core.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DependencyError,
    LcbenchError,
    RunLockedError,
    RunStopped,
    first_line,
)
from ..core.integrity import describe_file, read_verified
from ..core.record import IN_RUN_TIMINGS, RunRecord
from ..core.store import (
    RunDir,
    UnsafeRunFolder,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_own_folder,
    live_status,
)
from ..methods import METHODS, Method, RunContext
from ..zoo import fingerprint, measure, text_models
from ..zoo.collapse import MATCH_TOLERANCE
from ..zoo.data import DATASETS, DataSplits, DataTransforms, load_data, model_img_size
from ..zoo.loaders import make_loader
from ..zoo.models import create_model, last_linear
from . import distributed, examples
from .callbacks import LiveControl, Replay
from .evaluation import AMP_DTYPES
from .identity import run_id
from .phases import Phases
from .provenance import environment
from .resolve import method_params
from .rng import seed_everything
from .tasks import TASKS
from .tracking import Tracker
from .train import Trainer

log = logging.getLogger("lcbench")
MODEL_FORMAT = 1


# --------------------------------------------------------------------------------------------------------
# Runtime set-up


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={name}: CUDA is not available on this machine; use device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device={name}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def setup_runtime(cfg: RunConfig) -> torch.device:
    device = resolve_device(cfg.device)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision=fp16 needs a CUDA device; use precision=fp32 or bf16 on CPU")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    return device


def data_transforms(model: nn.Module, img_size: int | None) -> DataTransforms:
    """The model's own data config (timm's resolve_data_config; ImageNet defaults otherwise)."""

    dc = resolve_data_config({}, model=model)
    return DataTransforms(
        img_size=img_size or dc["input_size"][-1],
        mean=tuple(dc["mean"]),
        std=tuple(dc["std"]),
        crop_pct=dc.get("crop_pct", 0.875),
        interpolation=dc.get("interpolation", "bilinear"),
    )


# --------------------------------------------------------------------------------------------------------
# Final models: an ordinary state_dict plus what rebuilds the architecture


def save_model(
    path: Path, model: nn.Module, cfg: RunConfig, num_classes: int, in_chans: int, method: Method
) -> None:
    atomic_torch_save(
        path,
        {
            "format": MODEL_FORMAT,
            "run_id": run_id(cfg),  # binds the file to its run (a copied file is refused where it lands)
            "model": method.final_model_name(),
            "num_classes": num_classes,
            "in_chans": in_chans,
            "img_size": model_img_size(cfg),
            "method": cfg.method,
            "structure": method.structure(),
            "state_dict": model.state_dict(),
        },
    )


def read_model_file(path: str | Path, data: bytes | None = None) -> dict:
    """The contents of an lcbench model file (architecture, method, structure, state_dict); from `data`,
    its bytes already read and verified, where given."""
    path = Path(path)
    try:
        source = io.BytesIO(data) if data is not None else path
        saved = torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise CheckpointError(f"model file {path} does not exist") from e
    except Exception as e:  # unpickling errors of every kind mean the same thing here
        raise CheckpointError(
            f"cannot read the model file {path}: truncated or not an lcbench model ({first_line(e)})"
        ) from e
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise CheckpointError(f"{path} is not an lcbench model file (format {MODEL_FORMAT})")
    return saved


def build_model(saved: dict, path: str | Path = "") -> nn.Module:
    """Rebuild a model from `read_model_file`'s contents: zoo architecture, recorded structure, weights."""
    model = create_model(saved["model"], saved["num_classes"], saved["in_chans"], saved["img_size"])
    model = METHODS.get(saved["method"]).rebuild(model, saved["structure"])
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the rebuilt {saved['model']}: {e}") from e
    return model


def load_model(path: str | Path, expected_run: str | None = None, data: bytes | None = None) -> nn.Module:
    """Rebuild a saved final model: the zoo architecture, the method's recorded structure, the weights.
    With `expected_run`, a file written by another run is refused (both runs named)."""
    saved = read_model_file(path, data)
    written_by = saved.get("run_id")
    if expected_run is not None and written_by is not None and written_by != expected_run:
        raise CheckpointError(
            f"{path} was written by run {written_by}, not by run {expected_run} whose folder holds it; "
            f"remove it and run {expected_run} again (`lcbench launch SPEC --only-failed` or `lcbench run`)"
        )
    return build_model(saved, path)


# --------------------------------------------------------------------------------------------------------
# Executing a run


# Set by the SLURM job's checkpoint hook just before submitit requeues the job and exits: the exit that
# follows is a preemption, not a failure, so no failed record is written and the next attempt resumes.
_preempted = False
_active_tracker: Tracker | None = None


def mark_preempted() -> None:
    """Called on the scheduler's signal: close the W&B run now, since the requeue kills every process of
    the job (W&B's writer included, losing what it had not flushed) as soon as this returns."""
    global _preempted
    _preempted = True
    if _active_tracker is not None:
        _active_tracker.finish(exit_code=1, preempted=True)


def execute(
    cfg: RunConfig,
    force: bool = False,
    progress_bar: bool = True,
    require_pretrained: bool = False,
    replay_changes: list[dict] | None = None,
) -> dict:
    """Run `cfg` in its own folder and return its result record (re-used when already completed).

    A compress run whose pretrain run is missing executes it first, unless `require_pretrained` (the
    sweep runners: the pretrain is its own job) makes that an error. `replay_changes` are live-tuning
    changes recorded by another run, applied at their recorded steps (`lcbench replay`).
    """
    if not require_pretrained:  # started by hand: a bad config fails before its run folder exists
        check_data(cfg)  # (a sweep's job records it as a failed run instead, for `status` to show)
    processes = cfg.nproc * cfg.nodes  # (one process resolves its device inside, where a bad one is recorded)
    device = resolve_device(cfg.device) if processes > 1 else torch.device("cpu")
    with distributed.joined(processes, device) as world, distributed.naming_a_lost_rank():
        result = _attempt(cfg, world, force, progress_bar, require_pretrained, replay_changes)
        distributed.barrier()  # (rank 0's records are on disk before any rank goes on)
    return result if world.main else RunDir(cfg.output_root, result["run_id"]).result()


def _attempt(
    cfg: RunConfig,
    world: distributed.World,
    force: bool,
    progress_bar: bool,
    require_pretrained: bool,
    replay_changes: list[dict] | None,
) -> dict:
    """One attempt at the run on this process (rank 0 of a DDP run writes its folder; the others train
    and evaluate their share beside it and write nothing)."""
    rid = run_id(cfg)
    run = RunDir(cfg.output_root, rid, writes=world.main)
    if world.main:
        run.create()
        run.lock()
    tracker = None
    try:
        with distributed.naming_a_lost_rank():  # (so that the failed record says it too)
            if run.is_completed() and not force:
                log.info("run %s is already completed: %s", rid, run.path)
                return run.result()
            if world.main:
                _clear_for_a_new_attempt(run, cfg, force)
            # A missing pretrain run executes first, with its own W&B run, before this run's W&B run opens
            # (W&B keeps one run per process open: opening the pretrain's would finish this one).
            pre_run = (
                ensure_pretrained(cfg, progress_bar, require_pretrained) if cfg.stage == "compress" else None
            )
            device = distributed.rank_device(setup_runtime(cfg))
            if not world.main:
                return {
                    "run_id": rid,
                    **_execute(cfg, run, device, progress_bar, None, pre_run, replay_changes),
                }
            atomic_write_json(run.env_path, environment(device))
            tracker = Tracker(cfg, rid, str(run.path), replay=replay_changes is not None)
            _set_active_tracker(tracker)
            return _completed(
                run, tracker, _execute(cfg, run, device, progress_bar, tracker, pre_run, replay_changes)
            )
    except RunStopped as e:  # asked to stop: a resumable checkpoint exists; running it again resumes
        return _stopped(run, cfg, str(e), world.main, tracker, exit_code=0)
    except SystemExit:
        if not _preempted and world.main:
            _write_failure(run, rid, cfg)
        else:  # preempted: the requeued job resumes from the last checkpoint under the same W&B id
            if tracker:
                tracker.finish(exit_code=1, preempted=True)
        raise
    except KeyboardInterrupt:  # SIGINT: `lcbench cancel` (or Ctrl-C); the same command resumes it
        _stopped(run, cfg, INTERRUPTED, world.main, tracker, exit_code=1)
        raise
    except BaseException as e:
        if world.main and isinstance(e, OSError) and not run.path.is_dir():
            raise _folder_removed(run, tracker) from None
        if world.main:
            _write_failure(run, rid, cfg)
        if tracker:
            tracker.finish(exit_code=1)
        raise
    finally:
        _set_active_tracker(None)
        run.release()


INTERRUPTED = (
    "interrupted by SIGINT (`lcbench cancel` or Ctrl-C); running it again resumes from its last checkpoint"
)


def _stopped(
    run: RunDir, cfg: RunConfig, reason: str, main: bool, tracker: Tracker | None, exit_code: int
) -> dict:
    """The `stopped` record (`launch --only-failed` and the same command resume the run), written by
    rank 0; W&B told."""
    record = {"run_id": run.run_id, "status": "stopped", "config": to_dict(cfg), "reason": reason}
    if main:
        try:
            atomic_write_json(run.result_path, record)
        except OSError as e:
            log.error("%s: the stopped record could not be written (%s)", run.run_id, e)
    if tracker:
        tracker.finish(exit_code=exit_code)
    return record


def _folder_removed(run: RunDir, tracker: Tracker | None) -> LcbenchError:
    """The error of a run whose folder was removed while it ran (its W&B run closed as failed)."""
    if tracker:
        try:
            tracker.finish(exit_code=1)
        except OSError:
            pass  # (its files lived in the removed folder)
    return LcbenchError(
        f"run {run.run_id}: its folder {run.path} was removed while it ran, so nothing more can be recorded; "
        "run it again to start over"
    )


def _completed(run: RunDir, tracker: Tracker, result: dict) -> dict:
    """The completed record, with the model file's size and SHA-256, written last; W&B told and closed."""
    result = {"run_id": run.run_id, "status": "completed", "wandb_id": tracker.wandb_id, **result}
    result["model_file"] = describe_file(run.model_path)
    atomic_write_json(run.result_path, result)
    summary = {k: v for k, v in RunRecord(result).summary().items() if k not in IN_RUN_TIMINGS}
    tracker.summary({**summary, "pretrain_run_id": result.get("pretrain_run_id")})
    tracker.finish()
    return result


def _clear_for_a_new_attempt(run: RunDir, cfg: RunConfig, force: bool) -> None:
    """Remove an earlier attempt's failed record (and with `force` its checkpoint, model and metrics: a
    restart from scratch); write the config."""
    if force:
        for path in (run.checkpoint_path, run.model_path, run.metrics_path, run.path / examples.FILE):
            path.unlink(missing_ok=True)
    run.result_path.unlink(missing_ok=True)
    atomic_write_text(run.config_path, to_yaml(cfg))


def check_data(cfg: RunConfig) -> None:
    """A data set that must be on disk and is not: its "where to get it" error, raised now; files other
    than those the run was planned with (its data fingerprint): refused now."""
    spec = DATASETS.get(cfg.dataset)
    root = Path(cfg.data_root).expanduser()
    if spec.natural_images and not root.exists() and not cfg.download:
        load_data(cfg.dataset, root, None)
    if spec.locate is not None:
        spec.locate(root, cfg.download)
    fingerprint.check_unchanged(cfg.dataset, cfg.data_root, cfg.data_fingerprint)


def _set_active_tracker(tracker: Tracker | None) -> None:
    global _active_tracker
    _active_tracker = tracker


def _write_failure(run: RunDir, rid: str, cfg: RunConfig) -> None:
    """result.json with status `failed`, the error and its traceback (called inside an except block)."""
    e = sys.exc_info()[1]
    error = {
        "type": type(e).__name__,
        "message": str(e) or type(e).__name__,
        "user_error": isinstance(e, LcbenchError),
        "traceback": traceback.format_exc(),
    }
    record = {"run_id": rid, "status": "failed", "config": to_dict(cfg), "error": error}
    try:
        atomic_write_json(run.result_path, record)
    except OSError as write_error:  # the disk is full for this small record too: say so, keep `e`
        log.error(
            "%s: the failed record could not be written either (%s); `lcbench status` shows the run as "
            "interrupted",
            rid,
            write_error,
        )


def _check_pretrain_folder(pre_run: RunDir) -> None:
    """A pretrain folder a compress run will read: this user's own, and its record and model no links."""
    check_own_folder(pre_run.path, "pretrain run folder")
    for path in (pre_run.result_path, pre_run.model_path):
        if path.is_symlink():
            raise UnsafeRunFolder(
                f"{path} is a symbolic link; lcbench never reads one: remove it and run again"
            )


def ensure_pretrained(cfg: RunConfig, progress_bar: bool, required: bool = False) -> RunDir:
    """The completed pretrain run a compress run starts from (executed here first when missing)."""
    pre_cfg = pretrain_config(cfg)
    pre_run = RunDir(cfg.output_root, run_id(pre_cfg))
    _check_pretrain_folder(pre_run)  # its record and model are read: never another user's, never a link
    if not pre_run.is_completed() and live_status(pre_run.path) == "running":
        log.info("pretrain run %s is being trained by another process: waiting for it", pre_run.run_id)
        pre_run.wait_unlocked()  # (a queue beside this one, or a run started by hand)
    if not pre_run.is_completed() and required:
        record = pre_run.result() or {}
        why = record.get("error", {}).get("message") if record.get("status") == "failed" else "no record"
        raise DependencyError(
            f"pretrain run {pre_run.run_id} did not complete ({why}); fix it and resubmit with "
            "`lcbench launch SPEC --only-failed`"
        )
    while not pre_run.is_completed():
        log.info("pretrain run %s is missing: running it first", pre_run.run_id)
        try:
            execute(pre_cfg, progress_bar=progress_bar)
        except RunLockedError:  # another process trains it right now (a compress run started beside this)
            log.info("pretrain run %s is being trained by another process: waiting for it", pre_run.run_id)
            pre_run.wait_unlocked()
            record = pre_run.result() or {}
            if record.get("status") == "failed":
                raise DependencyError(
                    f"pretrain run {pre_run.run_id}, trained by another process meanwhile, failed: "
                    f"{record.get('error', {}).get('message')}"
                ) from None
    return pre_run


def _starting_model(
    cfg: RunConfig, pre_run: RunDir | None, num_classes: int
) -> tuple[nn.Module, dict | None]:
    """The model a run trains first: its pretrain run's model (checked against that run's record) for a
    compress run, else a fresh zoo model (random, or the weights `pretrained` names)."""
    if pre_run is None:
        spec = DATASETS.get(cfg.dataset)
        size = model_img_size(cfg)
        return create_model(cfg.model, num_classes, spec.in_chans, size, cfg.pretrained), None
    pretrain_record = pre_run.result()
    recorded = pretrain_record.get("model_file")
    try:  # the bytes checked are the bytes loaded
        data = read_verified(pre_run.model_path, recorded, "model file")
    except CheckpointError as e:
        raise CheckpointError(
            f"pretrain run {pre_run.run_id}: {e}; rerun it: `lcbench launch SPEC --only-failed`"
        ) from None
    model = load_model(pre_run.model_path, expected_run=pre_run.run_id, data=data)
    seed_everything(cfg.seed)  # the same RNG state whether the pretrain ran just now or long ago
    return model, pretrain_record


def _execute(
    cfg: RunConfig,
    run: RunDir,
    device: torch.device,
    progress_bar: bool,
    tracker: Tracker,
    pre_run: RunDir | None,
    replay_changes: list[dict] | None,
) -> dict:
    started, phases = time.perf_counter(), Phases()
    spec = DATASETS.get(cfg.dataset)
    root = Path(cfg.data_root).expanduser()
    check_data(cfg)
    model, pretrain_record = _starting_model(cfg, pre_run, spec.classes(root))
    transforms = data_transforms(model, cfg.img_size) if spec.natural_images else None
    tokenizer = tokenizer_for(cfg, model) if spec.is_text else None
    data = load_data(
        cfg.dataset,
        root,
        transforms,
        cfg.download,
        cfg.decode,
        tokenizer,
        cfg.seq_len,
        cfg.eval_stride,
        replicate_seed(cfg),
        cfg.augment,
        cfg.holdout,
    )
    check_label_count(model, data, cfg)

    model.to(device)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    world = distributed.current()  # a DDP run: each rank evaluates its share of the held-out set
    val_loader = make_loader(
        data.val, cfg.eval_batch_size, False, cfg.workers, device=device, rank=world.rank, world=world.size
    )
    with torch.random.fork_rng(devices=[]):  # (a loader's iterator draws its seed from torch's generator)
        input_shape = tuple(next(iter(val_loader))[0].shape[1:])  # as the model sees it (decoded)
    original = copy.deepcopy(model).eval().requires_grad_(False)
    ctx = RunContext(cfg, run, device, data, original, input_shape, val_loader)

    method_cls = METHODS.get(cfg.method)
    method: Method = method_cls(method_params(cfg), ctx)
    phases.add("setup", time.perf_counter() - started)  # data, the starting model, the method
    with phases.timed("prepare"):  # the method's prepare, and the trainer built around its model
        model = method.prepare(model)
        callbacks = (Replay(replay_changes or []), LiveControl(run.path))
        trainer = Trainer(model, method, callbacks, tracker, progress_bar)
    with phases.timed("fit"):
        model = trainer.fit()

    with phases.timed("final_evaluation"):
        final = method.finalize(model).eval()
        final_eval, final_outcomes = ctx.examine(
            final
        )  # (on every rank: a DDP run's ranks evaluate together)
        outcomes = {"final": final_outcomes, **method.outcomes}
        if pre_run is not None:
            outcomes["original"] = _original_outcomes(ctx, pre_run, pretrain_record)
    if not world.main:  # rank 0 measures, saves and records
        return {}
    with phases.timed("measure"):  # parameters, MACs and the in-run latency of both models
        original_m, final_m = _measure_both(ctx, final, final_eval, pretrain_record)
    with phases.timed("save"):
        save_model(run.model_path, final, cfg, data.num_classes, data.in_chans, method)
        kept = examples.write(run.path, outcomes)
    cost = {
        "train_seconds": trainer.progress.train_seconds,
        "wall_seconds": time.perf_counter() - started,
        "epochs": trainer.progress.epoch,
        "samples_seen": trainer.progress.samples,
        "train_flops": trainer.progress.train_flops + method.calibration_flops,
        "calibration_flops": method.calibration_flops,
        "device": str(device),
        "phases": _phase_seconds(phases, trainer),
    }
    changes = {"world_size_changes": trainer.world_size_changes} if trainer.world_size_changes else {}
    return {**_record(ctx, method, original_m, final_m, pretrain_record, cost), "examples": kept, **changes}


def _phase_seconds(phases: Phases, trainer: Trainer) -> dict[str, float]:
    """The run's wall time by phase: `fit` split into its training steps (`train_seconds`: steps and the
    method's epoch-end work), evaluations, checkpoints and the rest (logging, resuming)."""
    fit = phases.seconds.pop("fit", 0.0)
    inner = {"train_steps": trainer.progress.train_seconds, **trainer.phases.seconds}
    phases.seconds = {**phases.seconds, **inner, "fit_other": max(fit - sum(inner.values()), 0.0)}
    return phases.as_dict()


def _original_outcomes(ctx: RunContext, pre_run: RunDir, pretrain_record: dict) -> dict:
    """The per-example outcomes of the model a compress run started from: its pretrain run's (exactly those
    its recorded metrics came from), or, for a pretrain run that predates per-example records, evaluated
    here (on every rank of a DDP run alike: the file's presence is the same for all)."""
    kept = pretrain_record.get("examples")
    if kept:
        return examples.read(pre_run.path, kept)["final"]
    return ctx.examine(ctx.original)[1]


def _latency_batches(cfg: RunConfig) -> list[int]:
    return sorted({1, cfg.latency_batch})


def _measure_both(
    ctx: RunContext, final: nn.Module, final_eval: dict, pretrain_record: dict | None
) -> tuple[dict, dict]:
    """Parameters, MACs and latency of the final model (evaluated: `final_eval`) and of the original (for
    a compress run; a pretrain run's original is its final model). The original's accuracy is its
    pretrain run's."""
    cfg, amp = ctx.cfg, AMP_DTYPES[ctx.cfg.precision]
    batches = _latency_batches(cfg)
    final_m = {
        **measure.measure_model(final, ctx.input_shape, batches, cfg.latency_repeats, amp),
        **final_eval,
    }
    if cfg.stage != "compress":
        return dict(final_m), final_m
    original_m = measure.measure_model(ctx.original, ctx.input_shape, batches, cfg.latency_repeats, amp)
    scores = [k for k in final_eval if k not in ("samples", "tokens")]  # the task's metrics and its loss
    original_m.update({k: pretrain_record["final"][k] for k in scores})
    return original_m, final_m


def _record(
    ctx: RunContext, method: Method, original_m: dict, final_m: dict, pretrain_record: dict | None, cost: dict
) -> dict:
    """The run's result record (without run id and status, which `execute` adds)."""
    cfg, batches = ctx.cfg, _latency_batches(ctx.cfg)
    compared = measure.compare(original_m, final_m, batches)
    return {
        "stage": cfg.stage,
        "method": cfg.method,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "pretrain_run_id": pretrain_record["run_id"] if pretrain_record else None,
        "config": to_dict(cfg),
        "original": original_m,
        "final": final_m,
        **compared,
        # final - original of each of the task's metrics (delta_top1, delta_perplexity, ...)
        **{f"delta_{k}": final_m[k] - original_m[k] for k in TASKS[ctx.task].metrics if k in final_m},
        "metric": ctx.quality,  # the data set's headline metric (`tasks.QUALITIES`)
        "match": match_record(method.match_target(), compared["compression"], original_m, final_m),
        "input_shape": list(ctx.input_shape),
        "latency": {
            "device": measure.device_name(ctx.device),
            "dtype": cfg.precision,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batches": batches,
        },
        "cost": cost,
        "method_report": method.report,
    }


def match_record(target: dict | None, compression: float, original: dict, final: dict) -> dict | None:
    """The method's match target with what was achieved and whether it lies within the tolerance."""
    if target is None:
        return None
    achieved = compression if target["quantity"] == "compression" else original["gmacs"] / final["gmacs"]
    return {
        **target,
        "achieved": achieved,
        "tolerance": MATCH_TOLERANCE,
        "within_tolerance": abs(achieved / target["target"] - 1) <= MATCH_TOLERANCE,
    }


def tokenizer_for(cfg: RunConfig, model: nn.Module):
    """The text model's tokenizer, from where its weights came (a compress run: its pretrain run's source)."""
    if not isinstance(model, (text_models.CausalLM, text_models.SequenceClassifier)):
        raise ConfigError(
            f"{cfg.dataset} is text; {cfg.model} is not a language model (`lcbench list models`)"
        )
    source = cfg.pretrained or (cfg.pretrain.pretrained if cfg.stage == "compress" else "")
    return text_models.load_tokenizer(cfg.model, source, text_models.vocab_size(model))


def check_label_count(model: nn.Module, data: DataSplits, cfg: RunConfig) -> None:
    """The model's output width must equal the data set's number of classes (a language model: none)."""
    is_lm = isinstance(model, text_models.CausalLM)
    if is_lm != (DATASETS.get(cfg.dataset).task == "language_modeling"):
        raise ConfigError(
            f"{cfg.model} and {cfg.dataset} do not match: a causal language model goes with a language "
            "modelling data set (text_stdlib, wikitext2, wikitext103), a classifier with a labelled one"
        )
    if is_lm:
        return
    _, head = last_linear(model)
    if head.out_features != data.num_classes:
        raise DataError(
            f"{cfg.model} predicts {head.out_features} classes but {cfg.dataset} has "
            f"{data.num_classes}; the model and data set do not match"
        )
