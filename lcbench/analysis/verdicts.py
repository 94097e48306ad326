"""The one verdict rule: how a difference between two methods becomes better, equivalent, worse or
underpowered.

A difference is the reference method's advantage in the headline metric (top-1 points; for perplexity the
relative gap, 100 x (other / reference - 1) %), measured on the same held-out examples at the same seed.
Its uncertainty comes from a paired, hierarchical bootstrap: replicates (seeds, each with its own original
model and split) are resampled, then the held-out examples within each (jointly where replicates share one
test set), so both the training variance and the test sample's count. With a declared practical margin m:

- **better** / **worse**: the two-sided bootstrap p-value of "no difference" is below alpha after Holm's
  correction over the report's family (the 95% interval excludes 0); "practically" so when the 95% interval
  also lies beyond the margin;
- **equivalent**: the two one-sided tests against -m and +m both reject (the 90% interval lies inside
  (-m, m)), Holm-corrected likewise;
- **underpowered**: neither, with the replicates that would decide it at 80% power from the observed spread.

A bootstrap without spread (no example differs in any replicate) is never read as certainty: the difference
is then tested with the exact binomial bound on the discordant examples (0 of N), and is "equivalent" only
when that bound lies inside the margin. Fewer than `CONFIRMATORY` replicates: the verdict says "screening".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

ALPHA = 0.05
POWER = 0.8
CONFIRMATORY = 5  # replicates below which a verdict is a screening result
DRAWS = 10000  # hierarchical bootstrap draws (the smallest p is 1 / 10001: Holm families up to ~500 tests)
POOL = 1000  # example-level resamples per held-out set
SEED = 20241  # the bootstrap's generator: the same inputs give the same verdicts on any machine
MAX_REPLICATES = 1000  # "underpowered" beyond this many replicates needed says "more than"

# The practical margin of each headline metric, in the unit its differences are stated in
MARGINS = {"top1": 0.5, "top5": 0.5, "perplexity": 1.0, "f1": 1.0, "mcc": 1.0, "pearson": 1.0, "score": 1.0}
DIFFERENCE_UNITS = {
    "perplexity": "% of perplexity",
    "mcc": "points",
    "pearson": "points",
    "score": "points",
}


@dataclass(frozen=True)
class Rule:
    """The verdict rule's parameters (stored beside every claim: `claims.csv`)."""

    metric: str
    margin: float
    alpha: float = ALPHA
    confirmatory: int = CONFIRMATORY
    draws: int = DRAWS
    pool: int = POOL
    seed: int = SEED

    @classmethod
    def for_metric(cls, metric: str, margin: float | None = None) -> Rule:
        return cls(metric, MARGINS.get(metric, 1.0) if margin is None else float(margin))

    @property
    def unit(self) -> str:
        return DIFFERENCE_UNITS.get(self.metric, "pp")

    def describe(self) -> str:
        """Three sentences a reviewer can check."""
        margin = f"±{self.margin:g} {self.unit}"
        return (
            "Each difference is paired per seed and per held-out example, with a 95% interval from a "
            f"hierarchical bootstrap ({self.draws} draws: seeds, then examples; each seed its own original "
            "model) and, for classification, an exact McNemar test per seed beside it. It is 'better' or "
            f"'worse' when Holm-corrected p < {self.alpha:g} over this report's family, 'equivalent' when "
            f"the two one-sided tests against the practical margin of {margin} both reject (the 90% "
            "interval lies inside it), and otherwise 'underpowered', with the seeds that would decide it; "
            "an interval of zero width is never taken as evidence. Fewer than "
            f"{self.confirmatory} seeds make every verdict a 'screening' one."
        )

    def parameters(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# Resampling


def resample_counts(n: int, pool: int, key: tuple) -> np.ndarray:
    """(pool, n) counts of how often each of n examples is drawn in each of `pool` resamples, from a
    generator seeded by `key` (the held-out set's identity): the same counts for every run scored on that
    set, so their resampled metrics stay paired."""
    rng = np.random.default_rng([SEED, *_key_numbers(key)])
    counts = np.empty((pool, n), dtype=np.uint16)
    for row in range(pool):
        counts[row] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return counts


def _key_numbers(key: tuple) -> list[int]:
    text = "|".join(map(str, key)).encode()
    return list(np.frombuffer(text.ljust(-(-len(text) // 4) * 4, b"\0"), dtype="<u4").tolist())


def resampled_sums(counts: np.ndarray, columns: np.ndarray, chunk: int = 250) -> np.ndarray:
    """(pool, k) sums of `columns` (n, k) under each resample (row) of `counts`."""
    out = np.empty((counts.shape[0], columns.shape[1]))
    for first in range(0, counts.shape[0], chunk):
        out[first : first + chunk] = counts[first : first + chunk].astype(np.float64) @ columns
    return out


def hierarchical_draws(pools: np.ndarray, shared: bool, draws: int = DRAWS) -> np.ndarray:
    """The mean difference over replicates under `draws` two-stage resamples: replicates with replacement,
    then one of each replicate's example resamples (`pools`: (replicates, pool)); where the replicates share
    one test set (`shared`), every replicate of a draw takes the same example resample."""
    replicates, pool = pools.shape
    rng = np.random.default_rng(SEED)
    chosen = rng.integers(0, replicates, size=(draws, replicates))
    columns = rng.integers(0, pool, size=(draws, 1 if shared else replicates))
    columns = np.broadcast_to(columns, chosen.shape)
    return pools[chosen, columns].mean(axis=1)


# --------------------------------------------------------------------------------------------------------
# Tests


def mcnemar_p(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact McNemar p-value of two classifiers scored on the same examples (statsmodels)."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    return float(mcnemar(table, exact=True).pvalue)


def tost_replicates(differences: np.ndarray, margin: float) -> float:
    """TOST p-value of the replicates' differences against ±margin (statsmodels' paired t version);
    NaN below two replicates or without spread."""
    differences = np.asarray(differences, dtype=float)
    if len(differences) < 2 or np.ptp(differences) == 0:
        return math.nan
    return float(ttost_paired(differences, np.zeros_like(differences), -margin, margin)[0])


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (NaN entries stay NaN and are not counted in the family)."""
    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(values, np.nan)
    present = ~np.isnan(values)
    if present.any():
        adjusted[present] = multipletests(values[present], method="holm")[1]
    return adjusted.tolist()


@dataclass
class Comparison:
    """One difference with everything its verdict needs (unadjusted p-values; `decide` adjusts)."""

    estimate: float
    low: float  # 95% interval
    high: float
    low90: float
    high90: float
    p_difference: float  # two-sided, H0: no difference
    p_equivalence: float  # TOST, H0: |difference| >= margin
    replicates: int
    p_reference_ahead: float  # share of replicates in which the reference is ahead (ties count half)
    spread_within: float  # variance of a replicate's difference over example resamples (mean)
    spread_between: float  # variance of the replicates' differences (ddof=1; the within spread for one)
    zero_width: bool
    discordant: tuple[int, int] | None  # (examples that differ, examples scored), 0/1 outcomes only
    shared_test_set: bool
    mcnemar: list[float]
    tost_replicates: float


def compare(
    observed: np.ndarray,
    pools: np.ndarray,
    shared: bool,
    rule: Rule,
    discordant: tuple[int, int] | None = None,
    mcnemar_ps: list[float] | None = None,
) -> tuple[Comparison, np.ndarray]:
    """The comparison of per-replicate differences `observed` (R,) with their example resamples `pools`
    (R, pool); `discordant` = (examples that differ, examples scored) over all replicates, for 0/1 outcomes.
    Returns the comparison and its hierarchical draws (for one-sided tests against other bounds)."""
    observed = np.asarray(observed, dtype=float)
    draws = hierarchical_draws(pools, shared, rule.draws)
    estimate = float(observed.mean())
    zero_width = bool(np.ptp(draws) == 0)
    low, high = np.quantile(draws, [rule.alpha / 2, 1 - rule.alpha / 2])
    low90, high90 = np.quantile(draws, [rule.alpha, 1 - rule.alpha])
    p_difference = min(1.0, 2 * min(p_at_most(draws, 0.0), p_at_least(draws, 0.0))) if not zero_width else 1.0
    p_equivalence = max(
        one_sided_p(draws, -rule.margin, True, discordant), one_sided_p(draws, rule.margin, False, discordant)
    )
    comparison = Comparison(
        estimate=estimate,
        low=float(low),
        high=float(high),
        low90=float(low90),
        high90=float(high90),
        p_difference=p_difference,
        p_equivalence=p_equivalence,
        replicates=len(observed),
        p_reference_ahead=float(np.mean((observed > 0) + 0.5 * (observed == 0))),
        spread_within=float(np.mean(pools.var(axis=1))),
        spread_between=float(np.var(observed, ddof=1))
        if len(observed) > 1
        else float(np.mean(pools.var(axis=1))),
        zero_width=zero_width,
        discordant=discordant,
        shared_test_set=shared,
        mcnemar=list(mcnemar_ps or []),
        tost_replicates=tost_replicates(observed, rule.margin),
    )
    return comparison, draws


def p_at_most(draws: np.ndarray, bound: float) -> float:
    """Bootstrap p-value of "the difference is at most `bound`" being the truth: share of draws <= it."""
    return (int((draws <= bound).sum()) + 1) / (len(draws) + 1)


def p_at_least(draws: np.ndarray, bound: float) -> float:
    return (int((draws >= bound).sum()) + 1) / (len(draws) + 1)


def one_sided_p(
    draws: np.ndarray, bound: float, at_most: bool, discordant: tuple[int, int] | None = None
) -> float:
    """p-value of H0 "the difference is at most `bound`" (`at_most`) or "at least `bound`": the share of
    bootstrap draws on H0's side. Draws without spread are no evidence: then only "no example differs"
    (0 of N discordant) rejects a nonzero bound, by the exact binomial bound; anything else gives 1."""
    if np.ptp(draws) > 0:
        return p_at_most(draws, bound) if at_most else p_at_least(draws, bound)
    if draws[0] != 0 or bound == 0 or (bound > 0) == at_most:
        return 1.0
    return _binomial_equivalence(discordant, abs(bound))


def zero_width_bound(discordant: tuple[int, int] | None, confidence: float = 0.95) -> float | None:
    """Where no example differs (0 of N): the exact one-sided upper bound on the share that could, in
    points (what bounds |difference|); None where examples do differ or outcomes are not 0/1."""
    if not discordant or discordant[0]:
        return None
    return 100.0 * float(scipy_stats.beta.ppf(confidence, 1, discordant[1]))


def _binomial_equivalence(discordant: tuple[int, int] | None, margin: float) -> float:
    """No example differs: P(0 discordant of N | discordant rate = margin) bounds |difference| (exact
    binomial); without 0/1 outcomes nothing is known: 1."""
    if not discordant or discordant[0] or margin >= 100:
        return 1.0
    return float(scipy_stats.binom.pmf(0, discordant[1], margin / 100.0))


def replicates_needed(c: Comparison, margin: float, alpha: float) -> float:
    """Replicates that would decide `c` (difference or equivalence, whichever needs fewer) at 80% power and
    level `alpha` (a family's: the Holm step it faced at worst, alpha / family size), if the spread stays as
    observed: between replicates it shrinks as 1/R; a shared test set's does not (inf: it alone is too
    wide: a larger test set is needed, not more replicates)."""
    estimate = abs(c.estimate)
    power = scipy_stats.norm.ppf(POWER)
    targets = []
    if estimate > 0:
        targets.append(estimate / (scipy_stats.norm.ppf(1 - alpha / 2) + power))
    if estimate < margin:
        targets.append((margin - estimate) / (scipy_stats.norm.ppf(1 - alpha) + power))
    best = math.inf
    for se in targets:
        floor, per_replicate = (
            (c.spread_within, c.spread_between)
            if c.shared_test_set
            else (0.0, max(c.spread_between, c.spread_within))
        )
        if floor >= se * se:
            continue
        best = min(best, math.ceil(per_replicate / (se * se - floor)) if per_replicate > 0 else 1)
    return float(max(best, c.replicates + 1))


@dataclass(frozen=True)
class Verdict:
    """A comparison's verdict from Holm-adjusted p-values."""

    decision: str  # better / worse / equivalent / underpowered
    practical: str = ""  # a significant difference: "beyond the margin" or "within the margin"
    borderline: bool = False  # the deciding p lies within a factor 2 of alpha: another machine may differ


def decide(comparison: Comparison, rule: Rule, p_difference: float, p_equivalence: float) -> Verdict:
    """The verdict from Holm-adjusted p-values. `borderline` flags a verdict whose deciding p (or, when
    undecided, the nearest one) lies within a factor 2 of alpha: a drift of a few examples, as between two
    CPUs' kernels, can move it across."""
    alpha = rule.alpha
    if p_difference < alpha and not comparison.zero_width:
        decision = "better" if comparison.estimate > 0 else "worse"
        beyond = comparison.low > rule.margin if decision == "better" else comparison.high < -rule.margin
        practical = "beyond the margin" if beyond else "within the margin"
        return Verdict(decision, practical, p_difference >= alpha / 2)
    if p_equivalence < alpha:
        return Verdict("equivalent", "", p_equivalence >= alpha / 2)
    return Verdict("underpowered", "", min(p_difference, p_equivalence) < 2 * alpha)


def seeds_needed_text(comparison: Comparison, rule: Rule, family: int = 1) -> str:
    """`~12 seeds would decide` for an underpowered comparison (at the Holm family's strictest level)."""
    needed = replicates_needed(comparison, rule.margin, rule.alpha / max(family, 1))
    if math.isinf(needed):
        return "more seeds cannot decide: the test set is too small"
    if needed > MAX_REPLICATES:
        return f"more than {MAX_REPLICATES} seeds would be needed"
    return f"~{int(needed)} seeds would decide"


def wording(verdict: Verdict, comparison: Comparison, rule: Rule, subject: str = "") -> str:
    """The verdict as the tables print it: `LayerCollapse better (practically; borderline; screening, n=3)`
    (the seeds an underpowered one needs are a column of their own: they move with every drift)."""
    decision = verdict.decision
    words = f"{subject} {decision}".strip() if decision in ("better", "worse") else decision
    notes = []
    if decision in ("better", "worse"):
        notes.append("practically" if verdict.practical == "beyond the margin" else "within the margin")
    if verdict.borderline:
        notes.append("borderline")
    if comparison.replicates < rule.confirmatory:
        notes.append(f"screening, n={comparison.replicates}")
    return words + (f" ({'; '.join(notes)})" if notes else "")
