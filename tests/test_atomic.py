"""Atomic writes: a failure leaves the target as it was and no temporary beside it."""

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from rlcsc.atomic import all_atomically, atomically, folder_atomically, text_writer, write_json


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "train.json"
    write_json({"old": 1}, target)

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomically(fail, target)
    assert target.read_text() == '{\n  "old": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"]


@pytest.mark.parametrize("folder", [False, True])
def test_a_temporary_whose_permissions_the_system_refuses_is_removed(folder: bool, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses chmod (vfat, CIFS): the error is raised, and the temporary made for it is gone."""
    def refuse(path: object, mode: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", refuse)
    with pytest.raises(PermissionError):
        if folder:
            with folder_atomically(tmp_path / "patches"):
                pass
        else:
            atomically(lambda tmp: tmp.write_text("x"), tmp_path / "out.txt")
    assert list(tmp_path.iterdir()) == []


def test_a_temporary_is_a_new_name_that_keeps_the_suffix_and_no_other_file_is_touched(tmp_path: Path) -> None:
    mine = {".out.tmp.png": b"mine", ".out.png.part": b"mine too", ".patches.tmp": None}  # the names once used
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data) if data else (tmp_path / name).mkdir()
    (tmp_path / ".patches.tmp" / "notes.txt").write_text("mine")
    seen = []
    atomically(lambda tmp: seen.append(tmp.name) or tmp.write_bytes(b"new"), tmp_path / "out.png")
    with folder_atomically(tmp_path / "patches") as tmp:
        seen.append(tmp.name)
        (tmp / "keep.npy").write_text("new")
    assert seen[0].startswith(".out.") and seen[0].endswith(".tmp.png") and seen[0] not in mine
    assert seen[1].startswith(".patches.") and seen[1] not in mine
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*mine, "out.png", "patches"])
    assert [(tmp_path / n).read_bytes() for n, data in mine.items() if data] == [b"mine", b"mine too"]
    assert (tmp_path / ".patches.tmp" / "notes.txt").read_text() == "mine"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out.png").stat().st_mode) == 0o666 & ~umask  # as a plainly created file
    assert stat.S_IMODE((tmp_path / "patches").stat().st_mode) == 0o777 & ~umask
    with pytest.raises(OSError) as err:
        write_json({}, tmp_path / "missing" / "x.json")
    assert err.value.filename == str(tmp_path / "missing" / "x.json")  # named by the output, not a temporary


def test_a_name_as_long_as_its_lock_allows_has_room_for_its_temporary(tmp_path: Path) -> None:
    longest = os.pathconf(tmp_path, "PC_NAME_MAX") - len("..lock")  # the lock `.<name>.lock` is made first
    write_json({}, tmp_path / ("a" * (longest - len(".json")) + ".json"))
    write_json({}, tmp_path / ("c." + "d" * (longest - 2)))  # a suffix of nearly the whole name
    with folder_atomically(tmp_path / ("b" * longest)) as tmp:
        (tmp / "x.npy").write_text("new")
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [longest] * 3  # no temporary left


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "patches"
    out.mkdir()
    (out / "old.npy").write_text("old")
    with pytest.raises(RuntimeError), folder_atomically(out) as tmp:
        (tmp / "new.npy").write_text("new")
        raise RuntimeError("worker died")
    assert [p.name for p in out.iterdir()] == ["old.npy"] and sorted(p.name for p in tmp_path.iterdir()) == ["patches"]
    with folder_atomically(out) as tmp:
        (tmp / "new.npy").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.npy"] and sorted(p.name for p in tmp_path.iterdir()) == ["patches"]


def test_an_interrupt_between_the_renames_restores_the_old_folder(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or SIGTERM, which the command turns into the same) arriving just after the old folder was moved
    aside, before the new one took its place: the old one is put back."""
    out = tmp_path / "patches"
    out.mkdir()
    (out / "old.npy").write_text("old")
    rename = os.replace

    def interrupted_after_first(src: Path, dst: Path) -> None:
        rename(src, dst)
        monkeypatch.setattr(os, "replace", rename)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), folder_atomically(out) as tmp:
        (tmp / "new.npy").write_text("new")
        monkeypatch.setattr(os, "replace", interrupted_after_first)
    assert [p.name for p in out.iterdir()] == ["old.npy"] and sorted(p.name for p in tmp_path.iterdir()) == ["patches"]


@pytest.mark.parametrize("named", [True, False], ids=["naming the temporary", "naming no file"])
def test_a_full_disk_while_writing_is_named_by_the_output(tmp_path: Path, named: bool) -> None:
    """The system's refusal during the write (ENOSPC) names the output the user asked for, never the hidden
    temporary, which is gone with the old file kept."""
    target = tmp_path / "train.json"
    write_json({"old": 1}, target)

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), *([str(tmp)] if named else []))

    with pytest.raises(OSError) as err:
        atomically(full, target)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.json"] and json.loads(target.read_text()) == {"old": 1}


def test_files_written_together_are_all_new_or_all_old(tmp_path: Path) -> None:
    """A full disk while the last of three files is written leaves all three as they were (none renamed yet), names
    that file, and leaves no temporary; without a failure all three are new."""
    paths = [tmp_path / name for name in ("metrics.json", "evaluation.json", "per_image.csv")]
    for path in paths:
        path.write_text("old")

    def full(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    with pytest.raises(OSError) as err:
        all_atomically({paths[0]: text_writer("new"), paths[1]: text_writer("new"), paths[2]: full})
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(paths[2]))
    assert [p.read_text() for p in paths] == ["old"] * 3 and sorted(tmp_path.iterdir()) == sorted(paths)
    all_atomically({path: text_writer("new") for path in paths})
    assert [p.read_text() for p in paths] == ["new"] * 3 and sorted(tmp_path.iterdir()) == sorted(paths)


def test_a_file_is_on_the_disk_before_it_is_renamed_and_its_name_after(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each temporary is synced before any rename, and the folder once the names are in place (a power cut
    then leaves the old files or the new ones, whole)."""
    events = []
    sync, replace = os.fsync, os.replace

    def synced(fd: int) -> None:
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        sync(fd)

    def renamed(src: str, dst: str) -> None:
        events.append(("rename", str(src)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", synced)
    monkeypatch.setattr(os, "replace", renamed)
    all_atomically({tmp_path / "a.json": text_writer("a"), tmp_path / "b.csv": text_writer("b")})
    temporaries = [path for kind, path in events if kind == "rename"]
    assert len(temporaries) == 2
    assert events == [*(("sync", t) for t in temporaries), *(("rename", t) for t in temporaries),
                      ("sync", str(tmp_path))]
