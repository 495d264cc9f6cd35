"""ResNet-12, the backbone of Meta-Baseline (Chen et al., ICCV 2021) and most
recent few-shot work on the miniImageNet family, as in the Meta-Baseline
authors' code (yinboc/few-shot-meta-baseline, models/resnet12.py): four
residual blocks of three 3x3 convolutions (no bias) with batch norm and
LeakyReLU(0.1), a 1x1 convolution + batch norm on the shortcut, 2x2 max-pooling
after each block, then the spatial mean. Channels 64-128-256-512 (resnet12) or
64-160-320-640 (resnet12-wide). Kaiming-normal (fan_out) convolution weights.
Ordinary batch norm with running statistics: train() and eval() matter.
"""
import paddle
import paddle.nn as nn

WIDTHS = {"resnet12": (64, 128, 256, 512), "resnet12_wide": (64, 160, 320, 640)}


def _conv(in_channels, out_channels, kernel):
    # PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu") with its default slope 0:
    # std = sqrt(2 / fan_out); Paddle's initializer takes the fan as fan_in.
    init = nn.initializer.KaimingNormal(fan_in=out_channels * kernel * kernel, negative_slope=0.0,
                                        nonlinearity="leaky_relu")
    return nn.Conv2D(in_channels, out_channels, kernel, padding=kernel // 2, bias_attr=False,
                     weight_attr=paddle.ParamAttr(initializer=init))


class Block(nn.Layer):
    def __init__(self, in_channels, channels):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, channels, 3), nn.BatchNorm2D(channels)
        self.conv2, self.bn2 = _conv(channels, channels, 3), nn.BatchNorm2D(channels)
        self.conv3, self.bn3 = _conv(channels, channels, 3), nn.BatchNorm2D(channels)
        self.shortcut = nn.Sequential(_conv(in_channels, channels, 1), nn.BatchNorm2D(channels))
        self.relu = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2D(2)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.pool(self.relu(out + self.shortcut(x)))


class ResNet12(nn.Layer):
    """features(x): images [N, C, H, W] -> [N, feature_size]."""

    def __init__(self, in_channels=3, widths=WIDTHS["resnet12"]):
        super().__init__()
        blocks, channels = [], in_channels
        for width in widths:
            blocks.append(Block(channels, width))
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.feature_size = channels

    def features(self, x):
        return self.blocks(x).mean(axis=[2, 3])

    def forward(self, x):
        return self.features(x)
