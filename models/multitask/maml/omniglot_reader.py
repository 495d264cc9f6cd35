"""N-way K-shot episodes from a folder of Omniglot characters.

Layout read: DATA_DIR/<alphabet>/<character>/*.png; every character folder is
one class. Each image is decoded once, when the dataset is built (OpenCV,
grayscale, resized to imgsize x imgsize with area interpolation, inverted so
that strokes are 1 and background 0), and kept as uint8; sampling an episode
only indexes that array.
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


class OmniglotCharacters:
    """Every character of a data folder, decoded once.

    images: list of uint8 [num_images_c, imgsize, imgsize], one entry per class.
    """

    def __init__(self, data_dir, imgsize, min_images):
        self.data_dir = data_dir
        self.character_dirs = find_character_dirs(data_dir)
        self.images = []
        for character_dir in self.character_dirs:
            images = load_character(character_dir, imgsize)
            if len(images) < min_images:
                raise ValueError(f"{character_dir} has {len(images)} images, fewer than "
                                 f"k_spt + k_query = {min_images}")
            self.images.append(images)

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
    """

    def __init__(self, data_dir, n_way, k_spt, k_query, imgsize, seed, num_episodes=None,
                 characters=None):
        super().__init__()
        self.n_way, self.k_spt, self.k_query = n_way, k_spt, k_query
        self.characters = characters or OmniglotCharacters(data_dir, imgsize, k_spt + k_query)
        if len(self.characters) < n_way:
            raise ValueError(f"data directory {data_dir} has {len(self.characters)} characters, "
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
        elif mode == "infer":
            data_dir, seed, num_episodes = (runner["test_data_dir"], runner["infer_seed"],
                                            runner["infer_episodes"])
        else:
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        return cls(data_dir, hp["n_way"], hp["k_spt"], hp["k_query"], hp["imgsize"], seed,
                   num_episodes=num_episodes, characters=characters)

    def sample_episode(self):
        shots = self.k_spt + self.k_query
        classes = self.rng.choice(len(self.characters), self.n_way, replace=False)
        support, query = [], []
        for images in (self.characters.images[c] for c in classes):
            picks = images[self.rng.choice(len(images), shots, replace=False)]
            support.append(picks[: self.k_spt])
            query.append(picks[self.k_spt:])
        labels = np.arange(self.n_way, dtype="int64")
        return (_to_float(np.concatenate(support)), np.repeat(labels, self.k_spt),
                _to_float(np.concatenate(query)), np.repeat(labels, self.k_query))

    def __iter__(self):
        count = 0
        while self.num_episodes is None or count < self.num_episodes:
            yield self.sample_episode()
            count += 1

    def get_state(self):
        """The sampler's random state, for checkpoints."""
        return self.rng.get_state()

    def set_state(self, state):
        self.rng.set_state(state)


def _to_float(images):
    """uint8 [B, H, W] -> float32 [B, 1, H, W] in [0, 1]."""
    return (images.astype("float32") / 255.0)[:, None]
