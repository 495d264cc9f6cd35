"""N-way K-shot episodes of an RGB few-shot set prepared by datasets/<name>/run.sh
(miniImageNet; the layout of datasets/imagesets.py): DATA_DIR/images.npy, uint8
[images, S, S, 3] with each class's images together, classes.txt (name and count
per line) and ../READY (image size, the training images' per-channel mean and std).

images.npy is memory-mapped, never loaded: every process reads the pages its
episodes touch, and the operating system keeps one copy for all of them
(miniImageNet's training split is 0.8 GB). The episode sampler is the shared one
(models/common/episodes.py); normalize chooses what the sources do: "unit" (x / 255,
the MAML authors') or "mean_std" ((x / 255 - mean) / std per channel, the metric
learners' sources). The reader interface: models/common/episodes.py.
"""
import json
import os

import numpy as np

from models.common.episodes import EPISODE_OPTIONS, EpisodeDataset, mode_settings
from models.lib.config import Option

READER_OPTIONS = EPISODE_OPTIONS + [
    Option("imgsize", int, 84, "the prepared image size (datasets/<name>/run.sh decides it)",
           (lambda v: 16 <= v <= 1024, "an integer from 16 to 1024")),
    Option("normalize", str, "unit", "unit: x / 255 (the MAML authors'); mean_std: per-channel mean and std "
           "of the training images (the metric learners' sources)", choices=["unit", "mean_std"]),
]


def read_meta(data_dir, key):
    """READY of the preparation DATA_DIR belongs to (its parent folder)."""
    path = os.path.join(os.path.dirname(os.path.abspath(data_dir)), "READY")
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}: {path} cannot be read ({e}); prepare the data with datasets/<name>/run.sh") \
            from None


def read_classes(data_dir, key):
    """[(class name, image count)] of DATA_DIR/classes.txt."""
    path = os.path.join(data_dir, "classes.txt")
    if not os.path.isdir(data_dir):
        raise ValueError(f"{key}: data directory {data_dir} does not exist; prepare it with datasets/<name>/run.sh")
    try:
        with open(path) as f:
            rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
        return [(name, int(count)) for name, count in rows]
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}: {path} cannot be read ({e}); rerun datasets/<name>/run.sh") from None


def load_classes(data_dir, key, imgsize):
    """One read-only view per class into the memory-mapped images.npy."""
    path = os.path.join(data_dir, "images.npy")
    try:
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise ValueError(f"{key}: {path} cannot be read ({e}); rerun datasets/<name>/run.sh") from None
    classes = read_classes(data_dir, key)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise ValueError(f"{key}: {path} is {images.dtype} {list(images.shape)}, expected uint8 [N, S, S, 3]")
    if images.shape[1:3] != (imgsize, imgsize):
        raise ValueError(f"{key}: {path} holds {images.shape[1]}x{images.shape[2]} images but "
                         f"hyper_parameters.imgsize = {imgsize}")
    if sum(n for _, n in classes) != len(images):
        raise ValueError(f"{key}: {data_dir}/classes.txt counts {sum(n for _, n in classes)} images, "
                         f"images.npy holds {len(images)}; rerun datasets/<name>/run.sh")
    starts = np.cumsum([0] + [n for _, n in classes])
    return [images[a:b] for a, b in zip(starts[:-1], starts[1:])]


def normalizer(config, data_dir, key):
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] as the normalize key says."""
    if config["hyper_parameters"]["normalize"] == "unit":
        return None  # the sampler's default: x / 255
    meta = read_meta(data_dir, key)
    mean = np.asarray(meta["mean"], dtype="float32")
    std = np.asarray(meta["std"], dtype="float32")
    return lambda images: ((images.astype("float32") / 255.0 - mean) / std).transpose([0, 3, 1, 2])


def describe(config):
    hp = config["hyper_parameters"]
    return {"image_shape": [3, hp["imgsize"], hp["imgsize"]]}


def check_data(config, mode):
    """The reader interface's data check; the images stay on disk (memory-mapped)."""
    data_dir, key, n_way, k_query = mode_settings(config, mode)
    classes = read_classes(data_dir, key)
    shots = config["hyper_parameters"]["k_spt"] + k_query
    if len(classes) < n_way:
        raise ValueError(f"{key}: {data_dir} has {len(classes)} classes, fewer than the {n_way} ways of an episode")
    name, fewest = min(classes, key=lambda c: c[1])
    if fewest < shots:
        raise ValueError(f"{key}: class {name} of {data_dir} has {fewest} images, fewer than the {shots} "
                         f"(shots + queries) an episode takes of a class")
    return 0, f"the images of {key} (memory-mapped)"


class RecDataset(EpisodeDataset):
    """Episodes of a prepared RGB split, images float32 [B, 3, S, S]."""

    @classmethod
    def from_config(cls, config, mode):
        if mode not in ("train", "infer"):
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        hp, runner = config["hyper_parameters"], config["runner"]
        data_dir, key, n_way, k_query = mode_settings(config, mode)
        seed, episodes = (runner["seed"], None) if mode == "train" else (runner["infer_seed"], runner["infer_episodes"])
        classes = load_classes(data_dir, key, hp["imgsize"])
        return cls(classes, n_way, hp["k_spt"], k_query, seed, num_episodes=episodes,
                   normalize=normalizer(config, data_dir, key), source=f"data directory {data_dir}")
