"""datasets/imagesets.py's install under faults: a second preparation of the same
folder while the first runs, and Ctrl-C in the middle of one."""
import errno
import fcntl
import os
import signal

import numpy as np
import pytest

from datasets import imagesets


def test_a_second_preparation_stops_and_leaves_the_first_ones_work(tmp_path):
    out = tmp_path / "data"
    running = tmp_path / "data.tmp-4242"  # the first preparation's temporary folder, being written
    running.mkdir()
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by the first preparation
        with pytest.raises(imagesets.PrepareError, match=rf"data: another preparation in {tmp_path} is running; "
                                                         r"wait for it to finish"):
            imagesets.install(str(out), lambda work: None)
    finally:
        os.close(folder)
    assert running.is_dir() and not out.exists()
    imagesets.install(str(out), lambda work: open(os.path.join(work, "x"), "w").close())  # the lock is free again
    assert (out / "x").is_file() and not running.exists()  # a killed run's leftover goes once no one holds the lock


@pytest.mark.parametrize("stop,code", [("ctrl-c", 130), ("sigterm", 143)])
def test_ctrl_c_or_sigterm_is_one_line_and_removes_the_temporary_folder(tmp_path, capsys, stop, code):
    out = tmp_path / "data"

    def interrupted(work):
        open(os.path.join(work, "half"), "w").close()
        if stop == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        raise KeyboardInterrupt

    assert imagesets.run("TestSet", str(tmp_path), str(out), "", lambda: None,
                         prepare_into=lambda o, name, build: imagesets.install(o, interrupted)) == code
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert capsys.readouterr().err == f"interrupted; {out} is as it was (the temporary folder is removed)\n"
    assert os.listdir(tmp_path) == []


def test_a_disk_too_small_for_a_split_is_one_line_before_any_image_is_decoded(tmp_path, capsys, monkeypatch):
    """The split's array file is a sparse memmap: its blocks are reserved first, so a
    full disk is one line naming the file, not a SIGBUS half-way through."""
    out, decoded = tmp_path / "data", []

    def disk_full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(imagesets.os, "posix_fallocate", disk_full)

    def build(work):
        imagesets.write_split(os.path.join(work, "train"), [("a", 2)], lambda name: decoded.append(name), 8)

    code = imagesets.run("TestSet", str(tmp_path), str(out), "", lambda: None,
                         prepare_into=lambda o, name, b: imagesets.install(o, build))
    err = capsys.readouterr().err
    assert code == 2 and decoded == [], err
    assert err.startswith("error: ") and err.endswith("No space left on device\n") and len(err.splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_a_class_of_flat_images_is_refused_by_the_preparation(tmp_path, capsys):
    out = tmp_path / "data"

    def build(work):
        imagesets.write_split(os.path.join(work, "train"), [("n01", 2)],
                              lambda name: np.zeros((2, 8, 8, 3), dtype=np.uint8), 8)

    code = imagesets.run("TestSet", str(tmp_path), str(out), "", lambda: None,
                         prepare_into=lambda o, name, b: imagesets.install(o, build))
    err = capsys.readouterr().err
    assert code == 2 and err == "error: class n01: every image is one flat colour; the source looks broken\n"
    assert os.listdir(tmp_path) == []
