"""Recorded runs: training made on another machine (a GPU), kept exactly as the program wrote it.

`rlcsc record` runs one experiment under one budget from the raw images: augment and patch (all
cores; reused when the work folder already holds them for the same params), training for the
given epochs or steps (resuming, so a later call extends the run), and the evaluation protocol. The
run's folder, committed as `runs/<name>/`, then holds

- `model.pt`: weights, network and training config (what `rlcsc sr` and `rlcsc evaluate` read);
- `checkpoint.pt`: what a later call needs to extend the run by more epochs;
- `train.json`: the curve (the monitor's snapshots with loss and gradient norms), steps and epochs
  done, ms/step, wall time; `train_metrics.json`: its summary;
- `metrics.json`, `per_image.csv`, `evaluation.json`: the evaluation, as `rlcsc evaluate` writes it
  (a call that trains further removes the evaluation of the model it replaces);
- `environment.json`: one entry per call that made or extended the run: GPU, CPU, versions, the project's
  commit and a hash of its source, the resolved params, the command, the date, and what the call did
  (the steps it trained, whether it evaluated, whether it was interrupted);
- `SHA256SUMS`: the SHA-256 of each, written at the end of every call (also one cut short), which the
  report verifies before it reads the run.

`rlcsc record --model FILE` records an evaluation alone: a model made elsewhere (a comparison
method's released weights, converted) scored under one budget, its folder holding a copy of the model
file and the evaluation's and environment's files; `rlcsc record --method bicubic` records the
baseline's evaluation the same way (no model file).

`rlcsc compare` trains variants of one experiment from the same seed for the same steps or minutes,
one change each, and writes their curves to one JSON file, whose SHA-256 it adds to the `SHA256SUMS` of
the file's folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from rlcsc.atomic import atomically, check_result_file, write_json
from rlcsc.checksums import files, read_sums, seal, verify_run
from rlcsc.config import build, check_layer, check_value, read_params, resolve
from rlcsc.data.augment import AugmentParams, augment, training_files
from rlcsc.data.patches import PatchParams, made_by, make_patches
from rlcsc.device import machine, pick_device
from rlcsc.errors import RlcscError
from rlcsc.evaluate import RESULTS, EvaluateParams, bicubic, evaluate, evaluation_record, write_results
from rlcsc.inference import Network, describe_model
from rlcsc.lock import writing
from rlcsc.manifest import file_sha256
from rlcsc.provenance import code_hash, source_hash, stamp
from rlcsc.train import TrainParams, foreign, read_checkpoint, steps_per_epoch, train


def environment(params: dict) -> dict:
    """Where and with what a run was made: the machine (its GPU when there is one), the code (commit and
    source hash), the command, the date and the resolved params."""
    return {**machine("cuda" if torch.cuda.is_available() else "cpu"), **stamp(), "source_sha256": source_hash(),
            "command": sys.argv, "params": params}


def resolved(params_path: Path, budget: str, experiment: str) -> dict:
    """Every block the run reads, resolved under `budget` (whatever the file's own `budget` says)."""
    params = {**read_params(params_path), "budget": budget}
    where = f"{params_path} under budget {budget}"
    blocks = {"augment": (AugmentParams, None), "patch": (PatchParams, None), "train": (TrainParams, experiment),
              "evaluate": (EvaluateParams, None)}
    return {name: build(cls, resolve(params, params_path, name, cls, e), where) for name, (cls, e) in blocks.items()}


def _data_stamp(blocks: dict) -> dict:
    """What `work/data.json` says of the training pairs there: the params and the code that made them."""
    return {"augment": asdict(blocks["augment"]), "patch": asdict(blocks["patch"]),
            "code": code_hash("rlcsc.data.patches")}


def _prepared(blocks: dict, work: Path) -> bool:
    """Whether `work` holds the training pairs of `blocks`' params, made by this code."""
    path = work / "data.json"
    return path.exists() and path.read_text(errors="replace") == json.dumps(_data_stamp(blocks), indent=2) + "\n"


def prepare_data(blocks: dict, raw: Path, work: Path, jobs: int | None) -> Path:
    """Augment and patch into `work` unless it already holds them for the same params, made by the same
    code (one writer at a time: `rlcsc.lock`); the patch folder."""
    with writing(work):
        if not _prepared(blocks, work):
            (work / "data.json").unlink(missing_ok=True)
            augment(training_files(raw, blocks["augment"]), work / "augmented", blocks["augment"], jobs)
            make_patches(work / "augmented", work / "patches", blocks["patch"], jobs)
            write_json(_data_stamp(blocks), work / "data.json")
    return work / "patches"


def _needs_training(out: Path, p: TrainParams, pairs: dict, ckpt: dict | None) -> bool:
    """False when `out` already holds a model of this run (`p`'s identity, on the training pairs `pairs`, as its
    checkpoint `ckpt` holds them) trained to where `p` stops, or finished short of it: diverged, or out of
    `max_minutes`."""
    path = out / "train.json"
    if not (out / "model.pt").exists() or not path.exists():
        return True
    done = _read_json(path)
    try:
        theirs = TrainParams.known(done["train"])
    except RlcscError as err:  # written by older code that allowed a value this code does not
        raise RlcscError(f"{path} holds params this code refuses ({err}): extend it with the code that made it, "
                         "or record into another --out") from None
    if theirs.identity() != p.identity() or (ckpt or {}).get("pairs", pairs) != pairs:
        return True
    if done["status"] != "completed" or (p.max_minutes and done["seconds_training"] >= 60 * p.max_minutes):
        return False
    return done["steps_done"] < p.last_step(done["steps_per_epoch"])


def record(params_path: Path, budget: str, experiment: str, raw: Path, out: Path, work: Path,
           epochs: int | None = None, steps: int | None = None, evaluate_after: bool = True,
           jobs: int | None = None) -> None:
    """Make or extend the recorded run `out` (see the module docstring)."""
    blocks = resolved(params_path, budget, experiment)
    p = plan = blocks["train"]  # this call may stop the run before its plan ends
    if epochs is not None:
        p = replace(p, stop_epoch=check_value(TrainParams, "stop_epoch", epochs, "--epochs"))
        if epochs > p.epochs:
            raise RlcscError(f"--epochs {epochs} is beyond the {p.epochs} epochs of budget {budget}'s schedule "
                             "(train.epochs); a longer run is another schedule, planned in the params")
    if steps is not None:
        if p.schedule != "step":  # there `max_steps` is where the schedule decays to zero: part of the run's identity
            raise RlcscError(f"--steps would move where the {p.schedule} schedule of budget {budget} decays to zero "
                             f"(max_steps {p.max_steps or 'unset'}), and with it every step's learning rate; stop the "
                             "run with --epochs, or change max_steps in the params")
        p = replace(p, max_steps=check_value(TrainParams, "max_steps", steps, "--steps"))
    e = blocks["evaluate"]
    if not raw.is_dir():
        raise RlcscError(f"no raw images at {raw}: run `rlcsc download --out {raw}` or pass --raw")
    pick_device(p.device)  # device: cuda without a GPU ends here, before any data are prepared or written
    env_path = out / "environment.json"
    calls = _calls(env_path)
    if out.is_dir():
        _check_sealed(out, calls)
    held = _held(out, calls)
    if held not in (None, "training"):
        raise RlcscError(f"{out} holds the recorded evaluation of {EVALUATED[held]}, not a training run; record into "
                         "another --out")
    call = environment({"budget": budget, "experiment": experiment, **{k: asdict(v) for k, v in blocks.items()},
                        "train": asdict(p)})
    ckpt = _checkpoint(out)
    done = {"steps_before": _steps_done(out, ckpt), "evaluated": False}
    pairs = made_by(asdict(blocks["augment"]), asdict(blocks["patch"]))
    needs_training = _needs_training(out, p, pairs, ckpt)
    if needs_training and ckpt:
        _check_resumable(out, ckpt, p, pairs, calls)
    elif needs_training and (out / "train.json").exists():
        raise RlcscError(f"{out} holds a run but not its checkpoint.pt, which extending it needs: restore the "
                         "checkpoint (from the machine or commit that made it), or record into another --out")
    # a missing or damaged training image ends the call here, before anything is written
    if needs_training and not _prepared(blocks, work):
        training_files(raw, blocks["augment"])
    work.mkdir(parents=True, exist_ok=True)  # before the run's folder is written: a bad --work loses nothing
    out.mkdir(parents=True, exist_ok=True)
    write_json({"calls": calls + [{**call, **done}]}, env_path)  # a call cut short still says where it ran
    started = time.monotonic()
    try:
        if _drop_stale_evaluation(out):
            print(f"{out}: its evaluation was of an earlier model than its model.pt (a call was cut short as it "
                  "wrote the model): removed", file=sys.stderr)
        if needs_training:
            patches = prepare_data(blocks, raw, work, jobs)
            try:
                summary = train(p, patches, raw, out, e.precision, {"experiment": experiment, "budget": budget},
                                plan=plan)
            finally:  # a new model (also one written as the call was cut short): the evaluation of the old one goes
                _drop_stale_evaluation(out)
            if summary.get("interrupted"):
                raise KeyboardInterrupt
        if evaluate_after:
            scoring = time.monotonic()
            network = Network(out / "model.pt", pick_device(p.device).type, e.precision)
            scores = evaluate(network, raw, e.datasets, e.scales, e.ifc, jobs)
            write_results(scores, out, evaluation_record(e.datasets, e.scales, e.ifc, budget,
                                                         describe_model(out / "model.pt"), e.precision,
                                                         network.precision))
            done["seconds_evaluating"] = _since(scoring)
        done.update(steps_after=_steps_done(out, _checkpoint(out)), evaluated=evaluate_after, seconds=_since(started))
        write_json({"calls": calls + [{**call, **done}]}, env_path)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the call says how far it trained, as its checkpoint holds it
        done.update(steps_after=_steps_done(out, _checkpoint(out)), interrupted=True, seconds=_since(started))
        write_json({"calls": calls + [{**call, **done}]}, env_path)
        raise
    finally:
        seal(out)  # what this call wrote, also when it was cut short


def record_evaluation(params_path: Path, budget: str, model: Path | None, raw: Path, out: Path,
                      jobs: int | None = None) -> None:
    """Record the evaluation of the model file `model` (None: the bicubic baseline) under `budget` into
    the folder `out`: a copy of the model (`model.pt`), `metrics.json`, `per_image.csv`,
    `evaluation.json` and `environment.json`. A folder that holds such a record is scored again, its calls kept:
    one cut short leaves the last scores beside the call that made them."""
    params = {**read_params(params_path), "budget": budget}
    e = build(EvaluateParams, resolve(params, params_path, "evaluate", EvaluateParams),
              f"{params_path} under budget {budget}")
    about = describe_model(model) if model is not None else None
    if not raw.is_dir():
        raise RlcscError(f"no raw images at {raw}: run `rlcsc download --out {raw}` or pass --raw")
    kept, env_path = out / "model.pt", out / "environment.json"
    calls = _calls(env_path)
    held = _held(out, calls) if out.is_dir() else None
    if held == "training":
        raise RlcscError(f"{out} holds a training run; record the evaluation into another --out")
    if held not in (None, "model" if model else "bicubic"):
        raise RlcscError(f"{out} holds the evaluation of {EVALUATED[held]}, "
                         f"not of {EVALUATED['model' if model else 'bicubic']}; record into another --out")
    if model is not None and kept.exists() and file_sha256(kept) != file_sha256(model):
        raise RlcscError(f"{kept} is another model than {model}; record into another --out")
    if out.is_dir():
        _check_sealed(out, calls)
    out.mkdir(parents=True, exist_ok=True)
    call = environment({"budget": budget, "evaluate": asdict(e), "model": about})
    started = time.monotonic()
    try:
        write_json({"calls": calls + [{**call, "evaluated": False}]}, env_path)  # first: what a call cut short was
        if model is not None and not kept.exists():
            atomically(lambda tmp: shutil.copyfile(model, tmp), kept)
            seal(out, [kept.name])  # a model without a checksum of its own loads by the SHA256SUMS beside it
        upscale = bicubic if model is None else Network(kept, pick_device("auto").type, e.precision)
        scores = evaluate(upscale, raw, e.datasets, e.scales, e.ifc, jobs)
        write_results(scores, out, evaluation_record(e.datasets, e.scales, e.ifc, budget,
                                                     describe_model(kept) if model else None, e.precision,
                                                     upscale.precision if model else None))
        write_json({"calls": calls + [{**call, "evaluated": True, "seconds": _since(started)}]}, env_path)
    finally:
        seal(out)


def _drop_stale_evaluation(out: Path) -> bool:
    """Remove the evaluation in `out` where it describes another model than its model.pt (`describe_model`: the
    run's status and extent) and say whether it did: the evaluation of a model a call replaced."""
    evaluation, model = out / "evaluation.json", out / "model.pt"
    if not (evaluation.exists() and model.exists()):
        return False
    scored = _read_json(evaluation).get("model") or {}
    if all(scored.get(k) == v for k, v in describe_model(model).items() if k != "path" and k in scored):
        return False
    for name in RESULTS:
        (out / name).unlink(missing_ok=True)
    return True


def _since(start: float) -> float:
    """Wall seconds since `start` (`time.monotonic`), to a tenth."""
    return round(time.monotonic() - start, 1)


# The kinds of record a folder holds (`_held`), in words.
EVALUATED = {"model": "a model made elsewhere", "bicubic": "bicubic"}


def _held(out: Path, calls: list[dict]) -> str | None:
    """The kind of record the folder `out` holds: "training" (a run: its train.json or checkpoint, or calls that
    trained), the evaluation of a "model" made elsewhere (its copy, or calls that named one) or of "bicubic"
    (an evaluation, or calls, without either); None for a folder that holds no record."""
    if (out / "train.json").exists() or (out / "checkpoint.pt").exists() or any("steps_before" in c for c in calls):
        return "training"
    if (out / "model.pt").exists() or any((c.get("params") or {}).get("model") for c in calls):
        return "model"
    return "bicubic" if (out / "evaluation.json").exists() or calls else None


def _check_sealed(out: Path, calls: list[dict]) -> None:
    """The folder `out` holds what `rlcsc record` wrote and sealed, unchanged, before a call writes into it and
    seals it again (which would otherwise seal an edited file as the program's; `verify_run`). Only a call killed
    before it could seal (its entry in `environment.json` says it did not end, and the seal predates that entry)
    leaves files that this call seals as they are; a call cut short by Ctrl-C or SIGTERM sealed its own."""
    if not files(out):
        return
    ended = not calls or "steps_after" in calls[-1] or calls[-1].get("evaluated")
    if not ended and read_sums(out).get("environment.json") != file_sha256(out / "environment.json"):
        return
    verify_run(out)


def _checkpoint(out: Path) -> dict | None:
    """The run's last checkpoint, or None."""
    path = out / "checkpoint.pt"
    return read_checkpoint(path) if path.exists() else None


def _check_resumable(out: Path, ckpt: dict, p: TrainParams, pairs: dict, calls: list[dict]) -> None:
    """A recorded run is extended, never trained afresh over: one clear error if its checkpoint belongs
    to another run (other params, training pairs made by other params, or other training code), before
    anything is written."""
    differ = foreign(ckpt, p, pairs)
    if differ:
        made = calls[-1].get("commit") if calls else None
        raise RlcscError(f"{out / 'checkpoint.pt'} belongs to a run with other {', '.join(differ)}"
                         f"{f' (made at commit {made})' if made else ''}: extend it with that code and "
                         f"those params, or record into another --out")


def _steps_done(out: Path, ckpt: dict | None) -> int:
    """The steps the run in `out` has trained: as its last checkpoint `ckpt` holds them (a call cut
    short leaves its steps there, not in train.json), else as train.json says (a copy without one)."""
    if ckpt is not None:
        return sum(call["steps"] for call in ckpt["calls"])
    summary = out / "train.json"
    return _read_json(summary)["steps_done"] if summary.exists() else 0


def _read_json(path: Path) -> dict:
    """A JSON file of a recorded run (a mapping), or one clear error naming it."""
    try:
        data = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RlcscError(f"{path} is not readable JSON ({err}); restore it from the commit that recorded it") from None
    if not isinstance(data, dict):
        raise RlcscError(f"{path} holds {type(data).__name__}, not the mapping the program wrote; restore it from "
                         "the commit that recorded it")
    return data


def _calls(path: Path) -> list[dict]:
    """The calls of a run's `environment.json` (none when there is no such file), or one clear error naming it."""
    if not path.exists():
        return []
    calls = _read_json(path).get("calls")
    if not (isinstance(calls, list) and all(isinstance(c, dict) for c in calls)):
        raise RlcscError(f"{path} holds no list of calls, as the program writes it; restore it from the commit "
                         "that recorded it")
    return calls


def parse_variant(text: str) -> tuple[str, dict]:
    """"name:key=value,key=value" -> (name, {key: value}), values read as YAML and checked against the train block."""
    name, _, changes = text.partition(":")
    values = {}
    for item in filter(None, changes.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise RlcscError(f"variant {text!r}: expected name:key=value,..., got {item!r}")
        if key.strip() in values:
            raise RlcscError(f"variant {text!r} gives {key.strip()} twice")
        try:
            values[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise RlcscError(f"variant {text!r}: {value!r} is not a YAML value") from None
    if not name:
        raise RlcscError(f"variant {text!r} has no name")
    return name, check_layer(TrainParams, values, f"variant {name}")


@contextmanager
def _named(variant: str) -> Iterator[None]:
    """An error of the block said as one of `variant`."""
    try:
        yield
    except RlcscError as err:
        raise RlcscError(f"variant {variant}: {err}") from None


def compare(params_path: Path, budget: str, experiment: str, raw: Path, work: Path, variants: list[str],
            steps: int | None, minutes: float | None, out: Path, jobs: int | None = None) -> dict:
    """Train each variant of `experiment` (same seed, same data order) for `steps` steps or `minutes`
    of training, one change each from the resolved train block; write and return their curves."""
    blocks = resolved(params_path, budget, experiment)
    blocks["train"] = replace(blocks["train"], on_divergence="record")  # a variant that diverges: that is its result
    parsed = [parse_variant(v) for v in variants]
    names = [name for name, _ in parsed]
    if len(set(names)) < len(names):
        raise RlcscError(f"variant names must differ, got {', '.join(names)}")
    check_result_file(out, replace=False)  # a comparison's GPU minutes are never written over
    limit = {"max_steps": steps} if steps is not None else {"max_minutes": minutes}
    base = replace(blocks["train"], **limit)
    trained = {}
    for name, changes in parsed:  # a variant that cannot run ends here, not after the ones before it trained
        with _named(name):
            trained[name] = replace(base, **changes)
            pick_device(trained[name].device)
    out.parent.mkdir(parents=True, exist_ok=True)
    patches = prepare_data(blocks, raw, work, jobs)
    available = len(np.load(patches / "keep.npy", mmap_mode="r"))  # checked whole by each variant's training
    for name, p in trained.items():
        with _named(name):
            steps_per_epoch(p, available, patches)
    result = {"what": "comparison", "budget": budget, "experiment": experiment, **limit,
              "environment": environment({k: asdict(v) for k, v in blocks.items()}),
              "planned": names, "variants": []}
    for name, changes in parsed:
        with tempfile.TemporaryDirectory() as tmp, _named(name):
            summary = train(trained[name], patches, raw, Path(tmp), blocks["evaluate"].precision,
                            {"experiment": experiment, "budget": budget})
        if summary["status"] == "interrupted":  # cut short: the variants done so far are already written
            raise KeyboardInterrupt
        keep = ("status", "steps_done", "epochs_done", "ms_per_step", "seconds_training", "precision", "model", "curve")
        result["variants"].append({"name": name, "changes": changes, **{k: summary[k] for k in keep}})
        write_json(result, out)  # after every variant: a run cut short keeps what it measured
        seal(out.parent, [out.name])
        if summary.get("interrupted"):  # after the variant's last host sync: kept, and the comparison ends
            raise KeyboardInterrupt
    return result
