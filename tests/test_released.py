"""Released weights: the VDSR network, its MatConvNet layout, the pinned file, and the authors' weights
through this package's protocol (Set5 against the paper's Table 1 VDSR column)."""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from rlcsc import released
from rlcsc.cli import main
from rlcsc.data.download import download_all
from rlcsc.device import cpu_description
from rlcsc.errors import RlcscError
from rlcsc.evaluate import evaluate, summarize
from rlcsc.inference import Network, describe_model, load_model
from rlcsc.manifest import WEIGHTS, load_manifest
from rlcsc.models.vdsr import VDSR, from_matconvnet
from rlcsc.reference import table

REPO = Path(__file__).resolve().parents[1]


def matconvnet_file(path: Path, kernels: list[np.ndarray], biases: list[np.ndarray]) -> Path:
    """A MatConvNet-style file: struct `model` with 1 x L cells weight (H x W x C_in x C_out) and bias."""
    cells = {name: np.empty((1, len(values)), dtype=object) for name, values in (("weight", kernels), ("bias", biases))}
    for i, (w, b) in enumerate(zip(kernels, biases)):
        cells["weight"][0, i], cells["bias"][0, i] = w, b
    savemat(path, {"model": cells})
    return path


def vl_nnconv(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MatConvNet's convolution with pad 1, written from its definition: y(i, j, o) = b(o) +
    sum over u, v, c of w(u, v, c, o) x(i + u - 1, j + v - 1, c) (a correlation; zero outside)."""
    h, wd, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    y = np.zeros((h, wd, w.shape[3])) + b.reshape(-1)
    for u in range(3):
        for v in range(3):
            y += padded[u : u + h, v : v + wd] @ w[u, v]
    return y


def test_vdsr_has_the_released_networks_size() -> None:
    model = VDSR()
    assert sum(p.numel() for p in model.parameters()) == 665_921
    assert model.depth == 20 and len(model.convs) == 20


def test_conversion_keeps_matconvnets_orientation(tmp_path: Path) -> None:
    """Asymmetric kernels: a transposed (H <-> W) or flipped kernel, or C_in and C_out swapped, gives
    another output than MatConvNet's own arithmetic."""
    rng = np.random.default_rng(0)
    sizes = [1, 3, 3, 1]
    kernels = [rng.normal(0, 0.5, (3, 3, a, b)).astype(np.float32) for a, b in pairwise(sizes)]
    biases = [rng.normal(0, 0.1, (b, 1)).astype(np.float32) for b in sizes[1:]]
    kernels[-1] = kernels[-1][..., 0]  # MATLAB drops the trailing C_out = 1
    net = from_matconvnet(matconvnet_file(tmp_path / "m.mat", kernels, biases))
    assert net.cfg.layers == 3 and net.cfg.features == 3
    x = rng.random((9, 7, 1))
    h = x
    for i, (w, b) in enumerate(zip(kernels, biases)):
        h = vl_nnconv(h, w.reshape(3, 3, sizes[i], sizes[i + 1]).astype(np.float64), b.astype(np.float64))
        h = np.maximum(h, 0) if i < len(kernels) - 1 else h
    expected = x[..., 0] + h[..., 0]
    with torch.no_grad():
        got = net.double()(torch.from_numpy(x[..., 0])[None, None])[0, 0].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-10)
    flipped = [np.ascontiguousarray(w[::-1, ::-1]) for w in kernels]
    wrong = from_matconvnet(matconvnet_file(tmp_path / "f.mat", flipped, biases)).double()
    with torch.no_grad():
        assert np.abs(wrong(torch.from_numpy(x[..., 0])[None, None])[0, 0].numpy() - expected).max() > 1e-3


def test_a_file_that_is_not_matconvnets_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x.mat").write_bytes(b"MATLAB 5.0 MAT-file, not really")
    with pytest.raises(RlcscError, match="is not a MatConvNet VDSR file"):
        from_matconvnet(tmp_path / "x.mat")


def test_only_the_pinned_file_converts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "other.mat").write_bytes(b"some other weights")
    status = main(["convert", "--arch", "vdsr", "--weights", str(tmp_path / "other.mat"), "--out",
                   str(tmp_path / "m.pt")])
    assert status == 1 and "is not a file that weights.tsv pins" in capsys.readouterr().err
    status = main(["convert", "--arch", "drrn", "--weights", str(tmp_path / "other.mat"), "--out",
                   str(tmp_path / "m.pt")])
    assert status == 1 and "no converter for architecture 'drrn'" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_weights_manifest_matches_the_mirrors(weights_mirror: Path) -> None:
    mirrored = {tuple(line.split("\t")[:4]) for line in (weights_mirror / "MANIFEST.tsv").read_text().splitlines()[1:]}
    assert {(e.dataset, e.file, str(e.bytes), e.sha256) for e in load_manifest(WEIGHTS)} <= mirrored


def test_download_weights_fetches_and_lists_the_pinned_weights(weights_mirror: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """`rlcsc download --weights` fetches the files weights.tsv pins, not the images, and its --listing names them."""
    entry = load_manifest(WEIGHTS, ["VDSR"])[0]
    out, listing = tmp_path / "weights", tmp_path / "weights.json"
    argv = ["download", "--weights", "--mirror", str(weights_mirror), "--out", str(out), "--listing", str(listing)]
    assert main(argv) == 0
    assert "1 file(s) fetched; all 1 in weights.tsv verified" in capsys.readouterr().err
    assert released.pinned_source(out / "VDSR" / "VDSR_Official.mat")["sha256"] == entry.sha256
    assert json.loads(listing.read_text()) == {"VDSR/VDSR_Official.mat": entry.sha256}
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["VDSR", "VDSR/VDSR_Official.mat"]


def test_the_weights_go_to_data_weights_by_default_which_convert_s_hint_names(
        weights_mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_line_error) -> None:
    """`rlcsc download --weights` fetches into data/weights (not data/raw, the images' folder), where `convert`'s
    hint for a missing file says it goes; a folder for --weights, or --out naming the weights file, is one line."""
    monkeypatch.chdir(tmp_path)
    mat = Path("data/weights/VDSR/VDSR_Official.mat")
    assert one_line_error(["convert", "--arch", "vdsr", "--weights", str(mat), "--out", "m.pt"]).endswith(
        f"weights file not found: {mat}; fetch it with `rlcsc download --weights` (into data/weights)")
    assert main(["download", "--weights", "--mirror", str(weights_mirror)]) == 0
    assert mat.is_file() and not Path("data/raw").exists()
    assert one_line_error(["convert", "--arch", "vdsr", "--weights", "data/weights", "--out", "m.pt"]).endswith(
        "--weights data/weights is a folder; name the weights file in it")
    assert one_line_error(["convert", "--arch", "vdsr", "--weights", "/dev/null", "--out", "m.pt"]).endswith(
        "--weights /dev/null is not a regular file (a device, a pipe or a socket); name the weights file")
    before = mat.read_bytes()
    assert one_line_error(["convert", "--arch", "vdsr", "--weights", str(mat), "--out", str(mat)]).endswith(
        f"--out {mat} is the --weights file; name another")
    assert mat.read_bytes() == before


def test_a_file_of_the_pinned_size_but_other_bytes_is_refused(tmp_path: Path) -> None:
    """The bytes decide, not the size: a file as long as the pinned one (of zeros) is not it."""
    entry = load_manifest(WEIGHTS, ["VDSR"])[0]
    (tmp_path / "VDSR_Official.mat").write_bytes(bytes(entry.bytes))
    with pytest.raises(RlcscError, match="is not a file that weights.tsv pins"):
        released.pinned_source(tmp_path / "VDSR_Official.mat")


def test_convert_makes_the_model_file_s_folder(weights_mirror: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "VDSR" / "model.pt"
    source = released.convert("vdsr", weights_mirror / "VDSR" / "VDSR_Official.mat", out)
    assert describe_model(out)["source"] == source and source["file"] == "VDSR_Official.mat"


@pytest.fixture(scope="module")
def vdsr_model(weights_mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The VDSR authors' file fetched from the mirror (verified) and converted by `rlcsc convert`."""
    root = tmp_path_factory.mktemp("vdsr")
    assert download_all(root / "weights", mirror=weights_mirror, manifest=WEIGHTS) == 1
    mat = root / "weights" / "VDSR" / "VDSR_Official.mat"
    assert main(["convert", "--arch", "vdsr", "--weights", str(mat), "--out", str(root / "model.pt")]) == 0
    return root / "model.pt"


def test_converted_file_names_its_source(vdsr_model: Path) -> None:
    about = describe_model(vdsr_model)
    entry = load_manifest(WEIGHTS, ["VDSR"])[0]
    assert about["arch"] == "vdsr" and about["source"] == {"group": "VDSR", "file": "VDSR_Official.mat",
                                                            "sha256": entry.sha256, "url": entry.url}
    assert sum(p.numel() for p in load_model(vdsr_model).parameters()) == 665_921
    assert (released.pinned_source(vdsr_model.parent / "weights" / "VDSR" / "VDSR_Official.mat")["sha256"]
            == entry.sha256)


def test_authors_vdsr_reproduces_the_papers_set5_column(vdsr_model: Path, mirror: Path) -> None:
    """Set5 at x2, x3, x4: PSNR within 0.01 dB and SSIM within 0.0005 of Table 1's VDSR column. (Bicubic
    alone cannot fail this way: it never runs a network over a whole image.)"""
    scores = summarize(evaluate(Network(vdsr_model), mirror, ["Set5"], [2, 3, 4], with_ifc=False, jobs=2))["Set5"]
    ref = table("table1")
    ref = ref[(ref.dataset == "Set5") & (ref.method == "VDSR")].set_index("scale")
    for s in (2, 3, 4):
        assert abs(scores[f"x{s}"]["psnr"] - ref.psnr[s]) <= 0.01, (s, scores[f"x{s}"])
        assert abs(scores[f"x{s}"]["ssim"] - ref.ssim[s]) <= 0.0005, (s, scores[f"x{s}"])


@pytest.fixture(scope="module")
def recorded_vdsr(vdsr_model: Path, mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`rlcsc record --model` of the converted VDSR under the quick budget, its evaluation cut to Set5 x3."""
    import yaml

    root = tmp_path_factory.mktemp("recorded")
    blocks = yaml.safe_load((REPO / "params.yaml").read_text())
    blocks["budgets"]["quick"]["evaluate"] = {"datasets": ["Set5"], "scales": [3], "ifc": False}
    (root / "params.yaml").write_text(yaml.safe_dump(blocks, sort_keys=False))
    argv = ["record", "--params", str(root / "params.yaml"), "--budget", "quick", "--model", str(vdsr_model),
            "--raw", str(mirror), "--out", str(root / "runs" / "VDSR-official"), "--jobs", "2"]
    assert main(argv) == 0
    return root / "runs" / "VDSR-official"


def test_a_recorded_evaluation_holds_the_model_and_what_scored_it(recorded_vdsr: Path, vdsr_model: Path) -> None:
    assert {p.name for p in recorded_vdsr.iterdir()} == {"model.pt", "metrics.json", "per_image.csv",
                                                         "evaluation.json", "environment.json", "SHA256SUMS"}
    assert (recorded_vdsr / "model.pt").read_bytes() == vdsr_model.read_bytes()
    (call,) = json.loads((recorded_vdsr / "environment.json").read_text())["calls"]
    assert call["evaluated"] is True and call["params"]["budget"] == "quick"
    assert call["params"]["evaluate"]["datasets"] == ["Set5"] and call["params"]["model"]["source"]["group"] == "VDSR"
    evaluation = json.loads((recorded_vdsr / "evaluation.json").read_text())
    assert evaluation["scales"] == [3] and evaluation["model"]["source"]["file"] == "VDSR_Official.mat"
    assert evaluation["precision"] == "tf32" and "computed_in" in evaluation  # asked for, and as computed


def test_a_recorded_evaluation_refuses_another_model_and_training_flags(recorded_vdsr: Path, mirror: Path,
                                                                        tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "other.pt"
    other.write_bytes(recorded_vdsr.joinpath("model.pt").read_bytes() + b"\0")
    argv = ["record", "--budget", "quick", "--model", str(other), "--raw", str(mirror), "--out", str(recorded_vdsr)]
    assert main(argv) == 1 and "is another model than" in capsys.readouterr().err
    assert main([*argv, "--epochs", "2"]) == 1 and "record an evaluation alone" in capsys.readouterr().err


def test_the_book_sets_the_measured_vdsr_beside_the_papers(recorded_vdsr: Path, tmp_path: Path) -> None:
    from rlcsc import report

    (measured,) = report.measured_methods(tmp_path / "none", recorded_vdsr.parent)
    assert measured.method == "VDSR" and measured.recorded and measured.cells() == 1
    assert measured.model_file(tmp_path) == recorded_vdsr / "model.pt"
    row = measured.row()
    assert row["run"] == "VDSR-official" and row["made by"] == "`rlcsc record --model`"
    assert row["machine"] == f"cpu: {cpu_description()}, {os.cpu_count()} cores"  # the machine its last call ran on
    assert row["network"].startswith("VDSR: the authors' `VDSR_Official.mat`") and row["budget"].endswith(": Set5")
    check = report.against_paper(measured, "table1", ("psnr", "ssim"))
    assert check.loc[("Set5", 3), "psnr paper"] == 33.66 and check.loc[("Set5", 3), "psnr within"]
    assert check["psnr measured"].notna().sum() == 1
    sentence = report.agreement(check, "psnr")
    assert sentence.startswith("PSNR: 1 of 1 measured cells within 0.05 dB of the paper") and "-0.00" not in sentence
    frame = check.copy()
    frame.loc[("Set14", 2), "psnr difference"] = 0.2
    assert report.agreement(frame, "psnr").endswith("beyond it: Set14 x2 (+0.20).")
