"""The verdict rule's error rates, measured on simulated records whose truth is known (`make calibrate`).

Each simulated sweep point has R seeds; each seed scores two models on a test set (one shared by every
seed, or one per seed, as a data set with an official test split or digits' seeded splits give), and the
per-example records go through the same path a report's do: `outcomes.score` (jackknife values),
`outcomes.paired_difference`, `verdicts.compare`, a one-comparison Holm `Family` and `verdicts.decide`.

- **binary**: top-1 right or wrong per image. Examples differ in how often the two models disagree on
  them (a gamma-distributed propensity around 10%) and in which way (a per-example lean): on a shared
  test set that is the cross-seed covariance of test-set errors. A seed's training moves the balance of
  disagreements (a normal shift of its log-odds, between-seed spread).
- **tokens**: language-model sequences: per-token losses with a shared per-sequence difficulty, a
  per-sequence lean of one model over the other, per-model noise, and a per-seed shift of the log ratio.

The true difference is 0 or exactly the margin (found by quadrature); the between-seed spread is none, equal
to one seed's test-sample standard error ("balanced") or three times it ("seed-dominated"). The former rule
(a percentile bootstrap over seeds and examples, `legacy_bootstrap`) runs on the same records for the
before/after table.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import optimize
from scipy import stats as scipy_stats

from ..core.store import atomic_write_text
from ..training.provenance import cpu_model
from ..training.tasks import TASKS
from .outcomes import paired_difference, score
from .verdicts import TOO_FEW, Family, Rule, compare, decide, holm

SPREADS = {"none": 0.0, "balanced": 1.0, "seed-dominated": 3.0}  # between-seed sd / a seed's test-set se
DISCORDANT = 0.10  # the mean share of examples two models disagree on (binary)
SHAPE = 0.5  # the gamma shape of the examples' disagreement propensities (small: concentrated on few)
LEAN = 1.0  # sd of an example's lean toward one model (logit)
BOTH_RIGHT = 0.9  # share of the examples both models agree on that both get right
TOKENS = (16, 64)  # tokens per sequence (uniform)
LOSS_LEAN = 0.05  # sd of a sequence's per-token loss lean toward one model
LOSS_NOISE = 0.02  # sd of each model's own per-sequence noise (per token)
HERMITE = np.polynomial.hermite_e.hermegauss(80)
OUT = Path("results/bench")


@dataclass(frozen=True)
class Regime:
    outcome: str  # binary | tokens
    seeds: int
    examples: int
    shared: bool  # one test set for every seed
    spread: str  # none | balanced | seed-dominated
    truth: str  # zero | margin

    @property
    def metric(self) -> str:
        return "top1" if self.outcome == "binary" else "perplexity"

    @property
    def rule(self) -> Rule:
        return Rule.for_metric(self.metric)


# --------------------------------------------------------------------------------------------------------
# Simulated records


def _mean_disagreement() -> float:
    """E[min(D kappa, 1)] for kappa ~ Gamma(SHAPE, 1 / SHAPE): the share of examples that differ."""
    return float(scipy_stats.gamma(SHAPE, scale=1 / SHAPE).expect(lambda k: min(DISCORDANT * k, 1.0)))


def _mean_tanh(shift: float, sd: float) -> float:
    nodes, weights = HERMITE
    return float(np.sum(weights * np.tanh(shift + sd * nodes)) / np.sqrt(2 * np.pi))


class Binary:
    """Top-1 outcomes of two classifiers, with a known expected difference (points)."""

    task = TASKS["classification"]

    def __init__(self, regime: Regime) -> None:
        self.regime = regime
        self.share = _mean_disagreement()
        self.test_se = 100 * math.sqrt(self.share / regime.examples)
        nodes, weights = HERMITE  # d(expected difference) / d(shift) at 0: 100 share E[1 - tanh^2(lean)]
        slope = 100 * self.share * float(np.sum(weights / np.cosh(LEAN * nodes) ** 2) / np.sqrt(2 * np.pi))
        self.seed_sd = SPREADS[regime.spread] * self.test_se / slope
        target = regime.rule.margin if regime.truth == "margin" else 0.0
        self.shift = self._shift_for(target)

    def truth(self, shift: float) -> float:
        return 100 * self.share * _mean_tanh(shift, math.hypot(self.seed_sd, LEAN))

    def _shift_for(self, target: float) -> float:
        return 0.0 if target == 0 else optimize.brentq(lambda s: self.truth(s) - target, -5, 5, xtol=1e-12)

    def test_set(self, rng: np.random.Generator) -> dict:
        n = self.regime.examples
        propensity = np.minimum(DISCORDANT * rng.gamma(SHAPE, 1 / SHAPE, n), 1.0)
        return {"p": propensity, "lean": rng.normal(0, LEAN, n), "target": rng.integers(0, 10, n)}

    def seed(self, test: dict, rng: np.random.Generator) -> tuple[dict, dict]:
        n = len(test["p"])
        shift = self.shift + self.seed_sd * rng.standard_normal()
        differ = rng.random(n) < test["p"]
        first_wins = rng.random(n) < (1 + np.tanh(shift + test["lean"])) / 2
        both = rng.random(n) < BOTH_RIGHT
        a = np.where(differ, first_wins, both)
        b = np.where(differ, ~first_wins, both)
        return _classified(test["target"], a), _classified(test["target"], b)


def _classified(target: np.ndarray, correct: np.ndarray) -> dict:
    predicted = np.where(correct, target, (target + 1) % 10)
    return {"target": target.astype(np.int32), "predicted": predicted.astype(np.int32)}


class Tokens:
    """Per-sequence token losses of two language models, with a known expected log ratio (x100)."""

    task = TASKS["language_modeling"]

    def __init__(self, regime: Regime) -> None:
        self.regime = regime
        spread = math.hypot(LOSS_LEAN, math.sqrt(2) * LOSS_NOISE)
        mean_tokens = sum(TOKENS) / 2
        mean_square = (TOKENS[0] ** 2 + TOKENS[0] * TOKENS[1] + TOKENS[1] ** 2) / 3
        self.test_se = 100 * spread * math.sqrt(mean_square) / mean_tokens / math.sqrt(regime.examples)
        self.seed_sd = SPREADS[regime.spread] * self.test_se
        self.shift = regime.rule.margin if regime.truth == "margin" else 0.0

    def test_set(self, rng: np.random.Generator) -> dict:
        n = self.regime.examples
        return {
            "tokens": rng.integers(TOKENS[0], TOKENS[1] + 1, n).astype(np.int32),
            "difficulty": rng.normal(3.0, 0.5, n),
            "lean": rng.normal(0, LOSS_LEAN, n),
        }

    def seed(self, test: dict, rng: np.random.Generator) -> tuple[dict, dict]:
        n = len(test["tokens"])
        shift = (self.shift + self.seed_sd * rng.standard_normal()) / 100
        a = test["difficulty"] + rng.normal(0, LOSS_NOISE, n)
        b = test["difficulty"] + test["lean"] + shift + rng.normal(0, LOSS_NOISE, n)
        return _sequences(test["tokens"], a), _sequences(test["tokens"], b)


def _sequences(tokens: np.ndarray, per_token: np.ndarray) -> dict:
    return {"loss": per_token * tokens, "tokens": tokens, "correct": np.zeros_like(tokens)}


GENERATORS = {"binary": Binary, "tokens": Tokens}


def simulate(regime: Regime, generator, rng: np.random.Generator) -> list:
    """One simulated point: per seed, (reference outcomes, other outcomes) (+: the reference ahead)."""
    shared = generator.test_set(rng) if regime.shared else None
    return [generator.seed(shared or generator.test_set(rng), rng) for _ in range(regime.seeds)]


# --------------------------------------------------------------------------------------------------------
# The rule on them, and the former one


def rule_outcome(regime: Regime, records: list, task) -> dict:
    """What the rule says of one simulated point: the raw tests and the verdict."""
    rule = regime.rule
    seeds = []
    for index, (a, b) in enumerate(records):
        held_out = ("sim", "official" if regime.shared else index)
        first, second = score(a, task, rule.metric, held_out), score(b, task, rule.metric, held_out)
        seeds.append(paired_difference([(first, 1.0)], [(second, 1.0)], rule.metric, frozenset()))
    c = compare(seeds, rule.margin)
    family = Family(rule.alpha)
    family.add_comparison(c)
    verdict = decide(c, rule, family)
    return {
        "differs": c.p_difference < rule.alpha,
        "equivalent": c.p_equivalence < rule.alpha,
        "verdict": verdict.decision,
        "influence": [s.influence for s in seeds],
        "observed": [s.observed for s in seeds],
    }


def legacy_bootstrap(regime: Regime, outcome: dict, counts: list[np.ndarray]) -> dict:
    """The rule before issue 36 on the same records: per seed 1,000 example resamples (one set of counts
    per test set), then 10,000 two-stage draws (seeds with replacement, one example resample each; the
    same one for every seed of a shared test set); percentile p-values with +1 smoothing; Holm over its two
    tests. Raw and verdict rates as for the new rule."""
    rule = regime.rule
    values = [next(iter(i.values())) for i in outcome["influence"]]
    pools = np.stack(
        [counts[0 if regime.shared else r] @ v.astype(np.float32) / len(v) for r, v in enumerate(values)]
    ).astype(np.float64)
    rng = np.random.default_rng(20241)
    replicates, pool = pools.shape
    chosen = rng.integers(0, replicates, size=(10000, replicates))
    columns = np.broadcast_to(
        rng.integers(0, pool, size=(10000, 1 if regime.shared else replicates)), chosen.shape
    )
    draws = pools[chosen, columns].mean(axis=1)
    share = len(draws) + 1
    p_difference = min(1.0, 2 * min(((draws <= 0).sum() + 1) / share, ((draws >= 0).sum() + 1) / share))
    p_equivalence = max(
        ((draws <= -rule.margin).sum() + 1) / share, ((draws >= rule.margin).sum() + 1) / share
    )
    if np.ptp(draws) == 0:
        p_difference = p_equivalence = 1.0
    adjusted = holm([p_difference, p_equivalence])
    verdict = (
        "better" if adjusted[0] < rule.alpha and float(np.mean(outcome["observed"])) > 0
        else "worse" if adjusted[0] < rule.alpha
        else "equivalent" if adjusted[1] < rule.alpha
        else "underpowered"
    )  # fmt: skip
    return {
        "differs": p_difference < rule.alpha,
        "equivalent": p_equivalence < rule.alpha,
        "verdict": verdict,
    }


def example_counts(examples: int, sets: int, pool: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """(pool, n) example resample counts per test set, as the former rule drew them (float32)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sets):
        counts = np.zeros((pool, examples), dtype=np.float32)
        for row in range(pool):
            counts[row] = np.bincount(rng.integers(0, examples, examples), minlength=examples)
        out.append(counts)
    return out


@dataclass
class Rates:
    """Error rates of one regime over `runs` simulated points (raw tests at alpha; verdicts)."""

    runs: int
    differs: float  # raw two-sided test rejects
    equivalent: float  # raw TOST rejects
    better_or_worse: float  # verdict
    declared_equivalent: float  # verdict
    too_few: float  # verdict "too few seeds"

    def monte_carlo_se(self, rate: float) -> float:
        return math.sqrt(max(rate * (1 - rate), 1e-12) / self.runs)


def _rates(found: list[dict]) -> Rates:
    runs = len(found)

    def share(predicate) -> float:
        return sum(bool(predicate(f)) for f in found) / runs

    return Rates(
        runs,
        share(lambda f: f["differs"]),
        share(lambda f: f["equivalent"]),
        share(lambda f: f["verdict"] in ("better", "worse")),
        share(lambda f: f["verdict"] == "equivalent"),
        share(lambda f: f["verdict"] == TOO_FEW),
    )


def measure(regime: Regime, runs: int, seed: int = 0, legacy: bool = False) -> dict[str, Rates]:
    """The rule's rates on `runs` simulated points of `regime` (and the former rule's, if `legacy`)."""
    generator = GENERATORS[regime.outcome](regime)
    rng = np.random.default_rng([seed, *map(ord, repr(regime))])
    counts = example_counts(regime.examples, 1 if regime.shared else regime.seeds) if legacy else []
    new, old = [], []
    for _ in range(runs):
        outcome = rule_outcome(regime, simulate(regime, generator, rng), generator.task)
        new.append(outcome)
        if legacy:
            old.append(legacy_bootstrap(regime, outcome, counts))
    return {"rule": _rates(new), **({"legacy": _rates(old)} if legacy else {})}


# --------------------------------------------------------------------------------------------------------
# The full grid (`make calibrate`)


def grid() -> list[Regime]:
    return [
        Regime(outcome, seeds, examples, shared, spread, truth)
        for outcome in ("binary", "tokens")
        for examples in (360, 10000)
        for shared in (False, True)
        for spread in SPREADS
        for seeds in (3, 5, 8)
        for truth in ("zero", "margin")
    ]


def run_grid(runs: int, legacy_runs: int) -> list[dict]:
    rows = []
    for regime in grid():
        started = time.perf_counter()
        legacy = regime.outcome == "binary" and legacy_runs > 0
        found = measure(regime, runs)
        if legacy:
            found["legacy"] = measure(regime, legacy_runs, seed=1, legacy=True)["legacy"]
        rows.append({"regime": asdict(regime), **{k: asdict(v) for k, v in found.items()}})
        print(f"{regime}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return rows


def _cell(rates: dict | None, key: str) -> str:
    if not rates:
        return ""
    rate = rates[key]
    return f"{100 * rate:.1f}"


def environment() -> dict:
    """The machine the grid ran on (its rates do not depend on it: every generator is seeded)."""
    return {"cpu": cpu_model(), "numpy": np.__version__, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def markdown(rows: list[dict], runs: int, legacy_runs: int, seconds: float, machine: dict) -> str:
    """The grid as a Markdown page: type-I error and power per regime, the rule's and the former one's."""
    head = (
        "| outcome | examples | test set | between-seed spread | seeds | truth | rule: differs (raw) | rule: "
        "better/worse | rule: equivalent (raw) | rule: declared equivalent | former: differs (raw) | former: "
        "better/worse | former: declared equivalent |\n|" + "---|" * 13
    )
    lines = [
        "# Calibration of the verdict rule",
        "",
        f"Generated by `make calibrate` ({runs} simulated points per regime for the rule, {legacy_runs} for "
        f"the former rule; {seconds / 60:.1f} min on {machine['cpu']}, {machine['measured_at']}). Every "
        "simulated point goes through the report's own path "
        "(`lcbench/analysis/calibration.py`). Rates in %, at alpha = 5%; the Monte-Carlo standard error of "
        f"a 5% rate over {runs} points is {100 * math.sqrt(0.05 * 0.95 / runs):.1f} points.",
        "",
        "How to read it:",
        "",
        "- **truth zero**: *better/worse* is the type-I error (at most 5%); *declared equivalent* is the "
        "power to show equivalence.",
        "- **truth at the margin**: *declared equivalent* is the type-I error of equivalence (at most 5%); "
        "*better/worse* is the power to detect a difference of the margin's size.",
        "- *raw* columns are the tests before Holm and before the five-seed rule (what an interval at n = 3 "
        "says); the verdict columns are what a report prints (no verdict below 5 seeds; Holm over the "
        "comparison's two tests).",
        "- *former*: the percentile bootstrap over seeds and examples that decided verdicts before issue 36 "
        "(binary outcomes only).",
        "- At three seeds, where light-tailed seed effects dominate, the raw test can read above 5% (binary, "
        "360 per seed, seed-dominated: 6.5% over 5,000 points): the one-sample t test is liberal under "
        "short-tailed distributions at tiny n (uniform data: 7.7% at n = 3, 6.6% at n = 5). No verdict is "
        "given below five seeds; at five the same regime reads 4.8%.",
        "",
        head,
    ]
    for row in rows:
        r = row["regime"]
        rule, legacy = row["rule"], row.get("legacy")
        lines.append(
            f"| {r['outcome']} | {r['examples']} | {'shared' if r['shared'] else 'per seed'} | "
            f"{r['spread']} | {r['seeds']} | {r['truth']} | {_cell(rule, 'differs')} | "
            f"{_cell(rule, 'better_or_worse')} | {_cell(rule, 'equivalent')} | "
            f"{_cell(rule, 'declared_equivalent')} | {_cell(legacy, 'differs')} | "
            f"{_cell(legacy, 'better_or_worse')} | {_cell(legacy, 'declared_equivalent')} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: Path) -> None:
    """Type-I error per regime (truth zero, raw two-sided test) of the rule and the former one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save

    chosen = [r for r in rows if r["regime"]["truth"] == "zero" and r["regime"]["outcome"] == "binary"]
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8), sharey=True)
    for ax, shared in zip(axes, (False, True)):
        for spread, marker in zip(SPREADS, ("o", "s", "^")):
            for examples, style in ((360, "-"), (10000, ":")):
                group = [
                    r for r in chosen
                    if r["regime"]["shared"] == shared and r["regime"]["spread"] == spread
                    and r["regime"]["examples"] == examples
                ]  # fmt: skip
                seeds = [g["regime"]["seeds"] for g in group]
                for rule, colour in (("rule", "C0"), ("legacy", "C3")):
                    values = [100 * g[rule]["differs"] for g in group if rule in g]
                    if len(values) == len(seeds):
                        ax.plot(seeds, values, style, marker=marker, color=colour, markersize=4, linewidth=1)
        ax.axhline(5, color="0.4", linewidth=0.8)
        ax.set_title(f"{'one shared test set' if shared else 'a test set per seed'}", fontsize=8)
        ax.set_xlabel("seeds", fontsize=8)
        ax.set_xticks([3, 5, 8])
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("type-I error, raw test (%)\n(grey line: alpha = 5%)", fontsize=8)
    handles = [
        plt.Line2D([], [], color="C0", label="t at the seed level (now)"),
        plt.Line2D([], [], color="C3", label="percentile bootstrap (before)"),
        plt.Line2D([], [], color="0.3", linestyle="-", label="360 examples"),
        plt.Line2D([], [], color="0.3", linestyle=":", label="10,000 examples"),
        *[
            plt.Line2D([], [], color="0.3", marker=m, linestyle="", label=f"spread: {s}")
            for s, m in zip(SPREADS, "os^")
        ],
    ]
    fig.legend(handles=handles, fontsize=7, loc="upper center", ncol=4, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.87))
    save(fig, path.with_suffix(""))


def render(out: Path = OUT) -> None:
    """Redraw the page and the figure from `calibration.json` (no simulation)."""
    record = json.loads((out / "calibration.json").read_text())
    page = markdown(
        record["rows"], record["runs"], record["legacy_runs"], record["seconds"], record["environment"]
    )
    atomic_write_text(out / "calibration.md", page)
    figure(record["rows"], out / "calibration.png")


def main(runs: int = 1000, legacy_runs: int = 400, out: Path = OUT) -> None:
    started = time.perf_counter()
    rows = run_grid(runs, legacy_runs)
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    machine = environment()
    record = {
        "runs": runs,
        "legacy_runs": legacy_runs,
        "seconds": seconds,
        "environment": machine,
        "rows": rows,
    }
    atomic_write_text(out / "calibration.json", json.dumps(record, indent=1) + "\n")
    atomic_write_text(out / "calibration.md", markdown(rows, runs, legacy_runs, seconds, machine))
    figure(rows, out / "calibration.png")


if __name__ == "__main__":
    render() if sys.argv[1:] == ["--render"] else main()
