"""cxrlib.files.atomic_write: the one atomic file write (train.py and data.py used to hold one each)."""

import pytest

from cxrlib import files, train


def test_old_import_path_is_the_one_helper():
    assert train.atomic_write is files.atomic_write


def test_writes_through_a_temporary_name_and_makes_the_folder(tmp_path):
    seen = []

    def write(tmp):
        seen.append(tmp)
        tmp.write_bytes(b"abc")

    path = files.atomic_write(tmp_path / "sub" / "x.bin", write)
    assert path.read_bytes() == b"abc"
    assert seen[0].parent == path.parent and seen[0].name.startswith(".x.bin.tmp-")
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        files.atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.txt"]
