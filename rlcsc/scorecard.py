"""The book's first page: how much of the paper's RL-CSC numbers this package's runs reproduce.

For every table and figure of the paper that reports RL-CSC numbers, the published values
(`rlcsc/reference/*.csv`) are set against the counting run of the same network (`counting`: `paper` or
`fast` budget, recorded or this pipeline's, that has scored them, nearest the end of its training; a
`quick` run never counts; Table 3's points along the paper's recipe against a `paper` run only): how
many lie within the tolerances of `params.yaml` (`report`), the range of the differences, the run and
how far it trained.
Beside them, the protocol checks (bicubic and the released comparison models against the paper's
columns for them), and what closing the rest would cost in GPU-hours, from the measured ms per step of
the paper-scale runs scaled by each network's arithmetic (`benchmark.forward_flops_per_pixel`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rlcsc.config import build, read_params, resolve
from rlcsc.models.rlcsc import RLCSCConfig
from rlcsc.reference import table
from rlcsc.report import DIGITS, EXPLAIN, UNITS, Measured, Page, Run, against_paper, signed, within
from rlcsc.train import TrainParams


@dataclass(frozen=True)
class Line:
    """One row of the scorecard: a set of published numbers against one run (or none)."""

    item: str  # "Table 1, PSNR"
    metric: str  # psnr | ssim | ifc
    numbers: tuple[tuple, ...]  # what each published number measures (`number`), one per number the paper gives
    measured: tuple[tuple, ...]  # those the run has a value for, in the order of `differences`
    differences: tuple[float, ...]  # run minus paper, for each number the run has measured
    tolerance: float
    run: Run | None

    @property
    def published(self) -> int:
        """How many numbers the paper gives."""
        return len(self.numbers)

    @property
    def matched(self) -> int:
        return sum(bool(within(d, self.metric, self.tolerance)) for d in self.differences)

    def spread(self) -> str:
        """The range of the differences in words ("-1.10 to -0.30 dB"; one value alone; "-")."""
        if not self.differences:
            return "-"
        low, high = min(self.differences), max(self.differences)
        digits, unit = DIGITS[self.metric], UNITS[self.metric]
        if round(low, digits) == round(high, digits):
            return f"{signed(low, digits)}{unit}"
        return f"{signed(low, digits)} to {signed(high, digits)}{unit}"


def number(depth: int, dataset: str, scale: int, metric: str, epoch: int | None = None, residual: bool = True) -> tuple:
    """What a published RL-CSC number measures: the network (its depth, with or without the residual), the test
    set, scale and metric, and the epoch (None: the end of its training). Two places that print the same
    measurement (Table 1's Set5 x3 PSNR, Figure 1's RL-CSC points and Figure 7's points of the same depth) give
    the same key, so that `totals` counts the number once."""
    return depth, residual, dataset, scale, metric, epoch


def network(run: Run) -> tuple:
    """What a run trained, for finding the run of a paper experiment: arch, K, n, m, residual, bias."""
    m = run.model
    return m["arch"], m["recursions"], m["features"], m["codes"], m["residual"], m["bias"]


def counting(runs: list[Run], k: int, n: int, m: int, residual: bool = True, budget: str | None = None,
             scored: Callable[[Run], bool] = lambda run: True) -> Run | None:
    """The run that counts for the paper's RL-CSC network (K, n, m, residual; no biases): of its paper-scale
    runs (of `budget` alone, where given), one that has scored the numbers in question (`scored`: a run not yet
    evaluated has no Table 1) before one that has not, then one that finished its plan before one that stopped
    short of it (a finished fast run before a paper-recipe run a few of its 35 epochs in), then the one that
    trained the most steps; None when there is none."""
    hits = [r for r in runs if r.paper_scale and network(r) == ("rlcsc", k, n, m, residual, False)
            and budget in (None, r.train.get("budget"))]
    return max(hits, key=lambda r: (scored(r), r.finished, r.train["steps_done"], r.recorded), default=None)


def epoch_psnr(run: Run) -> dict[int, float]:
    """Set5 x3 PSNR of the monitor at each completed epoch (Table 3's points)."""
    return {int(c["epoch"]): c["psnr"] for c in run.train["curve"] if float(c["epoch"]).is_integer()}


def _cells(run: Run | None, ref: str, metric: str, depth: int) -> tuple[tuple, tuple, tuple[float, ...]]:
    """The published RL-CSC numbers of `metric` in reference table `ref` (keys), those `run` measured and its
    differences."""
    published = table(ref)
    published = published[published.method == "RL-CSC"]
    keys = tuple(number(depth, r.dataset, r.scale, metric) for r in published.itertuples())
    if run is None:
        return keys, (), ()
    diffs = [(run.metrics or {}).get(r.dataset, {}).get(f"x{r.scale}", {}).get(metric, np.nan) - getattr(r, metric)
             for r in published.itertuples()]
    hits = [(key, float(d)) for key, d in zip(keys, diffs) if not np.isnan(d)]
    return keys, tuple(k for k, _ in hits), tuple(d for _, d in hits)


def lines(page: Page, tolerance: dict[str, float]) -> list[Line]:
    """Every published RL-CSC number of the paper, set against the counting runs (Tables 1-3, Figures 1
    and 7; Figure 8 publishes no RL-CSC score but Table 1's, and Table 4's RL-CSC memory is a cost, not a
    score, compared on its page)."""
    paper = RLCSCConfig()  # the network the published numbers are of, whichever experiment the pages call main
    k, n, m = paper.recursions, paper.features, paper.codes
    main = counting(page.runs, k, n, m, scored=lambda run: bool(run.metrics))
    f7 = table("figure7")
    depth = int(f7[f7.recursions == RLCSCConfig().recursions].depth.iloc[0])  # the network of Tables 1-3
    out = []
    for ref, metric, item in (("table1", "psnr", "Table 1, PSNR"), ("table1", "ssim", "Table 1, SSIM"),
                              ("table2", "ifc", "Table 2, IFC")):
        keys, measured, diffs = _cells(main, ref, metric, depth)
        out.append(Line(item, metric, keys, measured, diffs, tolerance[metric], main))
    t3 = table("table3")
    for residual, words in ((True, "with residual"), (False, "no residual")):
        run = counting(page.runs, k, n, m, residual, "paper", lambda run: bool(epoch_psnr(run)))  # the paper's recipe
        ref = t3[t3.residual == residual]
        at = epoch_psnr(run) if run else {}
        keys = tuple(number(depth, "Set5", 3, "psnr", e, residual) for e in ref.epoch)
        hits = [(key, at[e] - p) for key, e, p in zip(keys, ref.epoch, ref.psnr) if e in at]
        out.append(Line(f"Table 3, {words}", "psnr", keys, tuple(key for key, _ in hits), tuple(d for _, d in hits),
                        tolerance["psnr"], run))
    k_of = dict(zip(f7.depth, f7.recursions))
    points = [("Figure 1", k_of[r.layers], r.layers, r.psnr)
              for r in table("figure1").query("model == 'RL-CSC'").itertuples()]
    points += [("Figure 7", r.recursions, r.depth, r.psnr) for r in f7.itertuples()]
    for figure, k_point, depth_point, psnr in points:  # Set5 x3 PSNR after 35 epochs of the network of depth K + 5
        run = counting(page.runs, int(k_point), n, m, scored=lambda run: not np.isnan(run.last_psnr()))
        key = number(int(depth_point), "Set5", 3, "psnr")
        value = run.last_psnr() if run else np.nan  # NaN: neither evaluated nor scored by the monitor
        measured = not np.isnan(value)
        out.append(Line(f"{figure}, K = {k_point}", "psnr", (key,), (key,) if measured else (),
                        (value - psnr,) if measured else (), tolerance["psnr"], run))
    return out


LAST = 5  # how many of a run's last snapshots `late_range` spans


@dataclass(frozen=True)
class LateRange:
    """How much a run's Set5 x3 PSNR moves over its last snapshots within the epoch it ended in (the monitor's
    snapshots, every `eval_every` steps and at the epoch's end): a bound on how much the epoch it stopped at decides
    its numbers."""

    epoch: int  # the epoch they lie in (1 for snapshots between epochs 0 and 1)
    steps: tuple[int, ...]  # their steps, in order
    low: float
    high: float

    @property
    def range(self) -> float:
        return self.high - self.low


def late_range(run: Run, n: int = LAST) -> LateRange | None:
    """The range of the Set5 x3 PSNR over the last `n` snapshots of `run` that lie in the epoch of its last one
    (fewer where the epoch holds fewer); None where it holds fewer than two."""
    curve = run.train["curve"]
    if not curve:
        return None
    epoch = int(np.ceil(curve[-1]["epoch"]))
    late = [c for c in curve if int(np.ceil(c["epoch"])) == epoch][-n:]
    if len(late) < 2:
        return None
    psnr = [c["psnr"] for c in late]
    return LateRange(epoch, tuple(c["step"] for c in late), min(psnr), max(psnr))


@dataclass(frozen=True)
class Held:
    """A matched Table 3 point of a run at the epoch its late range lies in, against that range."""

    item: str
    epoch: int
    published: float
    held: bool  # every snapshot of the range lies within the line's tolerance of the published value


def held(run: Run, lines: list[Line], late: LateRange) -> list[Held]:
    """`run`'s matched Set5 x3 PSNR points of the paper's recipe (Table 3) at `late.epoch`, each with whether every
    snapshot of `late` would match it too: whether the match hangs on the step at which the epoch ended."""
    at = epoch_psnr(run)
    out = []
    for line in lines:
        for key, d in zip(line.measured, line.differences):
            epoch = key[-1]
            if line.run is run and epoch == late.epoch and within(d, line.metric, line.tolerance):
                published = at[epoch] - d
                out.append(Held(line.item, epoch, published, all(
                    within(s - published, line.metric, line.tolerance) for s in (late.low, late.high))))
    return out


@dataclass(frozen=True)
class Gaps:
    """The published numbers the scorecard's runs have not reproduced, by why."""

    outside: int  # distinct numbers measured, beyond the tolerance
    short: tuple[Run, ...]  # the runs that measured those and stopped short of their plan
    unreached: tuple[Line, ...]  # lines whose run has not measured all of them yet (Table 3's later epochs)
    missing: tuple[str, ...]  # items of a network no paper-scale run has trained


def gaps(lines: list[Line]) -> Gaps:
    """Sort what `lines` leave unreproduced: measured beyond the tolerance (and by which runs short of their plan),
    not yet measured by its run, or of a network without a run."""
    totals_ = totals(lines)
    short = {line.run.name: line.run for line in lines
             if line.run and line.matched < len(line.differences) and not line.run.finished}
    return Gaps(totals_.measured - totals_.matched, tuple(short.values()),
                tuple(line for line in lines if line.run and len(line.measured) < line.published),
                tuple(line.item for line in lines if line.run is None))


@dataclass(frozen=True)
class Totals:
    """The scorecard's headline: each distinct published number counted once, however many of its lines print it."""

    published: int  # distinct published numbers
    measured: int  # of those, the ones a counting run has a value for
    matched: int  # of those, the ones within the tolerance (by the first line that measured it)
    shared: tuple[tuple[tuple, tuple[str, ...]], ...]  # each number printed in several places: key, items of its lines


def totals(lines: list[Line]) -> Totals:
    """Count `lines`' published numbers once each (by `number`): a number is measured where a line measured it, and
    matched where the first line that measured it lies within its tolerance."""
    items: dict[tuple, list[str]] = {}
    first: dict[tuple, bool] = {}
    for line in lines:
        for key in line.numbers:
            items.setdefault(key, []).append(line.item)
        for key, d in zip(line.measured, line.differences):
            first.setdefault(key, bool(within(d, line.metric, line.tolerance)))
    return Totals(len(items), len(first), sum(first.values()),
                  tuple((key, tuple(names)) for key, names in items.items() if len(names) > 1))


@dataclass(frozen=True)
class Check:
    """A protocol check: a method measured here against the paper's column for it."""

    method: str
    source: str  # which evaluation, in words
    frames: dict[str, pd.DataFrame]  # metric -> its cells (`against_paper` columns)
    measured: Measured  # the evaluation itself (a row of the page's runs table)

    def cells(self, metric: str) -> tuple[int, int]:
        """(within `EXPLAIN`, measured) for one metric."""
        d = self.frames[metric][f"{metric} difference"].dropna().astype(float)
        return int(within(d, metric, EXPLAIN[metric]).sum()), len(d)


def checks(page: Page) -> list[Check]:
    """Bicubic and every released comparison model, each against the paper's column for it."""
    out = []
    bic = page.bicubic()
    if bic is not None:
        where = f"recorded evaluation `runs/{bic.name}`" if bic.recorded else "this pipeline's `results/bicubic`"
        out.append(Check("Bicubic", where, _frames(bic), bic))
    for method in dict.fromkeys(m.method for m in page.measured):
        chosen = page.measured_method(method)
        where = (f"recorded evaluation `runs/{chosen.name}`" if chosen.recorded
                 else f"this pipeline's `results/{chosen.name}`")
        out.append(Check(method, f"the authors' released weights, {where}", _frames(chosen), chosen))
    return out


def _frames(measured: Measured) -> dict[str, pd.DataFrame]:
    return {"psnr": against_paper(measured, "table1", ("psnr",)), "ssim": against_paper(measured, "table1", ("ssim",)),
            "ifc": against_paper(measured, "table2", ("ifc",))}


@dataclass(frozen=True)
class Cost:
    """GPU time to train one paper experiment to its plan under a budget, from where its furthest run of that budget
    stands (the training steps alone)."""

    experiment: str
    steps_left: int
    hours: float
    basis: str  # whose ms per step, in words: a run (and its machine), or one scaled by the arithmetic


def costs(page: Page, budget: str = "paper") -> list[Cost]:
    """For each RL-CSC network among the experiments of params.yaml (seeds once), the steps its run of `budget`
    (paper or fast) still needs (to `rlcsc.train.TrainParams.last_step` of the experiment under that budget; none
    once a run of it diverged, which finishes it), and their GPU-hours at the measured ms per step of a paper-scale
    run of the same network (of that budget first), else of the one trained furthest scaled by the two networks'
    forward arithmetic; a run too short to have timed its steps (`ms_per_step` null) gives no speed. Empty when no
    paper-scale run has timed its steps, or params.yaml has no such budget."""
    from rlcsc.benchmark import forward_flops_per_pixel as flops

    runs = [r for r in page.runs if r.paper_scale]  # recorded, or this pipeline's under a paper-scale budget
    timed = [r for r in runs if r.train["ms_per_step"] is not None]
    params = {**read_params(page.params), "budget": budget}
    if not timed or budget not in (params.get("budgets") or {}):
        return []
    base = max(timed, key=lambda r: (r.train.get("budget") == budget, r.train["steps_done"]))
    base_flops = flops(TrainParams.known(base.config))
    seen, out = set(), []
    for name in params.get("experiments") or {}:
        p = build(TrainParams, resolve(params, Path(page.params), "train", TrainParams, name), str(page.params))
        key = (p.arch, p.recursions, p.features, p.codes, p.residual, p.bias)
        if key in seen or p.arch != "rlcsc":  # the book is about RL-CSC (`Page.others`)
            continue
        seen.add(key)
        ours = [r for r in runs if network(r) == key and r.train.get("budget") == budget]
        same = [r for r in timed if network(r) == key]
        diverged = next((r for r in ours if r.diverged), None)
        if diverged:  # a run that diverged is finished: its divergence is its result, and it trains no further
            out.append(Cost(name, 0, 0.0, f"none: {diverged.name} diverged, its result"))
            continue
        if same:
            run = max(same, key=lambda r: (r in ours, r.train["steps_done"]))
            ms, basis = run.train["ms_per_step"], f"{run.name} ({run.device})"
        else:
            ms, basis = base.train["ms_per_step"] * flops(p) / base_flops, f"{base.name}, scaled by the arithmetic"
        done = max((r.train["steps_done"] for r in ours), default=0)
        left = max(0, p.last_step(base.train["steps_per_epoch"]) - done)
        out.append(Cost(name, left, left * ms / 3.6e6, basis))
    return out
