"""Atomic writes under concurrency and the suite's only delete (`remove_own`)."""

from __future__ import annotations

import threading

import pytest

from mcn.files import atomic_dir, atomic_path, remove_own


def _together(work, n: int = 2) -> list[BaseException]:
    """Run `work(i, barrier)` in `n` threads that meet at the barrier; the exceptions raised."""
    barrier, errors = threading.Barrier(n, timeout=10), []

    def target(i):
        try:
            work(i, barrier)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_writers_of_one_file_use_their_own_temporary_files(tmp_path):
    target = tmp_path / "result.json"

    def write(i, barrier):
        with atomic_path(target) as tmp:
            tmp.write_text(f"writer {i} " * 1000)
            barrier.wait()  # both temporary files exist at once

    assert _together(write) == []
    assert target.read_text() in {f"writer {i} " * 1000 for i in range(2)}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_two_writers_of_one_folder_leave_one_complete_copy(tmp_path):
    target = tmp_path / "fold_0"

    def write(i, barrier):
        with atomic_dir(target) as tmp:
            (tmp / "model.keras").write_text(f"model {i}")
            barrier.wait()
            (tmp / "result.json").write_text(f"result {i}")

    assert _together(write) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold_0"]
    model, result = ((target / n).read_text().split()[-1] for n in ("model.keras", "result.json"))
    assert model == result  # both files from the same writer


def test_failed_block_leaves_the_old_folder(tmp_path):
    target = tmp_path / "fold_0"
    target.mkdir()
    (target / "result.json").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "result.json").write_text("new")
            raise RuntimeError
    assert (target / "result.json").read_text() == "old" and sorted(tmp_path.iterdir()) == [target]


def test_remove_own_deletes_named_entries_only_and_never_follows_links(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "a.json").write_text("{}")
    (out / "config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / "cnn").symlink_to(elsewhere)
    removed = remove_own(out, ["config.json", "results", "cnn", "missing"])
    assert sorted(p.name for p in removed) == ["cnn", "config.json", "results"]
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (elsewhere / "precious.txt").is_file()
