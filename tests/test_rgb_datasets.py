"""FC100 (from CIFAR-100's python version), CUB-200-2011 (its image folders) and
tieredImageNet (both distributions),
each generated here in its exact on-disk format with few, tiny images: prepare,
split counts, one-line errors on broken sources, episodes through the RGB reader."""
import os
import pickle
import subprocess

import numpy as np
import pytest

from conftest import ROOT, shipped_configs, train_and_infer

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)

DATASETS = os.path.join(ROOT, "datasets")
COARSE = ["aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
          "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
          "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
          "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
          "vehicles_1", "vehicles_2"]  # CIFAR-100's superclasses, in its meta file's order


def run_sh(name, env_prefix, source, out, *extra):
    env = dict(os.environ, **{f"{env_prefix}_SOURCE": str(source), f"{env_prefix}_DATA": str(out)})
    return subprocess.run(["sh", os.path.join(DATASETS, name, "run.sh")] + list(extra), env=env,
                          capture_output=True, text=True, timeout=300, cwd="/")


def make_cifar100(root, per_part=(4, 2)):
    """cifar-100-python/{train,test,meta}: Python pickles with bytes keys, as the real ones.
    Fine class f belongs to superclass f % 20 and has a colour of its own (and a white corner)."""
    folder = root / "cifar-100-python"
    os.makedirs(folder)
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"class_{i:02d}".encode() for i in range(100)],
                     b"coarse_label_names": [n.encode() for n in COARSE]}, f)
    for part, n in zip(("train", "test"), per_part):
        fine = np.repeat(np.arange(100), n)
        planes = np.stack([np.full([32, 32], f * 2) for f in fine])[:, None].repeat(3, axis=1)  # [N, 3, 32, 32]
        planes[:, :, 0, 0] = 255  # one white corner: a drawing, not a flat image (those are refused)
        with open(folder / part, "wb") as f:
            pickle.dump({b"data": planes.reshape([len(fine), -1]).astype(np.uint8), b"fine_labels": fine.tolist(),
                         b"coarse_labels": (fine % 20).tolist()}, f)
    return root


def test_fc100_groups_cifar100_by_superclass(tmp_path):
    result = run_sh("fc100", "FC100", make_cifar100(tmp_path / "src"), tmp_path / "data", "--images-per-class", "6")
    assert result.returncode == 0, result.stderr
    expected = {"train": [1, 2, 3, 4, 5, 6, 9, 10, 15, 17, 18, 19], "val": [8, 11, 13, 16], "test": [0, 7, 12, 14]}
    for split, superclasses in expected.items():
        rows = [line.split("\t") for line in open(tmp_path / "data" / split / "classes.txt").read().splitlines()]
        fine = sorted(int(name[6:]) for name, _ in rows)
        assert fine == sorted(f for f in range(100) if f % 20 in superclasses)  # 60 / 20 / 20 classes
        images = np.load(tmp_path / "data" / split / "images.npy")
        assert images.shape == (len(fine) * 6, 32, 32, 3)
        first = int(rows[0][0][6:])
        assert (images[:6, 1:] == first * 2).all() and (images[:6, 0, 0] == 255).all()  # the class's own, HWC


def test_fc100_refuses_a_truncated_or_missing_source(tmp_path):
    source = make_cifar100(tmp_path / "src")
    path = source / "cifar-100-python" / "train"
    path.write_bytes(path.read_bytes()[:100])
    result = run_sh("fc100", "FC100", source, tmp_path / "data", "--images-per-class", "6")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "is not a CIFAR-100 python file" in result.stderr and not os.path.exists(tmp_path / "data")
    result = run_sh("fc100", "FC100", tmp_path / "nowhere", tmp_path / "data")
    assert result.returncode == 2 and "cifar-100-python" in result.stderr


def make_cub(root, classes=12, per_class=(3, 5)):
    """CUB_200_2011/images/NNN.Name/*.jpg with varying image counts and sizes."""
    import cv2

    images = root / "CUB_200_2011" / "images"
    total = 0
    for c in range(classes):
        folder = images / f"{c + 1:03d}.Bird_{c}"
        os.makedirs(folder)
        for i in range(per_class[c % 2]):
            colour = np.array([c * 20 % 250, i * 10, 0], dtype=np.uint8)  # RGB
            cv2.imwrite(str(folder / f"Bird_{c}_{i:04d}.jpg"), np.tile(colour[::-1], (50 + i, 40, 1)))
            total += 1
    return root, classes, total


def test_cub_splits_by_chen_et_al_rule(tmp_path):
    source, classes, total = make_cub(tmp_path / "src")
    result = run_sh("cub", "CUB", source, tmp_path / "data", "--expect", str(classes), str(total))
    assert result.returncode == 0, result.stderr
    names = sorted(os.listdir(source / "CUB_200_2011" / "images"))
    for split, rule in (("train", lambda i: i % 2 == 0), ("val", lambda i: i % 4 == 1), ("test", lambda i: i % 4 == 3)):
        rows = [line.split("\t") for line in open(tmp_path / "data" / split / "classes.txt").read().splitlines()]
        assert [r[0] for r in rows] == [n for i, n in enumerate(names) if rule(i)]
        images = np.load(tmp_path / "data" / split / "images.npy", mmap_mode="r")
        assert images.shape == (sum(int(r[1]) for r in rows), 84, 84, 3)
    val = np.load(tmp_path / "data" / "val" / "images.npy")
    assert np.abs(val[0, 40, 40].astype(int) - [20, 0, 0]).max() <= 3  # class index 1, image 0, RGB


def test_cub_refuses_an_incomplete_copy(tmp_path):
    source, classes, total = make_cub(tmp_path / "src")
    result = run_sh("cub", "CUB", source, tmp_path / "data", "--expect", str(classes), str(total + 1))
    assert result.returncode == 2 and "expected 12 and" in result.stderr and "incomplete" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not os.path.exists(tmp_path / "data")


@pytest.mark.parametrize("name", ["fc100", "cub"])
def test_the_rgb_reader_draws_episodes_of_both(tmp_path, name):
    from models.common.readers import image_classes_reader as reader

    if name == "fc100":
        assert run_sh("fc100", "FC100", make_cifar100(tmp_path / "src"), tmp_path / "data",
                      "--images-per-class", "6").returncode == 0
        size = 32
    else:
        source, classes, total = make_cub(tmp_path / "src")
        assert run_sh("cub", "CUB", source, tmp_path / "data", "--expect", str(classes), str(total)).returncode == 0
        size = 84
    config = {"runner": {"train_data_dir": str(tmp_path / "data" / "train"), "seed": 1},
              "hyper_parameters": {"n_way": 5, "k_spt": 1, "k_query": 2, "k_query_test": 1, "n_way_test": 0,
                                   "imgsize": size, "normalize": "mean_std"}}
    xs, ys, xq, yq = next(iter(reader.RecDataset.from_config(config, "train")))
    assert xs.shape == (5, 3, size, size) and xq.shape == (10, 3, size, size)
    assert sorted(ys.tolist()) == list(range(5))


TIERED = {"train": (6, [3, 4]), "val": (5, [3]), "test": (5, [4])}  # classes, images per class (cycled)


def make_tiered(root, kind):
    """Each split's <split>_labels.pkl (Python 2 style, latin1) and its images as
    Ren et al.'s PNG list or the npz (BGR) of MetaOptNet / Meta-Baseline."""
    import cv2

    os.makedirs(root)
    expect = []
    for split, (classes, sizes) in TIERED.items():
        labels = [c for c in range(classes) for _ in range(sizes[c % len(sizes)])]
        order = np.random.RandomState(0).permutation(len(labels))  # images of a class not together
        labels = [labels[i] for i in order]
        rgb = np.stack([np.tile(np.array([c * 30, i % 7 * 20, 9], dtype=np.uint8), (84, 84, 1))
                        for i, c in enumerate(labels)])
        with open(root / f"{split}_labels.pkl", "wb") as f:
            pickle.dump({"label_specific": np.array(labels), "label_general": np.zeros(len(labels), int),
                         "label_specific_str": [f"n{c:08d}" for c in range(classes)]}, f, protocol=2)
        if kind == "png":
            with open(root / f"{split}_images_png.pkl", "wb") as f:
                pickle.dump([cv2.imencode(".png", im[:, :, ::-1])[1].tobytes() for im in rgb], f, protocol=2)
        else:
            np.savez(root / f"{split}_images.npz", images=rgb[..., ::-1])
        expect += [str(classes), str(len(labels))]
    return root, expect


@pytest.mark.parametrize("kind", ["png", "npz"])
def test_tieredimagenet_from_either_distribution(tmp_path, kind):
    source, expect = make_tiered(tmp_path / "src", kind)
    result = run_sh("tieredimagenet", "TIEREDIMAGENET", source, tmp_path / "data", "--expect", *expect)
    assert result.returncode == 0, result.stderr
    for split, (classes, _) in TIERED.items():
        labels = pickle.load(open(source / f"{split}_labels.pkl", "rb"))["label_specific"]
        rows = [line.split("\t") for line in open(tmp_path / "data" / split / "classes.txt").read().splitlines()]
        assert [r[0] for r in rows] == [f"n{c:08d}" for c in range(classes)]
        assert [int(r[1]) for r in rows] == [int((labels == c).sum()) for c in range(classes)]
        images = np.load(tmp_path / "data" / split / "images.npy")
        start = 0
        for c, (_, n) in enumerate(rows):
            assert (images[start: start + int(n), :, :, 0] == c * 30).all()  # class c's images, RGB
            start += int(n)


def test_tieredimagenet_refuses_a_wrong_count_or_a_broken_file(tmp_path):
    source, expect = make_tiered(tmp_path / "src", "npz")
    wrong = list(expect)
    wrong[1] = str(int(wrong[1]) + 1)
    result = run_sh("tieredimagenet", "TIEREDIMAGENET", source, tmp_path / "data", "--expect", *wrong)
    assert result.returncode == 2 and "incomplete?" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    (source / "val_images.npz").write_bytes((source / "val_images.npz").read_bytes()[:200])
    result = run_sh("tieredimagenet", "TIEREDIMAGENET", source, tmp_path / "data", "--expect", *expect)
    assert result.returncode == 2 and "is not a tieredImageNet image file" in result.stderr
    assert not os.path.exists(tmp_path / "data")


def prepare_generated(name, root):
    """A small generated copy of NAME prepared into ROOT / "data"; returns that folder."""
    if name == "fc100":
        result = run_sh("fc100", "FC100", make_cifar100(root / "src"), root / "data", "--images-per-class", "6")
    elif name == "cub":
        source, classes, total = make_cub(root / "src", classes=20)
        result = run_sh("cub", "CUB", source, root / "data", "--expect", str(classes), str(total))
    else:
        source, expect = make_tiered(root / "src", "npz")
        result = run_sh("tieredimagenet", "TIEREDIMAGENET", source, root / "data", "--expect", *expect)
    assert result.returncode == 0, result.stderr
    return root / "data"


@pytest.mark.parametrize("config", [c for c in shipped_configs("images") if "miniimagenet" not in c])
def test_every_tiered_cub_fc100_config_trains_and_infers(tmp_path, config):
    """Each MAML config of these sets, a short run on its generated data (miniImageNet's:
    test_miniimagenet.py)."""
    name = next(n for n in ("tieredimagenet", "cub", "fc100") if n in config)
    data = prepare_generated(name, tmp_path)
    small = {"runner.train_data_dir": data / "train", "runner.test_data_dir": data / "test",
             "runner.val_data_dir": data / "val", "runner.val_episodes": 2, "runner.train_batch_size": 1,
             "runner.train_batches_per_epoch": 2, "runner.epochs": 1, "runner.infer_episodes": 2,
             "runner.infer_start_epoch": 0, "runner.infer_end_epoch": 1, "runner.infer_batch_size": 1,
             "hyper_parameters.update_step": 1, "hyper_parameters.update_step_test": 1,
             "hyper_parameters.k_spt": 1, "hyper_parameters.k_query": 1, "hyper_parameters.k_query_test": 1,
             "runner.model_save_path": tmp_path / "ckpt", "runner.infer_load_path": tmp_path / "ckpt"}
    assert "epoch 0: 2 test episodes" in train_and_infer(config, small)
