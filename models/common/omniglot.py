"""Omniglot's data as every learner reads it: the characters of a data folder,
decoded once (models/multitask/maml/omniglot_reader.py makes episodes of them;
Classifier-Baseline batches them; LEO's reader encodes them).

Two layouts are read:
  - DATA_DIR/<alphabet>/<character>/*.png (the bundled sample data): every
    character folder is one class; each image is decoded once, when the dataset
    is built (OpenCV, grayscale, resized to imgsize x imgsize with area
    interpolation, inverted so that strokes are 1 and background 0);
  - DATA_DIR/images.npy, uint8 [characters, drawings, S, S] with strokes = 255,
    and characters.txt (what datasets/omniglot/run.sh prepares): no decoding at all.
Images are kept as uint8. `rotations` (degrees, multiples of 90) turn every
character into one class per angle, as in the MAML paper's Omniglot protocol.
"""
import os

import numpy as np

from models.lib.config import Option

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
            if len(images) and all(image.min() == image.max() for image in images):
                raise ValueError(f"{name}: every image is one flat colour (a broken conversion?); "
                                 f"expected drawings")
        self.images = [np.ascontiguousarray(np.rot90(images, angle // 90, axes=(1, 2)))
                       for angle in rotations for images in characters]

    def __len__(self):
        return len(self.images)


IMAGE_OPTIONS = [  # the hyper_parameters keys of the images, shared by the Omniglot readers
    Option("rotations", list, [0], "each character is one class per angle listed (degrees)",
           (lambda v: len(v) >= 1 and len(set(v)) == len(v) and
            all(r in (0, 90, 180, 270) and not isinstance(r, bool) for r in v),
            "a list of distinct angles from 0, 90, 180, 270")),
    Option("imgsize", int, 28, "images are resized to imgsize x imgsize",
           (lambda v: 16 <= v <= 1024, "an integer from 16 to 1024")),
    Option("resize", str, "area", "how drawings are resized to imgsize: area (grey levels at the edges) or "
           "nearest (binary, as the MAML authors' PIL resize of the 1-bit PNGs)", choices=["area", "nearest"]),
]
