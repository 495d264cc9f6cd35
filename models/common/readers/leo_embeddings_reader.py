"""Episodes of the embeddings the LEO authors published (deepmind/leo, README:
storage.googleapis.com/leo-embeddings/embeddings.zip): per split one pickle,
    embeddings/<miniImageNet|tieredImageNet>/<center|multiview>/<train|val|test>_embeddings.pkl
a dict (pickled by Python 2: read with encoding latin1) of
    "embeddings": float32 [images, 640]  (their WRN-28-10 features)
    "keys":       [images] strings "<anything>-<class>-<class>_<image file>"
as their data.py reads it: the class is the key's second field and must be the
image file's prefix; classes keep their first-appearance order. Each
runner.*_data_dir names one such file. The vectors are scaled to unit length
(l2_normalize, as their data provider). Pickles run code when loaded: use files
from a source you trust.
"""
import collections
import os
import pickle

import numpy as np

from models.common.episodes import mode_settings
from models.common.readers.feature_episodes import FEATURE_OPTIONS, FeatureEpisodes
from models.lib.config import Option, positive

READER_OPTIONS = FEATURE_OPTIONS + [
    Option("feature_size", int, 640, "length of the embedding vectors (the authors': 640)",
           (positive, "an integer >= 1")),
]


def describe(config):
    hp = config["hyper_parameters"]
    return {"feature_size": hp["feature_size"]}


def check_data(config, mode):
    path, key, _, _ = mode_settings(config, mode)
    if not os.path.isfile(path):
        raise ValueError(f"{key}: {path} is not a file; it must name one of the LEO authors' "
                         f"<split>_embeddings.pkl (README.md of models/multitask/leo)")
    return os.path.getsize(path), f"the embeddings of {key}"


def load_embeddings(path, key, feature_size):
    """One float32 [images, feature_size] array per class of the pickle PATH."""
    try:
        with open(path, "rb") as f:
            raw = pickle.load(f, encoding="latin1")
        keys, embeddings = raw["keys"], np.asarray(raw["embeddings"])
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{key}: {path} is not a readable LEO embeddings pickle "
                         f"({type(e).__name__}: {e}); expected a dict with 'keys' and 'embeddings'") from None
    if embeddings.ndim != 2 or embeddings.shape[1] != feature_size or len(embeddings) != len(keys):
        raise ValueError(f"{key}: {path} holds embeddings {list(embeddings.shape)} for {len(keys)} keys, "
                         f"expected [{len(keys)}, {feature_size}] (hyper_parameters.feature_size)")
    finite = np.isfinite(embeddings.astype("float64")).all(axis=1)
    if not finite.all():
        raise ValueError(f"{key}: {path}: {int((~finite).sum())} embeddings hold NaN or infinite values "
                         f"(the first: row {int(np.argmin(finite))}); expected finite numbers")
    rows = collections.OrderedDict()
    for i, name in enumerate(keys):
        name = name.decode() if isinstance(name, bytes) else str(name)
        parts = name.split("-")
        if len(parts) != 3 or parts[2].split("_")[0] != parts[1]:
            raise ValueError(f"{key}: {path}: key {name!r} is not '<anything>-<class>-<class>_<image>'")
        rows.setdefault(parts[1], []).append(i)
    return [embeddings[index].astype("float32") for index in rows.values()]


class RecDataset(FeatureEpisodes):
    """Episodes of the authors' embeddings (see feature_episodes.FeatureEpisodes)."""

    @staticmethod
    def load(config, mode):
        path, key, _, _ = mode_settings(config, mode)
        check_data(config, mode)
        return load_embeddings(path, key, config["hyper_parameters"]["feature_size"]), path
