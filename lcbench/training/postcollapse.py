"""`lcbench collapse RUN`: the post-training tool. Folds what qualifies in a trained run's model and writes
the collapsed model (an ordinary lcbench model file) and the per-block report beside it."""

from __future__ import annotations

from pathlib import Path

from ..core.config import RunConfig, load_yaml, replicate_seed
from ..core.errors import CheckpointError, ConfigError
from ..core.fields import build_dataclass
from ..core.store import atomic_torch_save, atomic_write_json, read_json
from ..zoo import collapse
from ..zoo.data import DATASETS, load_data
from ..zoo.loaders import make_loader
from ..zoo.measure import count_parameters
from .evaluation import evaluate
from .pipeline import (
    MODEL_FORMAT,
    build_model,
    data_transforms,
    read_model_file,
    resolve_device,
    tokenizer_for,
)


def collapse_run(
    run_dir: str | Path, threshold: float = 0.05, force: bool = False, out: str | None = None
) -> dict:
    """Fold the converted blocks of `run_dir/model.pt`; report the data set's headline metric (top-1,
    perplexity, ...) before and after on its held-out split."""
    run_dir = Path(run_dir)
    model_path = run_dir / "model.pt"
    if not model_path.exists():
        raise CheckpointError(f"{run_dir} has no model.pt: is it a completed lcbench run folder?")
    try:
        cfg = build_dataclass(RunConfig, load_yaml(run_dir / "config.yaml"))
    except ConfigError as e:
        raise ConfigError(
            f"{e} (lcbench wrote this file: restore it from the `config` in the run's result.json)"
        ) from None
    saved = read_model_file(model_path)
    converted = list(saved["structure"].get("converted", []))
    if not converted:
        raise CheckpointError(f"{model_path} has no converted (PReLU) blocks left to fold")
    device = resolve_device(cfg.device)
    model = build_model(saved, model_path).to(device).eval()
    slopes = {n: collapse.slope(model, collapse.block_by_name(model, n)) for n in converted}
    if not force and all(abs(a - 1.0) >= threshold for a in slopes.values()):
        listed = ", ".join(f"{n} {a:.4f}" for n, a in slopes.items())
        raise CheckpointError(
            f"nothing to fold in {model_path}: no slope is within {threshold:g} of 1 ({listed}); nothing "
            "was written. Train the slopes further, raise --threshold, or --force to fold them anyway "
            "(reported as forced)"
        )
    spec = DATASETS.get(cfg.dataset)
    data = load_data(
        cfg.dataset,
        cfg.data_root,
        data_transforms(model, cfg.img_size) if spec.natural_images else None,
        tokenizer=tokenizer_for(cfg, model) if spec.is_text else None,
        seq_len=cfg.seq_len,
        eval_stride=cfg.eval_stride,
        split_seed=replicate_seed(cfg),
        holdout=cfg.holdout,
    )
    loader = make_loader(data.val, cfg.eval_batch_size, False, cfg.workers, device=device)
    calibration = next(iter(loader))[0][:128].to(device)
    before = evaluate(model, loader, device, task=spec.task)
    params_before = count_parameters(model)[0]
    blocks = collapse.collapse(model, converted, threshold, force, calibration)
    after = evaluate(model, loader, device, task=spec.task)
    folded = [b["block"] for b in blocks if b["folded"]]
    structure = {
        "converted": [n for n in converted if n not in folded],
        "folded": [*saved["structure"].get("folded", []), *folded],
    }
    out_path = Path(out) if out else run_dir / "collapsed.pt"
    atomic_torch_save(
        out_path,
        {**saved, "format": MODEL_FORMAT, "structure": structure, "state_dict": model.cpu().state_dict()},
    )
    report = {
        "model": str(out_path),
        "threshold": threshold,
        "force": force,
        "blocks_folded": f"{len(folded)} of {len(converted)}",
        "blocks": blocks,
        "metric": spec.metric,  # the data set's headline metric: top1, perplexity, ...
        f"{spec.metric}_before": before[spec.metric],
        f"{spec.metric}_after": after[spec.metric],
        "params_before": params_before,
        "params_after": count_parameters(model)[0],
        "source_result": (read_json(run_dir / "result.json") or {}).get("run_id"),
    }
    atomic_write_json(out_path.with_suffix(".report.json"), report)
    return report
