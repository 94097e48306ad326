"""Analysis: tables from fixed records (exact means and stds), LaTeX that compiles, plots whose data is
checked, and reports that list failed and missing runs."""

import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import yaml

from lcbench.analysis import plots
from lcbench.analysis.best import TIED
from lcbench.analysis.headline import add_scores
from lcbench.analysis.records import sweep_frame
from lcbench.analysis.report import load_paper, paper_comparison, write_report
from lcbench.analysis.tables import aggregate, matched_table, per_method_table, write_table
from lcbench.core.record import SUMMARY
from lcbench.core.store import RunDir, atomic_write_json
from lcbench.execution.sweep import plan_sweep
from tests.conftest import REPO

TOP1 = {"layercollapse": [90.0, 92.0, 94.0], "kd": [85.0, 86.0, 90.0]}


def fixed_frame() -> pd.DataFrame:
    rows = [
        dict(
            method="original",
            variant="original",
            level=np.nan,
            seed=0,
            top1=95.0,
            compression=1.0,
            gmacs=0.004,
            train_seconds=30.0,
        )
    ]
    for method, values in TOP1.items():
        for seed, top1 in enumerate(values):
            rows.append(
                dict(
                    method=method,
                    variant=method,
                    level=1.0,
                    seed=seed,
                    top1=top1,
                    compression=1.5,
                    gmacs=0.003,
                    train_seconds=10.0 * (1 + seed) * (2 if method == "kd" else 1),
                )
            )
    rows.append(dict(method="kd", variant="kd", level=1.0, seed=3, top1=np.nan, status="failed"))
    frame = pd.DataFrame(rows)
    frame["status"] = frame.get("status").fillna("completed")
    frame["stage"] = np.where(frame["method"] == "original", "pretrain", "compress")
    frame["matched"] = [None if m == "original" else True for m in frame["method"]]
    frame["init"] = np.where(frame["method"] == "kd", "teacher", "")
    frame["paper_blocks"] = frame["level"]
    frame["blocks_folded"] = np.where(frame["method"] == "layercollapse", frame["level"], np.nan)
    frame["epochs"] = 3.0
    frame["top1_prefold"] = frame["top1"]
    frame["dataset"], frame["model"] = "digits", "digits_vit"
    frame["base_top1"] = 95.0
    frame["delta_top1"] = frame["top1"] - 95.0
    for column in ("params", "params_dense", "train_flops"):
        frame[column] = 1.0
    frame["gmacs_effective"] = frame["gmacs"]
    frame["val_samples"] = 360.0
    frame["speedup_quiet_b1"], frame["speedup_quiet_b1_low"], frame["speedup_quiet_b1_high"] = 1.3, 1.2, 1.4
    frame["train_flops"] = frame["train_seconds"] * 1e9
    return add_scores(frame)  # (as sweep_frame does: the headline metric as `score`)


def test_aggregate_means_and_sample_stds_are_exact():
    agg = aggregate(fixed_frame()).set_index("method")
    assert agg.loc["layercollapse", "top1_mean"] == 92.0
    assert agg.loc["layercollapse", "top1_std"] == pytest.approx(2.0)  # sample std (ddof=1) of 90, 92, 94
    assert agg.loc["kd", "top1_mean"] == pytest.approx(87.0)
    assert agg.loc["kd", "top1_std"] == pytest.approx(np.std([85, 86, 90], ddof=1))
    assert agg.loc["kd", "n"] == 3  # the failed seed is not averaged in
    assert agg.loc["kd", "train_seconds_mean"] == pytest.approx(40.0)
    assert agg.loc["original", "n"] == 1 and np.isnan(agg.loc["original", "top1_std"])


def test_tables_put_the_original_first_then_layercollapse_and_bold_only_what_was_tested(tmp_path):
    agg = aggregate(fixed_frame())
    table = per_method_table(agg)
    assert list(table["method"]) == ["original", "layercollapse", "kd"]  # the method under test leads
    write_table(table, tmp_path / "t", ["dataset", "model", "level"], "Caption", "tab:x")
    csv = pd.read_csv(tmp_path / "t.csv")
    assert csv.loc[csv["method"] == "layercollapse", "top1_mean"].item() == 92.0
    md = (tmp_path / "t.md").read_text()
    assert "| 92.00 ± 2.00 " in md and "Top-1 (%)" in md
    assert "**" not in md  # no per-example records, no verdict: nothing is called best
    assert "Dense MACs (MMACs)" in md and "Effective MACs (MMACs)" in md  # a unit a reader can use
    assert "| 3.00 " in md  # 0.003 GMACs shown as 3.00 MMACs
    assert "| KD " in md and "| LayerCollapse " in md  # display names
    tex = (tmp_path / "t.tex").read_text()
    assert "\\toprule" in tex and "\\label{tab:x}" in tex and "\\centering" in tex
    assert "\\caption{Caption. Mean $\\pm$ sample std over $n = 3$ seeds" in tex
    assert "360 held-out images" in tex and "bold:" not in tex
    assert "\\multicolumn{11}{@{}l}{\\textit{digits\\_vit}}" in tex  # the model once, as a block header
    # siunitx columns: the mean aligned on its point, the std in its own column after a ± siunitx sets
    assert "S[table-format=2.2]@{}S[table-format=1.2, table-space-text-pre={${}\\pm{}$}]" in tex
    assert "LayerCollapse & 1 & 92.00 & {${}\\pm{}$}2.00 & " in tex
    assert "\\bfseries" not in tex
    table[TIED] = [np.nan, True, False]  # as the verdict rule would say: KD distinguishably worse
    write_table(table, tmp_path / "b", ["dataset", "model", "level"], "Caption", "tab:x")
    md, tex = (tmp_path / "b.md").read_text(), (tmp_path / "b.tex").read_text()
    assert "**92.00 ± 2.00**" in md and "**87.00" not in md and "**1.50**" not in md  # quality only
    assert "\\bfseries 92.00 & {${}\\pm{}$}2.00" in tex and "bold: the best of a model and level" in tex
    matched = matched_table(agg)
    # the original heads the model's rows (no level), then each level with LayerCollapse first
    assert list(matched["method"]) == ["original", "layercollapse", "kd"]
    assert matched["level"].isna().tolist() == [True, False, False]


def two_levels_frame() -> pd.DataFrame:
    """fixed_frame plus a pruning row (effective MACs below dense) and a level where LayerCollapse's
    speed-up interval contains 1, KD missed its match and every compression is equal."""
    frame = fixed_frame()
    prune = frame[frame["method"] == "layercollapse"].copy()
    prune["method"] = prune["variant"] = "magnitude_pruning"
    prune["top1"] = [80.0, 81.0, 82.0]
    prune["gmacs"], prune["gmacs_effective"] = 0.004, 0.002
    prune["speedup_quiet_b1"], prune["speedup_quiet_b1_low"], prune["speedup_quiet_b1_high"] = 1.25, 1.1, 1.4
    frame = pd.concat([frame, prune], ignore_index=True)
    frame.loc[frame["method"] == "layercollapse", ["speedup_quiet_b1_low", "speedup_quiet_b1_high"]] = [
        0.9,
        1.5,
    ]
    return frame


def test_bold_is_the_quality_of_tested_ties_never_an_unmatched_row_and_not_when_all_tie():
    from lcbench.analysis.tables import bold_mask

    frame = two_levels_frame()
    agg = matched_table(aggregate(frame)).set_index("method", drop=False)
    agg[TIED] = pd.Series({"original": np.nan, "layercollapse": True, "kd": True, "magnitude_pruning": False})
    bold = bold_mask(agg, ["dataset", "model", "level"]).set_index(agg.index)
    assert bold.at["layercollapse", "top1"] and bold.at["kd", "top1"] and bold.at["kd", "delta_top1"]
    assert not bold.loc["magnitude_pruning"].any() and not bold.loc["original"].any()
    # compression, MACs, speed-up and cost are never bold: they are matched by design or not a quality
    assert (
        not bold[["compression", "gmacs", "gmacs_effective", "speedup_quiet_b1", "train_flops"]].any().any()
    )
    agg.loc["magnitude_pruning", TIED] = True  # every counted row ties: none stands out
    assert not bold_mask(agg, ["dataset", "model", "level"]).any().any()
    agg.loc["magnitude_pruning", TIED] = False
    agg.loc["layercollapse", "matched"] = False  # missed its match: never bold, whatever its value
    bold = bold_mask(agg, ["dataset", "model", "level"]).set_index(agg.index)
    assert not bold.loc["layercollapse"].any() and bold.at["kd", "top1"]


def test_infeasible_and_forced_points_are_labelled_and_an_infeasible_one_is_never_a_win():
    """A low-rank point no allocation reaches at a useful rank lost by 76 points and was bold in the
    compression column: it is now labelled and out of bold; in the paired comparisons it counts at what it
    achieved (intention-to-treat) as a run that did not reach its target; a forced fold is a real model,
    counted, and labelled."""
    from lcbench.analysis.records import point_flag
    from lcbench.analysis.stats import reached_target
    from lcbench.analysis.tables import bold_mask, caption_notes, latex_table, markdown_table

    assert point_flag({"method_report": {"infeasible": True}}) == "infeasible"
    assert point_flag({"method_report": {"not_folded": ["6"], "folded": []}}) == "not folded"
    assert point_flag({"method_report": {"forced": ["6"], "not_folded": []}}) == "forced fold"
    assert point_flag({"method_report": {"forced": [], "not_folded": []}}) == ""
    frame = fixed_frame()
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    kd = frame["method"] == "kd"
    lc = frame["method"] == "layercollapse"
    frame["flag"] = np.where(kd, "infeasible", np.where(lc, "forced fold", ""))
    frame.loc[kd, "matched"] = False  # as sweep_frame marks an infeasible point
    frame.loc[kd, "top1"] = 99.0  # better than LayerCollapse: still never bold
    agg = matched_table(aggregate(frame)).set_index("method", drop=False)
    assert agg.at["kd", "flag"] == "infeasible" and agg.at["layercollapse", "flag"] == "forced fold"
    bold = bold_mask(agg, ["dataset", "model", "level"]).set_index(agg.index)
    assert not bold.loc["kd"].any()
    markdown = markdown_table(agg, ["dataset", "model", "level"])
    assert "| infeasible " in markdown and "yes (forced fold)" in markdown and "NO" not in markdown
    latex = latex_table(agg, ["dataset", "model", "level"], "c", "l")
    assert "KD$^{*}$ & 1" in latex and "LayerCollapse$^{\\P}$ & 1" in latex  # not "not matched" (‡)
    notes = caption_notes(agg)
    assert "$^{*}$ infeasible at this compression" in notes and "$^{\\P}$ folded whatever the slope" in notes
    assert not frame[kd].apply(reached_target, axis=1).any()  # counted, as runs that missed their target
    assert frame[lc].apply(reached_target, axis=1).all()


def _compile(tmp_path, pdflatex, body: str, preamble: str = "") -> tuple[str, bytes]:
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{siunitx}\\usepackage{graphicx}\n"
        + preamble
        + "\n"
        "\\pdfobjcompresslevel=0\\begin{document}\n" + body + "\n\\end{document}\n"
    )
    done = subprocess.run(
        [pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    return (tmp_path / "doc.log").read_text(errors="replace"), (tmp_path / "doc.pdf").read_bytes()


def test_latex_renders_bold_and_fits_the_line(tmp_path, pdflatex):
    """Compiled, then read back: no Overfull box (the table fits \\linewidth), bold digits really set in
    a bold font (CMBX; the old `\\textbf{$...$}` rendered regular digits), none where nothing is best."""
    frame = two_levels_frame()
    wide = frame[(frame["method"] == "kd") & (frame["status"] == "completed")].copy()
    wide["variant"] = "kd_teacher_with_a_deliberately_long_variant_name_5x"  # wider than the line
    wide["top1"] = [10.0, 40.0, 70.0]
    table = per_method_table(aggregate(pd.concat([frame, wide], ignore_index=True)))
    table[TIED] = table["method"].map({"layercollapse": True, "kd": True}).astype(object)
    write_table(table, tmp_path / "t", ["dataset", "model", "level"], "Per method", "tab:t")
    log, pdf = _compile(tmp_path, pdflatex, "\\input{t.tex}")
    assert "Overfull \\hbox" not in log and "siunitx" in log
    assert b"CMBX" in pdf  # bold digits

    ties = fixed_frame()
    ties = ties[ties["method"] != "kd"]  # one method per level: nothing to be best against
    table = per_method_table(aggregate(ties))
    table[TIED] = table["method"].map({"layercollapse": True}).astype(object)
    write_table(table, tmp_path / "u", ["dataset", "model", "level"], "Ties", "tab:u")
    assert "\\bfseries" not in (tmp_path / "u.tex").read_text()
    _, pdf = _compile(tmp_path, pdflatex, "\\input{u.tex}")
    assert b"CMBX" not in pdf


def test_a_long_table_goes_on_in_floats_that_each_fit_a_page(tmp_path, pdflatex):
    """90 rows: three floats of at most MAX_ROWS body rows, the model named again where it continues, and
    no "Float too large" or Overfull warning on a letter page."""
    from lcbench.analysis.tables import MAX_ROWS

    frame = fixed_frame()
    many = []
    for i in range(88):
        extra = frame[frame["method"] == "kd"].copy()
        extra["variant"] = f"kd_{i:02d}"
        many.append(extra)
    table = per_method_table(aggregate(pd.concat([frame, *many], ignore_index=True)))
    assert len(table) > 2 * MAX_ROWS
    write_table(table, tmp_path / "t", ["dataset", "model", "level"], "Long", "tab:long")
    tex = (tmp_path / "t.tex").read_text()
    assert tex.count("\\begin{table}") == 3 and "\\label{tab:long-2}" in tex and "\\label{tab:long-3}" in tex
    assert "Long (continued from Table~\\ref{tab:long})" in tex
    assert "\\textit{digits\\_vit (continued)}" in tex
    for preamble in PAGES.values():
        log, _ = _compile(tmp_path, pdflatex, "\\input{t.tex}", preamble)
        assert "Float too large" not in log and "Overfull" not in log


GENERATED_TEX = sorted((REPO / "results").glob("*/*.tex"))


PAGES = {"article": "", "wide": "\\usepackage[margin=1in]{geometry}"}  # wide: shrunk least, so tallest


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("tex", GENERATED_TEX, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_generated_table_compiles_without_a_warning(tmp_path, pdflatex, tex, page):
    """Every .tex `make reproduce` wrote into results/, in a minimal document (article's text width, and
    1 in margins where a wide table is shrunk least and so stands tallest): no Overfull box and no
    "Float too large" (a table taller than the page)."""
    (tmp_path / tex.name).write_text(tex.read_text())
    log, _ = _compile(tmp_path, pdflatex, f"\\input{{{tex.name}}}", PAGES[page])
    warnings = [line for line in log.splitlines() if "Overfull" in line or "Float too large" in line]
    assert not warnings, warnings


def test_plots_hold_the_series_of_the_table():
    agg = aggregate(fixed_frame())
    fig = plots.score_against(agg, "compression")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"original"}  # errorbar lines carry their labels on the containers
    containers = {c.get_label(): c for c in ax.containers}
    assert set(containers) == {"KD", "LayerCollapse"}  # display names
    x, y = containers["LayerCollapse"].lines[0].get_data()
    assert list(x) == [1.5] and list(y) == [92.0]
    assert list(lines["original"].get_ydata()) == [95.0]
    # the original is a hollow star beneath the methods (a fine-tuned point at x=1 stays visible)
    assert lines["original"].get_markerfacecolor() == "none"
    assert lines["original"].get_zorder() < containers["KD"].lines[0].get_zorder()
    cost = plots.score_against(agg, "train_flops").axes[0]
    x, _ = {c.get_label(): c for c in cost.containers}["KD"].lines[0].get_data()
    assert list(x) == [40.0] and cost.get_xlabel() == "training GFLOPs (counted)"  # 40e9
    assert cost.get_ylabel() == "top-1 (%), ↑ better"  # the quality's direction on the axis
    # one level per variant: drawn as points, not as lines
    assert all(c.lines[0].get_linestyle() == "None" for c in cost.containers)


def test_plots_pick_a_unit_per_panel_keep_error_bars_positive_and_flag_off_scale_points():
    frame = fixed_frame()
    big = frame.copy()
    big["model"], big["gmacs"] = "vit_big", frame["gmacs"] * 1e6  # 0.004 GMACs and 4000 GMACs panels
    kd = (frame["method"] == "kd") & (frame["status"] == "completed")
    frame.loc[kd, ["top1", "score"]] = [
        [10.0] * 2,
        [12.0] * 2,
        [11.0] * 2,
    ]  # near chance: would flatten the panel
    lc = frame["method"] == "layercollapse"
    frame.loc[lc, "gmacs"] = [0.0001, 0.0058, 0.0001]  # std larger than the mean
    fig = plots.score_against(aggregate(pd.concat([frame, big], ignore_index=True)), "gmacs")
    small_ax, big_ax = fig.axes[:2]
    assert small_ax.get_xlabel() == "dense MMACs per image"
    assert big_ax.get_xlabel() == "dense TMACs per image"
    bars = {c.get_label(): c for c in small_ax.containers}
    kd_bars, lc_bars = bars["KD"], bars["LayerCollapse"]
    x, _ = lc_bars.lines[0].get_data()
    assert list(x) == pytest.approx([2.0])
    segments = [seg for coll in lc_bars.lines[2] for seg in coll.get_segments()]
    assert min(seg[:, 0].min() for seg in segments) >= 0  # no MACs error bar below 0
    low, high = small_ax.get_ylim()
    assert 85 < low < 92 and high < 96  # the 11% point no longer sets the scale: fitted to 92-95 ...
    flagged = [t.get_text() for t in small_ax.texts]
    assert flagged == ["11.0%"]  # ... it is drawn on the edge with its value
    (edge,) = [ln for ln in small_ax.get_lines() if ln.get_marker() == "v" and ln.get_ydata()[0] == low]
    assert edge.get_color() == kd_bars.lines[0].get_color()


def test_blocks_folded_plot_uses_the_blocks_actually_folded():
    frame = fixed_frame()
    lc = frame["method"] == "layercollapse"
    frame.loc[lc, "level"] = [1.0, 2.0, 3.0]
    frame.loc[lc, "blocks_folded"] = [1.0, 2.0, 2.0]  # level 3 folded only 2 blocks
    fig = plots.blocks_folded_vs_paper(aggregate(frame), load_paper())
    ours, paper = fig.axes
    assert list(ours.get_lines()[0].get_xdata()) == [0, 1, 2, 2]
    assert [t.get_text() for t in ours.texts] == ["asked 1", "asked 2", "asked 3"]
    # both as the change from their own original, on one scale (the paper's: 75.35, 75.79, 75.34)
    assert list(paper.get_lines()[0].get_ydata())[:3] == pytest.approx([0.0, 0.44, -0.01])
    assert list(ours.get_lines()[0].get_ydata()) == pytest.approx([0.0, -5.0, -3.0, -1.0])
    assert ours.get_shared_y_axes().joined(ours, paper)


def _lc_row(model: str, level: float, params_m: float, top1: float, prefold: float = np.nan) -> dict:
    return {
        "dataset": "imagenet",
        "model": model,
        "method": "layercollapse",
        "level": level,
        "params_dense_mean": params_m * 1e6,
        "top1_mean": top1,
        "top1_prefold_mean": prefold,
        "top1_std": 0.1,
        "n": 2,
    }


def test_paper_comparison_joins_on_the_folded_structure_not_on_k():
    # lcbench k counts MLPs: mixer k=1 (channel MLP of block 11, 55.749M) is not the paper's "1 block"
    # (token + channel MLP, 55.636M = lcbench k=2); the join is on the parameter count
    agg = pd.DataFrame(
        [
            _lc_row("mixer_b16_224", 1.0, 55.749, 75.0),
            _lc_row("mixer_b16_224", 2.0, 55.636, 76.0),
            _lc_row("vit_base_patch16_224", 1.0, 82.436, 81.0),
        ]
    )
    table = paper_comparison(agg, load_paper()).set_index(["model", "level_mlps"])
    mixer = table.loc[("mixer_b16_224", 2.0)]
    assert mixer["top1_paper"] == 76.11 and mixer["top1_ours"] == 76.0
    assert ("mixer_b16_224", 1.0) not in table.index  # 55.75M matches no paper row
    assert table.loc[("vit_base_patch16_224", 1.0), "top1_paper"] == 82.17


def test_paper_comparison_pairs_a_prefold_reference_with_our_prefold_model():
    agg = pd.DataFrame([_lc_row("vgg11_bn", 2.0, 34.315, top1=60.0, prefold=66.0)])
    row = paper_comparison(agg, load_paper()).iloc[0]
    assert row["status"] == "prefold_prelu" and row["top1_paper"] == 66.36
    assert row["top1_ours"] == 66.0 and "BEFORE the fold" in row["compared"]


def test_paper_reference_rows_carry_source_protocol_and_status():
    paper = load_paper()
    assert {"source_repo", "source_file", "source_cell", "status", "preprocessing", "epochs"} <= set(paper)
    vgg = paper[paper["model"].isin(["vgg11_bn", "vgg19_bn"]) & (paper["paper_blocks"] > 0)]
    assert set(vgg["status"]) == {"prefold_prelu"}
    two_blocks = paper[(paper["model"] == "mixer_b16_224") & (paper["paper_blocks"] == 2)].iloc[0]
    assert two_blocks["epochs"] == 46 and two_blocks["threshold"] == 0.01 and two_blocks["mlps_folded"] == 4
    tiny8 = paper[(paper["model"] == "vit_tiny_patch16_224") & (paper["paper_blocks"] == 8)]
    assert tiny8["top1"].item() == 63.536
    assert paper["preprocessing"].str.contains("crop 0.875").all()


def test_report_lists_failed_and_missing_runs(tmp_path):
    spec = {
        "name": "rep",
        "base": {
            "dataset": "digits",
            "model": "digits_mlp",
            "output_root": str(tmp_path / "o"),
            "pretrain": {"seed": 0},  # one original shared by both seeds
        },
        "seeds": [0, 1],
        "levels": [1],
        "variants": {"lc": {"method": "layercollapse", "k": "{level}"}},
    }
    path = tmp_path / "rep.yaml"
    path.write_text(yaml.safe_dump(spec))
    plan = plan_sweep(path)
    pretrain, lc0, lc1 = plan.runs
    record = {
        "status": "completed",
        "original": {"top1": 98.0, "gmacs": 3e-4},
        "final": {"top1": 97.0, "gmacs_effective": 4e-5, "latency_ms_b1": 0.1, "params_nonzero": 10},
        "delta_top1": -1.0,
        "compression": 7.66,
        "speedup_measured_b1": 1.2,
        "cost": {"train_seconds": 3.0},
    }
    for run in (pretrain, lc0):
        RunDir(plan.output_root, run.run_id).create()
        atomic_write_json(RunDir(plan.output_root, run.run_id).result_path, {"run_id": run.run_id, **record})
    frame = sweep_frame(plan).set_index("run_id")
    assert frame.loc[lc1.run_id, "status"] == "missing"
    assert set(SUMMARY) <= set(frame.columns)  # every summary metric, under its one name
    assert frame.loc[lc0.run_id, "speedup_b1"] == 1.2 and np.isnan(frame.loc[lc1.run_id, "top1"])
    RunDir(plan.output_root, lc1.run_id).create()
    atomic_write_json(
        RunDir(plan.output_root, lc1.run_id).result_path,
        {"run_id": lc1.run_id, "status": "failed", "error": {"type": "ConfigError", "message": "boom"}},
    )
    summary = write_report(plan, tmp_path / "out")
    readme = (tmp_path / "out" / "README.md").read_text()
    assert summary["counts"] == {"completed": 2, "failed": 1}
    assert "## Failed or missing runs" in readme and lc1.run_id in readme and "boom" in readme
    assert "97.00" in readme and (tmp_path / "out" / "top1_vs_compression.pdf").exists()
    assert (tmp_path / "out" / "top1_vs_compression_column.pdf").exists()
    assert readme.count("- `top1_vs_train_flops.png`") == 1  # one figure, listed once (the curves differ)
    assert "n counts fine-tuning replicates only" in readme


def test_findings_label_points_that_missed_their_matched_compression():
    from lcbench.analysis.report import findings

    frame = fixed_frame()
    assert "missed its target" not in "\n".join(findings(aggregate(frame)))
    frame.loc[frame["method"] == "layercollapse", "matched"] = False  # e.g. a block was not folded
    lines = "\n".join(findings(aggregate(frame)))
    assert "layercollapse 92.00 ± 2.00% at 1.50x (**missed its target compression by more than 2%**" in lines
    assert "compared at what it achieved" in lines  # intention-to-treat: never left out


def test_table_flags_say_how_many_seeds_raised_them():
    """The tables flagged a whole group "not folded; not counted" while the claim counted 4 of its 5 seeds:
    a flag and a missed target now say in how many seeds."""
    from lcbench.analysis.tables import markdown_table

    frame = fixed_frame()
    lc = frame.index[frame["method"] == "layercollapse"]
    frame["flag"] = ""
    frame.loc[lc[:1], "flag"] = "not folded"
    frame.loc[lc[:1], "matched"] = False
    agg = matched_table(aggregate(frame))
    row = agg[agg["method"] == "layercollapse"].iloc[0]
    assert row["flag"] == f"not folded in 1 of {len(lc)}" and row["matched_seeds"] == len(lc) - 1
    assert f"not folded in 1 of {len(lc)}" in markdown_table(agg, ["dataset", "model", "level"])
    frame.loc[lc, "flag"] = "not folded"
    assert matched_table(aggregate(frame)).set_index("method").at["layercollapse", "flag"] == "not folded"


def test_slope_plot_starts_at_epoch_zero_names_the_layers_and_shows_the_fold_band(tmp_path):
    from lcbench.training.identity import run_id
    from lcbench.training.pipeline import execute
    from lcbench.training.resolve import make_config
    from tests.conftest import fast_overrides

    cfg = make_config(
        {},
        fast_overrides(
            tmp_path,
            epochs=2,
            stage="compress",
            method="layercollapse",
            k=1,
            threshold=0.2,
            lam=50,  # predicted slope 0.99 after 46 steps: folded inside the band
            **{"pretrain.epochs": 1},
        ),
    )
    execute(cfg, progress_bar=False)
    frame = pd.DataFrame(
        [
            dict(
                run_id=run_id(cfg),
                method="layercollapse",
                status="completed",
                seed=0,
                level=1.0,
                level_label="1",
                model=cfg.model,
            )
        ]
    )
    ax = plots.slope_trajectories(frame, tmp_path).axes[0]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("MLP")]
    assert line.get_label() == "MLP 1"  # a plain Sequential's MLP by number, not by its indices
    assert list(line.get_xdata()) == [0, 1, 2] and line.get_ydata()[0] == 0.0  # ReLU's slope at the start
    assert ax.get_title().endswith(": 1 of 1 folded")
    assert all(float(t).is_integer() for t in ax.get_xticks())  # whole epochs only
    (band,) = ax.patches
    assert band.get_label() == "fold band |a-1| < 0.2"


def test_every_registered_method_has_its_own_colour_marker_and_name():
    """Colours came from a hand-written table: a new method was drawn in finetune's colour."""
    from lcbench.analysis.names import method_name
    from lcbench.analysis.plots import method_color, method_marker
    from lcbench.methods import METHODS, method_order

    methods = [m for m in method_order() if m != "none"]
    assert len({method_color(m) for m in methods}) == len(methods)
    assert len({method_marker(m) for m in methods}) == len(methods)
    assert method_color("layercollapse") == method_color("layercollapse")  # the same in every figure
    assert method_name("kd") == "KD" and method_name("not_installed_here") == "not installed here"
    assert all(method_name(m) == (METHODS.get(m).title or m.replace("_", " ")) for m in methods)


def test_a_caption_names_the_data_sets_metric_and_what_its_examples_are():
    from lcbench.analysis.tables import caption_notes

    rows = pd.DataFrame({"method": ["layercollapse"], "n": [3], "val_samples_mean": [249.0]})
    assert "perplexity on 249 held-out examples" in caption_notes(rows.assign(dataset="text_stdlib"))
    assert "top-1 on 249 held-out images" in caption_notes(rows.assign(dataset="digits"))


def test_a_figure_saved_twice_from_the_same_data_has_the_same_bytes(tmp_path):
    import matplotlib.pyplot as plt

    from lcbench.analysis.plots import save

    def draw():
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([1, 2, 3], [3, 1, 2])
        return fig

    first = [p.read_bytes() for p in save(draw(), tmp_path / "a" / "fig")]
    time.sleep(1.1)  # a PDF's creation date has a resolution of one second
    second = [p.read_bytes() for p in save(draw(), tmp_path / "b" / "fig")]
    assert first == second  # PNG and PDF alike: a report rerun changes no figure whose data did not


def test_figures_come_at_text_and_column_width_with_fonts_of_7_pt_and_one_look_per_variant(tmp_path):
    """Printed at 3.3 in (one column) no text is under 7 pt; a variant keeps its marker and line style in
    a panel where its method's other variant is missing (the look came from the index within a panel)."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    from PIL import Image

    from lcbench.analysis.style import COLUMN, LAYOUTS, rc

    frame = fixed_frame()
    other = frame[frame["method"] != "original"].copy()
    other["model"] = "digits_mixer"
    second = frame[frame["method"] == "kd"].copy()
    second["variant"] = "kd_random"  # only in the first panel
    agg = aggregate(pd.concat([frame, second, other], ignore_index=True))
    paths = plots.save_layouts(
        lambda layout: plots.score_against(agg, "compression", layout=layout), tmp_path / "f"
    )
    assert [p.name for p in paths] == ["f.png", "f.pdf", "f_column.png", "f_column.pdf"]
    assert Image.open(tmp_path / "f_column.png").size[0] == round(COLUMN.width * plots.DPI)
    assert Image.open(tmp_path / "f.png").size[0] == round(7.0 * plots.DPI)
    for layout in LAYOUTS:
        with plt.rc_context(rc(layout)):
            fig = plots.score_against(agg, "compression", layout=layout)
            fig.canvas.draw()
            sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()]
            assert min(sizes) >= 7
            looks = {}
            for ax in fig.axes:
                for c in ax.containers:
                    line = c.lines[0]
                    looks.setdefault(c.get_label(), set()).add((line.get_marker(), line.get_color()))
            plt.close(fig)
        assert all(len(v) == 1 for v in looks.values())  # one look per variant across panels
        assert len({next(iter(v)) for v in looks.values()}) == len(looks)  # and each its own
