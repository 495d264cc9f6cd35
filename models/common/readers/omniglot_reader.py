"""N-way K-shot episodes from a folder of Omniglot characters.

Two layouts are read:
  - DATA_DIR/<alphabet>/<character>/*.png (the bundled sample data): every
    character folder is one class; each image is decoded once, when the dataset
    is built (OpenCV, grayscale, resized to imgsize x imgsize with area
    interpolation, inverted so that strokes are 1 and background 0);
  - DATA_DIR/images.npy, uint8 [characters, drawings, S, S] with strokes = 255,
    and characters.txt (what datasets/omniglot/run.sh prepares): no decoding at all.
Images are kept as uint8; sampling an episode only indexes those arrays.
`rotations` (degrees, multiples of 90) turn every character into one class per
angle, as in the MAML paper's Omniglot protocol. The reader interface: models/common/episodes.py.
"""
import os
import sys

import numpy as np

# The shared code: models.common from the project root, utils from tools/ (PaddleRec's convention).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path[:0] = [p for p in (ROOT, os.path.join(ROOT, "tools")) if p not in sys.path]
from models.common.episodes import EPISODE_OPTIONS, EpisodeDataset  # noqa: E402
from utils.config import Option  # noqa: E402

IMAGE_SUFFIXES = (".png",)
PREPARED = {"area": "images.npy", "nearest": "images_nearest.npy"}


def interpolation(resize):
    import cv2

    return {"area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST_EXACT}[resize]


def _list_dirs(path):
    return sorted(e for e in os.listdir(path) if os.path.isdir(os.path.join(path, e)))


def find_character_dirs(data_dir):
    """Sorted list of DATA_DIR/<alphabet>/<character> folders; raises ValueError if none."""
    if not os.path.isdir(data_dir):
        raise ValueError(f"data directory {data_dir} does not exist or is not a directory")
    character_dirs = [os.path.join(data_dir, alphabet, character)
                      for alphabet in _list_dirs(data_dir)
                      for character in _list_dirs(os.path.join(data_dir, alphabet))]
    if not character_dirs:
        raise ValueError(f"data directory {data_dir} holds no <alphabet>/<character>/ folders")
    return character_dirs


def load_character(character_dir, imgsize, resize="area"):
    """All images of one character as uint8 [num_images, imgsize, imgsize], strokes = 255."""
    import cv2  # imported here so that merely importing the reader needs no OpenCV

    names = sorted(n for n in os.listdir(character_dir) if not n.startswith("."))
    images = []
    for name in names:
        path = os.path.join(character_dir, name)
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path} is not a .png image (the data folders must hold only images)")
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"{path} cannot be read as an image")
        image = cv2.resize(image, (imgsize, imgsize), interpolation=interpolation(resize))
        images.append(255 - image)
    if not images:
        raise ValueError(f"{character_dir} holds no images")
    return np.stack(images)


def load_prepared(data_dir, imgsize, resize="area"):
    """Characters of a prepared folder (images.npy or images_nearest.npy): list of
    uint8 [drawings, imgsize, imgsize]. Another imgsize is resized from the 28 x 28 array."""
    path = os.path.join(data_dir, PREPARED[resize])
    try:
        array = np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); rerun datasets/omniglot/run.sh") from None
    if array.ndim != 4 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 [characters, drawings, H, W], found "
                         f"{array.dtype} {list(array.shape)}")
    if array.shape[2:] != (imgsize, imgsize):
        import cv2

        array = np.stack([[cv2.resize(im, (imgsize, imgsize), interpolation=interpolation(resize))
                           for im in character] for character in array])
    return list(array)


def images_per_character(data_dir):
    """{character name: number of images} of DATA_DIR without decoding any image."""
    path = os.path.join(data_dir, "images.npy")
    if os.path.isfile(path):
        try:
            shape = np.load(path, mmap_mode="r").shape
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} cannot be read ({e}); rerun datasets/omniglot/run.sh") from None
        return {f"{data_dir} character {i}": shape[1] for i in range(shape[0])}
    return {d: sum(1 for n in os.listdir(d) if not n.startswith(".")) for d in find_character_dirs(data_dir)}


def count_classes(data_dir, rotations):
    """Classes (characters x rotations) in DATA_DIR without decoding any image."""
    return len(images_per_character(data_dir)) * len(rotations)


def check_folder(data_dir, key, n_way, min_images, imgsize, rotations):
    """Check, without decoding, that DATA_DIR (the value of config key KEY) has
    N_WAY classes of MIN_IMAGES images; returns (bytes, what) of its decoded images."""
    try:
        counts = images_per_character(data_dir)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None
    classes = len(counts) * len(rotations)
    if classes < n_way:
        raise ValueError(f"{key}: {data_dir} has {classes} classes ({len(counts)} characters x "
                         f"{len(rotations)} rotations), fewer than the {n_way} ways of an episode")
    name, fewest = min(counts.items(), key=lambda item: item[1])
    if fewest < min_images:
        raise ValueError(f"{key}: {name} has {fewest} images, fewer than the {min_images} "
                         f"(shots + queries) an episode takes of a class")
    images = sum(counts.values()) * len(rotations)
    return images * imgsize * imgsize, (f"the decoded images of {key} ({images} at hyper_parameters.imgsize = "
                                        f"{imgsize})")


def check_data(config, mode):
    """The reader interface's data check (models/common/episodes.py)."""
    hp, runner = config["hyper_parameters"], config["runner"]
    if mode == "train":
        return check_folder(runner["train_data_dir"], "runner.train_data_dir", hp["n_way"],
                            hp["k_spt"] + hp["k_query"], hp["imgsize"], hp["rotations"])
    key = "runner.val_data_dir" if config.get("validation") else "runner.test_data_dir"
    return check_folder(runner["test_data_dir"], key, hp["n_way_test"] or hp["n_way"],
                        hp["k_spt"] + hp["k_query_test"], hp["imgsize"], hp["rotations"])


class OmniglotCharacters:
    """Every class of a data folder, decoded once.

    images: list of uint8 [num_images_c, imgsize, imgsize], one entry per class
    (per character and rotation).
    """

    def __init__(self, data_dir, imgsize, min_images, rotations=(0,), resize="area"):
        self.data_dir = data_dir
        if os.path.isfile(os.path.join(data_dir, "images.npy")):
            characters = load_prepared(data_dir, imgsize, resize)
            names = [f"{data_dir} character {i}" for i in range(len(characters))]
        else:
            names = find_character_dirs(data_dir)
            characters = [load_character(d, imgsize, resize) for d in names]
        for name, images in zip(names, characters):
            if len(images) < min_images:
                raise ValueError(f"{name} has {len(images)} images, fewer than "
                                 f"k_spt + k_query = {min_images}")
        self.images = [np.ascontiguousarray(np.rot90(images, angle // 90, axes=(1, 2)))
                       for angle in rotations for images in characters]

    def __len__(self):
        return len(self.images)


READER_OPTIONS = EPISODE_OPTIONS + [
    Option("rotations", list, [0], "each character is one class per angle listed (degrees)",
           (lambda v: len(v) >= 1 and len(set(v)) == len(v) and all(r in (0, 90, 180, 270) and
                                                                   not isinstance(r, bool) for r in v),
            "a list of distinct angles from 0, 90, 180, 270")),
    Option("task_rotation", bool, False, "task augmentation in meta-training: every image of an episode "
           "turned by one random multiple of 90 degrees"),
    Option("imgsize", int, 28, "images are resized to imgsize x imgsize",
           (lambda v: 16 <= v <= 1024, "an integer from 16 to 1024")),
    Option("resize", str, "area", "how drawings are resized to imgsize: area (grey levels at the edges) or "
           "nearest (binary, as the MAML authors' PIL resize of the 1-bit PNGs)", choices=["area", "nearest"]),
]


def describe(config):
    """What a model needs to know of the data to build itself."""
    hp = config["hyper_parameters"]
    return {"image_shape": [1, hp["imgsize"], hp["imgsize"]], "n_way": hp["n_way"],
            "n_way_test": hp["n_way_test"] or hp["n_way"]}


class RecDataset(EpisodeDataset):
    """N-way K-shot episodes of Omniglot characters (see EpisodeDataset), images
    float32 [B, 1, imgsize, imgsize] in [0, 1], strokes 1.

    characters: an OmniglotCharacters already decoded (else decoded from data_dir)."""

    def __init__(self, data_dir, n_way, k_spt, k_query, imgsize, seed, num_episodes=None,
                 characters=None, rotations=(0,), task_rotation=False, resize="area"):
        if characters is None:
            characters = OmniglotCharacters(data_dir, imgsize, k_spt + k_query, rotations, resize)
        self.characters = characters
        super().__init__(characters.images, n_way, k_spt, k_query, seed, num_episodes, task_rotation,
                         source=f"data directory {data_dir}")

    @classmethod
    def from_config(cls, config, mode):
        """The training sampler (mode "train": runner.train_data_dir, runner.seed,
        endless) or the test sampler (mode "infer": runner.test_data_dir,
        runner.infer_seed, runner.infer_episodes episodes per pass)."""
        hp, runner = config["hyper_parameters"], config["runner"]
        n_way = hp["n_way"]
        if mode == "train":
            data_dir, seed, num_episodes = runner["train_data_dir"], runner["seed"], None
            k_query, task_rotation = hp["k_query"], hp["task_rotation"]
        elif mode == "infer":
            data_dir, seed, num_episodes = runner["test_data_dir"], runner["infer_seed"], runner["infer_episodes"]
            k_query, task_rotation = hp["k_query_test"], False
            n_way = hp["n_way_test"] or n_way
        else:
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        return cls(data_dir, n_way, hp["k_spt"], k_query, hp["imgsize"], seed, num_episodes=num_episodes,
                   rotations=hp["rotations"], task_rotation=task_rotation, resize=hp["resize"])
