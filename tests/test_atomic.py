import pytest

from hybrid.atomic import atomic_file, atomic_folder, is_complete


def test_folder_replaces_target_only_when_the_block_ends(tmp_path):
    target = tmp_path / "run" / "checkpoint"
    target.mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with atomic_folder(target, marker="done") as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # nothing moved yet
    assert sorted(p.name for p in target.iterdir()) == [".hybrid-complete", "new.txt"]
    assert is_complete(target)
    assert [p.name for p in target.parent.iterdir()] == ["checkpoint"]  # no temporary folder left


def test_folder_error_keeps_the_old_target(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("crash mid-write")
    assert [p.name for p in target.iterdir()] == ["old.txt"] and not is_complete(target)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint"]


def test_file_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "shard.bin"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_file(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["shard.bin"]
