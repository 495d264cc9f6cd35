"""MAML's episode reader: N-way K-shot episodes of Omniglot characters, the
reader MAML's configs name (and the other learners' on Omniglot). The
characters come from models/common/omniglot.py (decoded once, kept as uint8);
sampling an episode only indexes those arrays (models/common/episodes.py).
"""
from models.common.episodes import EPISODE_OPTIONS, EpisodeDataset, ways
from models.common.omniglot import IMAGE_OPTIONS, OmniglotCharacters, check_folder
from models.lib.config import Option

READER_OPTIONS = EPISODE_OPTIONS + IMAGE_OPTIONS + [
    Option("task_rotation", bool, False, "task augmentation in meta-training: every image of an episode "
           "turned by one random multiple of 90 degrees"),
]


def check_data(config, mode):
    """The reader interface's data check (models/common/episodes.py)."""
    hp, runner = config["hyper_parameters"], config["runner"]
    if mode == "train":
        return check_folder(runner["train_data_dir"], "runner.train_data_dir", hp["n_way"],
                            hp["k_spt"] + hp["k_query"], hp["imgsize"], hp["rotations"])
    key = "runner.val_data_dir" if config.get("validation") else "runner.test_data_dir"
    return check_folder(runner["test_data_dir"], key, ways(config, "infer"),
                        hp["k_spt"] + hp["k_query_test"], hp["imgsize"], hp["rotations"])


def describe(config):
    """What a model needs to know of the data to build itself."""
    hp = config["hyper_parameters"]
    return {"image_shape": [1, hp["imgsize"], hp["imgsize"]]}


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
            n_way = ways(config, "infer")
        else:
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        return cls(data_dir, n_way, hp["k_spt"], k_query, hp["imgsize"], seed, num_episodes=num_episodes,
                   rotations=hp["rotations"], task_rotation=task_rotation, resize=hp["resize"])
