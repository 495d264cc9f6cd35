"""Prototypical Networks' model: an encoder (models/common/backbones.py) whose
features are compared with the support centroids; no classifier weights."""
import paddle.nn as nn

from models.common.backbones import backbone_from_config


class ProtoNet(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.encoder = backbone_from_config(config)
