"""Encoders of other runs' checkpoints: Meta-Baseline starts from a
Classifier-Baseline encoder, LEO's Omniglot features come from one."""
import os

import paddle

from models.common.backbones import backbone_description, backbone_from_config
from models.lib import checkpoint


def resolve_checkpoint(path, key, what="Classifier-Baseline"):
    """(folder, meta) of the checkpoint PATH names: one epoch's folder, or a run
    folder's newest good epoch; ValueError naming the config KEY if there is none."""
    if not os.path.isfile(os.path.join(path, checkpoint.META)):  # a run folder: its newest good epoch
        found = checkpoint.latest_good(path)
        if found is None:
            raise ValueError(f"{key}: no {what} checkpoint in {path}")
        path = found[1]
    try:
        return path, checkpoint.verify(path)
    except checkpoint.CheckpointError as e:
        raise ValueError(f"{key}: {e}") from None


def encoder_weights(path):
    """The `encoder.*` weights (and batch-norm statistics) of checkpoint folder PATH, prefix removed."""
    state = paddle.load(os.path.join(path, "rec.pdparams"))
    return {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}


def check_encoder(path, meta, config, key):
    """The checkpoint's encoder must be the one CONFIG describes."""
    saved = {k: v for k, v in meta.get("network", {}).items() if k in backbone_description(config)}
    if saved != backbone_description(config):
        raise ValueError(f"{key}: {path} holds the encoder {saved}, but the config says {backbone_description(config)}")


def load_encoder(path, key, image_shape):
    """A feature extractor (eval mode) built from the network description in the
    checkpoint PATH names and loaded with its encoder weights; (encoder, folder, meta)."""
    folder, meta = resolve_checkpoint(path, key)
    network = meta.get("network", {})
    if "backbone" not in network:
        raise ValueError(f"{key}: {folder} is not a checkpoint of a model with an encoder (network {network})")
    config = {"hyper_parameters": network, "data": {"image_shape": [network["in_channels"]] + list(image_shape[1:])}}
    encoder = backbone_from_config(config)
    weights = encoder_weights(folder)
    missing = sorted(set(encoder.state_dict()) - set(weights))
    if missing:
        raise ValueError(f"{key}: {folder} lacks encoder.{missing[0]}")
    encoder.set_state_dict(weights)
    encoder.eval()
    return encoder, folder, meta
