"""The `lcbench` command: one entry point with subcommands."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .errors import LcbenchError


def _split_args(items: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in items if "=" not in a]
    overrides = [a for a in items if "=" in a]
    return files, overrides


def config_from_args(items: Sequence[str]):
    """YAML files (merged in order) followed by key=value overrides -> a validated RunConfig."""
    from .config import load_yaml, make_config

    files, overrides = _split_args(items)
    values: dict = {}
    for path in files:
        values.update(load_yaml(path))
    return make_config(values, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from .config import run_id
    from .pipeline import execute
    from .store import dumps

    cfg = config_from_args(args.items)
    print(
        f"run {run_id(cfg)}: stage={cfg.stage} method={cfg.method} model={cfg.model} dataset={cfg.dataset} "
        f"-> {cfg.output_root}/{run_id(cfg)}",
        file=sys.stderr,
    )
    result = execute(cfg, force=args.force, progress_bar=not args.no_progress and sys.stderr.isatty())
    summary = {
        k: result.get(k)
        for k in (
            "run_id",
            "status",
            "stage",
            "method",
            "model",
            "dataset",
            "seed",
            "compression",
            "delta_top1",
        )
    }
    summary.update(
        {
            f"final_{k}": result["final"].get(k)
            for k in ("top1", "top5", "params_nonzero", "gmacs", "latency_ms_b1", "depth")
        }
    )
    summary["train_seconds"] = result["cost"]["train_seconds"]
    print(dumps(summary, indent=2))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .config import RunConfig, describe_fields
    from .data import DATASETS
    from .methods import METHODS
    from .models import MODELS

    if args.kind == "keys":  # the run config's keys, or with a method name that method's parameters
        for row in describe_fields(METHODS.get(args.pattern).Params if args.pattern else RunConfig):
            choices = f"  one of {row['choices']}" if row["choices"] else ""
            print(f"{row['key']:18} {row['type']:14} default {row['default']!r}{choices}  {row['help']}")
        return 0
    registry = {"methods": METHODS, "models": MODELS, "datasets": DATASETS}[args.kind]
    names = registry.names(args.pattern, include_fallbacks=args.kind == "models")
    if not names:
        print(f"no {args.kind} match {args.pattern!r}", file=sys.stderr)
        return 1
    print("\n".join(names))
    return 0


def cmd_results(args: argparse.Namespace) -> int:
    from .store import SUMMARY_COLUMNS, records_table

    table = records_table(args.out)
    if not args.all_columns:
        table = table[[c for c in SUMMARY_COLUMNS if c in table.columns]]
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {len(table)} records to {args.csv}", file=sys.stderr)
    else:
        print(table.to_csv(index=False), end="")
    return 0


def cmd_collapse(args: argparse.Namespace) -> int:
    from .postcollapse import collapse_run

    report = collapse_run(args.run, threshold=args.threshold, force=args.force, out=args.out)
    from .store import dumps

    print(dumps(report, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lcbench", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute one run (config files then key=value overrides)")
    p.add_argument("items", nargs="*", metavar="CONFIG.yaml|key=value")
    p.add_argument("--force", action="store_true", help="run again even if a completed record exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("list", help="list methods, models, datasets or config keys")
    p.add_argument("kind", choices=["methods", "models", "datasets", "keys"])
    p.add_argument("pattern", nargs="?", help="wildcard filter, e.g. 'vit_*' (with keys: a method name)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("collapse", help="fold a trained run's converted blocks (post-training LayerCollapse)")
    p.add_argument("run", help="a run folder (with model.pt) whose model has converted (PReLU) blocks")
    p.add_argument("--threshold", type=float, default=0.05, help="fold blocks with |slope - 1| below this")
    p.add_argument("--force", action="store_true", help="fold every converted block (labelled as forced)")
    p.add_argument("--out", help="output file (default: <run>/collapsed.pt, report beside it)")
    p.set_defaults(func=cmd_collapse)

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
    if stray or (extra and not hasattr(args, "items")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:  # key=value overrides given after an option
        args.items = [*args.items, *extra]
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="lcbench: %(message)s")
    from .methods import load_builtin_methods

    load_builtin_methods()
    try:
        return args.func(args)
    except LcbenchError as e:
        print(f"lcbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lcbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
