"""The one verdict rule: how per-seed paired differences become better, worse, equivalent or underpowered.

A difference is the reference method's advantage in the headline metric, scored on the same held-out
examples at the same seed (top-1 points; for perplexity 100 x the log of the ratio, about the relative gap in
%). Seeds are the replicates: each trains its own original model (and draws its own split where the data set
has none). Inference happens at the level of seeds, with the variance split in two:

- the spread of the per-seed differences, S^2 (what another seed would change: training, and each seed's
  own test-set noise), which enters as S^2 / R;
- where seeds share one test set, the cross-seed covariance of their test-set errors, c (what another
  test set would change for every seed at once, and what more seeds cannot average away), estimated from
  the per-example jackknife values of each seed's difference on the examples the seeds share.

So Var(mean) = S^2 / R + c, with t quantiles at Welch-Satterthwaite degrees of freedom taken at S^2's 90%
upper bound (`satterthwaite`; R - 1 when no test set is shared). With a declared practical margin m, after
Holm's correction over the report's one family:

- **better** / **worse**: the two-sided t test rejects "no difference"; its size on the interval at the
  Holm step's own level: beyond the margin, within the margin, or size unresolved;
- **equivalent**: both one-sided t tests against -m and +m reject (TOST; the 90% interval lies inside);
- **underpowered**: a test ran and decided neither, with the seeds that would decide it;
- **too few seeds**: below `CONFIRMATORY` seeds no verdict at all, only the direction in k of n seeds.

The exact sign-flip p over seeds is shown beside (the smallest it can be is 2 / 2^R). An interval of zero
width is never evidence: where no example differs in any seed, only the exact binomial bound on the
discordant examples of the least favourable seed (at least two seeds) can show equivalence. Nothing here
draws random numbers, so a verdict never depends on a generator. `calibration.py` measures the rule's error
rates on simulated records whose truth is known.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar

ALPHA = 0.05
POWER = 0.8
CONFIRMATORY = 5  # replicates below which no verdict is given, only a direction
MAX_REPLICATES = 1000  # "underpowered" beyond this many replicates needed says "more than"
SIGN_FLIP_MAX = 16  # the exact sign-flip p enumerates 2^R patterns up to this many seeds

# The practical margin of each headline metric, in the unit its differences are stated in
MARGINS = {"top1": 0.5, "top5": 0.5, "perplexity": 1.0, "f1": 1.0, "mcc": 1.0, "pearson": 1.0, "score": 1.0}
DIFFERENCE_UNITS = {
    "perplexity": "% of perplexity (100 x log ratio)",
    "mcc": "points",
    "pearson": "points",
    "score": "points",
}
SHORT_UNITS = {"perplexity": "%"}  # how a number prints beside its unit's long name


@dataclass(frozen=True)
class Rule:
    """The verdict rule's parameters (stored beside every claim: `claims.csv`)."""

    metric: str
    margin: float
    alpha: float = ALPHA
    confirmatory: int = CONFIRMATORY

    @classmethod
    def for_metric(cls, metric: str, margin: float | None = None) -> Rule:
        return cls(metric, MARGINS.get(metric, 1.0) if margin is None else float(margin))

    @property
    def unit(self) -> str:
        return DIFFERENCE_UNITS.get(self.metric, "pp")

    @property
    def short_unit(self) -> str:
        return SHORT_UNITS.get(self.metric, self.unit)

    def margin_text(self) -> str:
        return f"±{self.margin:g} {self.short_unit}"

    def describe(self) -> str:
        """A few sentences a reviewer can check."""
        return (
            "Each difference is paired per seed and per held-out example; seeds are the replicates (each "
            "trains its own original). Its interval is t-based at the level of seeds: the variance of the "
            "mean is the spread of the per-seed differences over R, plus, where the seeds share one test "
            "set, the cross-seed covariance of their test-set errors (from per-example jackknife values), "
            "with Welch-Satterthwaite degrees of freedom taken at the spread's 90% upper bound (n - 1 "
            "without a shared test set). It is 'better' or 'worse' when the two-sided t "
            f"test's Holm-corrected p < {self.alpha:g} over the report's one family (every hypothesis the "
            "report tests, difference and equivalence together, each counted once), and its size is read "
            "off the interval at its Holm step's level: beyond, within, or unresolved against the margin "
            f"of {self.margin_text()}; 'equivalent' when both one-sided t tests against the margin reject "
            "(TOST, 90% interval shown); otherwise 'underpowered', with the seeds that would decide it. "
            f"Below {self.confirmatory} seeds there is no verdict, only the direction in k of n seeds. The "
            "exact sign-flip p over seeds is shown beside; an interval of zero width is never evidence. "
            "The rule's error rates on simulated records are in results/bench/calibration.md."
        )

    def parameters(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# One seed's difference


@dataclass
class SeedDifference:
    """The reference's advantage over another model in one seed: its value, and per held-out set (by the
    set's key) the per-example jackknife values whose mean it is, already weighted where several points of
    one seed are averaged. Two seeds that scored the same set share its key; their covariance there is the
    test set's shared error."""

    observed: float
    influence: dict[tuple, np.ndarray]
    discordant: tuple[int, int] | None = None  # (examples that differ, examples scored), top-1 only
    mcnemar: float | None = None
    runs: frozenset = frozenset()  # what was compared (each side's (run id, evaluation, weight)s): identity

    @staticmethod
    def mean(parts: list[SeedDifference]) -> SeedDifference:
        """The average of several differences of one seed (points of a claim), their examples kept paired."""
        if len(parts) == 1:
            return parts[0]
        weight = 1.0 / len(parts)
        influence: dict[tuple, np.ndarray] = {}
        for part in parts:
            for key, values in part.influence.items():
                influence[key] = influence.get(key, 0.0) + weight * values
        return SeedDifference(
            float(np.mean([p.observed for p in parts])),
            influence,
            least_favourable([p.discordant for p in parts]),
            None,
            frozenset(p.runs for p in parts) if all(p.runs for p in parts) else frozenset(),
        )

    def within_variance(self) -> float:
        """The variance of this seed's difference from its test sample alone (sets independent)."""
        return float(sum(np.var(v, ddof=1) / len(v) for v in self.influence.values() if len(v) > 1))

    def covariance(self, other: SeedDifference) -> float:
        """The covariance of two seeds' test-set errors: nonzero only on the held-out sets they share."""
        total = 0.0
        for key in self.influence.keys() & other.influence.keys():
            a, b = self.influence[key], other.influence[key]
            if len(a) > 1:
                total += float(np.cov(a, b, ddof=1)[0, 1]) / len(a)
        return total


def least_favourable(counts: list[tuple[int, int] | None]) -> tuple[int, int] | None:
    """Of (examples that differ, examples) records: one where examples differ if any does (the binomial
    bound then says nothing), else the fewest examples (the weakest bound); None if any is missing."""
    if not counts or any(c is None for c in counts):
        return None
    return max(counts, key=lambda c: (c[0] > 0, -c[1]))


# --------------------------------------------------------------------------------------------------------
# The comparison over seeds


@dataclass
class Comparison:
    """A difference over seeds with everything its verdict needs (unadjusted p-values: `decide` adjusts)."""

    per_seed: list[float]
    estimate: float
    se: float
    df: float
    between: float  # S^2: the variance of the per-seed differences (ddof 1)
    shared: float  # c: the cross-seed covariance of test-set errors (0 without a shared test set)
    within: float  # the mean test-sample variance of one seed's difference (reported beside the others)
    shared_test_set: bool
    discordant: tuple[int, int] | None  # top-1: the least favourable seed's (differing, examples)
    mcnemar: list[float]
    margin: float
    identity: object = field(default_factory=object)  # the runs compared (a `Family` counts a test once)
    by_seed: dict = field(default_factory=dict, repr=False)  # seed -> SeedDifference (to pool points)

    @property
    def replicates(self) -> int:
        return len(self.per_seed)

    @property
    def zero_width(self) -> bool:
        return not self.se > 0

    @property
    def ahead(self) -> int:
        """Seeds in which the reference is ahead."""
        return int(sum(d > 0 for d in self.per_seed))

    def interval(self, confidence: float) -> tuple[float, float]:
        """The two-sided t interval at `confidence` (NaN without a spread or below two seeds)."""
        if self.zero_width or not self.df > 0:
            return (math.nan, math.nan) if not self.zero_width else (self.estimate, self.estimate)
        half = scipy_stats.t.ppf(0.5 + confidence / 2, self.df) * self.se
        return self.estimate - half, self.estimate + half

    @property
    def low(self) -> float:
        return self.interval(1 - ALPHA)[0]

    @property
    def high(self) -> float:
        return self.interval(1 - ALPHA)[1]

    @property
    def low90(self) -> float:
        return self.interval(1 - 2 * ALPHA)[0]

    @property
    def high90(self) -> float:
        return self.interval(1 - 2 * ALPHA)[1]

    def p_above(self, bound: float) -> float:
        """One-sided p of H0 "the difference is at most `bound`" (small: shown above it)."""
        if self.zero_width:
            return self._zero_width_p(bound, above=True)
        return float(scipy_stats.t.sf((self.estimate - bound) / self.se, self.df)) if self.df > 0 else 1.0

    def p_below(self, bound: float) -> float:
        """One-sided p of H0 "the difference is at least `bound`" (small: shown below it)."""
        if self.zero_width:
            return self._zero_width_p(bound, above=False)
        return float(scipy_stats.t.cdf((self.estimate - bound) / self.se, self.df)) if self.df > 0 else 1.0

    @property
    def p_difference(self) -> float:
        """Two-sided t test of no difference (1 for an interval of zero width: never evidence)."""
        if self.zero_width or not self.df > 0:
            return 1.0
        return float(2 * scipy_stats.t.sf(abs(self.estimate) / self.se, self.df))

    @property
    def p_equivalence(self) -> float:
        """TOST against the margin: H0 |difference| >= margin."""
        return max(self.p_above(-self.margin), self.p_below(self.margin))

    @property
    def p_sign_flip(self) -> float:
        """Exact sign-flip p over seeds (shown beside; at least 2 / 2^R); NaN beyond `SIGN_FLIP_MAX`."""
        return sign_flip_p(np.asarray(self.per_seed))

    def _zero_width_p(self, bound: float, above: bool) -> float:
        """No spread at all: only "no example differs in any seed" rejects a bound on the far side of 0,
        by the exact binomial bound at the least favourable seed (its fewest examples), from two seeds."""
        far_side = bound < 0 if above else bound > 0
        if self.estimate != 0 or not far_side or self.replicates < 2:
            return 1.0
        return binomial_bound_p(self.discordant, abs(bound))

    def zero_width_bound(self, confidence: float = 0.95) -> float | None:
        """Where no example differs: the exact one-sided bound on |difference| (points) from the least
        favourable seed; None otherwise."""
        if not self.zero_width or not self.discordant or self.discordant[0]:
            return None
        return 100.0 * float(scipy_stats.beta.ppf(confidence, 1, self.discordant[1]))


def compare(by_seed: dict | list[SeedDifference], margin: float) -> Comparison:
    """The comparison over seeds of per-seed differences (each seed a replicate; a list: seeds 0, 1, ...)."""
    by_seed = by_seed if isinstance(by_seed, dict) else dict(enumerate(by_seed))
    seeds = list(by_seed.values())
    observed = np.array([s.observed for s in seeds], dtype=float)
    count = len(observed)
    between = float(np.var(observed, ddof=1)) if count > 1 else math.nan
    pairs = list(itertools.combinations(seeds, 2))
    shared_keys = any(a.influence.keys() & b.influence.keys() for a, b in pairs)
    shared = max(0.0, float(np.mean([a.covariance(b) for a, b in pairs]))) if shared_keys else 0.0
    seed_part = between / count if count > 1 else math.nan
    variance = seed_part + shared
    se = math.sqrt(variance) if variance > 0 else (0.0 if count > 1 else math.nan)
    df = satterthwaite(seed_part, count - 1, shared, _shared_examples(seeds)) if count > 1 else math.nan
    discordant = least_favourable([s.discordant for s in seeds])
    return Comparison(
        per_seed=observed.tolist(),
        estimate=float(observed.mean()) if count else math.nan,
        se=se,
        df=df,
        between=between,
        shared=shared,
        within=float(np.mean([s.within_variance() for s in seeds])) if count else math.nan,
        shared_test_set=shared_keys,
        discordant=discordant,
        mcnemar=[s.mcnemar for s in seeds if s.mcnemar is not None],
        margin=margin,
        # what was compared, orientation-free (bold's best-vs-row is a differences row read the other way);
        # simulated records carry no run ids: a token of their own, never another comparison's
        identity=frozenset(s.runs for s in seeds) if seeds and all(s.runs for s in seeds) else object(),
        by_seed=by_seed,
    )


def _shared_examples(seeds: list[SeedDifference]) -> int:
    """The fewest examples of a held-out set two seeds share (the shared covariance's sample size)."""
    sizes = [
        len(a.influence[k])
        for a, b in itertools.combinations(seeds, 2)
        for k in a.influence.keys() & b.influence.keys()
    ]
    return min(sizes, default=0)


DF_BOUND = 0.1  # the degrees of freedom are computed from S^2's 90% upper confidence bound (see below)


def satterthwaite(seed_part: float, seed_df: int, shared: float, examples: int) -> float:
    """Degrees of freedom of S^2/R (R - 1 df) plus c (estimated from `examples`): Welch-Satterthwaite's,
    computed with S^2 at its 90% upper confidence bound. The plain plug-in is anti-conservative with 2-4 df
    (7.5% type-I error at R = 3, 5.8% at R = 5 where the seeds' part is most of the variance); R - 1 df is
    valid but wastes the shared part's precision (0.6% at R = 3). The bound keeps every share of the
    variance at or below 5% for R = 3, 5, 8 (normal model, 400,000 draws each; records: `make calibrate`)."""
    if not seed_part > 0:
        return float(max(examples - 1, seed_df)) if shared > 0 else float(seed_df)
    upper = seed_part * seed_df / scipy_stats.chi2.ppf(DF_BOUND, seed_df)
    terms = upper**2 / seed_df + (shared**2 / (examples - 1) if shared > 0 and examples > 1 else 0.0)
    return float((upper + shared) ** 2 / terms)


def sign_flip_p(differences: np.ndarray) -> float:
    """Exact two-sided sign-flip p of the mean of `differences` over every pattern of signs."""
    count = len(differences)
    if count == 0 or count > SIGN_FLIP_MAX:
        return math.nan
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=count)))
    means = np.abs(signs @ differences) / count
    observed = abs(differences.mean())
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def binomial_bound_p(discordant: tuple[int, int] | None, margin: float) -> float:
    """P(0 discordant of N | a discordant rate of `margin` points): bounds |difference| when no example
    differs (exact binomial); without 0/1 outcomes nothing is known: 1."""
    if not discordant or discordant[0] or margin >= 100:
        return 1.0
    return float(scipy_stats.binom.pmf(0, discordant[1], margin / 100.0))


def mcnemar_p(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Exact McNemar p-value of two classifiers scored on the same examples (statsmodels)."""
    a, b = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    return float(mcnemar(table, exact=True).pvalue)


# --------------------------------------------------------------------------------------------------------
# One Holm family per report


class Family:
    """Every hypothesis a report tests, each once (by the comparison's identity and the hypothesis), with
    Holm's adjustment over all of them: differences, equivalences, claims and bold read the same number."""

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = alpha
        self._raw: dict[tuple, float] = {}
        self._adjusted: dict[tuple, tuple[float, float]] | None = None

    def add(self, comparison: Comparison | None, hypothesis: str, p: float) -> tuple | None:
        """Register a test's raw p (NaN: not a test); returns its key."""
        if comparison is None or not p == p:
            return None
        key = (comparison.identity, hypothesis)
        if key not in self._raw:
            self._raw[key] = p
            self._adjusted = None
        return key

    def add_comparison(self, comparison: Comparison | None) -> None:
        """A comparison's two verdict tests: difference and equivalence."""
        if comparison is not None and comparison.replicates >= 2:
            self.add(comparison, "difference", comparison.p_difference)
            self.add(comparison, "equivalence", comparison.p_equivalence)

    def __len__(self) -> int:
        return len(self._raw)

    def _adjust(self) -> dict[tuple, tuple[float, float]]:
        if self._adjusted is None:
            keys = list(self._raw)
            adjusted, left = holm_steps(np.array([self._raw[k] for k in keys]))
            self._adjusted = {k: (float(a), self.alpha / n) for k, a, n in zip(keys, adjusted, left)}
        return self._adjusted

    def p(self, comparison: Comparison | None, hypothesis: str) -> float:
        """The Holm-adjusted p of a registered test (NaN: not registered)."""
        if comparison is None:
            return math.nan
        return self._adjust().get((comparison.identity, hypothesis), (math.nan, 0))[0]

    def step_level(self, comparison: Comparison, hypothesis: str) -> float:
        """The level Holm's step tests this hypothesis at (alpha / tests left): its interval's level."""
        key = (comparison.identity, hypothesis)
        return self._adjust().get(key, (math.nan, self.alpha / max(len(self._raw), 1)))[1]


def holm_steps(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Holm's adjusted p-values and, per test, the tests left at its step (its level is alpha / that).
    By hand: statsmodels' `multipletests(method="holm")` gives the same numbers (a test checks) but runs a
    full `gc.collect()` on every call, 0.3 s each with a report's objects alive."""
    order = np.argsort(values, kind="stable")
    left = np.empty(len(values), dtype=int)
    left[order] = len(values) - np.arange(len(values))
    adjusted = np.empty(len(values))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(values[order] * left[order]))
    return adjusted, left


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (NaN entries stay NaN and are not counted in the family)."""
    values = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(values, np.nan)
    present = ~np.isnan(values)
    if present.any():
        adjusted[present] = holm_steps(values[present])[0]
    return adjusted.tolist()


# --------------------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class Verdict:
    """A comparison's verdict from Holm-adjusted p-values."""

    decision: str  # better / worse / equivalent / underpowered / too few seeds
    size: str = ""  # a significant difference: "beyond the margin", "within the margin", "size unresolved"
    borderline: bool = False  # the deciding p lies within a factor 2 of alpha: another machine may differ


TOO_FEW = "too few seeds"
SIZES = ("beyond the margin", "within the margin", "size unresolved")


def decide(c: Comparison, rule: Rule, family: Family) -> Verdict:
    """The verdict of a comparison registered in `family` (its Holm-adjusted p-values)."""
    if c.replicates < rule.confirmatory:
        return Verdict(TOO_FEW)
    alpha = rule.alpha
    p_difference, p_equivalence = family.p(c, "difference"), family.p(c, "equivalence")
    if p_difference < alpha and not c.zero_width:
        decision = "better" if c.estimate > 0 else "worse"
        low, high = c.interval(1 - family.step_level(c, "difference"))
        toward, away = (low, high) if decision == "better" else (-high, -low)
        size = SIZES[0] if toward > rule.margin else SIZES[1] if away < rule.margin else SIZES[2]
        return Verdict(decision, size, p_difference >= alpha / 2)
    if p_equivalence < alpha:
        return Verdict("equivalent", "", p_equivalence >= alpha / 2)
    nearest = min(p_difference, p_equivalence)
    return Verdict("underpowered", "", nearest < 2 * alpha)


def direction_text(c: Comparison, subject: str = "LayerCollapse") -> str:
    """`LayerCollapse ahead in 3 of 3 seeds`."""
    return f"{subject or 'the reference'} ahead in {c.ahead} of {c.replicates} seeds"


def wording(verdict: Verdict, c: Comparison, rule: Rule, subject: str = "") -> str:
    """The verdict as the tables print it: `LayerCollapse better (beyond the ±0.5 pp margin; borderline)`;
    below the confirmatory seeds: `not testable at n=3 (LayerCollapse ahead in 3 of 3 seeds)`."""
    if verdict.decision == TOO_FEW:
        return f"not testable at n={c.replicates} ({direction_text(c, subject)})"
    decision = verdict.decision
    words = f"{subject} {decision}".strip() if decision in ("better", "worse") else decision
    notes = []
    if verdict.size:
        notes.append(verdict.size.replace("the margin", f"the {rule.margin_text()} margin"))
    elif decision == "equivalent":
        notes.append(f"within {rule.margin_text()}")
    if verdict.borderline:
        notes.append("borderline")
    return words + (f" ({'; '.join(notes)})" if notes else "")


def replicates_needed(c: Comparison, margin: float, alpha: float, between: float | None = None) -> float:
    """Seeds that would decide `c` (difference or equivalence, whichever needs fewer) at 80% power and level
    `alpha`, if the spread stays as observed: S^2 / R shrinks with more seeds, the shared test set's c does
    not (inf: it alone is too wide; a larger test set is needed). `between` replaces S^2 (its interval's
    ends give a range). NaN below three seeds."""
    if c.replicates < 3 or not c.between == c.between:
        return math.nan
    spread = c.between if between is None else between
    estimate = abs(c.estimate)
    gap = margin - estimate  # what equivalence has to spare
    z_power = scipy_stats.norm.ppf(POWER)
    floor = math.sqrt(c.shared)  # the standard error infinitely many seeds leave
    if (scipy_stats.norm.ppf(1 - alpha / 2) + z_power) * floor >= estimate and (
        gap <= 0 or (scipy_stats.norm.ppf(1 - alpha) + z_power) * floor >= gap
    ):
        return math.inf
    counts = np.arange(c.replicates + 1, MAX_REPLICATES + 1)
    se = np.sqrt(spread / counts + c.shared)
    power = scipy_stats.t.ppf(POWER, counts - 1)
    differs = (scipy_stats.t.ppf(1 - alpha / 2, counts - 1) + power) * se <= estimate
    equivalent = (scipy_stats.t.ppf(1 - alpha, counts - 1) + power) * se <= gap
    decided = np.flatnonzero(differs | equivalent)
    return float(counts[decided[0]]) if len(decided) else float(MAX_REPLICATES + 1)


def seeds_needed_range(c: Comparison, margin: float, alpha: float) -> tuple[float, float, float]:
    """(estimate, low, high) of the seeds needed, the ends from S^2's 95% chi-square interval."""
    needed = replicates_needed(c, margin, alpha)
    if not needed == needed:
        return needed, math.nan, math.nan
    df = c.replicates - 1
    low_var = df * c.between / scipy_stats.chi2.ppf(0.975, df)
    high_var = df * c.between / scipy_stats.chi2.ppf(0.025, df)
    return needed, replicates_needed(c, margin, alpha, low_var), replicates_needed(c, margin, alpha, high_var)


def seeds_needed_text(c: Comparison, rule: Rule, alpha: float) -> str:
    """`~12 seeds would decide (6 to 80)` for an underpowered comparison, at the Holm level `alpha`."""
    needed, low, high = seeds_needed_range(c, rule.margin, alpha)
    if not needed == needed:
        return ""
    if math.isinf(needed):
        return "more seeds cannot decide: the shared test set's error alone is too wide"
    if needed > MAX_REPLICATES:
        return f"more than {MAX_REPLICATES} seeds would be needed"
    high_text = "more" if math.isinf(high) or high > MAX_REPLICATES else f"{int(high)}"
    return f"~{int(needed)} seeds would decide ({int(low)} to {high_text}, from the spread's 95% interval)"
