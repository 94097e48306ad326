"""The `lcbench` command: one entry point with subcommands.

Exit codes: 0 success; 1 a negative answer to a question asked (`list` found no match, `replay` differs,
`status --wait` ended with failed or missing runs); 2 a user error (bad config, missing data, refused
submission), with a one-line message; 70 an internal error (a traceback: please report it); 75 a DDP
run lost a rank (the same command resumes); 130 interrupted (128 + N: a rank killed by signal N).

Each subcommand imports what it needs inside its own function (the only function-level imports of the
package): `--help` and `status` never pay for timm, pandas or matplotlib.
"""

from __future__ import annotations

import argparse
import fnmatch
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .core.errors import ConfigError, LcbenchError
from .core.exits import exit_code
from .core.record import RunRecord

EXIT_CODES = """exit codes: 0 success; 1 a negative answer to a question asked (`list` found no match,
`replay` differs, `status --wait` ended with failed or missing runs); 2 a user error (bad config, missing
data, refused submission), with a one-line message; 70 an internal error (please report it); 75 a rank
of a DDP run ended, which stopped the others (the same command resumes); 130 interrupted (128 + N: a
rank killed by signal N)."""

RUN_EXAMPLES = """examples:
  lcbench run runs/digits_compress.yaml method=layercollapse model=digits_vit k=2
  lcbench run runs/digits_compress.yaml method=kd model=digits_vit student=collapsed:2 init=teacher
  lcbench run runs/digits_pretrain.yaml model=digits_mlp epochs=5 --print-config
`lcbench list keys` explains every key; `lcbench list keys METHOD` a method's parameters."""


def _split_args(items: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return files, overrides


def config_from_args(items: Sequence[str]):
    """YAML files (merged in order) followed by key=value overrides -> a validated RunConfig."""
    from .core import bundled
    from .core.config import load_yaml
    from .training.resolve import make_config

    files, overrides = _split_args(items)
    values: dict = {}
    for path in files:
        values.update(load_yaml(bundled.find(path)))
    return make_config(values, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from .core.store import dumps
    from .training import distributed
    from .training.identity import run_id
    from .training.pipeline import execute

    cfg = config_from_args(args.items)
    if args.print_config:  # the resolved config (hydra's --cfg job), nothing run
        from .core.config import to_yaml

        print(f"# run {run_id(cfg)}\n{to_yaml(cfg)}", end="")
        return 0
    if cfg.nproc * cfg.nodes > 1 and not distributed.launched_as_rank():  # its ranks, started by torchrun
        flags = [f"--{name.replace('_', '-')}" for name in RUN_FLAGS if getattr(args, name)]
        return distributed.torchrun(cfg, ["-m", "lcbench", "run", *args.items, *flags])
    if distributed.launched_as_rank():
        distributed.die_with_launcher()
    if not distributed.env_main():  # rank 0 reports; the other ranks train beside it
        execute(cfg, force=args.force, progress_bar=False, require_pretrained=args.require_pretrained)
        return 0
    print(
        f"run {run_id(cfg)}: stage={cfg.stage} method={cfg.method} model={cfg.model} dataset={cfg.dataset} "
        f"-> {cfg.output_root}/{run_id(cfg)}",
        file=sys.stderr,
    )
    progress = not args.no_progress and sys.stderr.isatty()
    result = execute(cfg, force=args.force, progress_bar=progress, require_pretrained=args.require_pretrained)
    if result["status"] == "stopped":
        print(
            f"run {result['run_id']} {result['reason']}; run the same command again to resume",
            file=sys.stderr,
        )
        return 0
    record = RunRecord(result)
    summary = {**record.identity(), **record.summary(headline_only=True), **_fold_summary(record)}
    print(dumps(summary, indent=2))
    return 0


def _fold_summary(record: RunRecord) -> dict:
    """LayerCollapse: how many of the blocks asked for were folded (and forced), said loudly on stderr
    when any was not."""
    report = record.data.get("method_report") or {}
    if "selected" not in report:
        return {}
    folded, asked, forced = report["folded"], report["selected"], report.get("forced", [])
    out = {"blocks_folded": f"{len(folded)} of {len(asked)}"}
    if forced:
        out["forced_folds"] = forced
    if report.get("not_folded"):
        slopes = {b["block"]: b["slope"] for b in report.get("blocks", [])}
        listed = ", ".join(f"{n} (slope {slopes.get(n, float('nan')):.3f})" for n in report["not_folded"])
        print(
            f"lcbench: warning: {len(report['not_folded'])} of {len(asked)} blocks NOT folded: {listed}; "
            f"the model is not collapsed there (compression {record.value('compression'):.2f}x)",
            file=sys.stderr,
        )
    return out


RUN_FLAGS = ("force", "no_progress", "require_pretrained")  # passed on to each rank of a DDP run


def cmd_list(args: argparse.Namespace) -> int:
    from .core.config import RunConfig
    from .core.fields import describe_fields
    from .methods import METHODS
    from .zoo.data import DATASETS
    from .zoo.models import MODELS

    if args.kind == "keys":  # the run config's keys, or with a method name that method's parameters
        for row in describe_fields(METHODS.get(args.pattern).Params if args.pattern else RunConfig):
            choices = f"  one of {row['choices']}" if row["choices"] else ""
            print(f"{row['key']:18} {row['type']:14} default {row['default']!r}{choices}  {row['help']}")
        return 0
    if args.kind in ("specs", "profiles"):  # the bundled files, by name
        from .core import bundled

        kind = args.kind.removesuffix("s")
        found = [n for n in bundled.names(kind) if not args.pattern or fnmatch.fnmatchcase(n, args.pattern)]
        width = max(map(len, found), default=0)
        print("\n".join(f"{n:{width}}  {bundled.find(n, kind)}" for n in found))
        return 0 if found else 1
    registry = {"methods": METHODS, "models": MODELS, "datasets": DATASETS}[args.kind]
    names = registry.names(args.pattern, include_fallbacks=args.kind == "models")
    if not names:
        print(f"no {args.kind} match {args.pattern!r}", file=sys.stderr)
        return 1
    describe = {"methods": _method_line, "datasets": _dataset_line}.get(args.kind, lambda name: "")
    width = max(map(len, names))
    print("\n".join(f"{name:{width}}  {describe(name)}".rstrip() for name in names))
    return 0


def _method_line(name: str) -> str:
    """`Layer Folding: PReLU from 0 ...`: a method's display name and its one-line summary."""
    from .methods import METHODS

    cls = METHODS.get(name)
    summary = cls.__dict__.get("summary", "")  # its own, never one inherited from the class it extends
    return f"{cls.title or name}: {summary}" if summary else cls.title or name


def _dataset_line(name: str) -> str:
    """`classification, top1, 10 classes, 1x8x8` — what a data set is scored by and its inputs."""
    from .zoo.data import DATASETS

    spec = DATASETS.get(name)
    classes = f"{spec.num_classes} classes" if spec.num_classes else "classes from the folder"
    if spec.task == "regression":
        classes = "a score"
    if spec.is_text:
        shape = f"{spec.seq_len} tokens" + ("" if spec.task == "language_modeling" else f", {classes}")
    else:
        shape = f"{classes}, {spec.in_chans}x{spec.img_size}x{spec.img_size}"
    return f"{spec.task}, headline {spec.metric}, {shape}"


def cmd_results(args: argparse.Namespace) -> int:
    from .core.store import headline_columns, records_table

    table = records_table(args.out)
    if not args.all_columns:
        table = table[headline_columns(table)]
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} records to {args.csv}", file=sys.stderr)
    else:
        print(table.to_csv(index=False), end="")
    return 0


def cmd_collapse(args: argparse.Namespace) -> int:
    from .training.postcollapse import collapse_run

    report = collapse_run(args.run, threshold=args.threshold, force=args.force, out=args.out)
    from .core.store import dumps

    print(dumps(report, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .measurement.export import export_run

    print(export_run(_run_folder(args.run, args.root), args.format, args.out, args.force).summary())
    return 0


def _plan(args: argparse.Namespace):
    """The sweep the command names, or with `--search` the sweep of its search's trials."""
    from .execution.sweep import plan_sweep

    files, overrides = _split_args(args.items)
    if len(files) != 1:
        raise LcbenchError(
            f"give exactly one sweep spec (runs/NAME.yaml), then key=value overrides; got {files}"
        )
    if getattr(args, "search", False):
        from .execution.search import plan_search

        return plan_search(files[0], overrides).plan
    return plan_sweep(files[0], overrides)


def _resubmit(args: argparse.Namespace) -> str:
    """The command that runs a sweep's failed and missing runs again."""
    if getattr(args, "search", False):
        return f"`lcbench search {_spec_args(args)}` (it reruns only what did not complete)"
    return f"`lcbench launch {_spec_args(args)} --only-failed`"


def _spec_args(args: argparse.Namespace) -> str:
    """The spec and the user's key=value overrides, quoted for a shell: follow-up commands need both
    (without the overrides they would look at another output root and show every run missing)."""
    return shlex.join(args.items)


def _status_rows(statuses) -> list[dict]:
    return [
        {
            "run_id": s.run.run_id,
            "stage": s.run.stage,
            "method": s.run.cfg.method,
            "variant": s.run.variant or "-",
            "level": s.run.level_label or "-",
            "model": s.run.cfg.model,
            "dataset": s.run.cfg.dataset,
            "seed": s.run.cfg.seed,
            "status": s.status,
            "detail": s.detail,
        }
        for s in statuses
    ]


def _print_rows(rows: list[dict], columns: list[str]) -> None:
    import pandas as pd

    print(pd.DataFrame(rows, columns=columns).to_string(index=False, max_colwidth=90))


def cmd_plan(args: argparse.Namespace) -> int:
    from .execution.status import counts_text, summarize, sweep_status
    from .execution.sweep import training_flops
    from .methods import METHODS
    from .training.resolve import method_params

    plan = _plan(args)
    statuses = sweep_status(plan)
    flops = training_flops(plan)
    rows = _status_rows(statuses)
    for row, status in zip(rows, statuses):
        f = flops[row["run_id"]]
        row["train_PFLOP"] = "?" if f is None else f"{f / 1e15:.3g}"
        cfg = status.run.cfg
        row["note"] = METHODS.get(cfg.method).plan_note(method_params(cfg), cfg) or "-"
    _print_rows(
        rows,
        [
            "run_id",
            "stage",
            "method",
            "variant",
            "level",
            "model",
            "dataset",
            "seed",
            "status",
            "train_PFLOP",
            "note",
        ],
    )
    for reason in plan.skipped:
        print(f"not planned: {reason}")
    tuned = {r.cfg.selection.split(" ")[0] for r in plan.stage("compress") if r.cfg.selection}
    if tuned:
        count = sum(bool(r.cfg.selection) for r in plan.stage("compress"))
        print(
            f"tuned: {count} compress runs take their settings from {', '.join(sorted(tuned))} (`lcbench "
            "search`; `tuned=false` plans the spec as written)"
        )
    todo = [s.run.run_id for s in statuses if s.status != "completed"]
    known = [flops[r] for r in todo if flops[r] is not None]
    total = sum(known)
    print(
        f"\nsweep {plan.name}: {len(plan.runs)} runs ({len(plan.stage('pretrain'))} pretrain, "
        f"{len(plan.stage('compress'))} compress); {counts_text(summarize(statuses))}"
    )
    unknown = f"; {len(todo) - len(known)} runs of unknown data size" if len(known) < len(todo) else ""
    if todo and not known:
        print(
            f"to run: {len(todo)} runs; training FLOPs unknown (no run's data size is known before loading)"
        )
        return 0
    print(
        f"to run: {len(todo)} runs, {total / 1e15:.4g} PFLOP of training "
        f"(3 x forward FLOPs, plus a KD teacher's forward, x training samples x epochs{unknown})"
        f" = {_hours(total / (args.tflops * 1e12) / 3600)} GPU-hours at {args.tflops:g} TFLOP/s sustained"
        f" (--tflops), {_hours(total / (args.cpu_gflops * 1e9) / 3600)} CPU-hours at {args.cpu_gflops:g} "
        "GFLOP/s (--cpu-gflops)"
    )
    return 0


def _hours(hours: float) -> str:
    """`383`, `23.4`, `0.19`, `< 0.01`: hours as a person plans them (no 4.45e-07)."""
    if hours == 0:
        return "0"
    if hours < 0.01:
        return "< 0.01"
    return f"{hours:,.0f}" if hours >= 100 else f"{hours:.3g}"


def cmd_launch(args: argparse.Namespace) -> int:
    from .execution.executors import executor_named
    from .execution.runner import launch

    plan = _plan(args)
    options = _launch_options(args, args.wait)
    submission = launch(plan, options)
    if submission is None:
        why = "no failed or missing run" if args.only_failed else "every run is completed"
        print(f"sweep {plan.name}: nothing to submit ({why})", file=sys.stderr)
        return 0
    print(
        f"sweep {plan.name}: {len(submission.jobs)} runs submitted to {submission.executor} "
        f"({submission.folder})"
    )
    for line in executor_named(submission.executor).describe(submission):
        print(f"  {line}")
    if not args.wait:
        spec = _spec_args(args)
        print(f"  follow with `lcbench status {spec}`; withdraw with `lcbench cancel {spec}`")
    if args.wait:
        return cmd_status(args)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .analysis.selection import select, write_lock
    from .execution.runner import launch, wait_for
    from .execution.search import plan_search

    files, overrides = _split_args(args.items)
    if len(files) != 1:
        raise LcbenchError(
            f"give exactly one sweep spec (runs/NAME.yaml), then key=value overrides; got {files}"
        )
    started = time.monotonic()
    search = plan_search(files[0], overrides)
    runs = search.plan.stage("compress")
    where = "every replicate on its own split: seeds" if search.per_replicate else "tuning seed"
    print(
        f"search {search.name}: {len(search.variants)} variants x up to {search.trials} trials, scored on "
        f"validation ({where} {', '.join(map(str, search.tuning_seeds))}); {len(runs)} trial runs and "
        f"{len(search.plan.stage('pretrain'))} originals"
    )
    for name, variant in search.variants.items():
        space = ", ".join(f"{k} {v}" for k, v in variant.space.items()) or "nothing to search"
        refused = f"; {len(variant.refused)} refused by `plan`, skipped" if variant.refused else ""
        print(f"  {name}: {len(variant.trials)} trial(s) of {space}{refused}")
    if args.dry_run:
        return 0
    if not os.access(search.lock_path.parent, os.W_OK):
        raise LcbenchError(f"{search.lock_path.parent} is not writable: the lock file goes beside the spec")
    options = _launch_options(args, wait=True)
    launch(search.plan, options)
    report = lambda line: print(f"search {search.name}: {line}", file=sys.stderr, flush=True)  # noqa: E731
    wait_for(search.plan, poll_s=args.poll, on_change=report)
    path = write_lock(select(search), search.lock_path, time.monotonic() - started)
    print(f"search {search.name}: selections written to {path}; `lcbench plan {files[0]}` uses them")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .execution.runner import wait_for
    from .execution.status import counts_text, summarize, sweep_status

    plan = _plan(args)
    if args.wait:
        report = lambda line: print(f"sweep {plan.name}: {line}", file=sys.stderr, flush=True)  # noqa: E731
        statuses = wait_for(plan, poll_s=args.poll, on_change=report)
    else:
        statuses = sweep_status(plan)
    _print_rows(
        _status_rows(statuses), ["run_id", "stage", "method", "level", "model", "seed", "status", "detail"]
    )
    counts = summarize(statuses)
    print(f"\nsweep {plan.name}: {counts_text(counts)}")
    bad = counts.get("failed", 0) + counts.get("missing", 0)
    logs = [s for s in statuses if s.status == "failed" and s.log and Path(s.log).exists()]
    for s in logs[:10]:  # where to look first
        print(f"log of failed run {s.run.run_id}: {s.log}")
    if bad:
        print(f"resubmit the {bad} failed/missing run(s) with {_resubmit(args)}")
    if counts.get("unknown"):
        print(
            f"{counts['unknown']} run(s) unknown (may still be queued: do not resubmit them); run "
            "`lcbench status` again once the scheduler answers"
        )
    return 1 if (args.wait and bad) else 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from .execution.status import cancel_sweep

    plan = _plan(args)
    cancelled = cancel_sweep(plan)
    if not cancelled:
        print(f"sweep {plan.name}: nothing to cancel (no run is queued or running)", file=sys.stderr)
        return 0
    print(
        f"sweep {plan.name}: cancelled {len(cancelled)} run(s) ({', '.join(cancelled)}); resubmit them with "
        f"{_resubmit(args)}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:

    from .analysis.report import write_report

    plan = _plan(args)
    out = Path(args.out) if args.out else Path("results") / plan.name
    summary = write_report(plan, out)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    print(f"report for sweep {plan.name} ({counts}) written to {out}/README.md")
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    from .execution.rehearsal import rehearse, write
    from .execution.sweep import plan_sweep

    if args.steps < 1 or (args.batch is not None and args.batch < 1):
        raise ConfigError(f"--steps ({args.steps}) and --batch ({args.batch}) must be at least 1")
    if not (math.isfinite(args.budget) and args.budget > 0):
        raise ConfigError(f"--budget {args.budget}: give the rehearsal's seconds, a finite number above 0")
    files, overrides = _split_args(args.items)
    plans = [plan_sweep(path, overrides) for path in files]  # every spec checked before any step
    document = rehearse(plans, args.steps, args.device, args.budget, args.batch)
    path = write(document, args.out)
    for run in document["runs"]:
        whole = run["whole_run"]
        verdict = "forced fold" if whole["forced"] else ("folds" if whole["folds"] else "NOT folded")
        print(
            f"{run['model']:24} {run['dataset']:14} {run['steps']:4d} steps  "
            f"{run['samples_per_s']:9.1f} samples/s ({run['throughput_ratio']:.2f} of bare PyTorch)  "
            f"slope {run['slope_measured']:.3f} measured, {run['slope_predicted']:.3f} predicted; whole run: "
            f"{whole['slope_predicted']:.3f} after {whole['steps']:,} steps ({verdict})"
            if whole["steps"]
            else f"{run['model']:24} {run['steps']:4d} steps  (whole run: unknown data size)"
        )
    print(f"wrote {path} (on {document['device']})")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Two result folders side by side: values that differ (and by how much), verdicts that changed."""
    from .analysis.compare import compare_folders

    result = compare_folders(args.first, args.second)
    print(result.text((args.first, args.second)))
    return 1 if args.check and result.verdicts_changed else 0


def cmd_measure(args: argparse.Namespace) -> int:
    from .measurement.latency import measure_sweep

    plan = _plan(args)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        raise ConfigError(f"--batches {args.batches!r}: expected batch sizes such as 1 or 1,32") from None
    counts = measure_sweep(
        plan, batches, args.device, args.threads, args.force, args.rel, backend=args.backend
    )
    print(
        f"quiet latency pass for sweep {plan.name}: {counts['measured']} measured, {counts['kept']} kept "
        f"from before (--force to redo), {counts['not_completed']} not completed"
    )
    return 0


def _run_folder(text: str, root: str):

    path = Path(text)
    if not (path / "config.yaml").exists():
        path = Path(root) / text
    if not (path / "config.yaml").exists():
        from .execution.submissions import sweep_submitting

        given = Path(text)  # a path `<root>/<run id>` names its own output root
        sweep = sweep_submitting(given.parent if len(given.parts) > 1 else root, given.name)
        if sweep:
            raise LcbenchError(
                f"run {Path(text).name} is queued in sweep {sweep} and has not started: nothing to do until "
                "it trains (`lcbench status`)"
            )
        raise LcbenchError(f"no run {text!r}: give a run folder, or a run id under --root {root}")
    return path


def cmd_tune(args: argparse.Namespace) -> int:
    from .core.config import parse_override
    from .core.store import dumps, live_status
    from .training.control import send

    path = _run_folder(args.run, args.root)
    if live_status(path) != "running":
        raise LcbenchError(f"run {path.name} is not running, so nothing can be tuned (`lcbench results`)")
    values = dict(parse_override(item) for item in args.values)
    if not values and not args.trigger:
        raise LcbenchError("give key=value changes (e.g. lr=0.01 lam=2) and/or --trigger save|eval|stop")
    ack = send(path, values, args.trigger, timeout_s=args.timeout)
    print(dumps(ack, indent=2))
    return 0 if ack.get("accepted") else 2


def cmd_replay(args: argparse.Namespace) -> int:
    from .training.replay import replay_run

    report = replay_run(_run_folder(args.run, args.root), args.out)
    for row in report["epochs"]:
        verdict = "same" if row["same"] else "DIFFERENT"
        print(f"epoch {row['epoch']:3}: {row['original']}  replay {row['replay']}  {verdict}")
    print(f"{len(report['changes'])} recorded change(s) applied; metrics identical: {report['identical']}")
    return 0 if report["identical"] else 1


def _launch_options(args: argparse.Namespace, wait: bool):
    """`_add_launch_options`'s flags as the runner takes them (`launch`, `search`)."""
    from .execution.runner import LaunchOptions

    return LaunchOptions(
        executor=args.executor,
        only_failed=args.only_failed,
        max_parallel=args.max_parallel,
        gpus=args.gpus,
        threads=args.threads,
        cpu=args.cpu,
        profile=args.profile,
        wait=wait,
    )


def _add_launch_options(p: argparse.ArgumentParser) -> None:
    """Where and how a sweep's runs execute (`launch`, `search`)."""
    p.add_argument(
        "--executor",
        default="auto",
        help="local, slurm or auto (default: slurm when sbatch is on PATH and a controller answers, else "
        "local)",
    )
    p.add_argument("--only-failed", action="store_true", help="submit failed and missing runs only")
    p.add_argument("--max-parallel", type=int, help="local: runs at once (default: one per GPU, else 1)")
    p.add_argument("--gpus", help="local: GPU ids to use, e.g. 0,1 (default: all visible)")
    p.add_argument(
        "--threads",
        type=int,
        help="local: CPU threads shared by parallel runs whose config leaves threads=0 (default: all); "
        "a run's own `threads` decides its arithmetic and is kept",
    )
    p.add_argument("--cpu", action="store_true", help="local: run on the CPU even where GPUs are visible")
    p.add_argument("--profile", default="local", help="slurm: slurm/<PROFILE>.yaml or a file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lcbench",
        description="Compare LayerCollapse with other compression methods: run one run, plan and launch "
        "sweeps, report their claims, tables and figures.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"lcbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "run",
        help="execute one run (config files then key=value overrides)",
        epilog=RUN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml|key=value")
    p.add_argument("--force", action="store_true", help="run again even if a completed record exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--require-pretrained",
        action="store_true",
        help="fail (instead of training it) when a compress run's pretrain run has not completed",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list methods, models, datasets, config keys, specs or SLURM profiles")
    p.add_argument("kind", choices=["methods", "models", "datasets", "keys", "specs", "profiles"])
    p.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'vit_*' (with keys: a method name)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("collapse", help="fold a trained run's converted blocks (post-training LayerCollapse)")
    p.add_argument("run", help="a run folder (with model.pt) whose model has converted (PReLU) blocks")
    p.add_argument("--threshold", type=float, default=0.05, help="fold blocks with |slope - 1| below this")
    p.add_argument("--force", action="store_true", help="fold every converted block (labelled as forced)")
    p.add_argument("--out", help="output file (default: <run>/collapsed.pt, report beside it)")
    p.set_defaults(func=cmd_collapse)

    p = sub.add_parser(
        "export",
        help="a run's final model as safetensors (+ JSON any lcbench rebuilds), a transformers folder "
        "(GPT-2, BERT) or ONNX; reloaded and checked before it is kept",
        epilog="examples:\n  lcbench export outputs/1a2b3c4d5e6f --format onnx\n"
        "  lcbench export 1a2b3c4d5e6f --root outputs --format hf --out gpt2-folded/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="the run's folder, or its id under --root")
    p.add_argument("--format", required=True, choices=["safetensors", "hf", "onnx"])
    p.add_argument("--out", help="destination folder (default: <run>/export/<format>)")
    p.add_argument("--root", default="outputs", help="output root for a run id (default: outputs)")
    p.add_argument("--force", action="store_true", help="replace an existing destination")
    p.set_defaults(func=cmd_export)

    spec_help = "runs/NAME.yaml then key=value overrides of its base (seeds=[0] too)"
    search_help = "the runs of the spec's search (`lcbench search`: its trials), not of the sweep itself"
    p = sub.add_parser(
        "rehearse",
        help="a few hundred steps of a spec's recipe on its architectures (random weights, synthetic "
        "batches): throughput beside bare PyTorch, peak memory, slopes against their prediction",
    )
    p.add_argument("items", nargs="+", help="runs/NAME.yaml (one or more), then key=value overrides")
    p.add_argument("--steps", type=int, default=200, help="steps per LayerCollapse variant and model")
    p.add_argument("--budget", type=float, default=480.0, help="seconds for the whole rehearsal")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--batch",
        type=int,
        help="samples per step instead of the recipe's (a CPU smoke test of a GPU recipe; the learning-rate "
        "schedule keeps the recipe's steps per epoch)",
    )
    p.add_argument("--out", default="results/bench/rehearsal.json", help="where the figures go")
    p.set_defaults(func=cmd_rehearse)

    p = sub.add_parser("plan", help="print a sweep's runs, which are complete, and a cost estimate")
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    p.add_argument("--tflops", type=float, default=100.0, help="sustained GPU TFLOP/s for the estimate")
    p.add_argument("--cpu-gflops", type=float, default=25.0, help="sustained CPU GFLOP/s for the estimate")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("launch", help="submit a sweep's unfinished runs (returns once submitted)")
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    _add_launch_options(p)
    p.add_argument("--wait", action="store_true", help="block until every run has ended, then show status")
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser(
        "search",
        help="tune every method by one protocol: the same number of trials each, scored on a validation "
        "split carved from the training data; writes the lock file beside the spec (SPEC.tuned.yaml)",
    )
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    _add_launch_options(p)
    p.add_argument("--dry-run", action="store_true", help="print each variant's trials and stop")
    p.add_argument("--poll", type=float, default=5.0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("status", help="each run of a sweep: pending, running, completed, failed or missing")
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    p.add_argument("--wait", action="store_true", help="block until nothing is pending or running")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between checks with --wait")
    p.add_argument("--search", action="store_true", help=search_help)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="withdraw a sweep's queued and running jobs (local queue or SLURM)")
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    p.add_argument("--search", action="store_true", help=search_help)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("report", help="tables (CSV, Markdown, LaTeX), plots and findings of a sweep")
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    p.add_argument("--out", help="output folder (default: results/<sweep name>)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "measure", help="quiet latency pass: every final model timed against its original, one at a time"
    )
    p.add_argument("items", nargs="+", metavar="SPEC.yaml|key=value", help=spec_help)
    p.add_argument("--batches", default="1", help="batch sizes, comma-separated (default: 1)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's own)")
    p.add_argument("--rel", type=float, default=0.05, help="target half-width of the medians' 95%% CI")
    p.add_argument("--force", action="store_true", help="measure runs that already have latency.json")
    p.add_argument(
        "--backend",
        choices=["eager", "onnxruntime"],
        default="eager",
        help="eager PyTorch (latency.json, the tables' speed-ups), or both models exported to ONNX and timed "
        "in ONNX Runtime, with the final one against eager PyTorch (latency_onnxruntime.json)",
    )
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser(
        "tune", help="change a running run's lr, weight decay, lam, alpha, T...; save, eval, stop"
    )
    p.add_argument("run", help="the run's folder or id")
    p.add_argument("values", nargs="*", metavar="key=value", help="live-tunable values (e.g. lr=0.01 lam=2)")
    p.add_argument(
        "--trigger", choices=["save", "eval", "stop"], help="save a checkpoint, evaluate now, or stop"
    )
    p.add_argument("--root", default="outputs", help="output root for a run id (default: outputs)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the run's answer")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("replay", help="rerun a run with its recorded live changes; compare the metrics")
    p.add_argument("run", help="the run's folder or id")
    p.add_argument("--root", default="outputs", help="output root for a run id (default: outputs)")
    p.add_argument("--out", help="output root of the replay (default: <run>/replay)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "compare",
        help="two result folders of one sweep (e.g. from two machines): values and verdicts that differ",
    )
    p.add_argument("first", help="a folder written by `lcbench report` (results/<sweep>)")
    p.add_argument("second")
    p.add_argument("--check", action="store_true", help="exit 1 when any verdict differs")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("results", help="every run record under a folder as CSV")
    p.add_argument("out", help="the output root (e.g. outputs)")
    p.add_argument("--csv", help="write to this file instead of stdout")
    p.add_argument("--all-columns", action="store_true")
    p.set_defaults(func=cmd_results)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if "=" not in a or a.startswith("-")]
    target = "items" if hasattr(args, "items") else "values" if hasattr(args, "values") else None
    if stray or (extra and target is None):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:  # key=value overrides given after an option
        setattr(args, target, [*getattr(args, target), *extra])
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="lcbench: %(message)s")
    from .zoo.fingerprint import data_fingerprint

    data_fingerprint.cache_clear()  # each command reads the data as it is now (once, however many runs)
    try:
        return args.func(args)
    except BrokenPipeError:  # `lcbench list models | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (Exception, KeyboardInterrupt) as e:
        return exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
