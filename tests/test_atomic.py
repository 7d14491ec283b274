"""colorizer.atomic: the one atomic writer (files, by name, folders) and the sweep of its temporaries."""

import errno
import os

import pytest

from colorizer import atomic


def _temporaries_seen(monkeypatch) -> list[str]:
    """Record the name of every temporary a writer renames onto its final name."""
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(os.path.basename(src))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", replace)
    return seen


def test_every_writer_uses_the_one_pattern_and_the_sweep_finds_it(tmp_path, monkeypatch):
    seen = _temporaries_seen(monkeypatch)
    atomic.write_bytes(tmp_path / "a.safetensors", b"x")
    atomic.write_with(tmp_path / "b.png", lambda f: f.write(b"y"))
    with atomic.output_path(tmp_path / "c.onnx") as tmp:
        assert tmp.endswith(".tmp.onnx")  # keeps the suffix for tools that look at it
        open(tmp, "wb").write(b"z")
    with atomic.replace_directory(tmp_path / "d") as tmp:
        open(os.path.join(tmp, "f"), "wb").write(b"w")
    monkeypatch.undo()
    assert len(seen) == 4 and all(atomic.is_temp_name(name) for name in seen), seen
    assert sorted(os.listdir(tmp_path)) == ["a.safetensors", "b.png", "c.onnx", "d"]
    # Each name records its writer's process id: the same names, left behind by a killed writer
    # (a process id that no longer runs), are swept; results and other files are not.
    assert all(f".p{os.getpid()}_" in name for name in seen), seen
    dead = _dead_pid()
    stale = [name.replace(f".p{os.getpid()}_", f".p{dead}_") for name in seen]
    for name in stale[:3]:
        (tmp_path / name).write_bytes(b"half")
    (tmp_path / stale[3]).mkdir()
    (tmp_path / ".hidden").write_text("mine")
    removed = atomic.remove_stale_temp_files(tmp_path)
    assert sorted(os.path.basename(p) for p in removed) == sorted(stale)
    assert sorted(os.listdir(tmp_path)) == [".hidden", "a.safetensors", "b.png", "c.onnx", "d"]


def _dead_pid() -> int:
    """The process id of a child that has exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_sweep_leaves_a_running_writers_temporaries(tmp_path):
    """Two writers into one folder (two exports): the second one's sweep must not delete the first
    one's temporary while it is still being written."""
    with atomic.output_path(tmp_path / "model.onnx") as tmp:
        open(tmp, "wb").write(b"half written")
        assert atomic.remove_stale_temp_files(tmp_path) == []
        assert os.path.exists(tmp)
    assert (tmp_path / "model.onnx").read_bytes() == b"half written"


def test_scratch_folders_of_dead_processes_are_swept(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = _dead_pid()
    (tmp_path / f"colorizer-test-p{dead}_abc123").mkdir()
    (tmp_path / f"colorizer-test-p{dead}_abc123" / "model.onnx").write_bytes(b"x" * 100)
    (tmp_path / "colorizer-test-unrelated").mkdir()
    with atomic.scratch_directory("colorizer-test-") as live:
        assert os.path.basename(live).startswith(f"colorizer-test-p{os.getpid()}_")
        removed = atomic.remove_stale_scratch("colorizer-test-")
        assert removed == [str(tmp_path / f"colorizer-test-p{dead}_abc123")]
        assert os.path.isdir(live)
    assert sorted(os.listdir(tmp_path)) == ["colorizer-test-unrelated"]


def test_commit_new_never_replaces_a_file_that_appeared(tmp_path):
    target = tmp_path / "out.png"
    with pytest.raises(FileExistsError), atomic.output_path(target, commit=atomic.commit_new) as tmp:
        open(tmp, "wb").write(b"ours")
        target.write_bytes(b"theirs, written after the check")
    assert target.read_bytes() == b"theirs, written after the check" and os.listdir(tmp_path) == ["out.png"]
    target.unlink()
    with atomic.output_path(target, commit=atomic.commit_new) as tmp:
        open(tmp, "wb").write(b"ours")
    assert target.read_bytes() == b"ours" and os.listdir(tmp_path) == ["out.png"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "keep.bin"
    atomic.write_bytes(path, b"old")

    def fails(f):
        f.write(b"par")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic.write_with(path, fails)
    with pytest.raises(RuntimeError), atomic.output_path(path) as tmp:
        open(tmp, "wb").write(b"new")
        raise RuntimeError("verification failed")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["keep.bin"]


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_new_files_and_folders_get_a_plain_open_mode(tmp_path, mask):
    old = os.umask(mask)
    try:
        atomic.write_bytes(tmp_path / "f", b"x")
        with atomic.replace_directory(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_replace_directory_swaps_in_the_new_folder_only_when_complete(tmp_path):
    target = tmp_path / "model"
    with atomic.replace_directory(target) as tmp:
        open(os.path.join(tmp, "v1"), "w").write("1")
    with pytest.raises(RuntimeError), atomic.replace_directory(target) as tmp:
        open(os.path.join(tmp, "v2"), "w").write("2")
        raise RuntimeError("half built")
    assert os.listdir(target) == ["v1"] and os.listdir(tmp_path) == ["model"]
    with atomic.replace_directory(target) as tmp:
        open(os.path.join(tmp, "v3"), "w").write("3")
    assert os.listdir(target) == ["v3"] and os.listdir(tmp_path) == ["model"]


@pytest.mark.parametrize("hard_links", [True, False])
def test_exclusive_write_keeps_a_file_that_appeared_while_writing(tmp_path, monkeypatch, hard_links):
    # Issue 22 item 3: the existence check and the naming are one step; a file another process wrote
    # between a caller's check and the write is never replaced (also where link() is not supported).
    if not hard_links:

        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(atomic.os, "link", no_link)
    path = tmp_path / "out.png"

    def racing(f):
        f.write(b"ours")
        path.write_bytes(b"theirs")  # the other writer finishes first

    with pytest.raises(FileExistsError):
        atomic.write_with(path, racing, exclusive=True)
    assert path.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.png"]
    with pytest.raises(FileExistsError):
        atomic.write_bytes(path, b"ours", exclusive=True)
    assert path.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.png"]
    # Where the name is free the file is created whole, with a plain mode, and no temporary is left.
    atomic.write_bytes(tmp_path / "new.png", b"ours", exclusive=True)
    assert (tmp_path / "new.png").read_bytes() == b"ours"
    assert (tmp_path / "new.png").stat().st_mode & 0o777 == 0o666 & ~atomic.current_umask()
    assert sorted(os.listdir(tmp_path)) == ["new.png", "out.png"]
