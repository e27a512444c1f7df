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
    from rlcsc.config import EvaluateParams, load_block
    from rlcsc.evaluate import bicubic, evaluate, write_results

    params = load_block(args.params, "evaluate", EvaluateParams) if args.params else EvaluateParams()
    datasets = tuple(args.datasets or params.datasets)
    scales = tuple(args.scales or params.scales)
    with_ifc = params.ifc and not args.no_ifc
    upscalers = {"bicubic": bicubic}
    scores = evaluate(upscalers[args.method], args.raw, datasets, scales, with_ifc, args.jobs)
    summary = write_results(scores, args.out)
    print(json.dumps(summary, indent=2))


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

    p = sub.add_parser("evaluate", help="PSNR/SSIM/IFC of a method on the test sets")
    p.add_argument("--method", choices=["bicubic"], required=True)
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
