"""Episodes of Omniglot features: every image of a data folder (the folders and
keys of MAML's omniglot_reader.py, each character x rotation one class) through the
encoder of a pretrained checkpoint (hyper_parameters.encoder_path, e.g. a
Classifier-Baseline run), computed once and cached.

The cache is DATA_DIR/features/<digest>.npy, float32 [images, D] in class order;
the digest is a SHA-256 of the checkpoint's weights (its meta.json hash), the
reader settings that change the images (size, resize, rotations) and the decoded
images themselves, so another checkpoint or other data never reads a stale file.
Written atomically (a temporary file renamed). LEO's input on Omniglot.
"""
import hashlib
import json
import os

import numpy as np

from models.common import pretrained
from models.common.episodes import mode_settings
from models.common import omniglot
from models.common.readers.feature_episodes import FEATURE_OPTIONS, FeatureEpisodes
from models.lib.atomic_file import atomic_write
from models.lib.config import REQUIRED, Option

KEY = "hyper_parameters.encoder_path"
IMAGE_OPTIONS = ("rotations", "imgsize", "resize")
READER_OPTIONS = FEATURE_OPTIONS + omniglot.IMAGE_OPTIONS + [
    Option("encoder_path", str, REQUIRED, "the checkpoint whose encoder computes the features: a run folder "
           "(its newest good epoch) or one epoch's folder, e.g. Classifier-Baseline's", path=True),
]


def image_shape(config):
    size = config["hyper_parameters"]["imgsize"]
    return [1, size, size]


def describe(config):
    """The feature size of the checkpoint's encoder (built, not run)."""
    encoder, _, _ = pretrained.load_encoder(config["hyper_parameters"]["encoder_path"], KEY, image_shape(config))
    return {"feature_size": encoder.feature_size}


def check_data(config, mode):
    """The image folder's check (omniglot_reader) and the checkpoint's; the features are small."""
    data_dir, key, n_way, k_query = mode_settings(config, mode)
    hp = config["hyper_parameters"]
    omniglot.check_folder(data_dir, key, n_way, hp["k_spt"] + k_query, hp["imgsize"], hp["rotations"])
    pretrained.resolve_checkpoint(hp["encoder_path"], KEY)
    return 0, f"the features of {key}"


def compute_features(encoder, classes, batch=2000):
    """float32 [images, D]: every image of CLASSES (uint8 [n, S, S] each, in order) through ENCODER."""
    import paddle

    images = np.concatenate(classes)
    out = []
    with paddle.no_grad():
        for start in range(0, len(images), batch):
            x = paddle.to_tensor(images[start:start + batch, None].astype("float32") / 255.0)
            out.append(encoder.features(x).numpy().astype("float32"))
    return np.concatenate(out)


def cached_features(data_dir, config):
    """One float32 [images, D] array per class of DATA_DIR, from the cache or computed and cached."""
    hp = config["hyper_parameters"]
    characters = omniglot.OmniglotCharacters(data_dir, hp["imgsize"], 1, hp["rotations"], hp["resize"])
    encoder, folder, meta = pretrained.load_encoder(hp["encoder_path"], KEY, image_shape(config))
    digest = hashlib.sha256(json.dumps({"weights": meta["sha256"]["rec.pdparams"],
                                        **{k: hp[k] for k in IMAGE_OPTIONS}}, sort_keys=True).encode())
    for images in characters.images:
        digest.update(np.ascontiguousarray(images).tobytes())
    path = os.path.join(data_dir, "features", digest.hexdigest()[:20] + ".npy")
    counts = [len(images) for images in characters.images]
    features = _load(path, sum(counts), encoder.feature_size)
    if features is None:
        print(f"computing the features of {data_dir} with the encoder of {folder} (cached in {path})")
        features = compute_features(encoder, characters.images)
        _save(path, features)
    return np.split(features, np.cumsum(counts)[:-1])


def _load(path, images, size):
    """The cached features, or None when the cache is missing, empty, cut short
    (a crash while it was written elsewhere), of another shape or not finite:
    they are then computed again."""
    try:
        features = np.load(path)
    except (OSError, ValueError, EOFError):
        return None
    if features.shape != (images, size) or features.dtype != np.float32 or not np.isfinite(features).all():
        return None
    return features


def _save(path, features):
    """Write the cache atomically (written, synced, renamed). A folder that cannot
    be written (read-only data, a full disk) gives one warning: the features are
    used uncached and computed again next time."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_write(path, "wb") as f:  # the temporary file removed also on Ctrl-C
            np.save(f, features)
    except OSError as e:
        print(f"warning: cannot cache the features in {path} ({e.strerror or e}); using them uncached")


class RecDataset(FeatureEpisodes):
    """Episodes of encoder features (see feature_episodes.FeatureEpisodes)."""

    @staticmethod
    def load(config, mode):
        data_dir, _, _, _ = mode_settings(config, mode)
        return cached_features(data_dir, config), f"data directory {data_dir}"
