"""MAML's network: the shared conv-4 (models/common/conv4.py) with a linear
classifier, plus the MAML++ options that change its weights: learned per-layer
per-step inner learning rates and per-step batch-norm weights."""
from models.common.conv4 import Conv4, conv4_description, conv4_from_config

MAMLConvNet = Conv4  # the name the tests and earlier code use


def inner_steps(config):
    """Steps that per-step weights (learned rates, batch norm) are made for."""
    return max(config["hyper_parameters"]["update_step"], 1)


def build_network(config, initial_inner_lr):
    hp = config["hyper_parameters"]
    learned = (initial_inner_lr, inner_steps(config)) if hp["learn_inner_lr"] else None
    return conv4_from_config(config, learned_inner_lr=learned,
                             bn_steps=inner_steps(config) if hp["per_step_bn_weights"] else 0)


def network_description(config):
    """What a checkpoint must match to be loaded into this config's network."""
    hp = config["hyper_parameters"]
    description = conv4_description(config)
    if hp["learn_inner_lr"]:
        description["learned_inner_lr_steps"] = inner_steps(config)
        description["inner_lr_layout"] = "one tensor per weight"  # not one [weights, steps] matrix
    if hp["per_step_bn_weights"]:
        description["bn_steps"] = inner_steps(config)
    return description
