"""Atomic writes: a failure leaves the target as it was and no temporary beside it."""

from pathlib import Path

import pytest

from rlcsc.atomic import atomically, folder_atomically, temporary, write_json


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


def test_the_temporary_keeps_the_suffix_a_writer_may_choose_its_format_by(tmp_path: Path) -> None:
    seen = []
    atomically(lambda tmp: seen.append(tmp.suffix) or tmp.write_text("x"), tmp_path / "table1.ipynb")
    assert seen == [".ipynb"] and temporary(tmp_path / "out.png").name == ".out.tmp.png"


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
