"""Damaged inputs are named, never used: a model file carries the SHA-256 of its network, the
augmented images and the patch set a SHA256SUMS that their readers verify, the test images the
SHA-256 of the manifest (of the file, or of the Y channel that the protocol reads), and a recorded run's folder a
SHA256SUMS that the report verifies. Each refusal is one line naming the file and what writes it again."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlcsc.atomic import save_torch
from rlcsc.checksums import SUMS, seal, verify, verify_run
from rlcsc.cli import main
from rlcsc.color import rgb2y
from rlcsc.data.augment import AugmentParams, augment
from rlcsc.data.patches import PatchParams, make_patches
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image
from rlcsc.inference import build, load_model, model_state
from rlcsc.train import Monitor, TrainParams, train

REPO = Path(__file__).resolve().parents[1]
TINY = TrainParams(recursions=1, features=2, codes=4, pairs=8, batch=4, epochs=1, compile=False, device="cpu")


def flip_exponent(path: Path, weight: torch.Tensor) -> None:
    """Flip the high bit of the exponent of `weight`'s first value where the file stores it."""
    data = bytearray(path.read_bytes())
    at = bytes(data).find(weight.flatten()[:4].numpy().tobytes())
    assert at > 0
    data[at + 3] ^= 0x40  # little-endian float32: byte 3 holds the sign and the exponent's high bits
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Augmented images and a patch set cut from two small synthetic images."""
    root = tmp_path_factory.mktemp("sums")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(root / f"{i}.png")
    augment([root / "0.png", root / "1.png"], root / "augmented", AugmentParams(flips=("none",), factors=(1.0,)),
            jobs=1)
    make_patches(root / "augmented", root / "patches", PatchParams(chunk=1), jobs=1)
    return root


def test_a_flipped_bit_in_a_model_file_is_named_not_used(tmp_path: Path,
                                                         one_line_error: Callable[[list[str]], str]) -> None:
    torch.manual_seed(0)
    model = build("rlcsc", {"recursions": 1, "features": 2, "codes": 2})
    save_torch({**model_state(model), "experiment": "K25"}, tmp_path / "model.pt")
    load_model(tmp_path / "model.pt")
    flip_exponent(tmp_path / "model.pt", model.state_dict()["f0.weight"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "in.png")
    argv = ["sr", str(tmp_path / "in.png"), "--scale", "2", "--model", str(tmp_path / "model.pt"), "-o",
            str(tmp_path / "o.png")]
    assert one_line_error(argv).endswith(f"corrupt {tmp_path / 'model.pt'}: its network differs from the "
                                                 "SHA-256 it carries; train it again (`dvc repro train@K25`)")
    assert not (tmp_path / "o.png").exists()


def old_model_file(run: Path) -> torch.nn.Module:
    """A tiny network saved as `run/model.pt` as model files were written before they carried a checksum."""
    model = build("rlcsc", {"recursions": 1, "features": 2, "codes": 2})
    run.mkdir(parents=True)
    state = model_state(model)
    del state["network_sha256"]
    save_torch(state, run / "model.pt")
    return model


def test_a_model_file_from_before_checksums_loads_as_its_run_sealed_it(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "old"
    model = old_model_file(run)
    with pytest.raises(RlcscError, match="model.pt carries no SHA-256 of its network .* and no SHA256SUMS beside it"):
        load_model(run / "model.pt")
    seal(run)
    load_model(run / "model.pt")
    flip_exponent(run / "model.pt", model.state_dict()["f0.weight"])
    with pytest.raises(RlcscError, match=rf"^corrupt {re.escape(str(run / 'model.pt'))}: its bytes differ from the "
                       r"SHA-256 that .*SHA256SUMS holds; restore it from the commit that recorded it"):
        load_model(run / "model.pt")


def test_a_link_to_a_sealed_model_loads_by_its_run_and_a_bare_copy_is_told_where_its_seal_is(tmp_path: Path) -> None:
    """A model file without a checksum of its own is checked by the SHA256SUMS beside the file a link points to;
    a copy without that SHA256SUMS is refused, with where to load it from (its bytes are not known to be wrong)."""
    run = tmp_path / "runs" / "old"
    model = old_model_file(run)
    seal(run)
    (tmp_path / "link.pt").symlink_to(run / "model.pt")
    load_model(tmp_path / "link.pt")
    shutil.copy(run / "model.pt", tmp_path / "copy.pt")
    with pytest.raises(RlcscError, match="load it from the run folder it came from .or copy that folder's SHA256SUMS"):
        load_model(tmp_path / "copy.pt")
    flip_exponent(run / "model.pt", model.state_dict()["f0.weight"])
    with pytest.raises(RlcscError, match="its bytes differ from the SHA-256"):
        load_model(tmp_path / "link.pt")


def test_the_recorded_runs_are_sealed_and_their_models_load() -> None:
    """The committed runs/ folders were sealed by `rlcsc checksums`; their model files, written before
    model files carried a checksum, load by it."""
    runs = sorted(p for p in (REPO / "runs").iterdir() if p.is_dir())
    for folder in runs:
        verify_run(folder)
    assert [load_model(p) for p in (REPO / "runs").glob("*/model.pt")]


@pytest.mark.parametrize("name,damage", [
    ("keep.npy", lambda a: a.__setitem__(slice(0, 2), a[1::-1].copy())),  # two pairs swapped: still valid indices
    ("inputs.npy", lambda a: a.__setitem__((0, 0, 0), np.nan)),  # a NaN, blamed on training before
    ("labels.npy", lambda a: a.__setitem__((0, 0, 0), a[0, 0, 0] ^ 1)),
])
def test_a_changed_value_in_the_patch_set_is_named_before_training(folders: Path, tmp_path: Path, name: str,
                                                                   damage) -> None:
    patches = tmp_path / "patches"
    shutil.copytree(folders / "patches", patches)
    array = np.load(patches / name, mmap_mode="r+")
    damage(array)
    array.flush()
    del array
    with pytest.raises(RlcscError, match=rf"^corrupt {re.escape(str(patches / name))}: its bytes differ from the "
                       r"SHA-256 that .*SHA256SUMS holds; rerun `rlcsc patch`") as err:
        train(TINY, patches, tmp_path / "raw", tmp_path / "run")
    assert "\n" not in str(err.value) and not (tmp_path / "run").exists()


def test_a_changed_byte_in_the_augmented_images_is_named_before_patching(folders: Path, tmp_path: Path) -> None:
    augmented = tmp_path / "augmented"
    shutil.copytree(folders / "augmented", augmented)
    blob = bytearray((augmented / "images.u8").read_bytes())
    blob[100] ^= 1
    (augmented / "images.u8").write_bytes(bytes(blob))
    with pytest.raises(RlcscError,
                       match=rf"^corrupt {re.escape(str(augmented / 'images.u8'))}: .*rerun `rlcsc augment`"):
        make_patches(augmented, tmp_path / "patches", PatchParams(chunk=1), jobs=1)
    assert not (tmp_path / "patches").exists()


@pytest.mark.parametrize("damage,message", [
    (lambda f: (f / SUMS).unlink(), r"^corrupt {f}: no SHA256SUMS holds the checksums of its files"),
    (lambda f: (f / "notes.txt").write_text("x"), r"^corrupt {f}/notes.txt: {f}/SHA256SUMS does not list it"),
    (lambda f: (f / "summary.json").unlink(), r"^corrupt {f}: summary.json is missing, which {f}/SHA256SUMS lists"),
])
def test_a_folder_whose_files_and_checksums_disagree_is_named(folders: Path, tmp_path: Path, damage, message) -> None:
    patches = tmp_path / "patches"
    shutil.copytree(folders / "patches", patches)
    verify(patches, "redo")
    damage(patches)
    with pytest.raises(RlcscError, match=message.format(f=re.escape(str(patches)))):
        verify(patches, "redo")


def test_a_replaced_test_image_is_named_not_scored(mirror: Path, tmp_path: Path,
                                                   one_line_error: Callable[[list[str]], str]) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(mirror / "Set5", raw / "Set5")
    shutil.copy(raw / "Set5" / "img_002_SRF_2_HR.png", raw / "Set5" / "img_001_SRF_2_HR.png")
    argv = ["evaluate", "--method", "bicubic", "--raw", str(raw), "--datasets", "Set5", "--scales", "3", "--no-ifc",
            "--out", str(tmp_path / "o")]
    expected = (f"corrupt {raw / 'Set5' / 'img_001_SRF_2_HR.png'}: not the file manifest.tsv pins (its SHA-256 "
                f"differs), nor an image of its Y channel; fetch it again with `rlcsc download --out {raw}`")
    assert one_line_error(argv).endswith(expected)
    assert not (tmp_path / "o" / "metrics.json").exists()
    with pytest.raises(RlcscError, match=re.escape(expected)):
        Monitor(raw, "Set5", 3, "fp32")  # training's Set5 x3 scores


def test_a_test_image_in_another_lossless_form_of_its_y_is_scored_alike(
        mirror: Path, tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    """The protocol reads only Y: a test set brought as its Y channel alone (a grey PNG of each image) is
    accepted by its Y's SHA-256 and scores bit for bit as the pinned files do; one grey level off is not."""
    argv = ["evaluate", "--method", "bicubic", "--datasets", "Set5", "--scales", "3", "--no-ifc"]
    assert main(argv + ["--raw", str(mirror), "--out", str(tmp_path / "pinned")]) == 0
    raw = tmp_path / "raw"
    for image in sorted((mirror / "Set5").iterdir()):
        (raw / "Set5").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb2y(read_image(image))).save(raw / "Set5" / image.name, format="PNG")
    assert main(argv + ["--raw", str(raw), "--out", str(tmp_path / "y")]) == 0
    for name in ("metrics.json", "per_image.csv"):
        assert (tmp_path / "y" / name).read_bytes() == (tmp_path / "pinned" / name).read_bytes()
    Monitor(raw, "Set5", 3, "fp32")  # training's Set5 x3 scores take it too
    grey = raw / "Set5" / "img_003_SRF_2_HR.png"
    y = np.asarray(Image.open(grey)).copy()
    y[10, 10] ^= 1
    Image.fromarray(y).save(grey, format="PNG")
    assert one_line_error(argv + ["--raw", str(raw), "--out", str(tmp_path / "o")]).endswith(
        f"corrupt {grey}: not the file manifest.tsv pins (its SHA-256 differs), nor an image of its Y channel; "
        f"fetch it again with `rlcsc download --out {raw}`")


def test_an_edited_run_is_named_before_the_report_reads_it(tmp_path: Path,
                                                           one_line_error: Callable[[list[str]], str]) -> None:
    """A changed digit of runs/K25-paper/metrics.json would go straight into Table 1."""
    runs = tmp_path / "runs"
    shutil.copytree(REPO / "runs" / "K25-paper", runs / "K25-paper")
    metrics = runs / "K25-paper" / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text.replace("33.", "81.", 1))
    argv = ["report", "table1", "--params", str(REPO / "params.yaml"), "--runs", str(runs), "--out",
            str(tmp_path / "book")]
    expected = (f"corrupt {metrics}: its bytes differ from the SHA-256 that {runs / 'K25-paper' / SUMS} holds; restore "
                f"it with `git checkout -- {runs / 'K25-paper'}` (a run whose `rlcsc record` was cut short is sealed "
                "by its next call)")
    assert one_line_error(argv).endswith(expected)
    assert not (tmp_path / "book").exists()
    assert one_line_error(["checksums", "--check", str(runs / "K25-paper")]).endswith(expected)
    metrics.write_text(text)
    assert main(["checksums", "--check", str(runs / "K25-paper")]) == 0


def test_a_folder_of_runs_that_holds_no_run_files_is_passed_over(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 one_line_error: Callable[[list[str]], str]) -> None:
    """An empty folder, or one of notes, under runs/ is not a run to verify; one with a page's JSON files is."""
    from rlcsc import report

    monkeypatch.setattr(report, "execute_notebook", lambda *a: None)
    runs = tmp_path / "runs"
    (runs / "new").mkdir(parents=True)
    (runs / "notes").mkdir()
    (runs / "notes" / "plan.md").write_text("K48 next\n")
    argv = ["report", "table1", "--params", str(REPO / "params.yaml"), "--runs", str(runs), "--out",
            str(tmp_path / "book")]
    assert main(argv) == 0
    (runs / "new" / "metrics.json").write_text("{}\n")
    assert f"corrupt {runs / 'new'}" in one_line_error(argv)


def test_file_names_that_are_not_utf8_are_sealed_and_a_line_break_is_refused(
        tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    """SHA256SUMS lists a name in its own bytes, one line each: a name holding a line break cannot be listed."""
    run = tmp_path / "run"
    run.mkdir()
    odd = run / os.fsdecode(b"caf\xe9.txt")  # Latin-1, not UTF-8
    odd.write_text("x")
    assert main(["checksums", str(run)]) == 0 and main(["checksums", "--check", str(run)]) == 0
    assert os.fsencode(odd.name) in (run / SUMS).read_bytes()
    odd.write_text("y")
    with pytest.raises(RlcscError, match="its bytes differ"):
        verify_run(run)
    odd.unlink()
    (run / "a\nb.txt").write_text("x")
    assert one_line_error(["checksums", str(run)]).endswith(
        f"{run}: the file name 'a\\nb.txt' holds a line break, which {SUMS} cannot list; rename it")


def test_a_folder_written_before_runs_were_sealed_is_sealed_by_a_command(
        tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    """A run without checksums, or with a file they do not list, is named with both remedies: sealing it (the program
    wrote it) or restoring it (a hand changed it); a folder without files is not sealed."""
    run = tmp_path / "run"
    run.mkdir()
    assert one_line_error(["checksums", str(run)]).endswith(f"{run} holds no files to seal")
    assert not (run / SUMS).exists()
    (run / "metrics.json").write_text("{}\n")
    remedies = (f"seal the folder with `rlcsc checksums {run}` if the program wrote each of its files (a run recorded "
                f"before runs were sealed, a file a command added); else restore it with `git checkout -- {run}` and "
                "move away any file added by hand")
    with pytest.raises(RlcscError, match=re.escape(f"corrupt {run}: no SHA256SUMS holds the checksums of its files "
                                                   f"(written before they had them, or damaged); {remedies}")):
        verify_run(run)
    assert main(["checksums", str(run)]) == 0
    verify_run(run)
    assert (run / SUMS).read_text() == ("ca3d163bab055381827226140568f3bef7eaac187cebd76878e0b63e9e442356  "
                                        "metrics.json\n")
    (run / "output_route.json").write_text("{}\n")  # a measurement a command added beside the run: sealed too
    assert one_line_error(["checksums", "--check", str(run)]).endswith(
        f"corrupt {run / 'output_route.json'}: {run / SUMS} does not list it; {remedies}")
    assert main(["checksums", str(run)]) == 0
    verify_run(run)


def test_a_checksum_line_not_as_seal_writes_it_is_named_and_a_blank_one_passed_over(tmp_path: Path) -> None:
    """A line of another format (`sha256sum -b`'s "<digest> *<name>") or of no name is named, never taken for a
    file called "" (the folder itself) or "*a.json"; a blank line added by hand is passed over."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "a.json").write_text("{}\n")
    seal(run)
    line = (run / SUMS).read_text()
    (run / SUMS).write_text(line + "\n")
    verify_run(run)
    for bad in (line.replace("  ", " *"), line.split()[0] + "\n", "00  a.json\n"):
        (run / SUMS).write_text(bad)
        with pytest.raises(RlcscError, match=rf"^corrupt {re.escape(str(run / SUMS))}: its line 1 is not a SHA-256 "
                                             r"and a file name \("):
            verify_run(run)


def test_a_run_kept_without_its_checkpoint_verifies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Only extending a run reads its checkpoint.pt: a run kept without it verifies, for the report too."""
    run = tmp_path / "K25-paper"
    shutil.copytree(REPO / "runs" / "K25-paper", run, ignore=shutil.ignore_patterns("checkpoint.pt"))
    assert main(["checksums", "--check", str(run)]) == 0
    verify_run(run)
    (run / "model.pt").unlink()  # but every other file it lists
    assert main(["checksums", "--check", str(run)]) == 1
    assert "model.pt is missing, which" in capsys.readouterr().err


def test_sealing_again_never_takes_an_edited_file(tmp_path: Path, one_line_error: Callable[[list[str]], str]) -> None:
    """`rlcsc checksums FOLDER` on a sealed run whose listed file was edited refuses, naming it, and keeps the
    old checksums: forgetting `--check` must not bless an edit that the report would then read."""
    run = tmp_path / "K25-paper"
    shutil.copytree(REPO / "runs" / "K25-paper", run, ignore=shutil.ignore_patterns("*.pt"))
    seal(run)
    sums = (run / SUMS).read_text()
    (run / "metrics.json").write_text("{}\n")
    assert one_line_error(["checksums", str(run)]).startswith(f"rlcsc checksums: error: corrupt {run / 'metrics.json'}")
    assert (run / SUMS).read_text() == sums


def test_a_writer_s_hidden_temporary_or_lock_is_not_one_of_the_folder_s_files(tmp_path: Path) -> None:
    """A temporary being written (`rlcsc.atomic`) or a lock (`rlcsc.lock`) has a hidden name beside the files: a seal
    neither lists it nor is broken by it."""
    (tmp_path / "metrics.json").write_text("{}\n")
    (tmp_path / ".metrics.k2j4.tmp.json").write_text("half")
    seal(tmp_path)
    assert [line.split()[1] for line in (tmp_path / SUMS).read_text().splitlines()] == ["metrics.json"]
    (tmp_path / ".run.lock").write_text("{}\n")
    verify(tmp_path, "redo")
