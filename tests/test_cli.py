"""The `rlcsc` command: one-line errors for bad input, and the bicubic evaluation's outputs."""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from rlcsc.cli import main
from rlcsc.errors import RlcscError
from rlcsc.evaluate import read_y

REPO = Path(__file__).resolve().parents[1]


def test_corrupt_mirror_file_gives_one_line_checksum_error(mirror: Path, tmp_path: Path) -> None:
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "Set5", copy / "Set5", copy_function=shutil.copyfile)
    bad = copy / "Set5" / "img_003_SRF_2_HR.png"
    data = bytearray(bad.read_bytes())
    data[200] ^= 0xFF
    bad.write_bytes(bytes(data))
    out = tmp_path / "raw"
    cmd = [sys.executable, "-m", "rlcsc.cli", "download", "--out", str(out), "--mirror", str(copy)]
    cmd += ["--datasets", "Set5"]
    env = {"PATH": "/usr/bin:/bin", "RLCSC_DATA_MIRROR": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "checksum mismatch for Set5/img_003_SRF_2_HR.png" in lines[0]
    assert lines[0].count("expected sha256") == 1 and ", got " in lines[0]
    assert not (out / "Set5" / "img_003_SRF_2_HR.png").exists()
    assert not list(out.rglob("*.part"))



def test_download_says_which_files_it_verified(mirror: Path, tmp_path: Path, capsys) -> None:
    """Only the requested datasets' files are checked, and the last line says so, not "all files under
    --out" (a stray file there is never read)."""
    out = tmp_path / "raw"
    (out / "T91").mkdir(parents=True)
    (out / "T91" / "t1.bmp").write_bytes(b"not an image")
    assert main(["download", "--out", str(out), "--mirror", str(mirror), "--datasets", "Set5", "Set5"]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == ("5 file(s) fetched; all 5 of Set5 in manifest.tsv "
                                                        f"verified in {out}")
    fetch = ["download", "--out", str(tmp_path / "new"), "--mirror", str(mirror), "--datasets", "Set5"]
    assert main(fetch + ["--listing", str(out)]) == 1  # a folder for the listing: refused before the download
    assert capsys.readouterr().err.strip() == f"rlcsc download: error: {out} is a folder; name the file the result " \
                                              "goes to"
    assert not (tmp_path / "new").exists()

def test_evaluate_bicubic_writes_metrics_and_per_image_csv(mirror: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bicubic"
    argv = ["evaluate", "--method", "bicubic", "--raw", str(mirror), "--out", str(out)]
    assert main(argv + ["--datasets", "Set5", "--scales", "3", "4", "3", "--jobs", "1"]) == 0  # each scale once
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out.splitlines()  # the means, with the decimals of the paper's tables
    assert [line.split()[:2] for line in printed] == [["Set5", "x3"], ["Set5", "x4"]]
    assert printed[0] == "Set5 x3  PSNR {psnr:.2f} dB  SSIM {ssim:.4f}  IFC {ifc:.3f}".format(**metrics["Set5"]["x3"])
    assert list(metrics) == ["Set5"] and list(metrics["Set5"]) == ["x3", "x4"]
    assert set(metrics["Set5"]["x3"]) == {"psnr", "ssim", "ifc"}
    assert metrics["Set5"]["x3"]["psnr"] == pytest.approx(30.39, abs=0.02)
    rows = pd.read_csv(out / "per_image.csv")
    assert len(rows) == 10 and set(rows.columns) == {"dataset", "image", "scale", "psnr", "ssim", "ifc"}
    assert rows.query("scale == 4").psnr.mean() == pytest.approx(metrics["Set5"]["x4"]["psnr"], abs=1e-5)


def test_an_evaluation_that_cannot_write_all_its_files_keeps_the_previous_one_whole(
        mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """A full disk as the per-image table is written leaves the previous evaluation's three files as they were
    (not new means beside old per-image scores and an old record), with one line naming the table."""
    out = tmp_path / "bicubic"
    argv = ["evaluate", "--method", "bicubic", "--raw", str(mirror), "--out", str(out), "--datasets", "Set5",
            "--no-ifc", "--jobs", "1"]
    assert main(argv + ["--scales", "4"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    write_text = Path.write_text

    def full_for_tables(path: Path, *args: object, **kwargs: object) -> int:
        if path.suffix == ".csv":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return write_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_for_tables)
    assert main(argv + ["--scales", "3"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rlcsc evaluate: error: {out / 'per_image.csv'}: No space left on device")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_evaluate_reports_missing_images_and_bad_params(tmp_path: Path, capsys) -> None:
    argv = ["evaluate", "--method", "bicubic", "--raw", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main(argv + ["--datasets", "Set5"]) == 1
    assert f"missing image {tmp_path}/Set5/img_001_SRF_2_HR.png: run `rlcsc download --out {tmp_path}` first" \
        in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing scored, no folder left
    params = tmp_path / "params.yaml"
    params.write_text("evaluate:\n  datasets: [Set5]\n  scale: [2]\n")
    assert main(argv + ["--params", str(params)]) == 1
    err = capsys.readouterr().err.strip()
    assert "unknown key(s) ['scale']" in err and "valid keys" in err and "\n" not in err
    for bad in ("Set6", "T91"):  # T91 is a training set
        assert main(argv + ["--datasets", bad]) == 1
        assert "each one of Set5, Set14, BSD100, Urban100" in capsys.readouterr().err
    assert main(argv + ["--scales", "5"]) == 1
    assert "each one of 2, 3, 4" in capsys.readouterr().err
    model = ["evaluate", "--model", str(tmp_path / "none.pt"), "--raw", str(tmp_path), "--out", str(tmp_path / "m")]
    assert main(model) == 1 and "model file not found" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # nothing is made before the model is found


def test_a_test_image_too_small_for_the_protocol_is_named(mirror: Path, tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(mirror / "Set5", raw / "Set5")
    small = sorted((raw / "Set5").iterdir())[1]
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(small, format="PNG")
    argv = ["evaluate", "--method", "bicubic", "--raw", str(raw), "--datasets", "Set5", "--scales", "3", "--no-ifc",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 1  # a pinned test image replaced by a tiny one is not the pinned file: named, nothing scored
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"rlcsc evaluate: error: corrupt {small}: not the file manifest.tsv pins")
    assert not (tmp_path / "out").exists()
    with pytest.raises(RlcscError, match=r"is 1x1: the protocol at x3 needs at least 78x78 \(3 pixels shaved from each "
                                         r"border, 72 left for IFC\)"):
        read_y(small, 3)  # read elsewhere (the figures, the benchmarks), its size is named


def test_what_the_file_system_refuses_is_one_line(tmp_path: Path, capsys) -> None:
    from rlcsc.atomic import write_json

    taken = tmp_path / "taken"
    taken.write_text("keep me\n")  # a file where the output folder should be
    argv = ["evaluate", "--method", "bicubic", "--raw", str(tmp_path / "none"), "--datasets", "Set5", "--scales", "3"]
    assert main(argv + ["--out", str(taken)]) == 1  # refused before the scoring, which would miss the test images
    assert capsys.readouterr().err.strip() == f"rlcsc evaluate: error: --out {taken} is not a folder"
    assert taken.read_text() == "keep me\n"
    with pytest.raises(IsADirectoryError):  # a folder where a file should be: no temporary file is left
        write_json({}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_output_piped_into_a_reader_that_stops_ends_quietly() -> None:
    """`rlcsc params | true` (a reader that ends before it reads, like `head` after its lines): no error, and SIGPIPE's
    exit status."""
    proc = subprocess.run(f"{shlex.quote(sys.executable)} -m rlcsc.cli params --params params.yaml | true; "
                          "echo \"${PIPESTATUS[0]}\" >&2", shell=True, executable="bash", capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert proc.stderr == "141\n", proc.stderr


def test_a_library_that_will_not_load_is_one_line(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library imported when the command runs (torch) that the system will not map (memory under `ulimit -v`)."""
    import rlcsc.cli

    def refuse(args: object) -> None:
        raise ImportError("libtorch_cpu.so: failed to map segment from shared object")

    monkeypatch.setattr(rlcsc.cli, "_memory", refuse)
    monkeypatch.chdir(tmp_path)
    assert main(["memory", "--out", "unused.json"]) == 1
    assert capsys.readouterr().err == ("rlcsc memory: error: libtorch_cpu.so: failed to map segment from shared "
                                       "object\n")


def test_a_failing_report_cell_is_one_line(tmp_path: Path, capsys) -> None:
    argv = ["report", "table4", "--params", str(REPO / "params.yaml"), "--notebooks", str(REPO / "notebooks"),
            "--results", str(tmp_path / "none"), "--out", str(tmp_path / "book")]
    assert main(argv) == 1  # a mistyped folder is named, before any notebook runs
    assert capsys.readouterr().err.strip() == f"rlcsc report: error: --results {tmp_path / 'none'} is not a folder"
    (tmp_path / "none").mkdir()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "table4.ipynb: its cell" in err and "FileNotFoundError" in err and "table4.json" in err
    assert not (tmp_path / "book").exists()  # nor the folder made for the page


@pytest.mark.parametrize("argv", [
    ["record", "--out", "x", "--epochs", "0"],  # 0 would otherwise mean the whole run
    ["record", "--out", "x", "--steps", "-5"],
    ["compare", "--out", "x.json", "--variant", "a:", "--steps", "0"],
    ["compare", "--out", "x.json", "--variant", "a:", "--minutes", "nan"],
    ["evaluate", "--method", "bicubic", "--out", "x", "--jobs", "0"],
    ["download", "--jobs", "two"],
    ["benchmark", "train", "--warmup", "-5"],
])
def test_counts_must_be_above_zero(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "above 0, got" in err and argv[-1] in err
    assert list(tmp_path.iterdir()) == []  # nothing was started


def test_patch_count_of_the_full_protocol_is_the_papers(mirror: Path, tmp_path: Path, capsys) -> None:
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "budget": "paper"}))
    assert main(["patch", "--count", "--raw", str(mirror), "--params", str(tmp_path / "params.yaml")]) == 0
    out = capsys.readouterr().out
    assert "pairs: 1929744" in out and "kept:  1929728" in out
    assert not (tmp_path / "data").exists()


def test_no_ifc_leaves_ifc_out(mirror: Path, tmp_path: Path, capsys) -> None:
    """--no-ifc overrides the `evaluate` block's ifc (true by default): no IFC column is computed or recorded."""
    out = tmp_path / "bicubic"
    argv = ["evaluate", "--method", "bicubic", "--raw", str(mirror), "--out", str(out), "--datasets", "Set5",
            "--scales", "3", "--jobs", "1", "--no-ifc"]
    assert main(argv) == 0
    assert capsys.readouterr().out.rstrip().endswith(" dB  SSIM {ssim:.4f}".format(
        **json.loads((out / "metrics.json").read_text())["Set5"]["x3"]))
    assert json.loads((out / "evaluation.json").read_text())["ifc"] is False
    assert set(json.loads((out / "metrics.json").read_text())["Set5"]["x3"]) == {"psnr", "ssim"}
    assert pd.read_csv(out / "per_image.csv").ifc.isna().all()


def test_an_interrupted_command_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Ctrl-C (or SIGTERM) ends a command with the shell's status for SIGINT, 128 + 2, and one line."""
    from rlcsc import sr

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sr, "super_resolve_files", interrupted)
    assert main(["sr", str(tmp_path / "in.png"), "--scale", "2", "-o", str(tmp_path / "out.png")]) == 130
    assert capsys.readouterr().err == "rlcsc sr: interrupted\n"


def test_only_the_first_torchrun_process_holds_the_lock_of_what_it_writes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from rlcsc.cli import _outputs, build_parser

    args = build_parser().parse_args(["train", "--experiment", "K25", "--out", str(tmp_path / "run")])
    for rank, outputs in (("0", [tmp_path / "run"]), ("1", [])):
        monkeypatch.setenv("RANK", rank)
        assert _outputs(args) == outputs, rank
    monkeypatch.delenv("RANK")
    assert _outputs(args) == [tmp_path / "run"]


def test_a_converted_model_and_the_download_s_listing_are_written_under_a_lock(tmp_path: Path) -> None:
    from rlcsc.cli import _outputs, build_parser, parse

    convert = ["convert", "--arch", "vdsr", "--weights", str(tmp_path / "w.mat"), "--out", str(tmp_path / "m.pt")]
    download = ["download", "--out", str(tmp_path / "raw"), "--listing", str(tmp_path / "raw.json")]
    assert _outputs(build_parser().parse_args(convert)) == [tmp_path / "m.pt"]
    assert _outputs(build_parser().parse_args(download)) == [tmp_path / "raw", tmp_path / "raw.json"]
    assert _outputs(build_parser().parse_args(download[:3])) == [tmp_path / "raw"]
    assert _outputs(parse(["download"])) == [Path("data/raw")]
    assert _outputs(parse(["download", "--weights"])) == [Path("data/weights")]  # dvc.yaml's download_weights


def test_benchmark_output_route_takes_its_datasets_and_scales_from_the_flags(mirror: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--datasets and --scales override the `evaluate` block's (here each image is scored 0 to keep it fast)."""
    from rlcsc import output_route
    from rlcsc.atomic import save_torch
    from rlcsc.inference import model_state
    from rlcsc.models.rlcsc import RLCSC, RLCSCConfig

    monkeypatch.setattr(output_route, "_score", lambda task: {
        "dataset": task[0], "image": task[1].name, "scale": task[2],
        **{f"{m}_{r}": 0.0 for m in ("psnr", "ssim", "ifc") for r in ("y", "rgb")}})
    save_torch(model_state(RLCSC(RLCSCConfig(recursions=1, features=4, codes=4))), tmp_path / "m.pt")
    params = tmp_path / "params.yaml"
    params.write_text("evaluate: {datasets: [Set14], scales: [2, 3]}\n")
    out = tmp_path / "route.json"
    argv = ["benchmark", "output-route", "--params", str(params), "--model", str(tmp_path / "m.pt"), "--raw",
            str(mirror), "--jobs", "1", "--out", str(out)]
    assert main(argv + ["--datasets", "Set5", "Set5", "--scales", "4", "4"]) == 0  # each scored once
    metrics = json.loads(out.read_text())["metrics"]
    assert {d: list(cells) for d, cells in metrics.items()} == {"Set5": ["x4"]} and metrics["Set5"]["x4"]["images"] == 5
    out.unlink()  # an existing --out is refused
    assert main(argv) == 0
    assert {d: list(cells) for d, cells in json.loads(out.read_text())["metrics"].items()} == {"Set14": ["x2", "x3"]}


def test_version_names_the_package_s_version_and_its_code_s_commit(capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import version as installed_version

    from rlcsc import provenance

    version = installed_version("rlcsc")  # as pip recorded it, from rlcsc.__version__
    monkeypatch.setattr(provenance, "commit", lambda: "0123abc-dirty")
    with pytest.raises(SystemExit) as ended:
        main(["--version"])
    assert ended.value.code == 0 and capsys.readouterr().out == f"rlcsc {version} (commit 0123abc-dirty)\n"


def test_a_report_notebook_that_papermill_cannot_run_is_one_line(tmp_path: Path, capsys) -> None:
    """A file that is not a notebook (not JSON) ends `rlcsc report` with one line naming it, not a traceback."""
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "table4.ipynb").write_text("not json")
    (tmp_path / "none").mkdir()
    argv = ["report", "table4", "--params", str(REPO / "params.yaml"), "--notebooks", str(tmp_path / "notebooks"),
            "--results", str(tmp_path / "none"), "--out", str(tmp_path / "book")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert err.startswith(f"rlcsc report: error: {tmp_path / 'notebooks' / 'table4.ipynb'}: not a notebook papermill "
                          "can run: ")
