"""N-way K-shot episodes of per-example feature vectors (LEO's input): what the
feature readers share. An episode is (support_x float32 [N*K, D], support_y,
query_x [N*Q, D], query_y), sampled by the shared EpisodeDataset."""
import numpy as np

from models.common.episodes import EPISODE_OPTIONS, EpisodeDataset, mode_settings
from models.lib.config import Option

FEATURE_OPTIONS = EPISODE_OPTIONS + [
    Option("l2_normalize", bool, True, "scale every feature vector to unit length (the LEO authors' data "
           "provider: tf.nn.l2_normalize)"),
]


def normalized(classes, l2_normalize):
    """float32 copies of CLASSES ([images, D] each), unit length if asked."""
    out = []
    for features in classes:
        features = np.asarray(features, dtype="float32")
        if l2_normalize:
            features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        out.append(features)
    return out


def check_counts(classes, config, mode, source):
    """One line naming the key when the classes cannot fill an episode of MODE."""
    _, key, n_way, k_query = mode_settings(config, mode)
    shots = config["hyper_parameters"]["k_spt"] + k_query
    if len(classes) < n_way:
        raise ValueError(f"{key}: {source} has {len(classes)} classes, fewer than the {n_way} ways of an episode")
    fewest = min(len(c) for c in classes)
    if fewest < shots:
        raise ValueError(f"{key}: a class of {source} has {fewest} examples, fewer than the {shots} "
                         f"(shots + queries) an episode takes of a class")


class FeatureEpisodes(EpisodeDataset):
    """Episodes of feature vectors: classes float32 [images, D] each."""

    @classmethod
    def from_config(cls, config, mode):
        """The reader interface: the classes of MODE's data (the subclass's load(config, mode)
        -> (classes, source name)) as the training or test sampler."""
        if mode not in ("train", "infer"):
            raise ValueError(f"mode must be train or infer, got {mode!r}")
        classes, source = cls.load(config, mode)
        return cls.build(classes, config, mode, source)

    @classmethod
    def build(cls, classes, config, mode, source):
        hp, runner = config["hyper_parameters"], config["runner"]
        _, _, n_way, k_query = mode_settings(config, mode)
        check_counts(classes, config, mode, source)
        seed, episodes = (runner["seed"], None) if mode == "train" else (runner["infer_seed"], runner["infer_episodes"])
        return cls(normalized(classes, hp["l2_normalize"]), n_way, hp["k_spt"], k_query, seed,
                   num_episodes=episodes, normalize=lambda features: features, source=source)
