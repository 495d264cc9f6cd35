"""N-way K-shot episodes from classes of decoded images: the sampler every
episode reader shares (a dataset's reader only decodes its classes and names
its config keys).

The reader interface the drivers use (tools/trainer.py, tools/infer.py):
    READER_OPTIONS         the hyper_parameters keys the reader owns (models.lib.config.Option)
    describe(config)       {"image_shape": [C, H, W]} (or feature_size, n_classes): what a model needs
                           of the data to build itself; the episode's ways are ways(config, mode)
    check_data(config, mode) -> (bytes, what): before anything is decoded, one-line ValueError
                           naming the key when the data folder of MODE is missing, has fewer
                           classes than the episode's ways or a class fewer images than its
                           shots + queries; else the memory its decoded images take
    RecDataset.from_config(config, mode)
        mode "train": endless episodes from runner.seed; get_state() / set_state() for checkpoints
        mode "infer": runner.infer_episodes test episodes from runner.infer_seed; every pass
                      over the dataset yields the same episodes (one decode, many epochs evaluated)
"""
import numpy as np
import paddle

from models.lib.config import Option, at_least, positive

# The keys of every episode reader (each adds its own: image size, rotations, normalisation ...).
EPISODE_OPTIONS = [
    Option("n_way", int, 5, "classes per task", (at_least(2), "an integer >= 2")),
    Option("k_spt", int, 1, "support images per class (K shots)", (positive, "an integer >= 1")),
    Option("k_query", int, 15, "query images per class in meta-training", (positive, "an integer >= 1")),
    Option("k_query_test", int, 15, "query images per class in test episodes (infer.py)",
           (positive, "an integer >= 1")),
    Option("n_way_test", int, 0, "classes per test episode (0: n_way); Prototypical Networks train with more",
           (lambda v: v == 0 or v >= 2, "0 or an integer >= 2")),
]


def ways(config, mode="train"):
    """Classes per episode: hyper_parameters.n_way in training ("train"), n_way_test
    (0: n_way) in test and validation episodes ("infer")."""
    hp = config["hyper_parameters"]
    return hp["n_way"] if mode == "train" else hp["n_way_test"] or hp["n_way"]


def mode_settings(config, mode):
    """(data folder, its config key, ways, queries per class) of MODE: "train", or
    "infer" (the test folder, or the validation one when config["validation"])."""
    hp, runner = config["hyper_parameters"], config["runner"]
    if mode == "train":
        return runner["train_data_dir"], "runner.train_data_dir", ways(config), hp["k_query"]
    key = "runner.val_data_dir" if config.get("validation") else "runner.test_data_dir"
    return runner["test_data_dir"], key, ways(config, "infer"), hp["k_query_test"]


class EpisodeDataset(paddle.io.IterableDataset):
    """Iterable of episodes (support_x, support_y, query_x, query_y), numpy arrays:
        support_x float32 [n_way * k_spt, C, H, W], support_y int64 [n_way * k_spt]
        query_x   float32 [n_way * k_query, C, H, W], query_y  int64 [n_way * k_query]

    classes: one uint8 array per class, [images, H, W] (grey) or [images, H, W, C].
    Classes are drawn without replacement; each class's support and query images
    are distinct; label i goes to the i-th class drawn, in random order, so labels
    are permuted episode by episode. The dataset owns its random state
    (np.random.RandomState(seed)): the same seed gives the same episodes and no
    global generator is touched.

    num_episodes: episodes per pass (None: endless); a finite dataset restarts
    from its seed at every pass. task_rotation: turn every image of an episode
    by one random multiple of 90 degrees (task augmentation, training only).
    normalize: uint8 images [B, H, W(, C)] -> float32 [B, C, H, W].
    """

    def __init__(self, classes, n_way, k_spt, k_query, seed, num_episodes=None, task_rotation=False,
                 normalize=None, source="the data"):
        super().__init__()
        if len(classes) < n_way:
            raise ValueError(f"{source} has {len(classes)} classes, fewer than n_way = {n_way}")
        self.classes = classes
        self.n_way, self.k_spt, self.k_query = n_way, k_spt, k_query
        self.seed, self.num_episodes, self.task_rotation = seed, num_episodes, task_rotation
        self.normalize = normalize or scale_to_unit
        self.rng = np.random.RandomState(seed)

    def sample_episode(self):
        shots = self.k_spt + self.k_query
        chosen = self.rng.choice(len(self.classes), self.n_way, replace=False)
        support, query = [], []
        for images in (self.classes[c] for c in chosen):
            picks = images[self.rng.choice(len(images), shots, replace=False)]
            support.append(picks[: self.k_spt])
            query.append(picks[self.k_spt:])
        support, query = np.concatenate(support), np.concatenate(query)
        if self.task_rotation:  # the whole task turned by the same multiple of 90 degrees
            turns = self.rng.randint(4)
            support, query = (np.rot90(a, turns, axes=(1, 2)) for a in (support, query))
        labels = np.arange(self.n_way, dtype="int64")
        return (self.normalize(support), np.repeat(labels, self.k_spt),
                self.normalize(query), np.repeat(labels, self.k_query))

    def __iter__(self):
        if self.num_episodes is None:
            while True:
                yield self.sample_episode()
        self.rng = np.random.RandomState(self.seed)
        for _ in range(self.num_episodes):
            yield self.sample_episode()

    def __len__(self):
        if self.num_episodes is None:
            raise TypeError("an endless episode stream has no length")
        return self.num_episodes

    def get_state(self):
        """The sampler's random state, for checkpoints."""
        return self.rng.get_state()

    def set_state(self, state):
        self.rng.set_state(state)


def scale_to_unit(images):
    """uint8 [B, H, W] -> float32 [B, 1, H, W], or [B, H, W, C] -> [B, C, H, W], in [0, 1]."""
    images = images.astype("float32") / 255.0
    return images[:, None] if images.ndim == 3 else images.transpose([0, 3, 1, 2])
