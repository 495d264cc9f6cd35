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
angle, as in the MAML paper's Omniglot protocol.
"""
import os

import numpy as np
import paddle

IMAGE_SUFFIXES = (".png",)


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


def load_character(character_dir, imgsize):
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
        image = cv2.resize(image, (imgsize, imgsize), interpolation=cv2.INTER_AREA)
        images.append(255 - image)
    if not images:
        raise ValueError(f"{character_dir} holds no images")
    return np.stack(images)


def load_prepared(data_dir, imgsize):
    """Characters of a prepared folder (images.npy): list of uint8 [drawings, imgsize, imgsize]."""
    path = os.path.join(data_dir, "images.npy")
    try:
        array = np.load(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); rerun datasets/omniglot/run.sh") from None
    if array.ndim != 4 or array.dtype != np.uint8:
        raise ValueError(f"{path}: expected uint8 [characters, drawings, H, W], found "
                         f"{array.dtype} {list(array.shape)}")
    if array.shape[2:] != (imgsize, imgsize):
        import cv2

        array = np.stack([[cv2.resize(im, (imgsize, imgsize), interpolation=cv2.INTER_AREA)
                           for im in character] for character in array])
    return list(array)


class OmniglotCharacters:
    """Every class of a data folder, decoded once.

    images: list of uint8 [num_images_c, imgsize, imgsize], one entry per class
    (per character and rotation).
    """

    def __init__(self, data_dir, imgsize, min_images, rotations=(0,)):
        self.data_dir = data_dir
        if os.path.isfile(os.path.join(data_dir, "images.npy")):
            characters = load_prepared(data_dir, imgsize)
            names = [f"{data_dir} character {i}" for i in range(len(characters))]
        else:
            names = find_character_dirs(data_dir)
            characters = [load_character(d, imgsize) for d in names]
        for name, images in zip(names, characters):
            if len(images) < min_images:
                raise ValueError(f"{name} has {len(images)} images, fewer than "
                                 f"k_spt + k_query = {min_images}")
        self.images = [np.ascontiguousarray(np.rot90(images, angle // 90, axes=(1, 2)))
                       for angle in rotations for images in characters]

    def __len__(self):
        return len(self.images)


class RecDataset(paddle.io.IterableDataset):
    """Iterable of N-way K-shot episodes.

    Each episode is a tuple of numpy arrays
        support_x float32 [n_way * k_spt, 1, imgsize, imgsize], support_y int64 [n_way * k_spt]
        query_x   float32 [n_way * k_query, 1, imgsize, imgsize], query_y  int64 [n_way * k_query]
    Classes are drawn without replacement; each class's support and query images
    are distinct drawings; label i goes to the i-th class drawn, and the draw
    order is random, so labels are permuted episode by episode. The dataset owns
    its random state (np.random.RandomState(seed)): the same seed gives the same
    episodes, and no global RNG is touched.

    num_episodes: the number of episodes one iteration yields (None: endless).
    task_rotation: turn every image of an episode by one random multiple of 90
    degrees (task augmentation at sampling time; training only).
    """

    def __init__(self, data_dir, n_way, k_spt, k_query, imgsize, seed, num_episodes=None,
                 characters=None, rotations=(0,), task_rotation=False):
        super().__init__()
        self.task_rotation = task_rotation
        self.n_way, self.k_spt, self.k_query = n_way, k_spt, k_query
        self.characters = characters if characters is not None else OmniglotCharacters(data_dir, imgsize, k_spt + k_query,
                                                           rotations)
        if len(self.characters) < n_way:
            raise ValueError(f"data directory {data_dir} has {len(self.characters)} classes, "
                             f"fewer than n_way = {n_way}")
        self.rng = np.random.RandomState(seed)
        self.num_episodes = num_episodes

    @classmethod
    def from_config(cls, config, mode, characters=None):
        """The training sampler (mode "train": runner.train_data_dir, runner.seed,
        endless) or the test sampler (mode "infer": runner.test_data_dir,
        runner.infer_seed, runner.infer_episodes episodes)."""
        hp, runner = config["hyper_parameters"], config["runner"]
        if mode == "train":
            data_dir, seed, num_episodes = runner["train_data_dir"], runner["seed"], None
            k_query, task_rotation = hp["k_query"], hp["task_rotation"]
        elif mode == "infer":
            task_rotation = False
            data_dir, seed, num_episodes = (runner["test_data_dir"], runner["infer_seed"],
                                            runner["infer_episodes"])
            k_query = hp["k_query_test"]
        else:
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        return cls(data_dir, hp["n_way"], hp["k_spt"], k_query, hp["imgsize"], seed,
                   num_episodes=num_episodes, characters=characters, rotations=hp["rotations"],
                   task_rotation=task_rotation)

    def sample_episode(self):
        shots = self.k_spt + self.k_query
        classes = self.rng.choice(len(self.characters), self.n_way, replace=False)
        support, query = [], []
        for images in (self.characters.images[c] for c in classes):
            picks = images[self.rng.choice(len(images), shots, replace=False)]
            support.append(picks[: self.k_spt])
            query.append(picks[self.k_spt:])
        support, query = np.concatenate(support), np.concatenate(query)
        if self.task_rotation:  # the whole task turned by the same multiple of 90 degrees
            turns = self.rng.randint(4)
            support, query = (np.rot90(a, turns, axes=(1, 2)) for a in (support, query))
        labels = np.arange(self.n_way, dtype="int64")
        return (_to_float(support), np.repeat(labels, self.k_spt),
                _to_float(query), np.repeat(labels, self.k_query))

    def __iter__(self):
        count = 0
        while self.num_episodes is None or count < self.num_episodes:
            yield self.sample_episode()
            count += 1

    def __len__(self):
        if self.num_episodes is None:
            raise TypeError("an endless episode stream has no length")
        return self.num_episodes

    def get_state(self):
        """The sampler's random state, for checkpoints."""
        return self.rng.get_state()

    def set_state(self, state):
        self.rng.set_state(state)


def _to_float(images):
    """uint8 [B, H, W] -> float32 [B, 1, H, W] in [0, 1]."""
    return (images.astype("float32") / 255.0)[:, None]
