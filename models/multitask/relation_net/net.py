"""Relation Networks' model (Sung, Yang, Zhang, Xiang, Torr, Hospedales, CVPR 2018;
the authors' code floodsung/LearningToCompare_FSL): an embedding module that
keeps feature maps, and a relation module that scores a (class, query) pair of
feature maps, concatenated along the channels, in (0, 1).

Embedding: four blocks of 3x3 conv (64 filters) + batch norm + ReLU, the first
two unpadded and followed by 2x2 max-pooling, the last two padded (28 -> 5 x 5,
84 -> 19 x 19). Relation: two blocks of 3x3 conv (64) + batch norm + ReLU + 2x2
max-pooling (padded on Omniglot's 5 x 5 maps, unpadded on miniImageNet's, as the
authors' two scripts), then a linear layer to `relation_hidden` units, ReLU,
and a linear layer to one sigmoid output.

Batch norm normalises with the current batch in training and at test: the
authors' BatchNorm2d(momentum=1) keeps only the last batch's statistics and their
test scripts never switch to eval mode, so each test batch is normalised with
its own statistics, as here."""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common.layers import fused_batch_norm_current_batch


class ConvBlock(nn.Layer):
    def __init__(self, in_channels, out_channels, padding, pool):
        super().__init__()
        self.conv = nn.Conv2D(in_channels, out_channels, 3, padding=padding)
        self.bn_weight = self.create_parameter([out_channels], default_initializer=nn.initializer.Constant(1.0))
        self.bn_bias = self.create_parameter([out_channels], default_initializer=nn.initializer.Constant(0.0))
        self.pool = pool

    def forward(self, x, groups=1):
        return self.after_conv(self.conv(x), groups)

    def after_conv(self, h, groups=1):
        """Batch norm, ReLU and the pooling, on the conv's output H; batch norm's
        statistics over each of GROUPS equal consecutive parts of the batch."""
        h = F.relu(grouped_batch_norm(h, self.bn_weight, self.bn_bias, groups))
        return F.max_pool2d(h, 2, 2) if self.pool else h


def grouped_batch_norm(h, scale, bias, groups):
    """Batch norm on the current batch with separate statistics for each of GROUPS
    consecutive equal parts of h [G * B, C, H, W]: the parts side by side as channels."""
    if groups == 1:
        return fused_batch_norm_current_batch(h, scale, bias)
    n, c, height, width = h.shape
    side_by_side = h.reshape([groups, n // groups, c, height, width]).transpose([1, 0, 2, 3, 4])
    out = fused_batch_norm_current_batch(side_by_side.reshape([n // groups, groups * c, height, width]),
                                         scale.tile([groups]), bias.tile([groups]))
    out = out.reshape([n // groups, groups, c, height, width]).transpose([1, 0, 2, 3, 4])
    return out.reshape([n, c, height, width])


def embedding_size(image_size):
    """The embedding's spatial size: two unpadded convs, each halved by pooling."""
    for _ in range(2):
        image_size = (image_size - 2) // 2
    return image_size


class RelationModule(nn.Layer):
    """Scores [P] in (0, 1) of P pairs of concatenated feature maps [P, 2 * C, S, S]."""

    def __init__(self, channels, size, hidden):
        super().__init__()
        padding = 1 if size < 10 else 0  # the authors: padded on Omniglot (5 x 5), not on miniImageNet (19 x 19)
        self.padding = padding
        self.blocks = nn.LayerList([ConvBlock(2 * channels, channels, padding, True),
                                    ConvBlock(channels, channels, padding, True)])
        for _ in range(2):
            size = (size + 2 * padding - 2) // 2
        self.fc1 = nn.Linear(channels * size * size, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, pairs):
        return self.head(self.blocks[1](self.blocks[0](pairs)))

    def score_all(self, classes, queries, queries_alone=False):
        """Scores [T, Q, N] of every (query, class) pair of T episodes: class maps
        [T, N, C, S, S], query maps [T, Q, C, S, S]. The same function as forward on
        the concatenated pairs, computed faster: a convolution is linear in its input
        channels, so the first conv of a pair is the conv of the class map with the
        weight's first C input channels plus that of the query map with the rest,
        each map convolved once instead of once per pair (10x less work in 5-way
        with 19 queries, where that conv took most of the step). QUERIES_ALONE: batch
        norm's statistics over each query's N pairs only, not over every pair."""
        tasks, n_way, channels = classes.shape[0], classes.shape[1], classes.shape[2]
        queries_per_task = queries.shape[1]
        first, padding = self.blocks[0].conv, self.padding
        of_classes = F.conv2d(classes.reshape([-1] + classes.shape[2:]), first.weight[:, :channels],
                              padding=padding)
        of_queries = F.conv2d(queries.reshape([-1] + queries.shape[2:]), first.weight[:, channels:],
                              first.bias, padding=padding)
        out_shape = of_classes.shape[1:]
        h = (of_classes.reshape([tasks, 1, n_way] + out_shape)
             + of_queries.reshape([tasks, queries_per_task, 1] + out_shape))
        groups = tasks * queries_per_task if queries_alone else 1
        h = self.blocks[1](self.blocks[0].after_conv(h.reshape([-1] + out_shape), groups), groups)
        return self.head(h).reshape([tasks, queries_per_task, n_way])

    def head(self, h):
        """The linear layers on the last block's maps H: scores [P] in (0, 1)."""
        return F.sigmoid(self.fc2(F.relu(self.fc1(h.reshape([h.shape[0], -1]))))).reshape([-1])


INITS = ("authors", "paddle")


def authors_init(layer):
    """The authors' weights_init: conv weights N(0, 2 / (k * k * out channels)) with zero
    biases, linear weights N(0, 0.01) with biases of 1 (batch norm: 1 and 0 already)."""
    with paddle.no_grad():
        for sub in layer.sublayers():
            if isinstance(sub, nn.Conv2D):
                fan = sub.weight.shape[0] * sub.weight.shape[2] * sub.weight.shape[3]
                std = math.sqrt(2.0 / fan)
                sub.weight.set_value(paddle.normal(0.0, std, sub.weight.shape).astype(sub.weight.dtype))
                sub.bias.set_value(paddle.zeros_like(sub.bias))
            elif isinstance(sub, nn.Linear):
                sub.weight.set_value(paddle.normal(0.0, 0.01, sub.weight.shape).astype(sub.weight.dtype))
                sub.bias.set_value(paddle.ones_like(sub.bias))


class RelationNet(nn.Layer):
    def __init__(self, in_channels, image_size, channels=64, hidden=8, init="paddle"):
        super().__init__()
        self.embedding = nn.LayerList([ConvBlock(in_channels, channels, 0, True),
                                       ConvBlock(channels, channels, 0, True),
                                       ConvBlock(channels, channels, 1, False),
                                       ConvBlock(channels, channels, 1, False)])
        self.relation = RelationModule(channels, embedding_size(image_size), hidden)
        if init == "authors":
            authors_init(self)

    def embed(self, x, groups=1):
        """[B, C, H, W] images -> [B, channels, S, S] feature maps (batch norm's
        statistics over each of GROUPS equal consecutive parts of the batch)."""
        for block in self.embedding:
            x = block(x, groups)
        return x

    def scores(self, xs, ys, xq, n_way, queries_alone=False):
        """Relation scores [T, Q, n_way] of T episodes: support images xs [T, S, C, H, W]
        with labels ys [T, S], query images xq [T, Q, C, H, W]. A class's feature map is
        the sum of its support maps (the authors'); support and query images are
        embedded in separate passes (separate batch statistics, as the authors').
        QUERIES_ALONE (the non-transductive test): each query image is embedded on its
        own and its pairs are normalised among themselves, so its scores depend on the
        support set and itself only."""
        tasks, support, queries = xs.shape[0], xs.shape[1], xq.shape[1]
        fs = self.embed(xs.reshape([tasks * support] + xs.shape[2:]))
        fq = self.embed(xq.reshape([tasks * queries] + xq.shape[2:]), tasks * queries if queries_alone else 1)
        map_shape = fs.shape[1:]
        one_hot = F.one_hot(ys, n_way).astype(fs.dtype)  # [T, S, N]
        classes = paddle.matmul(one_hot, fs.reshape([tasks, support, -1]), transpose_x=True)  # [T, N, F]
        return self.relation.score_all(classes.reshape([tasks, n_way] + map_shape),
                                       fq.reshape([tasks, queries] + map_shape), queries_alone)
