"""miniImageNet from both distributions users hold, generated here in their exact
on-disk formats (all 100 classes of the split files, a few tiny images each):
prepare, split counts, one-line errors on broken sources, the memory-mapped
episode reader, and train + infer of every miniImageNet config."""
import csv
import glob
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, quick_run_overrides, shipped_configs
from models.lib.config import read_config_tree

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

RUN_SH = os.path.join(ROOT, "datasets", "miniimagenet", "run.sh")
SPLITS = {s: open(os.path.join(ROOT, "datasets", "miniimagenet", "splits", f"{s}.txt")).read().split()
          for s in ("train", "val", "test")}
PER_CLASS = 8


def run_sh(out, source=None, *extra):
    env = dict(os.environ, MINIIMAGENET_DATA=str(out))
    env.pop("MINIIMAGENET_SOURCE", None)
    if source is not None:
        env["MINIIMAGENET_SOURCE"] = str(source)
    return subprocess.run(["sh", RUN_SH, "--images-per-class", str(PER_CLASS)] + list(extra), env=env,
                          capture_output=True, text=True, timeout=300, cwd="/")


def class_colour(wnid, i):
    """A distinct, checkable colour per class and image."""
    seed = int(wnid[1:]) % 200
    return np.array([seed, i * 20, 255 - seed], dtype=np.uint8)


def make_csv_source(root, size=40):
    """Ravi & Larochelle's layout: images/<wnid><index>.jpg (any size) and the csv files."""
    import cv2

    os.makedirs(root / "images")
    for split, wnids in SPLITS.items():
        with open(root / f"{split}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for wnid in wnids:
                for i in range(PER_CLASS):
                    name = f"{wnid}{i:08d}.jpg"
                    rgb = np.tile(class_colour(wnid, i), (size, size, 1))
                    cv2.imwrite(str(root / "images" / name), rgb[:, :, ::-1])  # OpenCV writes BGR
                    writer.writerow([name, wnid])
    return root


def make_pickle_source(root):
    """learn2learn's caches: {"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [indices]}},
    the classes interleaved so that the indices matter."""
    os.makedirs(root)
    for split, name in (("train", "train"), ("val", "validation"), ("test", "test")):
        wnids = SPLITS[split]
        order = [(w, i) for i in range(PER_CLASS) for w in wnids]
        data = np.stack([np.tile(class_colour(w, i), (84, 84, 1)) for w, i in order])
        class_dict = {w: [k for k, (x, _) in enumerate(order) if x == w] for w in wnids}
        with open(root / f"mini-imagenet-cache-{name}.pkl", "wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f)
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    base = tmp_path_factory.mktemp("miniimagenet")
    result = run_sh(base / "data", make_csv_source(base / "source"))
    assert result.returncode == 0, result.stderr
    return base / "data"


def test_prepares_every_split_from_the_csv_distribution(prepared):
    meta = json.load(open(prepared / "READY"))
    assert meta["imgsize"] == 84
    for split, wnids in SPLITS.items():
        images = np.load(prepared / split / "images.npy", mmap_mode="r")
        assert images.shape == (len(wnids) * PER_CLASS, 84, 84, 3) and images.dtype == np.uint8
        rows = [line.split("\t") for line in open(prepared / split / "classes.txt").read().splitlines()]
        assert [r[0] for r in rows] == wnids and all(int(r[1]) == PER_CLASS for r in rows)
        assert meta["counts"][split] == {"classes": len(wnids), "images": len(wnids) * PER_CLASS}
        first = images[PER_CLASS * 3 + 2]  # class 3, image 2: its colour, RGB order (JPEG within a few levels)
        assert np.abs(first[42, 42].astype(int) - class_colour(wnids[3], 2)).max() <= 3
    assert len(meta["mean"]) == len(meta["std"]) == 3
    again = run_sh(prepared, prepared.parent / "source")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_the_pickle_distribution_gives_the_same_layout(tmp_path):
    result = run_sh(tmp_path / "data", make_pickle_source(tmp_path / "source"))
    assert result.returncode == 0, result.stderr
    images = np.load(tmp_path / "data" / "val" / "images.npy")
    for c, wnid in enumerate(SPLITS["val"]):
        for i in range(PER_CLASS):
            assert np.array_equal(images[c * PER_CLASS + i, 0, 0], class_colour(wnid, i))


def drop_csv_row(source):
    lines = open(source / "test.csv").read().splitlines()
    open(source / "test.csv", "w").write("\n".join(lines[:-1]) + "\n")


def relabel_csv_row(source):
    """A row whose label contradicts its file's name (<wnid><index>.jpg)."""
    lines = open(source / "test.csv").read().splitlines()
    name, label = lines[1].split(",")
    lines[1] = f"{name},{SPLITS['test'][1]}"
    open(source / "test.csv", "w").write("\n".join(lines) + "\n")


def repeat_train_row_in_test(source):
    """The same image in two splits: a test row replaced by a training one."""
    train_row = open(source / "train.csv").read().splitlines()[1]
    lines = open(source / "test.csv").read().splitlines()
    open(source / "test.csv", "w").write("\n".join(lines[:-1] + [train_row]) + "\n")


def share_pickle_index(source):
    """One image index under two classes of the cache."""
    path = source / "mini-imagenet-cache-test.pkl"
    data = pickle.load(open(path, "rb"))
    first, second = list(data["class_dict"])[:2]
    data["class_dict"][second][0] = data["class_dict"][first][0]
    pickle.dump(data, open(path, "wb"))


def truncate_pickle(source):
    path = source / "mini-imagenet-cache-train.pkl"
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])


@pytest.mark.parametrize("make, damage, message", [
    (make_csv_source, drop_csv_row, "has 7 images, expected 8; truncated?"),
    (make_csv_source, lambda s: os.remove(glob.glob(str(s / "images" / "*.jpg"))[0]), "is missing or not a readable"),
    (make_csv_source, lambda s: os.remove(s / "val.csv"), "holds neither distribution"),
    (make_pickle_source, truncate_pickle, "is not a miniImageNet cache"),
    (make_csv_source, relabel_csv_row, "but its name says"),
    (make_csv_source, repeat_train_row_in_test, "is listed before, at train.csv line 2"),
    (make_pickle_source, share_pickle_index, "lists an image under two classes"),
])
def test_broken_sources_are_one_line_and_leave_nothing(tmp_path, make, damage, message):
    source = make(tmp_path / "source")
    damage(source)
    result = run_sh(tmp_path / "data", source)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr
    assert not os.path.exists(tmp_path / "data") and not glob.glob(str(tmp_path / "data.tmp-*"))


def test_no_source_says_what_to_get(tmp_path):
    result = run_sh(tmp_path / "data")
    assert result.returncode == 2 and "set MINIIMAGENET_SOURCE to a folder" in result.stderr


def reader_config(prepared, normalize="unit"):
    return {"runner": {"train_data_dir": str(prepared / "train"), "test_data_dir": str(prepared / "test"),
                       "seed": 3, "infer_seed": 4, "infer_episodes": 5},
            "hyper_parameters": {"n_way": 5, "k_spt": 2, "k_query": 3, "k_query_test": 1, "n_way_test": 0,
                                 "imgsize": 84, "normalize": normalize}}


def test_reader_memory_maps_and_samples_episodes(prepared):
    from models.common.readers import image_classes_reader as reader

    dataset = reader.RecDataset.from_config(reader_config(prepared), "train")
    assert all(isinstance(c.base if c.base is not None else c, np.memmap) or isinstance(c, np.memmap)
               for c in dataset.classes)
    xs, ys, xq, yq = next(iter(dataset))
    assert xs.shape == (10, 3, 84, 84) and xq.shape == (15, 3, 84, 84) and xs.dtype == np.float32
    assert 0.0 <= xs.min() and xs.max() <= 1.0
    for k in range(5):  # the images of label k all come from one class (its colour's first channel)
        reds = np.concatenate([xs[ys == k, 0, 0, 0], xq[yq == k, 0, 0, 0]])
        assert np.ptp(reds) < 3 / 255
    test = list(reader.RecDataset.from_config(reader_config(prepared), "infer"))
    assert len(test) == 5 and all(np.array_equal(a[0], b[0]) for a, b in
                                  zip(test, reader.RecDataset.from_config(reader_config(prepared), "infer")))
    standard = next(iter(reader.RecDataset.from_config(reader_config(prepared, "mean_std"), "train")))[0]
    meta = json.load(open(prepared / "READY"))
    expected = (xs.transpose(0, 2, 3, 1) - np.array(meta["mean"])) / np.array(meta["std"])
    assert np.allclose(standard.transpose(0, 2, 3, 1), expected, atol=1e-5)


MINI_CONFIGS = shipped_configs("images", "config*miniimagenet*.yaml")


@pytest.mark.parametrize("config", MINI_CONFIGS)
def test_every_miniimagenet_config_trains_and_infers(prepared, tmp_path, config):
    small = ["-o", f"runner.train_data_dir={prepared / 'train'}", "-o", f"runner.test_data_dir={prepared / 'test'}",
             "-o", f"runner.val_data_dir={prepared / 'val'}", "-o", "runner.val_episodes=2",
             "-o", "runner.train_batch_size=1", "-o", "runner.train_batches_per_epoch=2", "-o", "runner.epochs=1",
             "-o", "runner.print_interval=1", "-o", "runner.infer_episodes=2", "-o", "runner.infer_start_epoch=0",
             "-o", "runner.infer_end_epoch=1", "-o", "runner.infer_batch_size=1",
             "-o", "hyper_parameters.k_query=2", "-o", "hyper_parameters.k_query_test=2",
             "-o", f"runner.model_save_path={tmp_path / 'ckpt'}", "-o", f"runner.infer_load_path={tmp_path / 'ckpt'}"]
    if "update_step" in read_config_tree(os.path.join(ROOT, config))["hyper_parameters"]:  # the MAML family
        small += ["-o", "hyper_parameters.update_step=1", "-o", "hyper_parameters.update_step_test=1"]
    small += quick_run_overrides(os.path.join(ROOT, config), classes=16)
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = subprocess.run([sys.executable, script, "-m", config] + small, cwd=ROOT, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    assert "epoch 0: 2 test episodes" in result.stdout
