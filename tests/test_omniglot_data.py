"""datasets/omniglot/run.sh against the offline source: correct, idempotent,
atomic when killed, and refusing damaged archives; the fixed paper split."""
import os
import shutil
import signal
import subprocess
import time

import sys

import numpy as np
import pytest

from conftest import MODEL_DIR, ROOT, SHARED_OMNIGLOT, quick_run_overrides, shipped_configs
from models.multitask.maml.omniglot_reader import RecDataset

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

RUN_SH = os.path.join(ROOT, "datasets", "omniglot", "run.sh")
SPLITS = os.path.join(ROOT, "datasets", "omniglot", "splits")
needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_OMNIGLOT),
                                reason="../shared/omniglot (the offline Omniglot source) is absent")


def run_sh(source, out, **popen):
    env = dict(os.environ, OMNIGLOT_SOURCE=str(source), OMNIGLOT_DATA=str(out))
    return subprocess.run(["sh", RUN_SH], env=env, capture_output=True, text=True, timeout=300,
                          cwd="/", **popen)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("omniglot") / "data"
    result = run_sh(SHARED_OMNIGLOT, out)
    assert result.returncode == 0, result.stderr
    return out


@needs_data
def test_prepares_every_character_in_the_paper_and_lake_splits(prepared):
    sizes = {"paper/train": 1100, "paper/val": 100, "paper/test": 423,
             "lake/train": 964, "lake/test": 659}
    for rel, n in sizes.items():
        images = np.load(prepared / rel / "images.npy")
        assert images.shape == (n, 20, 28, 28) and images.dtype == np.uint8
        assert len((prepared / rel / "characters.txt").read_text().split()) == n
    assert (prepared / "READY").is_file()


@needs_data
def test_nearest_arrays_are_the_authors_binary_drawings(prepared):
    """images_nearest.npy holds what the MAML authors' resize gives: PIL's resize of
    the 1-bit PNGs (checked against PIL itself where it is installed)."""
    import zipfile

    nearest = np.load(prepared / "lake" / "train" / "images_nearest.npy")
    area = np.load(prepared / "lake" / "train" / "images.npy")
    assert nearest.shape == area.shape
    assert set(np.unique(nearest)) == {0, 255} and len(np.unique(area)) > 2
    Image = pytest.importorskip("PIL.Image")
    with zipfile.ZipFile(os.path.join(SHARED_OMNIGLOT, "images_background.zip")) as archive:
        alphabet = sorted({n.split("/")[1] for n in archive.namelist() if n.endswith(".png")})[0]
        character = sorted({n.split("/")[2] for n in archive.namelist()
                            if n.endswith(".png") and n.split("/")[1] == alphabet})[0]
        members = sorted(n for n in archive.namelist() if n.endswith(".png")
                         and n.split("/")[1:3] == [alphabet, character])
        for j, member in enumerate(members):
            image = Image.open(archive.open(member))
            authors = np.array(image.resize((28, 28), resample=Image.LANCZOS).convert("L"))
            assert np.array_equal(255 - authors, nearest[0, j]), member  # lake/train is sorted by id


def test_an_older_preparation_is_rebuilt(tmp_path):
    from datasets.omniglot import prepare

    (tmp_path / "READY").write_text('{"sha256": {}}')  # format 1: no images_nearest.npy
    assert not prepare.ready(str(tmp_path))
    (tmp_path / "READY").write_text('{"format": %d, "sha256": {}}' % prepare.FORMAT)
    assert prepare.ready(str(tmp_path))


@needs_data
def test_second_run_is_a_no_op(prepared):
    before = {p: os.stat(p).st_mtime_ns for p in prepared.rglob("*")}
    result = run_sh(SHARED_OMNIGLOT, prepared)
    assert result.returncode == 0 and "nothing to do" in result.stdout
    assert before == {p: os.stat(p).st_mtime_ns for p in prepared.rglob("*")}


@needs_data
def test_killed_run_leaves_nothing_that_looks_complete_and_a_rerun_succeeds(tmp_path, prepared):
    out = tmp_path / "data"
    env = dict(os.environ, OMNIGLOT_SOURCE=SHARED_OMNIGLOT, OMNIGLOT_DATA=str(out))
    proc = subprocess.Popen(["sh", RUN_SH], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not any(p.name.startswith("data.tmp-") for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # midway through copying / decoding
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "READY").exists()
    result = run_sh(SHARED_OMNIGLOT, out)
    assert result.returncode == 0, result.stderr
    for rel in ("paper/train", "paper/test", "lake/test"):
        assert np.array_equal(np.load(out / rel / "images.npy"), np.load(prepared / rel / "images.npy"))
    assert not [p for p in tmp_path.iterdir() if p.name != "data"]  # leftovers cleaned


@needs_data
def test_sigterm_is_one_line_and_leaves_nothing(tmp_path):
    out = tmp_path / "data"
    env = dict(os.environ, OMNIGLOT_SOURCE=SHARED_OMNIGLOT, OMNIGLOT_DATA=str(out))
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "datasets", "omniglot", "prepare.py")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not any(p.name.startswith("data.tmp-") for p in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err == f"interrupted; {out} is as it was (the temporary folder is removed)\n"
    assert list(tmp_path.iterdir()) == []


@needs_data
@pytest.mark.parametrize("damage, message", [
    ("truncate", "is not a valid zip archive"),
    ("checksum", "SHA-256 does not match"),
    ("wrong", "expected 964 characters"),
])
def test_damaged_archives_are_refused(tmp_path, damage, message):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("images_background.zip", "images_evaluation.zip"):
        shutil.copy(os.path.join(SHARED_OMNIGLOT, name), source / name)
    zip_path = source / "images_background.zip"
    if damage == "truncate":
        zip_path.write_bytes(zip_path.read_bytes()[: 1 << 20])
    elif damage == "checksum":
        shutil.copy(os.path.join(SHARED_OMNIGLOT, "SHA256SUMS"), source / "SHA256SUMS")
        zip_path.write_bytes(zip_path.read_bytes() + b"\0")
    else:
        shutil.copy(source / "images_evaluation.zip", zip_path)
    result = run_sh(source, tmp_path / "data")
    assert result.returncode != 0
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["source"]  # no data, no temporary folder


def test_paper_split_is_fixed_disjoint_and_complete():
    split = {s: open(os.path.join(SPLITS, f"paper_{s}.txt")).read().split() for s in ("train", "val", "test")}
    assert [len(split[s]) for s in ("train", "val", "test")] == [1100, 100, 423]
    union = set().union(*split.values())
    assert len(union) == 1623  # disjoint and covering: no test character (in any rotation) is trained on
    assert all(len(c.split("/")) == 2 for c in union)


@needs_data
def test_full_data_reader_yields_valid_rotated_episodes(prepared):
    dataset = RecDataset(str(prepared / "paper" / "train"), 20, 1, 5, 28, seed=0, num_episodes=3,
                         rotations=(0, 90, 180, 270))
    assert len(dataset.characters) == 4400
    for sx, sy, qx, qy in dataset:
        assert sx.shape == (20, 1, 28, 28) and qx.shape == (100, 1, 28, 28)
        assert sorted(set(qy)) == list(range(20))


def test_no_network_and_no_python_are_one_line_errors(tmp_path):
    env = dict(os.environ, OMNIGLOT_URL="http://127.0.0.1:9/", OMNIGLOT_DATA=str(tmp_path / "data"))
    env.pop("OMNIGLOT_SOURCE", None)
    result = subprocess.run(["sh", RUN_SH], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "cannot download" in result.stderr
    assert "OMNIGLOT_SOURCE" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []  # the temporary folder is removed too
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run(["/bin/sh", RUN_SH], env={"PATH": str(empty)}, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0 and "no python3 or python on PATH" in result.stderr


@needs_data
@pytest.mark.parametrize("config", [os.path.relpath(os.path.join(ROOT, p), MODEL_DIR)
                                    for p in shipped_configs("omniglot", "config_bigdata*.yaml")])
def test_every_paper_config_trains_and_infers_on_the_full_data(prepared, tmp_path, config):
    overrides = [f"runner.train_data_dir={prepared / 'paper' / 'train'}",
                 f"runner.test_data_dir={prepared / 'paper' / 'test'}",
                 f"runner.val_data_dir={prepared / 'paper' / 'val'}", "runner.val_episodes=2",
                 f"runner.model_save_path={tmp_path}", f"runner.infer_load_path={tmp_path}",
                 "runner.train_batch_size=2", "runner.train_batches_per_epoch=1", "runner.epochs=1",
                 "runner.infer_episodes=2", "runner.infer_end_epoch=1"]
    args = ["-m", os.path.join(MODEL_DIR, config)] + [a for o in overrides for a in ("-o", o)]
    args += quick_run_overrides(os.path.join(MODEL_DIR, config), classes=4400)
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = subprocess.run([sys.executable, script] + args, cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    assert "epoch 0: 2 test episodes" in result.stdout and (" acc_step1: " in result.stdout or " acc: " in result.stdout)
