import os

import pytest

from degtrans.atomic import write_atomic


def test_writes_text_and_bytes_readable_by_all(tmp_path):
    path = write_atomic(tmp_path / "sub" / "a.json", '{"x": 1}')
    assert path.read_text() == '{"x": 1}'
    assert write_atomic(path, b"\x00\x01").read_bytes() == b"\x00\x01"
    assert os.stat(path).st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = write_atomic(tmp_path / "manifest.json", "complete")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, "half")
    assert path.read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
