"""The feature extractors of the metric learners (Prototypical Networks,
Classifier-Baseline, Meta-Baseline) and LEO: `features(x)` maps images
[N, C, H, W] to [N, feature_size], with the module's own weights and ordinary
batch norm (running statistics; train() and eval() matter)."""
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common.resnet12 import WIDTHS, ResNet12
from models.lib.config import Option, positive

DOWNSAMPLE_STYLES = ("stride", "maxpool")

BACKBONE_OPTIONS = [
    Option("backbone", str, "conv4", "feature extractor: conv4 (MAML's network without its classifier), "
           "resnet12 or resnet12_wide (Meta-Baseline's)", choices=["conv4"] + list(WIDTHS)),
    Option("bn_channel", int, 64, "conv4: filters per conv layer", (positive, "an integer >= 1")),
    Option("downsample", str, "maxpool", "conv4: maxpool (stride-1 convs + 2x2 max-pool, ProtoNets' network) "
           "or stride (stride-2 convs + spatial mean)", choices=list(DOWNSAMPLE_STYLES)),
]


class Conv4Features(nn.Layer):
    """Four blocks of 3x3 conv + batch norm (running statistics, PyTorch's momentum
    0.1) + ReLU, then the spatial mean. downsample "maxpool": stride-1 convs and 2x2
    max-pooling (ProtoNets' network); "stride": stride-2 convs with TF's SAME padding.

    The weights are named and initialised as MAML's network (conv{i}_weight,
    conv{i}_bias, bn{i}_weight, bn{i}_bias; Xavier-uniform convolutions), so
    checkpoints of either load by name. The conv bias is kept for that reason;
    the batch norm removes any per-channel constant, so it changes nothing."""

    def __init__(self, in_channels, hidden_channels, downsample):
        super().__init__()
        if downsample not in DOWNSAMPLE_STYLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_STYLES}, got {downsample!r}")
        self.downsample = downsample
        self.bn_epsilon = float(np.float32(1e-5))  # the value Paddle's fused kernel holds
        channels = in_channels
        for i in range(4):
            bound = math.sqrt(6.0 / (channels * 9 + hidden_channels * 9))
            self._add(f"conv{i}_weight", [hidden_channels, channels, 3, 3], nn.initializer.Uniform(-bound, bound))
            self._add(f"conv{i}_bias", [hidden_channels], nn.initializer.Constant(0.0))
            self._add(f"bn{i}_weight", [hidden_channels], nn.initializer.Constant(1.0))
            self._add(f"bn{i}_bias", [hidden_channels], nn.initializer.Constant(0.0))
            channels = hidden_channels
        for i in range(4):
            self.register_buffer(f"bn{i}_running_mean", paddle.zeros([hidden_channels]))
            self.register_buffer(f"bn{i}_running_var", paddle.ones([hidden_channels]))
        self.feature_size = hidden_channels

    def _add(self, name, shape, initializer):
        self.add_parameter(name, self.create_parameter(shape, default_initializer=initializer))

    def features(self, x):
        h = x
        for i in range(4):
            if self.downsample == "stride":
                h = F.conv2d(h, getattr(self, f"conv{i}_weight"), stride=2, padding="SAME")
            else:
                h = F.conv2d(h, getattr(self, f"conv{i}_weight"), stride=1, padding=1)
            shift = getattr(self, f"bn{i}_bias") + 0.0 * getattr(self, f"conv{i}_bias")  # see the class docstring
            h = F.batch_norm(h, getattr(self, f"bn{i}_running_mean"), getattr(self, f"bn{i}_running_var"),
                             getattr(self, f"bn{i}_weight"), shift, training=self.training, momentum=0.9,
                             epsilon=self.bn_epsilon)
            if self.downsample == "maxpool":  # before the activation: it commutes with max
                h = F.max_pool2d(h, 2, 2)
            h = F.relu(h)
        return h.mean(axis=[2, 3])

    def forward(self, x):
        return self.features(x)


def backbone_from_config(config):
    hp, channels = config["hyper_parameters"], config["data"]["image_shape"][0]
    if hp["backbone"] == "conv4":
        return Conv4Features(channels, hp["bn_channel"], hp["downsample"])
    return ResNet12(channels, WIDTHS[hp["backbone"]])


def backbone_description(config):
    """What a checkpoint's backbone must match."""
    hp = config["hyper_parameters"]
    description = {"backbone": hp["backbone"], "in_channels": config["data"]["image_shape"][0]}
    if hp["backbone"] == "conv4":
        description.update(bn_channel=hp["bn_channel"], downsample=hp["downsample"])
    return description
