"""What the report notebooks share: the runs and what they are, laid beside the paper's numbers.

A notebook learns everything about a run from the files the run wrote: K, the filter sizes, the
residual switch, biases, budget, where its recipe differs from the paper's, epochs done, status,
device, precision and commit (`train.json`; for a recorded run the commit of `environment.json`; for this
pipeline's evaluation of a released model the machine and commit of its `evaluation.json`), never from its
name. Runs are this pipeline's (`models/<name>/` and `results/<name>/`, one per entry of `experiments`) and
the recorded ones (`runs/<name>/`, made on a GPU by `rlcsc record`).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rlcsc.atomic import atomically
from rlcsc.config import Checked, above, load_block, param, read_params
from rlcsc.errors import RlcscError
from rlcsc.reference import table

HIDDEN_TAGS = {"parameters", "injected-parameters"}
SOCKET_PATH_MAX = 103  # bytes of a Unix socket's path (Linux allows 107, macOS 103)
PAPER_SCALE = ("paper", "fast")  # the budgets whose runs train the paper's networks on all its pairs
THIS_RUN = " †"  # marks a column of this project's runs; the others are quoted from the paper
RED, BLUE = "color: #d00000; font-weight: bold", "color: #0050d0; font-weight: bold"


@dataclass(frozen=True)
class ReportParams(Checked):
    """Block `report` of params.yaml."""

    main: str = param("K25")  # the experiment shown as "RL-CSC" in Tables 1-2 and Figures 4-6
    # How far a paper-scale run may lie from a published RL-CSC number and still match it (the scorecard)
    psnr_tolerance: float = param(0.1, above(0))
    ssim_tolerance: float = param(0.002, above(0))
    ifc_tolerance: float = param(0.05, above(0))

    def tolerance(self) -> dict[str, float]:
        return {"psnr": self.psnr_tolerance, "ssim": self.ssim_tolerance, "ifc": self.ifc_tolerance}


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


class Evaluated:
    """What a run and a released model's evaluation share: the folder of the evaluation's files (`scores`),
    its `evaluation.json` (`evaluation`) and the calls that made them (`environment`)."""

    scores: Path
    metrics: dict | None
    evaluation: dict | None
    environment: dict | None

    def evaluated_in(self) -> str | None:
        """The precision its evaluation computed in: `evaluation.json`'s `computed_in`; for a file written
        before that key, the precision it asked for as the device computes it (`rlcsc.device.inference_precision`:
        tf32 is fp32 on the CPU) on the machine of the last call in `environment` that evaluated. None where no
        network was evaluated (no file, or bicubic)."""
        e = self.evaluation
        if e is None or e.get("method") == "bicubic":
            return None
        if "computed_in" in e:
            return e["computed_in"]
        if self.evaluation_call().get("gpu") or e["precision"] == "fp32":
            return e["precision"]
        return "fp32" if e["precision"] == "tf32" else f"{e['precision']} if the CPU computed it natively, else fp32"

    def evaluation_call(self) -> dict:
        """Where and from which code its evaluation ran: the last call in `environment` that evaluated (its last
        call where none says), else the `environment` of `evaluation.json` (this pipeline's); {} where neither
        recorded it."""
        calls = (self.environment or {}).get("calls") or []
        call = next((c for c in reversed(calls) if c.get("evaluated")), calls[-1] if calls else None)
        return call if call is not None else ((self.evaluation or {}).get("environment") or {})

    def scored_on(self) -> str:
        """The machine its evaluation ran on (`machine`), "unknown" where no file recorded it."""
        call = self.evaluation_call()
        return machine(call.get("gpu"), call) if call else "unknown"

    def fp32_rescored(self) -> list[dict]:
        """The cells of its evaluation that an inference benchmark in its folder (`rlcsc benchmark inference`,
        `inference*.json`, made after the call that evaluated, so of the same model) scored again in fp32: file,
        machine, commit, dataset, scale, the fp32 PSNR and the evaluation's. Empty where there is none."""
        since = self.evaluation_call().get("date")
        found = []
        for path in sorted(self.scores.glob("inference*.json")) if since else []:
            bench = _json(path)
            ran = bench.get("machine") or {}
            if bench.get("what") != "inference" or ran.get("date", "") < since:
                continue
            for dataset, quality in (bench.get("variants") or {}).get("fp32", {}).get("quality", {}).items():
                scored = (self.metrics or {}).get(dataset, {}).get(f"x{bench['scale']}", {}).get("psnr")
                if scored is not None:
                    found.append({"file": path.name, "machine": machine(ran.get("gpu"), ran), "commit": commit(ran),
                                  "dataset": dataset,
                                  "scale": bench["scale"], "fp32": quality["psnr"], "scored": scored})
        return found

    def image_psnr(self, dataset: str, image: str, scale: int) -> float | None:
        """One test image's PSNR by its evaluation (`per_image.csv`), None where the evaluation did not score
        that image at that scale."""
        path = self.scores / "per_image.csv"
        if not path.exists():
            return None
        rows = pd.read_csv(path)
        hit = rows[(rows.dataset == dataset) & (rows.image == image) & (rows.scale == scale)]
        return float(hit.psnr.iloc[0]) if len(hit) else None


@dataclass(frozen=True)
class Run(Evaluated):
    """One training run and its evaluation, as its files describe it."""

    name: str
    recorded: bool  # made by `rlcsc record` (runs/<name>/) rather than this pipeline (models/<name>/)
    train: dict  # train.json
    metrics: dict | None  # metrics.json of the evaluation, None if it did not run
    scores: Path  # the folder of its evaluation's files (metrics.json, per_image.csv)
    environment: dict | None = None  # environment.json (recorded runs): one entry per call
    evaluation: dict | None = None  # evaluation.json of the evaluation, None if it did not run or predates it

    @property
    def config(self) -> dict:
        """The resolved training block the run used."""
        return self.train["train"]

    @property
    def model(self) -> dict:
        """The network as built: recursions, features, codes (after `width`), residual, bias, parameters, depth."""
        return self.train["model"]

    @property
    def k(self) -> int:
        return self.model["recursions"]

    @property
    def filters(self) -> tuple[int, int]:
        """(n, m): the paper's filter counts this run's network scales (before `width`)."""
        return self.config["features"], self.config["codes"]

    @property
    def residual(self) -> bool:
        return self.model["residual"]

    @property
    def paper_network(self) -> bool:
        """Whether the run trained the paper's RL-CSC at its K (Section 5.2: n = 128, m = 256, no biases), with the
        residual connection or without it."""
        m = self.model
        return m["arch"] == "rlcsc" and not m["bias"] and (m["features"], m["codes"]) == (128, 256)

    @property
    def device(self) -> str:
        """The device it trained on, as `machine` names it."""
        call = self.train["calls"][-1] if self.train.get("calls") else {}
        return machine(None if self.train["device"] == "cpu" else self.train["device"], call)

    @property
    def curve(self) -> pd.DataFrame:
        return pd.DataFrame(self.train["curve"])

    @property
    def paper_scale(self) -> bool:
        """Trained under the paper's or the fast budget: the runs whose numbers may match the paper's (a quick
        run is a smoke test of the pipeline, never a reproduction)."""
        return self.train.get("budget") in PAPER_SCALE

    @property
    def finished(self) -> bool:
        """Trained as far as its plan runs (`steps_planned`: `rlcsc.train.TrainParams.last_step` of the params it
        was started with, Table 3's 14 epochs without the residual included); a call's own stop (`rlcsc record
        --epochs`, `--steps`) or a time limit leaves a run short of it."""
        return self.train["epochs_done"] >= self.train["epochs_planned"]

    @property
    def diverged(self) -> bool:
        return self.train["status"].startswith("diverged")

    @property
    def ended(self) -> bool:
        """Trains no further: it finished its plan, or diverged (its divergence is its result)."""
        return self.finished or self.diverged

    def clipped_share(self) -> float | None:
        """The share of the run's steps whose gradient norm was clipped (each snapshot's `clipped_fraction` of its
        `steps`); None for a run that did not clip."""
        if self.config.get("clip") is None:
            return None
        curve = [c for c in self.train["curve"] if c.get("steps")]
        return sum(c["clipped_fraction"] * c["steps"] for c in curve) / max(1, sum(c["steps"] for c in curve))

    def last_psnr(self) -> float:
        """The Set5 x3 PSNR of the final model: its evaluation's, else the monitor's last (`by_monitor`)."""
        m = (self.metrics or {}).get("Set5", {}).get("x3", {})
        return m.get("psnr", self.train["curve"][-1]["psnr"] if self.train["curve"] else np.nan)

    @property
    def by_monitor(self) -> bool:
        """Whether its `last_psnr` is its training monitor's: it was not evaluated, or not on Set5 x3."""
        return "psnr" not in (self.metrics or {}).get("Set5", {}).get("x3", {})

    def minutes_to(self, psnr: float) -> float | None:
        """Training minutes (a snapshot's `seconds`) at the first snapshot whose Set5 x3 PSNR reached
        `psnr`; None if none did."""
        return next((c["seconds"] / 60 for c in self.train["curve"] if c["psnr"] >= psnr), None)

    def seedless(self) -> tuple:
        """What the run is, apart from its seed, and how far it trained and how it ended: runs that share it
        differ by chance alone (a run that diverged, or trained fewer steps, is no sample of the same result)."""
        return tuple(sorted((k, json.dumps(v)) for k, v in self.config.items()
                            if k not in ("seed", "log_every", "checkpoint_every", "device", "compile"))) + (
            self.train.get("budget"), self.recorded, self.train["steps_done"], self.diverged)

    def recipe(self) -> str:
        """The recipe in words: the paper's, or the keys where it differs (as `train.json` records them)."""
        changes = self.train["recipe_changes"]
        if not changes:
            return "the paper's recipe"
        return "not the paper's recipe: " + ", ".join(f"{k} {_word(v)}" for k, v in changes.items())

    def extent(self) -> str:
        """How far it trained, the epochs done out of those planned: "1 of 35 epochs", "35 of 35 epochs"; a schedule
        that ends within an epoch (`max_steps`) in its steps: "23,000 of 23,000 steps, 1.53 of 1.53 epochs"."""
        done, planned = self.train["epochs_done"], self.train["epochs_planned"]
        if planned == int(planned) or "steps_planned" not in self.train:
            return f"{done:g} of {planned:g} epochs"
        steps = f"{self.train['steps_done']:,} of {self.train['steps_planned']:,} steps"
        return f"{steps}, {done:.3g} of {planned:.3g} epochs"

    def state(self) -> str:
        """How it ended: its extent, and a divergence where it diverged (never "completed" for a run
        that stopped short of its plan)."""
        return self.extent() + (f", {self.train['status']}" if self.diverged else "")

    def short(self) -> str:
        """A column's label, a legend entry or a row: the run's name (the runs table says what it is)."""
        return self.name

    def training_call(self) -> dict:
        """The last call that trained it (train.json's), with the commit of the matching call of a recorded run's
        `environment` where train.json, written before its calls named one, does not say it."""
        call = (self.train.get("calls") or [{}])[-1]
        if call.get("commit") or not self.recorded:
            return call
        calls = (self.environment or {}).get("calls") or []
        trained = next((c for c in reversed(calls) if c.get("steps_after", 0) > c.get("steps_before", 0)), {})
        return {**call, "commit": trained.get("commit")}

    def row(self) -> dict[str, str]:
        """What the run is, as a row of a page's runs table: where and from which commit it trained, and where and
        from which commit it was scored where that differs."""
        n, m = self.model["features"], self.model["codes"]
        network = f"K = {self.k}, n = {n}, m = {m}{'' if self.residual else ', no residual'}"
        scored_on = self.scored_on() if self.metrics else "unknown"
        elsewhere = f"; scored on {scored_on}" if scored_on not in ("unknown", self.device) else ""
        trained, scored = commit(self.training_call()), commit(self.evaluation_call()) if self.metrics else "unknown"
        return {"run": self.name, "made by": "`rlcsc record`" if self.recorded else "this pipeline",
                "network": network + (", biases" if self.model["bias"] else ""),
                "budget": f"{self.train.get('budget')} ({self.recipe()})", "seed": str(self.config["seed"]),
                "trained": self.state(),
                "machine": (self.device + precisions(self.train["precision"]["train"], None) + elsewhere
                            + precisions(None, self.evaluated_in())),
                "commit": trained if scored in ("unknown", trained) else f"{trained} (trained); {scored} (scored)"}


def machine(gpu: str | None, call: dict) -> str:
    """Where a call ran, for a runs table: the GPU's name; else the CPU's, its cores and the limits set on its
    vector instructions (`rlcsc.device.ISA_LIMITS`), each where the call recorded it."""
    if gpu:
        return gpu
    cores = f", {call['cpu_cores']} cores" if call.get("cpu_cores") else ""
    limits = "".join(f", {name}={value}" for name, value in (call.get("isa_limits") or {}).items())
    return (f"cpu: {call['cpu']}" if call.get("cpu") else "cpu") + cores + limits


def precisions(trained: str | None, scored: str | None) -> str:
    """What a runs table adds to the machine: the precisions a network trained and was scored in, where not
    fp32 (`rlcsc.device`)."""
    named = (("trained", trained), ("scored", scored))
    return "".join(f", {what} in {p}" for what, p in named if p not in (None, "fp32"))


def commit(call: dict) -> str:
    """A call's commit for a runs table: its first 10 hex digits, with "-dirty" kept where the call ran code
    with uncommitted changes; "unknown" where it recorded none."""
    full = call.get("commit") or "unknown"
    head = full.removesuffix("-dirty")
    return head[:10] + full[len(head):]


def signed(value: float, digits: int) -> str:
    """`value` with its sign to `digits` decimals, a difference that rounds to zero as +0.00 (never -0.00)."""
    return f"{round(value, digits) or 0.0:+.{digits}f}"


def _word(value: object) -> str:
    """A param's value as params.yaml spells it (null as none)."""
    return "none" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def pipeline_runs(params: Path, models: Path, results: Path) -> list[Run]:
    """This pipeline's runs: every entry of `experiments` that has trained, in the file's order."""
    names = read_params(params).get("experiments") or {}
    runs = []
    for name in names:
        train = _json(models / name / "train.json")
        if train is not None:
            folder = results / name
            runs.append(Run(name, False, train, _json(folder / "metrics.json"), folder,
                            evaluation=_json(folder / "evaluation.json")))
    return runs


def recorded_runs(runs: Path) -> list[Run]:
    """The recorded runs under `runs/`, by name."""
    found = []
    for folder in sorted(p for p in runs.glob("*") if (p / "train.json").exists()):
        found.append(Run(folder.name, True, _json(folder / "train.json"), _json(folder / "metrics.json"), folder,
                         _json(folder / "environment.json"), _json(folder / "evaluation.json")))
    return found


def paper_set5_x3(run: Run) -> float | None:
    """The paper's final Set5 x3 PSNR for the network `run` trained, where the paper reports one: the
    endpoints of Figure 7 (Section 5.4) for its K, at Section 5.2's filter sizes (n = 128, m = 256)
    with the residual connection and without biases; None for any other network."""
    if not (run.paper_network and run.residual):
        return None
    ref = table("figure7")
    hit = ref.psnr[ref.recursions == run.k]
    return float(hit.iloc[0]) if len(hit) else None


def psnr_at(curve: list[dict], seconds: float) -> float | None:
    """The Set5 x3 PSNR of `curve` (the snapshots of a `train.json` or of a comparison's variant) after `seconds`
    of training: a snapshot's own where one falls there, else read linearly between the two either side; None
    before the first snapshot or after the last."""
    times = [c["seconds"] for c in curve]
    if not times or not times[0] <= seconds <= times[-1]:
        return None
    return float(np.interp(seconds, times, [c["psnr"] for c in curve]))


COLLAPSED = 0.99  # the share of output pixels at 0 from which an output counts as collapsed (Table 3's 6.54 dB)


def convergence(run: Run, runs: list[Run], bicubic: float) -> str:
    """Whether `run`, a network without the residual connection, converged, in sentences that follow one naming
    it, against the paper's claim (Section 5.4, Table 3) that such a network "cannot even converge": it diverged
    (a non-finite loss or gradient); or its output collapsed (at least `COLLAPSED` of its output pixels round to 0
    at its last snapshot, as in the paper's Table 3); or else its final Set5 x3 PSNR, set against its bicubic
    input's (`bicubic`) and against the run of `runs` with the same network and budget and the residual
    connection, where there is one (a run not yet finished is said to converge so far, not to have converged)."""
    budget = run.train.get("budget")
    failed = "as the paper reports (\"cannot even converge\")" if budget == "paper" else \
        "as the paper reports of its own recipe"
    if run.diverged:
        return f"It did not converge: its loss or gradient became non-finite, {failed}."
    if not run.train["curve"]:
        return "Whether it converges is not known yet: it has no snapshot."
    last = run.train["curve"][-1]
    zeros = last.get("zero_fraction")
    if zeros is not None and zeros >= COLLAPSED:
        return (f"It did not converge: its output collapsed, {100 * zeros:.1f}% of its output pixels rounding to 0 "
                f"at its last snapshot ({last['psnr']:.2f} dB), {failed}.")
    psnr = run.last_psnr()
    twin = next((r for r in runs if r.residual and r.train.get("budget") == budget
                 and {**r.model, "residual": False} == run.model), None)
    beside = (f" and {signed(psnr - twin.last_psnr(), 2)} dB from {twin.short()} ({twin.last_psnr():.2f} dB), the same "
              "network and budget with the residual" if twin else "")
    said = (f"Its loss stayed finite, and it {'ended' if run.finished else 'stands'} at {psnr:.2f} dB, "
            f"{signed(psnr - bicubic, 2)} dB from its bicubic input ({bicubic:.2f} dB){beside}. ")
    if psnr <= bicubic:
        return said + f"Its output is no better than its input{'' if run.finished else ' so far'}."
    if not run.finished:
        return said + "So far it converges, to an output better than its input; its run has not finished."
    return said + ("It converged, to an output better than its input, against the paper's claim that it \"cannot "
                   "even converge\"." if budget == "paper" else
                   f"It converged, to an output better than its input: the {budget} budget's recipe trains the network "
                   "without the residual connection, where the paper reports that its own could not (\"cannot even "
                   "converge\").")


def all_runs(params: Path, models: Path, results: Path, runs: Path) -> list[Run]:
    return pipeline_runs(params, models, results) + recorded_runs(runs)


# How far a measured comparison method may lie from its published number before the page says the cell
# needs an explanation: about the rounding of the published digits and of a test set's versions.
EXPLAIN = {"psnr": 0.05, "ssim": 0.002, "ifc": 0.05}
DIGITS = {"psnr": 2, "ssim": 4, "ifc": 3}  # the decimals the paper prints each metric with
UNITS = {"psnr": " dB", "ssim": "", "ifc": ""}


def within(difference: float | pd.Series, metric: str, bound: float) -> bool | pd.Series:
    """Whether a difference from a published number lies within `bound` as `signed` prints it: rounded (as Python
    rounds) to the decimals the paper gives `metric` (0.1 dB above the paper reads +0.10, within 0.1 dB, whatever
    lies past the second decimal, the float's last bit included). False for a missing (NaN) difference."""
    if isinstance(difference, pd.Series):
        return difference.map(lambda d: within(d, metric, bound)).astype(bool)
    return abs(round(float(difference), DIGITS[metric])) <= bound


@dataclass(frozen=True)
class Measured(Evaluated):
    """A comparison method's released weights (`rlcsc convert`) evaluated by this package's protocol:
    this pipeline's evaluation (`results/<method>/`) or a recorded one (`runs/<name>/`, `rlcsc record --model`)."""

    name: str  # the folder's name
    recorded: bool
    evaluation: dict  # evaluation.json: the params, the model with its `source`, the `environment` it ran in
    metrics: dict
    scores: Path  # the folder of its files
    environment: dict | None = None  # environment.json (recorded evaluations)

    @property
    def source(self) -> dict:
        """The released file: group (the method), file, sha256, url."""
        return self.evaluation["model"]["source"]

    @property
    def method(self) -> str:
        """The method's name as the paper's tables spell it: its group in `weights.tsv`, or Bicubic."""
        return "Bicubic" if self.evaluation.get("method") == "bicubic" else self.source["group"]

    def cells(self) -> int:
        return sum(len(scales) for scales in self.metrics.values())

    def model_file(self, models: Path) -> Path:
        """The model file it scored: the recorded evaluation's copy, or the pipeline's `models/<name>/model.pt`."""
        return self.scores / "model.pt" if self.recorded else models / self.name / "model.pt"

    def short(self) -> str:
        """A column's label: the folder of its evaluation (the method's name for this pipeline's)."""
        return self.name if self.name != self.method else f"{self.method} (this pipeline)"

    def row(self) -> dict[str, str]:
        """What the evaluation is, as a row of a page's runs table."""
        e, call = self.evaluation, self.evaluation_call()
        if self.method == "Bicubic":
            made, network = "`rlcsc record --method bicubic`", "bicubic interpolation (MATLAB's `imresize`)"
        else:
            src = self.source
            made, network = ("`rlcsc record --model`",
                             f"{self.method}: the authors' `{src['file']}` (sha256 {src['sha256'][:10]})")
        return {"run": self.short(), "made by": made if self.recorded else "this pipeline", "network": network,
                "budget": f"{e.get('budget')}: {', '.join(e['datasets'])}{', IFC' if e['ifc'] else ''}",
                "seed": "-", "trained": "-" if self.method == "Bicubic" else "by the authors",
                "machine": self.scored_on() + precisions(None, self.evaluated_in()),
                "commit": commit(call)}


def measured_methods(results: Path, runs: Path) -> list[Measured]:
    """Every evaluation of a released model: this pipeline's (results/), then the recorded ones (runs/)."""
    found = []
    for recorded, folder in ([(False, p) for p in sorted(results.glob("*"))]
                             + [(True, p) for p in sorted(runs.glob("*"))]):
        evaluation = _json(folder / "evaluation.json")
        if evaluation and ((evaluation.get("model") or {}).get("source")) and (folder / "metrics.json").exists():
            found.append(Measured(folder.name, recorded, evaluation, _json(folder / "metrics.json"), folder,
                                  _json(folder / "environment.json")))
    return found


def against_paper(measured: Measured, ref: str, metrics: tuple[str, ...]) -> pd.DataFrame:
    """Each cell of reference table `ref` for the measured method: the paper's value, the measured one and
    their difference per metric, and whether the difference is within `EXPLAIN`."""
    published = table(ref)
    published = published[published.method == measured.method].set_index(["dataset", "scale"])
    rows = {}
    for (dataset, scale), paper in published.iterrows():
        cell = measured.metrics.get(dataset, {}).get(f"x{scale}", {})
        row = {}
        for m in metrics:
            ours = cell.get(m, np.nan)
            row |= {f"{m} paper": paper[m], f"{m} measured": ours, f"{m} difference": ours - paper[m]}
        rows[(dataset, scale)] = row
    frame = pd.DataFrame(rows).T.rename_axis(["dataset", "scale"])
    for m in metrics:
        frame[f"{m} within"] = within(frame[f"{m} difference"].astype(float), m, EXPLAIN[m])
    return frame


def agreement(frame: pd.DataFrame, metric: str) -> str:
    """One sentence on a metric's cells of `against_paper`: how many were measured, how many lie within
    `EXPLAIN`, and the range of the differences."""
    d = frame[f"{metric} difference"].dropna()
    if d.empty:
        return f"{metric.upper()}: no cell measured."
    inside = within(d.astype(float), metric, EXPLAIN[metric])
    digits, unit = DIGITS[metric], UNITS[metric]
    beyond = [f"{ds} x{s} ({signed(v, digits)})" for (ds, s), v in d[~inside].items()]
    text = (f"{metric.upper()}: {int(inside.sum())} of {len(d)} measured cells within {EXPLAIN[metric]:g}{unit} of "
            f"the paper, differences {signed(d.min(), digits)} to {signed(d.max(), digits)}{unit}")
    return text + (f"; beyond it: {', '.join(beyond)}." if beyond else ".")


@dataclass(frozen=True)
class Page:
    """What every report notebook starts from: the paths it was given and every run they hold."""

    params: Path
    results: Path
    models: Path
    runs_dir: Path
    main: str
    runs: list[Run]  # RL-CSC's: the pages are about that network
    measured: list[Measured]
    others: list[Run]  # trained runs of another network (`train.arch`: DRRN), which no page shows

    @property
    def colours(self) -> dict[str, str]:
        """The colour of every run and measured model (by `short()`), the same on every page."""
        from rlcsc.plots import colours

        first = [r.short() for r in self.runs if r.paper_scale] + [m.short() for m in self.measured]  # colours 1, 2..
        return colours(first + [r.short() for r in self.runs if not r.paper_scale])

    def run(self, name: str) -> Run | None:
        """This pipeline's run `name`, None if it has not trained."""
        return next((r for r in self.runs if r.name == name and not r.recorded), None)

    def measured_method(self, method: str) -> Measured | None:
        """The fullest evaluation of the released `method` (most cells; a recorded one before the
        pipeline's of as many), None when there is none."""
        chosen = [m for m in self.measured if m.method == method]
        return max(chosen, key=lambda m: (m.cells(), m.recorded), default=None)

    def bicubic(self) -> Measured | None:
        """The fullest evaluation of bicubic: this pipeline's (`results/bicubic`) or a recorded one (`runs/<name>/`,
        `rlcsc record --method bicubic`), the one with more cells (a recorded one before the pipeline's of as many)."""
        found = []
        for recorded, folder in ((False, self.results / "bicubic"),
                                 *((True, p) for p in sorted(self.runs_dir.glob("*")))):
            evaluation, metrics = _json(folder / "evaluation.json"), _json(folder / "metrics.json")
            if evaluation is not None and metrics is not None and evaluation.get("method") == "bicubic":
                found.append(Measured(folder.name, recorded, evaluation, metrics, folder,
                                      _json(folder / "environment.json")))
        return max(found, key=lambda b: (b.cells(), b.recorded), default=None)

    def tolerance(self) -> dict[str, float]:
        """How close a paper-scale run must come to a published number to match it (`report` of params.yaml)."""
        return load_block(self.params, "report", ReportParams).tolerance()

    def main_network(self) -> tuple[int, int, int, bool]:
        """(K, n, m, biases) of the main experiment: its run's, or before it has trained, those params.yaml gives
        it (Section 5.2's 25, 128 and 256, without biases, by default)."""
        main = self.run(self.main)
        if main:
            return main.k, *main.filters, main.model["bias"]
        params = read_params(self.params)
        block = {**(params.get("train") or {}), **((params.get("experiments") or {}).get(self.main) or {})}
        return (block.get("recursions", 25), block.get("features", 128), block.get("codes", 256),
                block.get("bias", False))

    def sweep_runs(self) -> list[Run]:
        """The runs of the main network at any K (RL-CSC with the residual connection, the main experiment's filter
        sizes and biases): the runs that Figures 1 and 7 set beside the paper's sweep of K."""
        _, n, m, bias = self.main_network()
        return [r for r in self.runs if r.model["arch"] == "rlcsc" and r.residual and r.filters == (n, m)
                and r.model["bias"] == bias]

    def main_runs(self) -> list[Run]:
        """This pipeline's run of the main experiment and every recorded run of its network (`sweep_runs` of its
        K): the runs that Tables 1-3 and Figures 4-6 set beside the paper's RL-CSC."""
        k = self.main_network()[0]
        return [r for r in self.sweep_runs() if (r.name == self.main or r.recorded) and r.k == k]


def page(params: str, results: str, models: str, runs: str, main: str) -> Page:
    """The shared setup of every report notebook (its papermill parameters in, every run out)."""
    params_, results_, models_, runs_ = Path(params), Path(results), Path(models), Path(runs)
    found = all_runs(params_, models_, results_, runs_)
    return Page(params_, results_, models_, runs_, main, [r for r in found if r.model["arch"] == "rlcsc"],
                measured_methods(results_, runs_), [r for r in found if r.model["arch"] != "rlcsc"])


# What a recorded run shares with a comparison to stand beside its variants: the network, the seed,
# the training pairs and batch (so a step draws the same pairs), and the monitor. Its recipe may differ.
SHARED = ("arch", "recursions", "features", "codes", "units", "residual", "bias", "width", "seed", "pairs", "batch",
          "eval_dataset", "eval_scale")


def references(comparison: dict, runs: list[Run]) -> list[tuple[Run, pd.DataFrame]]:
    """The recorded runs of a step schedule (the paper's recipe, or the quick budget's) that trained a
    comparison's network from the same seed on the same training pairs (every call with its `augment` and
    `patch` params) in the same training precision as its unchanged variants, each with its curve up to the
    comparison's `max_steps` or `max_minutes`. Such a run is what a variant with its recipe would have
    trained; a run whose schedule decays (the fast budget's) does so over its own length, and its curve
    stands for no variant of another length."""
    params = comparison["environment"]["params"]
    unchanged = [v for v in comparison["variants"] if not {"precision", "device"} & set(v["changes"])]
    precisions = {v["precision"]["train"] for v in unchanged}
    found = []
    for run in runs:
        calls = (run.environment or {}).get("calls") or []
        if not (run.recorded and calls and run.train["curve"] and run.config["schedule"] == "step"
                and run.train["precision"]["train"] in precisions
                and all(run.config[k] == params["train"][k] for k in SHARED)
                and all(c["params"][b] == params[b] for c in calls for b in ("augment", "patch"))):
            continue
        curve = run.curve
        within = (curve.step <= comparison["max_steps"] if "max_steps" in comparison
                  else curve.seconds <= 60 * comparison["max_minutes"])
        if within.any():
            found.append((run, curve[within]))
    return found


def seed_groups(runs: list[Run]) -> list[list[Run]]:
    """Runs grouped by everything but their seed, in first-appearance order."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.seedless(), []).append(run)
    return list(groups.values())


def spread_groups(shown: list[Run], runs: list[Run]) -> list[list[Run]]:
    """The seed groups of `runs` that have a spread (more than one run) and hold a run of `shown`."""
    return [group for group in seed_groups(runs) if len(group) > 1 and any(r in group for r in shown)]


def unevaluated(runs: list[Run]) -> list[str]:
    """The sentence naming the paper-scale runs among `runs` that a page of evaluation scores leaves out because they
    have not been evaluated yet (a recorded run trained in one call and evaluated in a later one); none if none."""
    waiting = [f"**{r.name}** ({r.train.get('budget')} budget, {r.extent()})" for r in runs
               if r.paper_scale and not r.metrics]
    return [f"Not evaluated yet, so not on this page: {'; '.join(waiting)}."] if waiting else []


def sources(runs: list, marked: bool = True) -> str:
    """The runs table of a page (markdown): one row per run or measured model it shows (its `row`); `marked`
    where the page's tables and figures mark their columns and points with †. The pages give the quick budget's
    runs a section of their own, so an empty table is one of paper-scale runs."""
    if not runs:
        return "No paper-scale run of this project has reached this page yet."
    rows = [r.row() for r in runs]
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row[k].replace("|", "/") for k in head) + " |" for row in rows]
    dirty = any(row.get("commit", "").endswith("-dirty") for row in rows)
    note = "\n\nA commit marked -dirty: the call ran that commit with uncommitted changes to its code."
    head = f"**Runs on this page**{' (their columns and points are marked †)' if marked else ''}:\n\n"
    return head + "\n".join(lines) + (note if dirty else "")


def spread_note(runs: list[Run]) -> str:
    """How far runs that differ only in their seed lie apart (markdown), or "" when no such group."""
    lines = []
    for group in seed_groups(runs):
        if len(group) > 1:
            psnr = np.array([r.last_psnr() for r in group])
            lines.append(f"- {', '.join(r.name for r in group)} ({group[0].train.get('budget')} budget, "
                         f"seeds {', '.join(str(r.config['seed']) for r in group)}): "
                         f"Set5 x3 mean {psnr.mean():.3f} dB, range {psnr.min():.3f} to {psnr.max():.3f} dB "
                         f"(spread {psnr.max() - psnr.min():.3f} dB)")
    if not lines:
        return ""
    return ("**Spread over seeds.** Runs that differ only in their seed:\n\n" + "\n".join(lines) + "\n\n"
            "Trained numbers also differ between machines: the floating-point order of a CPU's or GPU's "
            "kernels changes the weights from the first steps on, as another seed does (by how much is not "
            "measured here). The bicubic numbers do not: they are exact and the same on every machine. Under "
            "one budget, a difference between two experiments smaller than its spread is not a measured "
            "difference; a spread says nothing about runs of another budget.")


def spread_table(group: list[Run], metric: str) -> pd.DataFrame:
    """Mean, minimum, maximum and spread (max - min) of `metric` over a seed group, per dataset and scale."""
    cells = {}
    for run in group:
        for dataset, scales in (run.metrics or {}).items():
            for scale, values in scales.items():
                cells.setdefault((dataset, int(scale[1:])), []).append(values.get(metric, np.nan))
    rows = {key: {"mean": np.mean(v), "min": np.min(v), "max": np.max(v), "spread": np.max(v) - np.min(v),
                  "runs": len(v)} for key, v in cells.items()}
    return pd.DataFrame(rows).T.rename_axis(["dataset", "scale"])


PAPER, OURS = "paper", "this package"  # the two groups of a table's columns
TABLE = [{"selector": "", "props": "font-size: 0.9em; margin-left: 0"},
         {"selector": "th, td", "props": "padding: 0.2em 0.5em"},
         {"selector": "td", "props": "white-space: nowrap"}]


def beside_paper(ref: str, metric: str, ours: dict[str, dict | None]) -> pd.DataFrame:
    """The published columns of reference table `ref` (group "paper") beside this package's (group "this
    package", each label marked THIS_RUN), one row per dataset and scale; `ours` maps a label to a
    metrics.json mapping. A cell a run did not evaluate is NaN; a column of ours with no cell is left out."""
    published = table(ref).pivot_table(index=["dataset", "scale"], columns="method", values=metric, sort=False)
    columns = {(PAPER, m): published[m] for m in published.columns}
    for label, m in ours.items():
        cells = [(m or {}).get(d, {}).get(f"x{s}", {}).get(metric, np.nan) for d, s in published.index]
        if not np.isnan(cells).all():
            columns[(OURS, label + THIS_RUN)] = pd.Series(cells, index=published.index)
    return pd.DataFrame(columns)


def differences(frame: pd.DataFrame, against: dict[str, str]) -> pd.DataFrame:
    """Each of this package's columns of `beside_paper` minus the paper's column it reproduces (`against`
    maps a label to a published method), headed "label − method"."""
    return pd.DataFrame({f"{label} − {method}": frame[(OURS, label + THIS_RUN)] - frame[(PAPER, method)]
                         for label, method in against.items() if (OURS, label + THIS_RUN) in frame})


def styled(frame: pd.DataFrame, digits: int) -> pd.io.formats.style.Styler:
    """A table of numbers for a page: `digits` decimals, "not run" for a missing cell, a rule before the
    first column of this package's group, and red for the best and blue for the second best value of each
    row, as the paper marks them."""

    def colours(row: pd.Series) -> list[str]:
        order = row.dropna().sort_values(ascending=False).index
        style = dict(zip(order[:2], (RED, BLUE)))
        return [style.get(c, "") for c in row.index]

    styler = frame.style.format(f"{{:.{digits}f}}", na_rep="not run").apply(colours, axis=1)
    rules = list(TABLE)  # the type size and cell padding of every table
    if isinstance(frame.columns, pd.MultiIndex) and OURS in frame.columns.get_level_values(0):
        j = list(frame.columns.get_level_values(0)).index(OURS)
        rules.append({"selector": f"th.col{j}, td.col{j}, th.level0.col_heading.col{j}",
                      "props": "border-left: 3px solid #666"})
    return styler.set_table_styles(rules)


def signed_table(frame: pd.DataFrame, digits: int) -> pd.io.formats.style.Styler:
    """A table of differences: each with its sign to `digits` decimals (never -0.00), "not run" for a missing cell."""
    return frame.style.format(lambda v: signed(v, digits), na_rep="not run").set_table_styles(TABLE)


def execute_notebook(source: Path, target: Path, parameters: dict) -> None:
    """Run a report notebook with papermill into `target` (a bar over its cells), hiding its parameter
    cells in the book; a cell that fails is one line naming it and its error. The kernel talks to papermill
    over Unix sockets in a temporary folder only this user may open, not over TCP on localhost (which it takes
    where the temporary folders' path is too long for a socket's)."""
    import nbformat
    import papermill
    from nbclient.exceptions import DeadKernelError
    from traitlets.config import Config

    def write(tmp: Path) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="rlcsc-kernel-") as sockets:  # of mode 700
                ip = str(Path(sockets) / "kernel")  # the sockets are kernel-1 to kernel-5
                ipc = len(ip.encode()) + 2 <= SOCKET_PATH_MAX
                config = Config({"KernelManager": {"transport": "ipc", "ip": ip}} if ipc else {})
                papermill.execute_notebook(str(source), str(tmp), parameters=parameters, kernel_name="python3", cwd=".",
                                           config=config)
        except papermill.PapermillExecutionError as err:
            what = " ".join(str(err.evalue).split())[:300]
            raise RlcscError(f"{source}: its cell {err.exec_count} failed: {err.ename}: {what}") from None
        except (ValueError, nbformat.ValidationError) as err:  # not JSON, no kernel language: not a runnable notebook
            what = " ".join(str(err).split())[:300]
            raise RlcscError(f"{source}: not a notebook papermill can run: {what}") from None
        except DeadKernelError:
            raise RlcscError(f"{source}: its kernel died (out of memory?) before the notebook ended") from None
        nb = nbformat.read(tmp, as_version=4)
        for cell in nb.cells:
            tags = cell.metadata.setdefault("tags", [])
            if HIDDEN_TAGS & set(tags) and "remove-cell" not in tags:
                tags.append("remove-cell")
        nbformat.write(nb, tmp)

    atomically(write, target)
