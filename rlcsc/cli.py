"""`rlcsc`: the single command-line entry point that the DVC stages call."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from rlcsc.errors import RlcscError
from rlcsc.lock import writing
from rlcsc.manifest import TEST_SETS

# The argument naming what a command writes: one writer at a time (`rlcsc.lock`).
WRITES = {"download": "out", "augment": "out", "patch": "out", "train": "out", "evaluate": "out", "sr": "output",
          "record": "out", "compare": "out", "convert": "out", "checksums": "folders", "benchmark": "out",
          "memory": "out", "params": "resolved", "report": "out"}


def positive(kind: type[int | float]) -> Callable[[str], int | float]:
    """An argparse type: a number of `kind` above zero (a count of steps, epochs, minutes or processes)."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a{'n integer' if kind is int else ' number'} above 0, "
                                             f"got {text!r}")
        return value

    return parse


def _load(args: argparse.Namespace, block: str, cls: type, experiment: str | None = None):
    """Block `block` of `--params`, resolved; a one-line note on stderr names the values the budget replaced."""
    from rlcsc.config import build, overrides, read_params, resolve

    params = read_params(args.params)
    settings = resolve(params, args.params, block, cls, experiment)
    replaced = overrides(settings)
    if replaced:
        print(f"rlcsc {args.command}: budget {params.get('budget')} replaces {block} values {', '.join(replaced)} "
              "(`rlcsc params` lists every value and where it comes from)", file=sys.stderr)
    return build(cls, settings, f"{args.params}, {block}" + (f" of experiment {experiment}" if experiment else ""))


def _download(args: argparse.Namespace) -> None:
    from rlcsc.atomic import check_result_file
    from rlcsc.data.download import download_all, write_listing
    from rlcsc.manifest import MANIFEST, WEIGHTS, load_manifest

    manifest = WEIGHTS if args.weights else MANIFEST
    datasets = list(dict.fromkeys(args.datasets)) if args.datasets else None
    if args.listing:
        check_result_file(args.listing, replace=True)  # before the download, not after it
    fetched = download_all(args.out, datasets, mirror=args.mirror, jobs=args.jobs, manifest=manifest)
    if args.listing:
        write_listing(args.listing, datasets, manifest)
    pinned = len(load_manifest(manifest, datasets))
    of = f" of {', '.join(datasets)}" if datasets else ""
    print(f"{fetched} file(s) fetched; all {pinned}{of} in {manifest.name} verified in {args.out}", file=sys.stderr)


def _augment(args: argparse.Namespace) -> None:
    from rlcsc.data.augment import AugmentParams, augment, training_files

    params = _load(args, "augment", AugmentParams)
    index = augment(training_files(args.raw, params), args.out, params, args.jobs)
    print(f"{len(index)} augmented images of {index.file.nunique()} training images in {args.out}", file=sys.stderr)


def _patch(args: argparse.Namespace) -> None:
    from rlcsc.data.augment import AugmentParams, training_files
    from rlcsc.data.patches import PatchParams, count_from_raw, kept, make_patches

    params = _load(args, "patch", PatchParams)
    if args.count:
        augment = _load(args, "augment", AugmentParams)
        total = count_from_raw(training_files(args.raw, augment), augment, params)
        print(f"pairs: {total}\nkept:  {kept(total, params.chunk)} (a multiple of {params.chunk})")
        return
    summary = make_patches(args.augmented, args.out, params, args.jobs)
    print(f"{summary['pairs']} pairs, {summary['kept']} kept, in {args.out}", file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    from rlcsc.config import load_block, read_params

    label = {"experiment": args.experiment, "budget": read_params(args.params).get("budget")}  # before torch loads
    from rlcsc.evaluate import EvaluateParams
    from rlcsc.train import TrainParams, train

    params = _load(args, "train", TrainParams, args.experiment)
    eval_precision = load_block(args.params, "evaluate", EvaluateParams).precision
    summary = train(params, args.patches, args.raw, args.out, eval_precision, label)
    if summary.get("interrupted"):
        raise KeyboardInterrupt
    if not _first_process():
        return
    psnr = (summary["curve"][-1] if summary["curve"] else {}).get("psnr")
    print(f"{summary['status']}: {summary['epochs_done']} epoch(s); {params.eval_dataset} x{params.eval_scale} "
          + (f"{psnr:.2f} dB" if psnr is not None else "not scored"), file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> None:
    from rlcsc.config import check_value, read_params
    from rlcsc.evaluate import EvaluateParams, bicubic, evaluate, evaluation_record, summary_text, write_results

    params = _load(args, "evaluate", EvaluateParams) if args.params else EvaluateParams()
    # the overrides are checked as the block's values, each scored once
    datasets = (check_value(EvaluateParams, "datasets", list(dict.fromkeys(args.datasets)), "--datasets")
                if args.datasets else params.datasets)
    scales = (check_value(EvaluateParams, "scales", list(dict.fromkeys(args.scales)), "--scales")
              if args.scales else params.scales)
    with_ifc = params.ifc and not args.no_ifc
    from rlcsc.device import machine, pick_device
    from rlcsc.provenance import stamp

    if args.model is None:
        upscale, model, device = bicubic, None, "cpu"
    else:
        from rlcsc.inference import Network, describe_model

        model, device = describe_model(args.model), pick_device("auto")
        upscale = Network(args.model, device.type, params.precision)
    if args.out.exists() and not args.out.is_dir():  # refused before the scoring, not after it
        raise RlcscError(f"--out {args.out} is not a folder")
    scores = evaluate(upscale, args.raw, datasets, scales, with_ifc, args.jobs)
    budget = read_params(args.params).get("budget") if args.params else None
    record = {**evaluation_record(datasets, scales, with_ifc, budget, model, params.precision,
                                  upscale.precision if model else None),
              "environment": {**machine(device), **stamp()}}  # where and from which code it was scored
    print(summary_text(write_results(scores, args.out, record)))


def _convert(args: argparse.Namespace) -> None:
    from rlcsc.released import convert

    source = convert(args.arch, args.weights, args.out)
    print(f"{args.out}: {args.arch} from {source['group']}/{source['file']} (sha256 {source['sha256']})",
          file=sys.stderr)


def _sr(args: argparse.Namespace) -> None:
    from rlcsc.sr import super_resolve_files

    for line in super_resolve_files(args.inputs, args.output, args.scale, args.model, args.overwrite,
                                    args.max_memory, args.precision):
        print(line, file=sys.stderr)


def _report(args: argparse.Namespace) -> None:
    from rlcsc.checksums import verify_run
    from rlcsc.report import ReportParams, execute_notebook

    params = _load(args, "report", ReportParams)
    for folder, flag in ((args.results, "--results"), (args.models, "--models"), (args.runs, "--runs")):
        if not folder.is_dir():  # a mistyped path would leave its runs out of the page without a word
            raise RlcscError(f"{flag} {folder} is not a folder")
    for run in sorted(p for p in args.runs.glob("*") if p.is_dir()):  # no number from an edited run
        if not any(run.glob("*.json")):  # nothing a page reads (an empty folder, say): not a run
            continue
        verify_run(run)
    parameters = {"params": str(args.params), "results": str(args.results), "models": str(args.models),
                  "runs": str(args.runs), "raw": str(args.raw), "main": params.main}
    source = args.notebooks / f"{args.name}.ipynb"
    if not source.is_file():
        names = sorted(p.stem for p in args.notebooks.glob("*.ipynb"))
        raise RlcscError(f"no notebook {source}; available: {names}")
    execute_notebook(source, args.out / f"{args.name}.ipynb", parameters)


def _checksums(args: argparse.Namespace) -> None:
    from rlcsc.checksums import SUMS, files, read_sums, seal, verify_file, verify_run

    for folder in args.folders:
        if not folder.is_dir():
            raise RlcscError(f"{folder} is not a folder")
        if args.check:
            verify_run(folder)
            continue
        if not files(folder):
            raise RlcscError(f"{folder} holds no files to seal")
        for name, digest in read_sums(folder).items():  # a file is sealed once, as the program wrote it
            if (folder / name).is_file():
                verify_file(folder / name, digest, f"restore it with `git checkout -- {folder / name}`; sealing "
                                                   "adds new files and drops removed ones, never takes a changed one")
        seal(folder)
    print(f"{len(args.folders)} folder(s) {'verified' if args.check else 'sealed'}: {SUMS} in each", file=sys.stderr)


def _memory(args: argparse.Namespace) -> None:
    from rlcsc.atomic import check_result_file, write_json
    from rlcsc.memory import training_memory

    check_result_file(args.out, replace=True)
    memory = training_memory()
    write_json(memory, args.out)
    measured = f"and the CUDA peak on {memory['gpu']}" if memory["gpu"] else "only: no GPU here, so no CUDA peak"
    print(f"Table 4 memory (counted {measured}) written to {args.out}", file=sys.stderr)


def _params(args: argparse.Namespace) -> None:
    from rlcsc.atomic import check_result_file, write_json
    from rlcsc.config import build, read_params, resolve

    if args.resolved is not None:
        check_result_file(args.resolved, replace=True)
    params = read_params(args.params)  # the file's shape and names, before the slower imports below
    from rlcsc.data.augment import AugmentParams
    from rlcsc.data.patches import PatchParams
    from rlcsc.evaluate import EvaluateParams
    from rlcsc.report import ReportParams
    from rlcsc.train import TrainParams

    stages = [("augment", "augment", AugmentParams, None), ("patch", "patch", PatchParams, None),
              ("evaluate", "evaluate", EvaluateParams, None), ("report", "report", ReportParams, None)]
    stages[2:2] = [(f"train@{e}", "train", TrainParams, e) for e in params.get("experiments") or {}]
    budget = params.get("budget")
    for other in [name for name in params.get("budgets") or {} if name != budget]:  # a check across a block's values
        for stage, block, cls, experiment in stages:                                # (width with features) under each
            build(cls, resolve({**params, "budget": other}, args.params, block, cls, experiment),
                  f"{args.params}, {stage} under budget {other}")
    lines, resolved = [f"budget: {budget}" if budget is not None else "budget: none (every block as written)"], {}
    for stage, block, cls, experiment in stages:
        settings = resolve(params, args.params, block, cls, experiment)
        build(cls, settings, f"{args.params}, {stage}")
        lines.append(f"\n{stage}")
        for key, s in settings.items():
            was = f"  (replaces {s.replaced[0]}: {json.dumps(s.replaced[1])})" if s.replaced else ""
            lines.append(f"  {key:<17}{json.dumps(s.value):<26}{s.source}{was}")
        values = {key: s.value for key, s in settings.items()}
        if experiment is None:
            resolved[block] = values
        else:
            resolved.setdefault(block, {})[experiment] = values
    if args.resolved is None:
        print("\n".join(lines))
        return
    write_json(resolved, args.resolved)  # the values dvc.yaml's stages depend on, whichever layer set them
    print(f"every value of {args.params} checked, for {len(stages)} stages: {args.resolved}", file=sys.stderr)


def _record(args: argparse.Namespace) -> None:
    from rlcsc.record import record, record_evaluation

    if args.model is not None or args.method is not None:
        if args.epochs or args.steps or not args.evaluate:
            raise RlcscError("--model and --method record an evaluation alone; --epochs, --steps and "
                             "--no-evaluate are for training")
        record_evaluation(args.params, args.budget, args.model, args.raw, args.out, args.jobs)
        return
    record(args.params, args.budget, args.experiment, args.raw, args.out, args.work, args.epochs, args.steps,
           args.evaluate, args.jobs)


def _compare(args: argparse.Namespace) -> None:
    from rlcsc.record import compare

    result = compare(args.params, args.budget, args.experiment, args.raw, args.work, args.variant, args.steps,
                     args.minutes, args.out, args.jobs)
    for v in result["variants"]:
        last = v["curve"][-1] if v["curve"] else {}
        monitor = {**result["environment"]["params"]["train"], **v["changes"]}
        print(f"{v['name']:<12} {v['status']:<28} {v['steps_done']:>7} steps {v['seconds_training']:>8.1f} s  "
              f"{monitor['eval_dataset']} x{monitor['eval_scale']} {last.get('psnr', float('nan')):.3f} dB",
              file=sys.stderr)


BENCHMARK_STEPS = {"train": 100, "read": 500, "inference": 5, "winograd": 8}
# The options each measurement reads (besides --out).
BENCHMARK_OPTIONS = {"train": ("params", "experiment", "warmup", "steps"),
                     "inference": ("params", "experiment", "model", "raw", "steps", "datasets", "precisions"),
                     "winograd": ("steps",), "evaluate": ("params", "experiment", "model", "raw", "jobs"),
                     "read": ("patches", "batch", "steps"), "input-precision": ("model", "raw"),
                     "output-route": ("params", "model", "raw", "datasets", "scales", "jobs")}


def _check_benchmark_options(args: argparse.Namespace) -> None:
    """One clear error for an option given to a measurement that does not read it (else silently ignored)."""
    defaults = vars(build_parser().parse_args(["benchmark", args.what]))
    unread = [name for name, value in vars(args).items()
              if name in defaults and value != defaults[name] and name not in (*BENCHMARK_OPTIONS[args.what], "out")]
    if unread:
        options = ", ".join("--" + name.replace("_", "-") for name in unread)
        reads = ", ".join("--" + name for name in BENCHMARK_OPTIONS[args.what])
        raise RlcscError(f"benchmark {args.what} does not read {options}; it reads {reads} (and --out)")


def _benchmark(args: argparse.Namespace) -> None:
    from rlcsc import benchmark
    from rlcsc.atomic import check_result_file, write_json
    from rlcsc.config import load_block
    from rlcsc.evaluate import EvaluateParams
    from rlcsc.train import TrainParams

    _check_benchmark_options(args)
    steps = args.steps or BENCHMARK_STEPS.get(args.what)
    if args.out is not None:
        check_result_file(args.out, replace=False)
    if args.what == "read":
        result = benchmark.read_batches(args.patches, args.batch, steps)
    elif args.what == "winograd":
        result = benchmark.winograd_layers(steps)
    elif args.what == "input-precision":
        result = benchmark.input_precision(args.model or Path("models/K25/model.pt"), args.raw)
    elif args.what == "output-route":
        from rlcsc.output_route import output_route

        e = load_block(args.params, "evaluate", EvaluateParams)
        result = output_route(args.model or Path("models/K25/model.pt"), args.raw, args.datasets or e.datasets,
                              args.scales or e.scales, args.jobs)
    else:
        p = load_block(args.params, "train", TrainParams, args.experiment)
        if args.what == "train":
            result = benchmark.train_step(p, steps, args.warmup)
        elif args.what == "inference":
            result = benchmark.inference(p, args.raw, args.model, steps, datasets=args.datasets or ("Set5",),
                                         precisions=args.precisions or benchmark.BENCHMARK_PRECISIONS)
        else:
            e = load_block(args.params, "evaluate", EvaluateParams)
            result = benchmark.evaluation(p, e, args.raw, args.model, args.jobs)
    print(json.dumps(result, indent=2))  # before the file: a result the file cannot take is not lost
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json(result, args.out)


class _Version(argparse.Action):
    """`--version`: the package's version and the commit its code is at (`rlcsc.provenance.commit`), found
    only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from rlcsc import __version__
        from rlcsc.provenance import commit

        print(f"rlcsc {__version__} (commit {commit() or 'unknown'})")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `rlcsc` parser with one subcommand per pipeline stage."""
    parser = argparse.ArgumentParser(prog="rlcsc", description=__doc__)
    parser.add_argument("--version", action=_Version, nargs=0, help="the package's version and its code's commit")
    sub = parser.add_subparsers(dest="command", required=True)
    jobs = {"type": positive(int), "default": os.cpu_count(), "help": "worker processes (default: all cores)"}
    params = {"type": Path, "default": Path("params.yaml"), "help": "the params file"}

    p = sub.add_parser("download", help="fetch and verify the training and test images")
    p.add_argument("--out", type=Path, help="destination folder (default: data/raw, or data/weights with --weights)")
    p.add_argument("--datasets", nargs="+", help="only these datasets, or with --weights these methods (default: "
                   "all of the manifest)")
    p.add_argument("--listing", type=Path, help="also write this JSON list of verified files (DVC out)")
    p.add_argument("--mirror", type=Path, help="local mirror with dataset/file layout "
                   "(default: $RLCSC_DATA_MIRROR, else the pinned URLs)")
    p.add_argument("--jobs", type=positive(int), default=8, help="parallel transfers")
    p.add_argument("--weights", action="store_true", help="the comparison methods' released model files "
                   "(rlcsc/weights.tsv; mirror: $RLCSC_WEIGHTS_MIRROR) instead of the images")
    p.set_defaults(func=_download)

    p = sub.add_parser("augment", help="flipped/rotated/downsized Y copies of the training images")
    p.add_argument("--params", **params)
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images")
    p.add_argument("--out", type=Path, default=Path("data/augmented"))
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_augment)

    p = sub.add_parser("patch", help="cut the training patch pairs")
    p.add_argument("--params", **params)
    p.add_argument("--augmented", type=Path, default=Path("data/augmented"), help="augment stage output")
    p.add_argument("--out", type=Path, default=Path("data/patches"))
    p.add_argument("--count", action="store_true", help="only print how many pairs the params give (reads --raw)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images (for --count)")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_patch)

    p = sub.add_parser("train", help="train a network (Section 5.2); resumes from its checkpoint")
    p.add_argument("--params", **params)
    p.add_argument("--experiment", required=True, help="the entry of `experiments` to train (e.g. K25)")
    p.add_argument("--patches", type=Path, default=Path("data/patches"))
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="test images for the monitor's scores")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, checkpoint.pt, train.json")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="PSNR/SSIM/IFC of a method on the test sets")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", choices=["bicubic"], help="a baseline")
    which.add_argument("--model", type=Path, help="a model file written by `rlcsc train`")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json, per_image.csv, evaluation.json")
    p.add_argument("--params", type=Path, help="params.yaml whose `evaluate` block (under its budget) to use "
                   "(default: none, the paper's protocol: every test set and scale, with IFC)")
    p.add_argument("--datasets", nargs="+", help="override the test sets")
    p.add_argument("--scales", nargs="+", type=int, help="override the scales")
    p.add_argument("--no-ifc", action="store_true", help="skip IFC (the slowest metric)")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("convert", help="a comparison method's released weights as a model file")
    p.add_argument("--arch", required=True, help="its network in rlcsc/models (e.g. vdsr)")
    p.add_argument("--weights", type=Path, required=True, help="the released file, as rlcsc/weights.tsv pins it")
    p.add_argument("--out", type=Path, required=True, help="the model file to write")
    p.set_defaults(func=_convert)

    p = sub.add_parser("sr", help="super-resolve image files with a trained model")
    p.add_argument("inputs", type=Path, nargs="+", metavar="input", help="image files")
    p.add_argument("--scale", type=float, required=True, help="upscaling factor, 2 to 4")
    p.add_argument("--model", help="a model file, or a name: rlcsc (the default: the recorded K25 model, else "
                   "the pipeline's) or vdsr (the VDSR authors' weights, converted)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the output file, or an existing folder "
                   "where each result takes its image's name (the only choice for several images)")
    p.add_argument("--overwrite", action="store_true", help="allow writing over an existing file")
    p.add_argument("--max-memory", type=positive(float), metavar="GIB", help="the memory it may take, in GiB "
                   "(default: what is available); a larger image is refused from its header, before it is decoded")
    p.add_argument("--precision", help="bf16 (the convolutions between the layers that read and write the image "
                   "in bfloat16, where the CPU or GPU computes it natively; else winograd on a CPU, fp32 on a GPU), "
                   "winograd (those convolutions whose input times output channels reach 96 x 96 in fp32 by "
                   "Winograd's F(6x6, 3x3), on a CPU; fp32 on a GPU) or fp32 (exact); default: bf16 for RL-CSC, "
                   "winograd for other networks (VDSR's then computes in fp32, none of its layers being that wide)")
    p.set_defaults(func=_sr)

    p = sub.add_parser("report", help="execute one report notebook (papermill) for the book")
    p.add_argument("name", help="notebook name in notebooks/, e.g. table1")
    p.add_argument("--params", **params)
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--runs", type=Path, default=Path("runs"), help="recorded runs")
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--out", type=Path, default=Path("book/generated"))
    p.set_defaults(func=_report)

    p = sub.add_parser("memory", help="Table 4: training memory of RL-CSC and DRRN (counted; CUDA peak on a GPU)")
    p.add_argument("--out", type=Path, default=Path("results/table4.json"))
    p.set_defaults(func=_memory)

    p = sub.add_parser("params", help="every value each stage resolves from the params file, and its source")
    p.add_argument("--params", **params)
    p.add_argument("--resolved", type=Path, help="instead of listing the values, check every value and write those "
                   "each stage resolves to this JSON file (the check_params stage: each stage of dvc.yaml depends on "
                   "its values there)")
    p.set_defaults(func=_params)

    p = sub.add_parser("record", help="a recorded run: data, training and evaluation of one experiment under "
                       "one budget, with its environment (for a GPU machine)")
    p.add_argument("--params", **params)
    p.add_argument("--budget", default="paper", help="the budget to run under (default: paper)")
    p.add_argument("--experiment", default="K25")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="the images (training, and test sets)")
    p.add_argument("--out", type=Path, required=True, help="the run's folder, e.g. runs/K25-paper")
    evaluated = p.add_mutually_exclusive_group()
    evaluated.add_argument("--model", type=Path, help="record the evaluation of this model file (e.g. a converted "
                           "comparison method) instead of training --experiment")
    evaluated.add_argument("--method", choices=["bicubic"], help="record the evaluation of a baseline instead of "
                           "training --experiment")
    p.add_argument("--work", type=Path, default=Path(".record"), help="folder for the augmented images and patches")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=positive(int), help="train until this many epochs are done (default: all)")
    length.add_argument("--steps", type=positive(int), help="train until this many steps are done")
    p.add_argument("--evaluate", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate the model on the budget's test sets afterwards (default: yes)")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_record)

    p = sub.add_parser("compare", help="controlled runs: the same seed and length, one change per variant")
    p.add_argument("--params", **params)
    p.add_argument("--budget", default="paper")
    p.add_argument("--experiment", default="K25")
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--work", type=Path, default=Path(".record"))
    p.add_argument("--variant", action="append", required=True, metavar="NAME[:KEY=VALUE,...]",
                   help="a variant: a name and the train keys it changes (e.g. fp32:precision=fp32); repeatable")
    length = p.add_mutually_exclusive_group(required=True)
    length.add_argument("--steps", type=positive(int), help="steps per variant")
    length.add_argument("--minutes", type=positive(float), help="training minutes per variant")
    p.add_argument("--out", type=Path, required=True, help="the comparison's JSON file")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_compare)

    p = sub.add_parser("checksums", help="seal a recorded run's folder: write its SHA256SUMS (`rlcsc record` and "
                       "`rlcsc compare` do it themselves; for a folder written before they did, or a file a command "
                       "added beside them); a file its SHA256SUMS lists must be unchanged")
    p.add_argument("folders", nargs="+", type=Path, metavar="FOLDER", help="e.g. runs/K25-paper")
    p.add_argument("--check", action="store_true", help="verify each folder against its SHA256SUMS instead, as "
                   "`rlcsc report` does with every folder of --runs")
    p.set_defaults(func=_checksums)

    p = sub.add_parser("benchmark", help="measurements behind the project's speed and precision claims")
    p.add_argument("what", choices=["train", "inference", "winograd", "evaluate", "read", "input-precision",
                                    "output-route"],
                   help="train: ms per training step (the step `rlcsc train` runs), TFLOP/s, projected run time, "
                   "peak memory of --experiment under the current budget; inference: each precision the device runs "
                   "natively (winograd on a CPU, and int8 on a CPU with ONNX Runtime), alternated: ms per 288x288 "
                   "tile, GFLOP/s, speed and x3 PSNR and grey levels against fp32 on --datasets (default Set5), of "
                   "--model (default: an untrained --experiment network); winograd: one 3x3 convolution of each "
                   "width from 64 to 256 channels on a CPU, direct against Winograd's F(6x6, 3x3), alternated: "
                   "ms per 288x288 map, and the widths the winograd precision computes by it; "
                   "evaluate: wall time of the `evaluate` block's evaluation of --model (default: an "
                   "untrained --experiment network); read: time random batches from the patch set; "
                   "input-precision: Set5 x3 PSNR of --model (default models/K25/model.pt) on float32 "
                   "vs float16 inputs; output-route: PSNR, SSIM and IFC of --model by this package's protocol and "
                   "through a saved RGB result image, on --datasets at --scales (default: the `evaluate` block's)")
    p.add_argument("--params", **params)
    p.add_argument("--experiment", default="K25")
    p.add_argument("--warmup", type=positive(int), default=10, help="train: untimed steps before the timed ones "
                   "(inference and winograd leave their first round untimed)")
    p.add_argument("--model", type=Path, help="a model file written by `rlcsc train`")
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--patches", type=Path, default=Path("data/patches"))
    p.add_argument("--batch", type=positive(int), default=128, help="batch of `read`")
    p.add_argument("--steps", type=positive(int),
                   help=f"steps, or the rounds of inference and winograd (default: {BENCHMARK_STEPS})")
    p.add_argument("--jobs", **jobs)
    p.add_argument("--datasets", nargs="+", choices=TEST_SETS, help="test sets of `inference` and `output-route`")
    p.add_argument("--scales", nargs="+", type=int, choices=(2, 3, 4), help="scales of `output-route`")
    p.add_argument("--precisions", nargs="+", help="the precisions `inference` measures beside fp32: of bf16, "
                   "winograd, tf32 and int8 (default: all that the device runs natively)")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    p.set_defaults(func=_benchmark)
    return parser


def _first_process() -> bool:
    """False in every process but the first under `torchrun`, which writes and speaks for all."""
    return os.environ.get("RANK", "0") == "0"


def _outputs(args: argparse.Namespace) -> list[Path]:
    """What the command writes (nothing for `patch --count` and `checksums --check`; under torchrun only the first
    process writes; `rlcsc sr` writes a file for each image, and nothing into a folder that does not exist: it
    refuses; `report` its notebook in --out; `download` also its `--listing`; `checksums` into each folder it seals,
    and `compare` into the folder of its --out, whose SHA256SUMS it seals after every variant; `benchmark` its --out
    and `params` its --resolved, if any)."""
    if (args.command not in WRITES or getattr(args, "count", False) or getattr(args, "check", False)
            or not _first_process()):
        return []
    if args.command == "sr":
        from rlcsc.sr import output_paths

        return [out for out in output_paths(args.inputs, args.output) if out.parent.is_dir()]
    if args.command == "report":
        return [args.out / f"{args.name}.ipynb"]
    if args.command == "compare":
        return [args.out.parent, args.out]
    listing = [args.listing] if args.command == "download" and args.listing else []
    written = getattr(args, WRITES[args.command]) or []  # none: `benchmark` without --out
    return [*(written if isinstance(written, list) else [written]), *listing]


def _allocation_failed(err: MemoryError | RuntimeError) -> str | None:
    """What failed to allocate, in words, where `err` says that memory ran out: a MemoryError (numpy's names the
    array), or torch's (a RuntimeError from its CPU allocator, an OutOfMemoryError from CUDA's); else None."""
    text = str(err)
    if isinstance(err, MemoryError):
        return text or "an allocation failed"
    if not re.search(r"can't allocate memory|out of memory", text, re.IGNORECASE):
        return None
    tried = re.search(r"tried to allocate ([\d.]+ ?(?:bytes|[KMGTP]i?B))", text, re.IGNORECASE)
    return f"an allocation of {tried.group(1)} failed" if tried else text.splitlines()[0]


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a command as Ctrl-C does: temporaries removed, locks released


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments, with the defaults that depend on another argument filled in: `download`'s
    --out, data/weights for --weights (`dvc.yaml`'s `download_weights` stage), else data/raw."""
    args = build_parser().parse_args(argv)
    if args.command == "download" and args.out is None:
        args.out = Path("data/weights" if args.weights else "data/raw")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand, holding the lock of what it writes; a user's mistake ends with one line on
    stderr and exit status 1."""
    args = parse(argv)
    terminate = signal.signal(signal.SIGTERM, _terminated)
    try:
        with writing(*_outputs(args)):
            args.func(args)
        sys.stdout.flush()  # here, where a reader that stopped reading is handled below, not at the interpreter's exit
    except RlcscError as err:
        print(f"rlcsc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # its output piped into a reader that stopped reading (`| head`): not an error of its own
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write at exit
        return 128 + signal.SIGPIPE
    except OSError as err:  # a file or folder the system refused: unwritable, full, a folder for a file
        where = f"{err.filename}: " if err.filename else ""
        print(f"rlcsc {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return 1
    except BrokenProcessPool:  # a RuntimeError: before the clause below
        print(f"rlcsc {args.command}: error: a worker process ended abruptly (the system may have run out of "
              "memory and killed it)", file=sys.stderr)
        return 1
    except (MemoryError, RuntimeError) as err:  # more than the system gives the process (`ulimit -v`, or past
        reason = _allocation_failed(err)        # --max-memory): Python's MemoryError, or torch's allocators'
        if reason is None:
            raise
        print(f"rlcsc {args.command}: error: out of memory: {reason}", file=sys.stderr)
        return 1
    except ImportError as err:  # a library that would not load: missing, or the system refused the memory to map it
        print(f"rlcsc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rlcsc {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, terminate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
