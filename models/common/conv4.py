"""The conv-4 network of the MAML family, computing with named (fast) weights.

`Conv4` is four blocks of 3x3 conv + batch norm + ReLU (the feature extractor,
`features_tasks`) and, when built with n_way > 0, a linear classifier on the
features (`head_tasks`). Every forward takes a dict of weights keyed by name
("conv0.weight", ..., "fc.bias"), so an inner loop can hand it fast weights
(new tensors) without ever writing into the meta-parameters, and a metric-based
learner can use the feature part alone.

`forward_tasks` runs every task of a meta-batch at once, each with its own
weights (the training and evaluation path); `forward` is its one-task case.
"""
import functools
import math

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common.layers import (BN_EPSILON, batch_norm_current_batch, fused_batch_norm_current_batch,
                                  max_pool_2x2, same_padding)
from utils.config import Option, positive

DOWNSAMPLE_STYLES = ("stride", "maxpool")
NUM_BLOCKS = 4


def final_size(image_size, downsample):
    """The last block's spatial size: stride-2 SAME convs round up, 2x2 pooling down."""
    for _ in range(NUM_BLOCKS):
        image_size = -(-image_size // 2) if downsample == "stride" else image_size // 2
    return image_size


class Conv4(nn.Layer):
    """Weights (`weights()`, an ordered dict, created once):
        per block i in 0..3: conv{i}.weight [C_out, C_in, 3, 3], conv{i}.bias [C_out],
                             bn{i}.weight [C_out] (scale), bn{i}.bias [C_out]
        with n_way > 0:      fc.weight [feature_size, n_way], fc.bias [n_way]

    in_channels: the images' channels (1 for Omniglot, 3 for RGB sets).
    learned_inner_lr: None, or (initial value, inner steps) to add one
    meta-learned inner learning rate per weight and step, `inner_lrs()`
    (name -> [steps]; MAML++).
    bn_steps: 0, or S for one batch-norm scale and bias per inner step (MAML++):
    bn{i}.weight and bn{i}.bias are then [S, C_out] and bn_step=k uses row min(k, S - 1).

    downsample:
        "stride":  3x3 conv, stride 2, TF-style SAME padding; after the last block
                   the spatial mean (the MAML paper's Omniglot network, 28 -> 14 -> 7 -> 4 -> 2 -> mean).
        "maxpool": 3x3 conv, stride 1, padding 1, 2x2 max-pooling (28 -> 14 -> 7 -> 3 -> 1), spatial mean;
                   pooled before the activation (non-decreasing: it commutes with max).
    features: "mean" (the spatial mean of the last block, the classifier's input) or
    "flatten" (every position: C x S x S features for the last size S of images of
    image_size, the MAML authors' miniImageNet network, 84 -> 5 -> 32 x 5 x 5 = 800).
    bn_scale=False: batch norm with an offset only (the authors' tf.contrib.layers.batch_norm
    defaults: no bn{i}.weight); bn_epsilon: its epsilon (theirs 1e-3); head_init: "xavier"
    (uniform) or "normal" (N(0, 1), the authors' classifier weights).

    Batch norm uses the statistics of the current batch (the MAML paper's
    setting), in training and evaluation. running_stats=True instead keeps running
    statistics as ordinary batch norm does (the metric learners: current batch and
    an update in train(), the running statistics in eval()); one task at a time
    (the weights are shared by every image), not twice differentiable.
    """

    def __init__(self, n_way=0, in_channels=1, hidden_channels=64, downsample="stride",
                 activation=F.relu, learned_inner_lr=None, bn_steps=0, running_stats=False,
                 bn_scale=True, bn_epsilon=BN_EPSILON, head_init="xavier", features="mean", image_size=None):
        super().__init__()
        if features == "flatten" and not image_size:
            raise ValueError("features='flatten' needs the image size")
        if downsample not in DOWNSAMPLE_STYLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_STYLES}, got {downsample!r}")
        self.n_way, self.downsample = n_way, downsample
        self.activation = activation  # an argument: gradient tests use a smooth one (ReLU kinks make jumps)
        self.param_names = []
        channels = in_channels
        for i in range(NUM_BLOCKS):
            fan_in, fan_out = channels * 9, hidden_channels * 9
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier uniform, as the authors' code
            self._add(f"conv{i}.weight", [hidden_channels, channels, 3, 3], nn.initializer.Uniform(-bound, bound))
            self._add(f"conv{i}.bias", [hidden_channels], nn.initializer.Constant(0.0))
            bn_shape = [bn_steps, hidden_channels] if bn_steps else [hidden_channels]
            if bn_scale:
                self._add(f"bn{i}.weight", bn_shape, nn.initializer.Constant(1.0))
            self._add(f"bn{i}.bias", bn_shape, nn.initializer.Constant(0.0))
            channels = hidden_channels
        self.head_input = features
        self.feature_size = channels if features == "mean" else channels * final_size(image_size, downsample) ** 2
        # Paddle's fused batch_norm holds epsilon as a float32 attribute: the twice differentiable
        # path uses the same rounded value, so both compute one function (1e-3 differs by 5e-11).
        self.running_stats, self.bn_epsilon = running_stats, float(np.float32(bn_epsilon))
        for i in range(NUM_BLOCKS if running_stats else 0):
            self.register_buffer(f"bn{i}_running_mean", paddle.zeros([hidden_channels]))
            self.register_buffer(f"bn{i}_running_var", paddle.ones([hidden_channels]))
        if n_way:
            bound = math.sqrt(6.0 / (self.feature_size + n_way))
            init = nn.initializer.Normal(0.0, 1.0) if head_init == "normal" else nn.initializer.Uniform(-bound, bound)
            self._add("fc.weight", [self.feature_size, n_way], init)
            self._add("fc.bias", [n_way], nn.initializer.Constant(0.0))
        self._inner_lr_names = []
        if learned_inner_lr is not None:  # meta-learned with the weights, never adapted
            initial, steps = learned_inner_lr
            for name in self.param_names:
                attribute = "inner_lr_" + name.replace(".", "_")
                self.add_parameter(attribute, self.create_parameter(
                    [steps], default_initializer=nn.initializer.Constant(initial)))
                self._inner_lr_names.append(attribute)

    def _add(self, name, shape, initializer):
        # Registered under a dotless name (Paddle forbids dots): state_dict keys read conv0_weight, ..., fc_bias.
        self.add_parameter(name.replace(".", "_"), self.create_parameter(shape, default_initializer=initializer))
        self.param_names.append(name)

    def weights(self):
        """The meta-parameters by name, in the documented order."""
        return {name: getattr(self, name.replace(".", "_")) for name in self.param_names}

    @property
    def param_list(self):
        return list(self.weights().values())

    def inner_lrs(self):
        """The learned inner learning rates, weight name -> [steps]; None without them."""
        if not self._inner_lr_names:
            return None
        return {name: getattr(self, attribute) for name, attribute in zip(self.param_names, self._inner_lr_names)}

    def forward(self, x, params=None, twice_differentiable=True, bn_step=0):
        """One task. x: [B, C, H, W]; params: a dict of (fast) weights, None for
        the module's own. Returns logits [B, n_way]. twice_differentiable=False
        computes the same function with Paddle's fused batch_norm and max_pool2d
        kernels: faster, but only once differentiable (evaluation, first order, query loss)."""
        params = self.weights() if params is None else params
        return self.forward_tasks(x.unsqueeze(0), {k: p.unsqueeze(0) for k, p in params.items()},
                                  twice_differentiable, bn_step)[0]

    def features(self, x, params=None, twice_differentiable=False):
        """One task's features [B, feature_size]; params as in forward."""
        params = self.weights() if params is None else params
        return self.features_tasks(x.unsqueeze(0), {k: p.unsqueeze(0) for k, p in params.items()},
                                   twice_differentiable)[0]

    def forward_tasks(self, x, params, twice_differentiable=True, bn_step=0):
        """Every task of a meta-batch in one pass: x [T, B, C, H, W], params a
        dict of weights with a leading task axis [T, ...] -> logits [T, B, n_way].
        Task t's logits depend only on x[t] and row t of the weights, so the
        gradient of a sum of per-task losses with respect to the stacked weights
        holds every task's own gradient."""
        return self.head_tasks(self.features_tasks(x, params, twice_differentiable, bn_step), params)

    def head_tasks(self, features, params):
        """The linear classifier: features [T, B, F] -> logits [T, B, n_way]."""
        return paddle.matmul(features, params["fc.weight"]) + params["fc.bias"].unsqueeze(1)

    def features_tasks(self, x, params, twice_differentiable=True, bn_step=0):
        """x [T, B, C, H, W] (data: no gradient is taken with respect to it) ->
        features [T, B, feature_size].

        Why this layout: Paddle pays a fixed cost per operator that is as large
        as the arithmetic at these shapes, so one operator per layer for all
        tasks. The tasks sit in the channel axis ([B, T*C, H, W]): layers 2-4 are
        one grouped convolution (groups=T) and batch norm per (task, channel) is
        ordinary batch norm over T*C channels. Twice differentiable, the first
        layer is a batched matmul of the weights with the data's 3x3 patches
        (F.unfold): with one input channel per group a grouped convolution is
        Paddle's depthwise one (no CPU double grad), and Paddle's conv2d double
        gradient is wrong for inputs not differentiated; otherwise it is a
        grouped convolution too."""
        missing = [name for name in self.param_names if not name.startswith("fc.") and name not in params]
        if missing:
            raise ValueError(f"the weights lack {', '.join(missing)}")
        tasks, batch = x.shape[0], x.shape[1]
        norm = batch_norm_current_batch if twice_differentiable else fused_batch_norm_current_batch
        norm = functools.partial(norm, eps=self.bn_epsilon)
        if self.running_stats:
            if twice_differentiable or tasks != 1:
                raise ValueError("running batch-norm statistics serve one task at a time, once differentiable")
        for i in range(NUM_BLOCKS):
            if self.running_stats:
                norm = self._running_norm(i)
            w = params[f"conv{i}.weight"]
            channels = w.shape[1]
            shift = params[f"bn{i}.bias"]
            # Without a scale: a unit scale made from the offset. A constant (or any scale whose gradient
            # is not needed) makes Paddle's fused batch_norm return no gradient for the offset at all
            # (3.3.1 and 2.6.2; tests/test_net.py keeps a check of it).
            scale = params[f"bn{i}.weight"] if f"bn{i}.weight" in params else 1.0 + 0.0 * shift
            scale, shift = self._batch_norm_weights(scale, shift, bn_step)
            # The conv bias is a per-channel constant the batch norm subtracts again: its exact gradient
            # is zero. Kept as a weight (the authors' network has it), at the cost of a [T*C] operation.
            shift = shift + 0.0 * params[f"conv{i}.bias"].reshape([-1])
            if i == 0 and twice_differentiable:  # weights per image: ones @ w (matmul broadcasting: no double grad)
                patches, (out_h, out_w) = self._first_layer_patches(x)  # [B, T, C*9, L]: no transpose after
                per_image = paddle.matmul(paddle.ones([batch, 1], dtype=w.dtype), w.reshape([1, -1]))
                h = paddle.matmul(per_image.reshape([batch, tasks, channels, -1]), patches)
                h = norm(h.reshape([batch, tasks * channels, out_h, out_w]), scale, shift)
            else:  # differentiated once at most: a convolution may see the data (grouped, [B, T*C, H, W])
                h = x.transpose([1, 0, 2, 3, 4]).reshape([batch, -1] + x.shape[3:]) if i == 0 else h
                kernels = w.reshape([tasks * channels, w.shape[2], 3, 3])
                if self.downsample == "stride":
                    h = F.conv2d(h, kernels, stride=2, padding="SAME", groups=tasks)
                else:
                    h = F.conv2d(h, kernels, stride=1, padding=1, groups=tasks)
                h = norm(h, scale, shift)
            if self.downsample == "maxpool":  # before the activation: the same values on 1/4 of the elements
                h = max_pool_2x2(h) if twice_differentiable else F.max_pool2d(h, 2, 2)
            h = self.activation(h)
        if self.head_input == "flatten":  # h is [B, T*C, S, S]: each task's C*S*S values are contiguous
            return h.reshape([batch, tasks, -1]).transpose([1, 0, 2])
        return h.mean(axis=[2, 3]).reshape([batch, tasks, -1]).transpose([1, 0, 2])

    def _running_norm(self, i):
        """Block i's batch norm with running statistics (PyTorch's momentum 0.1)."""
        mean, var = getattr(self, f"bn{i}_running_mean"), getattr(self, f"bn{i}_running_var")
        return lambda h, scale, shift: F.batch_norm(h, mean, var, scale, shift, training=self.training,
                                                    momentum=0.9, epsilon=self.bn_epsilon)

    @staticmethod
    def _batch_norm_weights(scale, shift, bn_step):
        """[T, C] (or per-step [T, S, C]) -> the [T*C] scale and shift serving now.

        Per-step weights are flattened first and their row sliced last: Paddle's
        partial paddle.grad (the inner loop asks only for the adapted weights)
        crashes in ReshapeGradNode when a reshape sits between such a
        non-adapted weight and the batch norm, while a slice there is fine."""
        if len(scale.shape) == 2:
            return scale.reshape([-1]), shift.reshape([-1])
        tasks, steps, channels = scale.shape
        row = min(bn_step, steps - 1)
        return tuple(v.transpose([1, 0, 2]).reshape([steps, tasks * channels])[row] for v in (scale, shift))

    def _first_layer_patches(self, x):
        """x: [T, B, C, H, W] -> the first convolution's input patches
        [B, T, C*9, L] (L output positions) and the output size (H', W'). The data is
        put image-major first: transposing the C input channels is far cheaper than
        transposing the first layer's output."""
        tasks, batch, channels, height, width = x.shape
        images = x.transpose([1, 0, 2, 3, 4]).reshape([batch * tasks, channels, height, width])
        if self.downsample == "stride":  # TF's SAME padding: the odd extra row/column at the end
            (top, bottom), (left, right) = same_padding(height), same_padding(width)
            patches = F.unfold(images, [3, 3], strides=2, paddings=[top, left, bottom, right])
            out_size = (-(-height // 2), -(-width // 2))
        else:
            patches = F.unfold(images, [3, 3], strides=1, paddings=1)
            out_size = (height, width)
        return patches.reshape([batch, tasks, channels * 9, out_size[0] * out_size[1]]), out_size


NETWORK_OPTIONS = [
    Option("downsample", str, "stride", "stride: stride-2 convs + spatial mean (paper); "
           "maxpool: stride-1 convs + 2x2 max-pool (PaddleRec)", choices=list(DOWNSAMPLE_STYLES)),
    Option("bn_channel", int, 64, "filters per conv layer", (positive, "an integer >= 1")),
    Option("bn_scale", bool, True, "batch norm with a learned scale; False: an offset only, as the authors' "
           "tf.contrib.layers.batch_norm defaults (cbfinn/maml)"),
    Option("bn_epsilon", float, 1e-5, "batch norm's epsilon (the authors' TensorFlow default: 0.001)",
           (positive, "a number > 0")),
    Option("features", str, "mean", "the classifier's input: mean (spatial mean of the last block) or "
           "flatten (every position, the authors' miniImageNet network: 32 x 5 x 5 at 84 x 84)",
           choices=["mean", "flatten"]),
    Option("fc_init", str, "xavier", "the classifier's initial weights: xavier (uniform), or normal: N(0, 1) as "
           "the authors' tf.random_normal", choices=["xavier", "normal"]),
    Option("conv_stride", int, 1, "PaddleRec key; `downsample` decides the stride", legacy=True),
    Option("conv_padding", int, 1, "PaddleRec key; `downsample` decides the padding", legacy=True),
    Option("conv_kernal", list, [3, 3], "PaddleRec key; the kernel is 3x3", legacy=True),
]


def conv4_from_config(config, with_head=True, **extra):
    """The Conv4 a config describes: filters and downsampling from its
    hyper_parameters (NETWORK_OPTIONS), input channels and classes from the data
    its reader describes (config["data"]); EXTRA goes to Conv4."""
    hp, data = config["hyper_parameters"], config["data"]
    if with_head and data.get("n_way_test", data["n_way"]) != data["n_way"]:
        raise ValueError(f"config file {config['config_path']}: hyper_parameters.n_way_test = {data['n_way_test']}, "
                         f"but this network's classifier has n_way = {data['n_way']} outputs (set 0)")
    return Conv4(n_way=data["n_way"] if with_head else 0, in_channels=data["image_shape"][0],
                 hidden_channels=hp["bn_channel"], downsample=hp["downsample"], bn_scale=hp.get("bn_scale", True),
                 bn_epsilon=hp.get("bn_epsilon", BN_EPSILON), head_init=hp.get("fc_init", "xavier"),
                 features=hp.get("features", "mean"), image_size=data["image_shape"][1], **extra)


def conv4_description(config, with_head=True):
    """What a checkpoint of conv4_from_config(config) must match to be loaded."""
    hp, data = config["hyper_parameters"], config["data"]
    description = {"model": "maml_conv4" if with_head else "conv4_features", "downsample": hp["downsample"],
                   "bn_channel": hp["bn_channel"]}
    if with_head:
        description["n_way"] = data["n_way"]
    if data["image_shape"][0] != 1:  # absent from checkpoints made when all data was grey
        description["in_channels"] = data["image_shape"][0]
    if not hp.get("bn_scale", True):  # likewise: absent from checkpoints made before the option
        description["bn_scale"] = False
    if hp.get("features", "mean") != "mean":
        description["features"] = hp["features"]
        description["image_size"] = data["image_shape"][1]
    return description
