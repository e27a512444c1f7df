"""Augment and patch stages: counts, the protocol on a stored pair, and bad input."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rlcsc.color import rgb2ycbcr
from rlcsc.crop import modcrop
from rlcsc.data.augment import AugmentParams, Variant, augment, load_augmented, transform, variant_shape, variants
from rlcsc.data.patches import PatchParams, PatchSet, count_from_raw, count_pairs, kept, make_pairs, make_patches
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image
from rlcsc.imresize import imresize
from rlcsc.lock import writing

AWKWARD = [(33, 33), (34, 100), (65, 66), (99, 131), (32, 500), (101, 37)]


def test_count_formula_on_awkward_sizes() -> None:
    rng = np.random.default_rng(0)
    for shape in AWKWARD:
        y = rng.integers(0, 256, shape, dtype=np.uint8)
        for s in (2, 3, 4):
            labels, inputs, corners = make_pairs(y, s, 33, 33)
            assert len(labels) == len(inputs) == len(corners) == count_pairs(shape, s, 33, 33)
            hh, ww = shape[0] - shape[0] % s, shape[1] - shape[1] % s
            assert count_pairs(shape, s, 33, 33) == (max(0, (hh - 33) // 33 + 1) * max(0, (ww - 33) // 33 + 1)
                                                     if min(hh, ww) >= 33 else 0)
    assert count_pairs((99, 131), 3, 33, 33) == 3 * 3  # 99x129 after modcrop: 3 rows, 3 cols
    assert count_pairs((34, 100), 4, 33, 33) == 0  # 32 rows after modcrop by 4
    assert count_pairs((65, 66), 2, 33, 10) == 4 * 4
    assert kept(1929744, 64) == 1929728


def test_variant_shapes_match_transform() -> None:
    img = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for v in variants(AugmentParams()):
        out = transform(img, v)
        assert out.dtype == np.uint8 and out.shape == variant_shape((37, 53), v)


@pytest.fixture
def tiny_set(tmp_path: Path) -> list[Path]:
    """Two synthetic training images of awkward sizes, one RGB and one grey, in a raw-like folder."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "raw" / "T91"
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:131, 0:97]
    smooth = (127 + 100 * np.sin(xx / 9) * np.cos(yy / 13))[..., None] + rng.integers(-20, 20, (131, 97, 3))
    Image.fromarray(np.clip(smooth, 0, 255).astype(np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (70, 121), dtype=np.uint8)).save(folder / "b.bmp")
    return [folder / "a.png", folder / "b.bmp"]


def test_stored_pair_equals_protocol_for_flipped_rotated_downsized(tiny_set: list[Path], tmp_path: Path) -> None:
    aug = AugmentParams(flips=("updown", "none"), rotations=(0, 90), factors=(1.0, 0.7))
    params = PatchParams(chunk=1)
    index = augment(tiny_set, tmp_path / "aug", aug, jobs=1)
    summary = make_patches(tmp_path / "aug", tmp_path / "patches", params, jobs=2)
    assert summary["pairs"] == count_from_raw(tiny_set, aug, params) == summary["kept"]
    assert json.loads((tmp_path / "patches" / "summary.json").read_text()) == json.loads(json.dumps(summary))

    # the protocol computed directly for image a.png, flipped upside down, rotated 90, downsized 0.7
    rgb = np.asarray(Image.open(tiny_set[0]))
    y = rgb2ycbcr(imresize(np.ascontiguousarray(np.rot90(rgb[::-1], 1)), 0.7))[..., 0]
    label = modcrop(y, 3)
    ilr = imresize(imresize(label / 255, 1 / 3), size=label.shape)
    image = index.query("file == 'a.png' and flip == 'updown' and rotation == 90 and factor == 0.7").index[0]
    origin = np.load(tmp_path / "patches" / "origin.npy")
    row = int(np.flatnonzero((origin["image"] == image) & (origin["scale"] == 3) & (origin["row"] == 33)
                             & (origin["col"] == 0))[0])
    labels = np.load(tmp_path / "patches" / "labels.npy", mmap_mode="r")
    inputs = np.load(tmp_path / "patches" / "inputs.npy", mmap_mode="r")
    assert inputs.dtype == np.float16
    np.testing.assert_array_equal(labels[row], label[33:66, 0:33])
    np.testing.assert_allclose(inputs[row], ilr[33:66, 0:33], rtol=2**-11, atol=2**-24)
    assert not np.array_equal(labels[row], modcrop(rgb2ycbcr(rgb)[..., 0], 3)[33:66, 0:33])


def test_grey_image_is_its_own_y(tiny_set: list[Path]) -> None:
    grey = np.asarray(Image.open(tiny_set[1]))
    np.testing.assert_array_equal(transform(grey, Variant("none", 0, 1.0)), grey)
    np.testing.assert_array_equal(transform(grey, Variant("leftright", 270, 1.0)), np.rot90(grey[:, ::-1], 3))


def test_truncation_keeps_a_seeded_multiple_of_chunk(tiny_set: list[Path], tmp_path: Path) -> None:
    augment(tiny_set, tmp_path / "aug", AugmentParams(flips=("none",), rotations=(0,), factors=(1.0,)), jobs=1)
    a = make_patches(tmp_path / "aug", tmp_path / "p1", PatchParams(chunk=4, seed=7), jobs=1)
    make_patches(tmp_path / "aug", tmp_path / "p2", PatchParams(chunk=4, seed=7), jobs=1)
    assert a["kept"] == a["pairs"] - a["pairs"] % 4 and a["kept"] % 4 == 0
    k1, k2 = np.load(tmp_path / "p1" / "keep.npy"), np.load(tmp_path / "p2" / "keep.npy")
    np.testing.assert_array_equal(k1, k2)
    assert len(np.unique(k1)) == len(k1) and not np.array_equal(k1, np.sort(k1))


def test_truncated_image_stops_augment_and_leaves_nothing(tiny_set: list[Path], tmp_path: Path) -> None:
    data = tiny_set[0].read_bytes()
    tiny_set[0].write_bytes(data[: len(data) // 2])
    out = tmp_path / "aug"
    with pytest.raises(RlcscError, match="a.png"):
        augment(tiny_set, out, AugmentParams(), jobs=2)
    assert not out.exists() and not list(tmp_path.glob(".aug*"))


def test_missing_augmented_folder_and_bad_params_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RlcscError, match="run `rlcsc augment` first"):
        make_patches(tmp_path / "none", tmp_path / "p", PatchParams())
    with pytest.raises(RlcscError, match="input_dtype = 'int8' is not allowed; it must be one of float16, float32"):
        PatchParams(input_dtype="int8")
    with pytest.raises(RlcscError, match="each one of updown, leftright, none"):
        AugmentParams(flips=("diagonal",))


ONE_VARIANT = AugmentParams(flips=("none",), rotations=(0,), factors=(1.0,))


@pytest.fixture
def augmented(tiny_set: list[Path], tmp_path: Path) -> Path:
    """The augment stage's output for the tiny set, one variant per image."""
    augment(tiny_set, tmp_path / "aug", ONE_VARIANT, jobs=1)
    return tmp_path / "aug"


def test_augment_progress_bar_reaches_the_end(tiny_set: list[Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    augment(tiny_set, tmp_path / "aug", ONE_VARIANT, jobs=1)
    assert "2/2" in capsys.readouterr().err



def test_a_linked_out_folder_is_refused_before_any_work(tiny_set: list[Path], augmented: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """A symbolic link as the output folder: the stage would replace the link, not the folder it points to,
    and fail only after all its work; it is refused at once, the folder untouched."""
    (tmp_path / "big").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "big")
    capsys.readouterr()
    for stage, make in [("augment", lambda: augment(tiny_set, tmp_path / "link", ONE_VARIANT, jobs=1)),
                        ("patch", lambda: make_patches(augmented, tmp_path / "link", PatchParams(chunk=1), jobs=1))]:
        with pytest.raises(RlcscError, match=f"link is a symbolic link .*big.*; {stage} replaces its folder whole"):
            make()
        assert "img" not in capsys.readouterr().err  # no progress bar: nothing was computed
    assert (tmp_path / "link").is_symlink() and not any((tmp_path / "big").iterdir())

def test_out_folder_with_other_files_is_refused_and_kept(tiny_set: list[Path], augmented: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep")
    with pytest.raises(RlcscError, match=r"mine holds files that are not augment output \(e.g. notes.txt\)"):
        augment(tiny_set, out, ONE_VARIANT, jobs=1)
    with pytest.raises(RlcscError, match=r"mine holds files that are not patch output \(e.g. notes.txt\)"):
        make_patches(augmented, out, PatchParams(chunk=1), jobs=1)
    with pytest.raises(RlcscError, match="holds files that are not patch output"):
        make_patches(augmented, tmp_path, PatchParams(chunk=1), jobs=1)  # holds raw/ and aug/
    assert (out / "notes.txt").read_text() == "keep" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert (tmp_path / "raw").is_dir() and (augmented / "images.u8").is_file()
    # a previous output of the same stage is replaced, as DVC reruns need
    augment(tiny_set, augmented, ONE_VARIANT, jobs=1)
    make_patches(augmented, out.with_name("p"), PatchParams(chunk=1), jobs=1)
    assert make_patches(augmented, out.with_name("p"), PatchParams(chunk=1), jobs=1)["pairs"] > 0


TEST_PROCESS = os.getpid()


def _killed(task: tuple) -> None:
    """A patch worker that the system kills (as it does one out of memory)."""
    if os.getpid() != TEST_PROCESS:  # a worker, never the tests' own process
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture
def forked() -> Iterator[None]:
    """Pool workers started by fork, so that they run what the test patched (those of a fork server,
    Python 3.14's default on Linux, or of spawn import the code afresh)."""
    method = multiprocessing.get_start_method()
    multiprocessing.set_start_method("fork", force=True)
    yield
    multiprocessing.set_start_method(method, force=True)


def _stored_labels_match(augmented: Path, patches: Path) -> bool:
    """Whether every stored label is its patch of the images now in `augmented` (read without a map)."""
    index = load_augmented(augmented)
    blob = np.fromfile(augmented / "images.u8", np.uint8)
    labels, origin = np.load(patches / "labels.npy"), np.load(patches / "origin.npy")
    for label, (image, scale, row, col) in zip(labels, origin.tolist()):
        offset, h, w = index.loc[image, ["offset", "height", "width"]]
        y = modcrop(blob[offset : offset + h * w].reshape(h, w), scale)
        if not np.array_equal(label, y[row : row + 33, col : col + 33]):
            return False
    return True


def test_patches_of_a_re_augmented_folder_come_from_its_new_images(
        tiny_set: list[Path], augmented: Path, tmp_path: Path, forked: None) -> None:
    """A folder that `augment` replaced is read anew by a later `make_patches` in the same process, and by
    the workers forked from it, whose pixels are the same size as before but not the same."""
    make_patches(augmented, tmp_path / "before", PatchParams(chunk=1), jobs=1)
    for path in tiny_set:
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
    augment(tiny_set, augmented, ONE_VARIANT, jobs=1)
    for jobs in (1, 2):
        make_patches(augmented, tmp_path / f"after{jobs}", PatchParams(chunk=1), jobs=jobs)
        assert _stored_labels_match(augmented, tmp_path / f"after{jobs}"), f"jobs={jobs}"
    assert not _stored_labels_match(augmented, tmp_path / "before")


@pytest.mark.parametrize(("after", "jobs"), [("load_augmented", 1), ("check_out", 1), ("check_out", 2)])
def test_a_folder_augment_replaces_while_patch_reads_it_is_one_line_and_no_patch_set(
        tiny_set: list[Path], augmented: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture, after: str, jobs: int) -> None:
    """An `rlcsc augment` that replaces the folder while `patch` checks it, or after (other images at other
    offsets), ends the patch run with one line, not pairs cut from the new images at the old images' offsets, and
    writes nothing."""
    from rlcsc.cli import main
    from rlcsc.data import patches

    step = getattr(patches, after)

    def replaced_meanwhile(*args: object) -> object:
        done = step(*args)
        augment(tiny_set, augmented, AugmentParams(flips=("none",), rotations=(0, 90), factors=(1.0,)), jobs=1)
        return done

    monkeypatch.setattr(patches, after, replaced_meanwhile)
    (tmp_path / "params.yaml").write_text("patch: {chunk: 1}\n")
    out = tmp_path / "patches"
    assert main(["patch", "--params", str(tmp_path / "params.yaml"), "--augmented", str(augmented), "--out", str(out),
                 "--jobs", str(jobs)]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rlcsc patch: error: {augmented} was replaced while patch read it (by an `rlcsc augment`?): "
        "run patch again once it has ended")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["aug", "params.yaml", "raw"]


def test_a_disk_without_room_or_a_dead_worker_is_one_line_and_keeps_the_patch_set(
        augmented: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
        forked: None) -> None:
    """The patch set's space is taken before any work (else a full disk kills the worker that writes into
    the memory map); a worker killed anyway (out of memory) is one line too. The old patch set stays."""
    from rlcsc.cli import main
    from rlcsc.data import patches

    out = tmp_path / "patches"
    make_patches(augmented, out, PatchParams(chunk=1), jobs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "params.yaml").write_text("patch: {chunk: 1}\n")
    argv = ["patch", "--params", str(tmp_path / "params.yaml"), "--augmented", str(augmented), "--out", str(out),
            "--jobs", "2"]

    def full(fd: int, offset: int, size: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    assert main(argv) == 1
    need = sum(len(data) for name, data in before.items() if name in ("labels.npy", "inputs.npy", "origin.npy"))
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"rlcsc patch: error: no room for the patch set {out}: it needs {need / 1e9:.2f} GB (No space left on device)")
    monkeypatch.undo()
    monkeypatch.setattr(patches, "_write_pairs", _killed)
    assert main(argv) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "rlcsc patch: error: a worker process ended abruptly (the system may have run out of memory and killed it)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug", "params.yaml", "patches", "raw"]


def _rewrite_index(folder: Path, edit) -> None:
    lines = (folder / "index.csv").read_text().splitlines()
    (folder / "index.csv").write_text("\n".join(edit(lines)) + "\n")


@pytest.mark.parametrize(
    ("corrupt", "culprit"),
    [
        (lambda f: (f / "images.u8").write_bytes((f / "images.u8").read_bytes()[:-100]), "images.u8"),
        (lambda f: (f / "index.csv").write_text(""), "index.csv"),
        (lambda f: _rewrite_index(f, lambda ls: [*ls, "T91,a.png,none,0,1.0,3,4,5,6,7"]), "index.csv"),
        (lambda f: _rewrite_index(f, lambda ls: [ls[0].replace("height", "h"), *ls[1:]]), "index.csv"),
        (lambda f: _rewrite_index(f, lambda ls: [ls[0], ls[1].rsplit(",", 1)[0] + ",x", *ls[2:]]), "index.csv"),
        (lambda f: _rewrite_index(f, lambda ls: ls[:-1]), "images.u8"),
        (lambda f: _rewrite_index(f, lambda ls: [ls[0], *ls[:0:-1]]), "index.csv"),
    ],
    ids=["truncated-blob", "empty-index", "extra-field", "renamed-column", "text-offset", "missing-row",
         "shuffled-offsets"],
)
def test_corrupt_augmented_folder_is_named_before_work(augmented: Path, tmp_path: Path, corrupt, culprit: str) -> None:
    corrupt(augmented)
    with pytest.raises(RlcscError,
                       match=rf"^corrupt {re.escape(str(augmented / culprit))}: .*rerun `rlcsc augment`") as err:
        make_patches(augmented, tmp_path / "patches", PatchParams(chunk=1), jobs=2)
    assert "\n" not in str(err.value) and not (tmp_path / "patches").exists()


@pytest.mark.parametrize(
    ("corrupt", "culprit"),
    [
        (lambda f: (f / "labels.npy").write_bytes((f / "labels.npy").read_bytes()[:-33]), "labels.npy"),
        (lambda f: (f / "inputs.npy").write_bytes((f / "inputs.npy").read_bytes()[:60]), "inputs.npy"),
        (lambda f: (f / "keep.npy").write_bytes(b"junk junk junk"), "keep.npy"),
        (lambda f: (f / "keep.npy").write_bytes(b""), "keep.npy"),
        (lambda f: np.save(f / "keep.npy", np.array([0, None]), allow_pickle=True), "keep.npy"),
        (lambda f: np.save(f / "keep.npy", np.array([0, 10**6])), ""),
        (lambda f: np.save(f / "inputs.npy", np.zeros((1, 33, 33), np.float32)), ""),
    ],
    ids=["truncated-labels", "truncated-header", "junk-keep", "empty-keep", "pickled-keep", "keep-out-of-range",
         "short-inputs"],
)
def test_corrupt_patch_folder_is_named_on_open(augmented: Path, tmp_path: Path, corrupt, culprit: str) -> None:
    folder = tmp_path / "patches"
    make_patches(augmented, folder, PatchParams(chunk=1), jobs=1)
    corrupt(folder)
    where = folder / culprit if culprit else folder
    with pytest.raises(RlcscError,
                       match=rf"^corrupt patch (file|set in) {re.escape(str(where))}: .*rerun `rlcsc patch`") as err:
        PatchSet.open(folder)
    assert "\n" not in str(err.value)


def workers_of(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux's /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(parent) == pid and state != "Z":
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Whether any thread of process `pid` lives. Its first thread shows as a zombie as soon as it has ended,
    while the others may still be ending, holding the process's open files (and so its locks) until the last
    has."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except (OSError, IndexError):
            continue  # ended meanwhile
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the processes from /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_an_ended_augment_leaves_no_worker_and_no_temporary(sig: int, mirror: Path, tmp_path: Path) -> None:
    """SIGTERM ends it as Ctrl-C does; after kill -9 its workers end too (they watch their parent) and the next
    writer of the folder removes its temporary."""
    (tmp_path / "params.yaml").write_text("augment: {}\n")  # the whole protocol: minutes of work
    out = tmp_path / "aug"
    proc = subprocess.Popen([sys.executable, "-m", "rlcsc.cli", "augment", "--params", str(tmp_path / "params.yaml"),
                             "--raw", str(mirror), "--out", str(out), "--jobs", "2"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (len(workers_of(proc.pid)) == 2 and list(tmp_path.glob(".aug.*.tmp"))) and time.time() < deadline:
        time.sleep(0.1)
    workers = workers_of(proc.pid)
    assert len(workers) == 2, "the workers did not start"
    time.sleep(1)  # at work
    proc.send_signal(sig)
    assert proc.wait(timeout=20) == (-sig if sig == signal.SIGKILL else 130)  # not after the queued tasks (minutes)
    deadline = time.time() + 20
    while [pid for pid in workers if running(pid)] and time.time() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if running(pid)]
    if sig == signal.SIGTERM:
        assert proc.stderr.read().strip().splitlines()[-1] == "rlcsc augment: interrupted"
    else:
        assert [p.name for p in tmp_path.glob(".aug*")] != []  # its temporary and its lock
        with writing(out):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_default_protocol_is_section_5_2() -> None:
    """Flips (vertical, horizontal, none), rotations by 90, 180 and 270, downsizing by 0.7, 0.5 and 0.4; 33 x 33
    patches at stride 33 for x2, x3 and x4. Variants come flip, then rotation, then factor."""
    aug, patch = AugmentParams(), PatchParams()
    assert set(aug.flips) == {"updown", "leftright", "none"} and set(aug.rotations) == {0, 90, 180, 270}
    assert set(aug.factors) == {1.0, 0.7, 0.5, 0.4} and len(variants(aug)) == 48
    assert (patch.size, patch.stride, set(patch.scales)) == (33, 33, {2, 3, 4})
    small = AugmentParams(flips=("none",), rotations=(0, 90), factors=(1.0, 0.5))
    assert variants(small) == [Variant("none", 0, 1.0), Variant("none", 0, 0.5), Variant("none", 90, 1.0),
                               Variant("none", 90, 0.5)]


def test_a_batch_is_the_kept_pairs_on_the_unit_scale_with_overshoot_kept(tmp_path: Path) -> None:
    """Training's batches (`rlcsc.train.Batches`, on the host) gather the pairs `keep` names, in the order asked for,
    as float32 (B, 1, 33, 33); labels are the uint8 Y over 255, inputs the interpolation unclipped (a black-white
    edge overshoots [0, 1] both ways)."""
    import torch

    from rlcsc.train import Batches

    edge = np.zeros((66, 99), np.uint8)
    edge[:, 50:] = 255
    (tmp_path / "raw").mkdir()
    Image.fromarray(edge).save(tmp_path / "raw" / "edge.png")
    augment([tmp_path / "raw" / "edge.png"], tmp_path / "aug", ONE_VARIANT, jobs=1)
    make_patches(tmp_path / "aug", tmp_path / "patches", PatchParams(chunk=1, input_dtype="float32"), jobs=1)
    patches = PatchSet.open(tmp_path / "patches")
    positions = np.array([3, 0, len(patches) - 1])
    x, y = Batches(patches, len(patches), torch.device("cpu"))(positions)
    rows = np.sort(patches.keep)[positions]
    assert x.shape == y.shape == (3, 1, 33, 33) and x.dtype == y.dtype == torch.float32
    np.testing.assert_array_equal(y[:, 0].numpy() * 255, patches.labels[rows])
    np.testing.assert_array_equal(x[:, 0].numpy(), patches.inputs[rows])
    assert patches.inputs.max() > 1 and patches.inputs.min() < 0


def test_every_n_th_training_image_is_kept_from_the_first(mirror: Path) -> None:
    """`every: 12` keeps 25 of the 291 images (T91 then BSD200, in manifest order): the 1st, 13th, 25th, ..."""
    from rlcsc.data.augment import training_files

    files = training_files(mirror, AugmentParams(every=12))
    assert len(files) == 25 and len(training_files(mirror, AugmentParams())) == 291
    # t1, t10, ..., t19, t2, t20
    assert [f.relative_to(mirror).as_posix() for f in files[:2]] == ["T91/t1.bmp", "T91/t20.bmp"]


def test_a_damaged_training_image_is_named_before_any_work(mirror: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    """A BMP has no checksum of its own, so a damaged one still decodes: its SHA-256 against the manifest's is
    what finds it, even when `every` skips it, before augment writes anything."""
    from rlcsc.cli import main

    raw = tmp_path / "raw"
    for name in ("T91", "BSD200"):
        (raw / name).mkdir(parents=True)
        for f in (mirror / name).iterdir():
            (raw / name / f.name).symlink_to(f)
    damaged = raw / "T91" / "t10.bmp"  # the 2nd in manifest order: skipped by every: 12
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.unlink()
    damaged.write_bytes(bytes(data))
    (tmp_path / "params.yaml").write_text("augment: {every: 12}\n")
    out = tmp_path / "aug"
    assert main(["augment", "--params", str(tmp_path / "params.yaml"), "--raw", str(raw), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip() == (f"rlcsc augment: error: corrupt {damaged}: not the file manifest.tsv "
                                               f"pins (its SHA-256 differs), nor an image of its pixels; fetch it "
                                               f"again with `rlcsc download --out {raw}`")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "raw"]


def test_a_training_image_in_another_lossless_form_is_taken_by_its_pixels(mirror: Path, tmp_path: Path) -> None:
    """Re-encoded (other bytes, the same pixels: as a packed copy unpacks) it is the pinned image to the
    augmentation, which reads nothing but its pixels; one pixel changed, it is not."""
    from rlcsc.data.augment import training_files

    raw = tmp_path / "raw"
    for name in ("T91", "BSD200"):
        (raw / name).mkdir(parents=True)
        for f in (mirror / name).iterdir():
            (raw / name / f.name).symlink_to(f)
    (raw / "T91" / "t1.bmp").unlink()
    pixels = read_image(mirror / "T91" / "t1.bmp").copy()
    Image.fromarray(pixels).save(raw / "T91" / "t1.bmp", format="PNG")  # a PNG under the BMP's name
    assert (raw / "T91" / "t1.bmp").read_bytes() != (mirror / "T91" / "t1.bmp").read_bytes()
    assert training_files(raw, AugmentParams(every=12))[0] == raw / "T91" / "t1.bmp"
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(raw / "T91" / "t1.bmp", format="PNG")
    with pytest.raises(RlcscError, match="nor an image of its pixels"):
        training_files(raw, AugmentParams(every=12))
