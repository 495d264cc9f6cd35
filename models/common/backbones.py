"""The feature extractors of the metric learners (Prototypical Networks,
Classifier-Baseline, Meta-Baseline) and LEO: `features(x)` maps images
[N, C, H, W] to [N, feature_size], with the module's own weights and ordinary
batch norm (running statistics; train() and eval() matter)."""
from models.common.conv4 import DOWNSAMPLE_STYLES, Conv4
from models.common.resnet12 import WIDTHS, ResNet12
from utils.config import Option, positive

BACKBONE_OPTIONS = [
    Option("backbone", str, "conv4", "feature extractor: conv4 (MAML's network without its classifier), "
           "resnet12 or resnet12_wide (Meta-Baseline's)", choices=["conv4"] + list(WIDTHS)),
    Option("bn_channel", int, 64, "conv4: filters per conv layer", (positive, "an integer >= 1")),
    Option("downsample", str, "maxpool", "conv4: maxpool (stride-1 convs + 2x2 max-pool, ProtoNets' network) "
           "or stride (stride-2 convs + spatial mean)", choices=list(DOWNSAMPLE_STYLES)),
]


class Conv4Features(Conv4):
    """Conv4 without a classifier, with running batch-norm statistics, as a plain feature extractor."""

    def __init__(self, in_channels, hidden_channels, downsample):
        super().__init__(n_way=0, in_channels=in_channels, hidden_channels=hidden_channels,
                         downsample=downsample, running_stats=True)

    def features(self, x, params=None, twice_differentiable=False):
        return super().features(x, params, twice_differentiable)


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
