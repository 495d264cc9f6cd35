"""Classifier-Baseline's model: an encoder (models/common/backbones.py) and a
linear classifier over every training class (the authors' linear-classifier)."""
import paddle.nn as nn

from models.common.backbones import backbone_from_config


class Classifier(nn.Layer):
    def __init__(self, config):
        super().__init__()
        self.encoder = backbone_from_config(config)
        self.classifier = nn.Linear(self.encoder.feature_size, config["data"]["n_classes"])

    def forward(self, x):
        return self.classifier(self.encoder.features(x))
