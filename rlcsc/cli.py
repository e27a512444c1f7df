"""`rlcsc`: the single command-line entry point that the DVC stages call."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from rlcsc.errors import RlcscError


def _download(args: argparse.Namespace) -> None:
    from rlcsc.data.download import download_all, write_listing

    fetched = download_all(args.out, args.datasets, mirror=args.mirror, jobs=args.jobs)
    if args.listing:
        write_listing(args.listing, args.datasets)
    print(f"{fetched} file(s) fetched; all files under {args.out} verified", file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> None:
    from rlcsc.config import load_block
    from rlcsc.evaluate import EvaluateParams, bicubic, evaluate, write_results

    from rlcsc.inference import Network

    params = load_block(args.params, "evaluate", EvaluateParams) if args.params else EvaluateParams()
    datasets = tuple(args.datasets or params.datasets)
    scales = tuple(args.scales or params.scales)
    with_ifc = params.ifc and not args.no_ifc
    if args.model is not None and not args.model.is_file():
        raise RlcscError(f"model file not found: {args.model}")
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    upscale = bicubic if args.model is None else Network(args.model, device, params.precision)
    scores = evaluate(upscale, args.raw, datasets, scales, with_ifc, args.jobs)
    summary = write_results(scores, args.out)
    print(json.dumps(summary, indent=2))


def _augment(args: argparse.Namespace) -> None:
    from rlcsc.config import load_block
    from rlcsc.data.augment import AugmentParams, augment, training_files

    params = load_block(args.params, "augment", AugmentParams)
    index = augment(training_files(args.raw, params), args.out, params, args.jobs)
    print(f"{len(index)} augmented images of {index.file.nunique()} training images in {args.out}", file=sys.stderr)


def _patch(args: argparse.Namespace) -> None:
    from rlcsc.config import load_block
    from rlcsc.data.augment import AugmentParams, training_files
    from rlcsc.data.patches import PatchParams, count_from_raw, kept, make_patches

    params = load_block(args.params, "patch", PatchParams)
    if args.count:
        augment = load_block(args.params, "augment", AugmentParams)
        total = count_from_raw(training_files(args.raw, augment), augment, params)
        print(f"pairs: {total}\nkept:  {kept(total, params.chunk)} (a multiple of {params.chunk})")
        return
    summary = make_patches(args.augmented, args.out, params, args.jobs)
    print(f"{summary['pairs']} pairs, {summary['kept']} kept, in {args.out}", file=sys.stderr)


def _train(args: argparse.Namespace) -> None:
    from rlcsc.config import load_block
    from rlcsc.train import TrainParams, train

    params = load_block(args.params, "train", TrainParams, args.experiment)
    summary = train(params, args.patches, args.raw, args.out)
    if summary["status"] == "interrupted":
        raise KeyboardInterrupt
    last = summary["history"][-1] if summary["history"] else {}
    print(f"{summary['status']}: {summary['epochs_completed']} epoch(s); last {last}", file=sys.stderr)


def _sr(args: argparse.Namespace) -> None:
    from PIL import Image

    from rlcsc.imageio import read_image
    from rlcsc.inference import load_model, super_resolve

    if not 2 <= args.scale <= 4:
        raise RlcscError(f"--scale must be between 2 and 4 (the scales the model was trained on), got {args.scale}")
    model = load_model(args.model)
    img = read_image(args.input)
    out = super_resolve(model, img, args.scale)
    try:
        Image.fromarray(out).save(args.output)
    except (OSError, ValueError) as err:
        raise RlcscError(f"cannot write {args.output}: {err}") from None
    print(f"{args.input} {img.shape[1]}x{img.shape[0]} -> {args.output} {out.shape[1]}x{out.shape[0]}", file=sys.stderr)


def _report(args: argparse.Namespace) -> None:
    from rlcsc.config import read_params
    from rlcsc.report import execute_notebook

    main = (read_params(args.params).get("report") or {}).get("main", "K25")
    parameters = {"params": str(args.params), "results": str(args.results), "models": str(args.models),
                  "raw": str(args.raw), "main": main}
    source = args.notebooks / f"{args.name}.ipynb"
    if not source.is_file():
        names = sorted(p.stem for p in args.notebooks.glob("*.ipynb"))
        raise RlcscError(f"no notebook {source}; available: {names}")
    execute_notebook(source, args.out / f"{args.name}.ipynb", parameters)


BENCHMARK_STEPS = {"train": 100, "read": 500, "precision": 1000}


def _benchmark(args: argparse.Namespace) -> None:
    from rlcsc import benchmark
    from rlcsc.config import load_block
    from rlcsc.evaluate import EvaluateParams
    from rlcsc.train import TrainParams

    steps = args.steps or BENCHMARK_STEPS.get(args.what)
    if args.what == "read":
        result = benchmark.read_batches(args.patches, args.batch, steps)
    elif args.what == "input-precision":
        result = benchmark.input_precision(args.model or Path("models/K25/model.pt"), args.raw)
    elif args.what == "memory":
        result = benchmark.training_memory()
    else:
        p = load_block(args.params, "train", TrainParams, args.experiment)
        if args.what == "train":
            result = benchmark.train_step(p, steps, args.warmup)
        elif args.what == "inference":
            result = benchmark.inference(p)
        elif args.what == "precision":
            result = benchmark.training_precision(p, args.patches, args.raw, steps)
        else:
            e = load_block(args.params, "evaluate", EvaluateParams)
            result = benchmark.evaluation(p, e, args.raw, args.model, args.jobs)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


def build_parser() -> argparse.ArgumentParser:
    """The `rlcsc` parser with one subcommand per pipeline stage."""
    parser = argparse.ArgumentParser(prog="rlcsc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    jobs = {"type": int, "default": os.cpu_count(), "help": "worker processes (default: all cores)"}

    p = sub.add_parser("download", help="fetch and verify the training and test images")
    p.add_argument("--out", type=Path, default=Path("data/raw"), help="destination folder")
    p.add_argument("--datasets", nargs="+", help="only these datasets (default: all six)")
    p.add_argument("--listing", type=Path, help="also write this JSON list of verified files (DVC out)")
    p.add_argument("--mirror", type=Path, help="local mirror with dataset/file layout "
                   "(default: $RLCSC_DATA_MIRROR, else the pinned URLs)")
    p.add_argument("--jobs", type=int, default=8, help="parallel transfers")
    p.set_defaults(func=_download)

    p = sub.add_parser("augment", help="flipped/rotated/downsized Y copies of the training images")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (block `augment`)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images")
    p.add_argument("--out", type=Path, default=Path("data/augmented"))
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_augment)

    p = sub.add_parser("patch", help="cut the training patch pairs")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (blocks `patch`, `augment`)")
    p.add_argument("--augmented", type=Path, default=Path("data/augmented"), help="augment stage output")
    p.add_argument("--out", type=Path, default=Path("data/patches"))
    p.add_argument("--count", action="store_true", help="only print how many pairs the params give (reads --raw)")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images (for --count)")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_patch)

    p = sub.add_parser("train", help="train a network (Section 5.2); resumes from its checkpoint")
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (block `train`)")
    p.add_argument("--experiment", help="apply this entry of `experiments` (e.g. K25)")
    p.add_argument("--patches", type=Path, default=Path("data/patches"))
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="test images for the per-epoch score")
    p.add_argument("--out", type=Path, required=True, help="folder for model.pt, checkpoint.pt, train.json, live/")
    p.set_defaults(func=_train)

    p = sub.add_parser("sr", help="super-resolve an image with a trained model")
    p.add_argument("input", type=Path)
    p.add_argument("--scale", type=float, required=True)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.set_defaults(func=_sr)

    p = sub.add_parser("report", help="execute one report notebook (papermill) for the book")
    p.add_argument("name", help="notebook name in notebooks/, e.g. table1")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--notebooks", type=Path, default=Path("notebooks"))
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--models", type=Path, default=Path("models"))
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--out", type=Path, default=Path("book/generated"))
    p.set_defaults(func=_report)

    p = sub.add_parser("benchmark", help="measurements behind the project's speed and precision claims")
    p.add_argument("what", choices=["train", "inference", "evaluate", "memory", "precision", "read", "input-precision"],
                   help="train: ms per training step, TFLOP/s, projected run time, peak memory of "
                   "--experiment under the current budget; inference: ms for a 288x288 image; "
                   "evaluate: wall time of the `evaluate` block's evaluation of --model (default: an "
                   "untrained --experiment network); memory: Table 4's training memory; "
                   "precision: Set5 x3 PSNR after --steps training steps in fp32 and in bf16 (GPU); "
                   "read: time random batches from the patch set; "
                   "input-precision: Set5 x3 PSNR of --model (default models/K25/model.pt) on float32 "
                   "vs float16 inputs")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--experiment", default="K25")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--model", type=Path, help="a model file written by `rlcsc train`")
    p.add_argument("--raw", type=Path, default=Path("data/raw"))
    p.add_argument("--patches", type=Path, default=Path("data/patches"))
    p.add_argument("--batch", type=int, default=128, help="batch of `read`")
    p.add_argument("--steps", type=int, help=f"steps (default: {BENCHMARK_STEPS})")
    p.add_argument("--jobs", **jobs)
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    p.set_defaults(func=_benchmark)

    p = sub.add_parser("evaluate", help="PSNR/SSIM/IFC of a method on the test sets")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--method", choices=["bicubic"], help="a baseline")
    which.add_argument("--model", type=Path, help="a model file written by `rlcsc train`")
    p.add_argument("--raw", type=Path, default=Path("data/raw"), help="downloaded images")
    p.add_argument("--out", type=Path, required=True, help="folder for metrics.json and per_image.csv")
    p.add_argument("--params", type=Path, help="params.yaml whose `evaluate` block to use")
    p.add_argument("--datasets", nargs="+", help="override the test sets")
    p.add_argument("--scales", nargs="+", type=int, help="override the scales")
    p.add_argument("--no-ifc", action="store_true", help="skip IFC (the slowest metric)")
    p.add_argument("--jobs", **jobs)
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; a user's mistake ends with one line on stderr and exit status 1."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RlcscError as err:
        print(f"rlcsc {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"rlcsc {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
