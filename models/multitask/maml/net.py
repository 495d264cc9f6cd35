"""MAML's network (Finn et al. 2017, section 5.2), parameter-separated: every
forward takes the weights as a dict keyed by name ("conv0.weight", ...,
"fc.bias"), so the inner loop (dygraph_model.py) hands it fast weights, new
tensors, and never writes into the meta-parameters.

Four blocks of 3x3 conv + batch norm + ReLU and a linear classifier, plus the MAML++ weights
(learned per-step inner rates, per-step batch norm). Reptile and ANIL train this same network.
"""
import functools
import math

import numpy as np

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common import conv_op
from models.common.episodes import ways
from models.common.layers import (BN_EPSILON, batch_norm_current_batch, fused_batch_norm_current_batch,
                                  first_layer_patches, max_pool_2x2, same_padding)
from models.lib.config import Option, positive

DOWNSAMPLE_STYLES = ("stride", "maxpool")
NUM_BLOCKS = 4


def final_size(image_size, downsample):
    """The last block's spatial size: stride-2 SAME convs round up, 2x2 pooling down."""
    for _ in range(NUM_BLOCKS):
        image_size = -(-image_size // 2) if downsample == "stride" else image_size // 2
    return image_size


class MAMLConvNet(nn.Layer):
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
    (uniform) or "normal" (N(0, 1), the authors' classifier weights). conv: "auto" (the
    custom convolution operator of models/common/conv_op where it builds and is faster:
    small outputs), "custom" (every layer) or "paddle" (F.conv2d); $FEWSHOT_CONV overrides it.

    Batch norm uses the statistics of the current batch (the MAML paper's
    setting), in training and evaluation: there are no running statistics.
    """

    def __init__(self, n_way=0, in_channels=1, hidden_channels=64, downsample="stride",
                 activation=F.relu, learned_inner_lr=None, bn_steps=0, bn_scale=True, bn_epsilon=BN_EPSILON,
                 head_init="xavier", features="mean", image_size=None, conv="auto"):
        super().__init__()
        self.conv_form = conv_op.resolve(conv)  # once, here (models/common/conv_op)
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
        self.bn_epsilon = float(np.float32(bn_epsilon))
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

    def _add(self, name, shape, initializer):  # registered dotless (Paddle forbids dots): conv0_weight, ...
        self.add_parameter(name.replace(".", "_"), self.create_parameter(shape, default_initializer=initializer))
        self.param_names.append(name)

    def weights(self):
        """The meta-parameters by name, in the documented order."""
        return {name: getattr(self, name.replace(".", "_")) for name in self.param_names}

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

    def forward_tasks(self, x, params, twice_differentiable=True, bn_step=0):
        """Every task of a meta-batch in one pass: x [T, B, C, H, W], params a
        dict of weights with a leading task axis [T, ...] -> logits [T, B, n_way].
        Task t's logits depend only on x[t] and row t of the weights, so the
        gradient of a sum of per-task losses with respect to the stacked weights
        holds every task's own gradient. The classifier is linear on the features."""
        features = self.features_tasks(x, params, twice_differentiable, bn_step)
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
        grouped convolution too. Layers that use the custom operator
        (conv_op.use_custom), the first included, convolve with it."""
        missing = [name for name in self.param_names if not name.startswith("fc.") and name not in params]
        if missing:
            raise ValueError(f"the weights lack {', '.join(missing)}")
        tasks, batch = x.shape[0], x.shape[1]
        norm = batch_norm_current_batch if twice_differentiable else fused_batch_norm_current_batch
        norm = functools.partial(norm, eps=self.bn_epsilon)
        for i in range(NUM_BLOCKS):
            w = params[f"conv{i}.weight"]
            channels = w.shape[1]
            shift = params[f"bn{i}.bias"]
            # Without a scale: a unit scale made from the offset. A constant (or any scale whose gradient
            # is not needed) makes Paddle's fused batch_norm return no gradient for the offset at all
            # (3.3.1 and 2.6.2; tests/test_net.py keeps a check of it).
            scale = params[f"bn{i}.weight"] if f"bn{i}.weight" in params else 1.0 + 0.0 * shift
            scale, shift = self._batch_norm_weights(scale, shift, bn_step)
            # The conv bias: a per-channel constant batch norm removes (zero gradient); the authors' network has it.
            shift = shift + 0.0 * params[f"conv{i}.bias"].reshape([-1])
            stride, paddings = self._stride_and_paddings(x.shape[3:] if i == 0 else h.shape[2:])
            custom = conv_op.use_custom(self.conv_form, stride, paddings, x.shape[3:] if i == 0 else h.shape[2:])
            if i == 0 and twice_differentiable and not custom:  # per image: ones @ w (no double grad when broadcast)
                patches, (out_h, out_w) = first_layer_patches(x, self.downsample)  # [B, T, C*9, L]: no transpose after
                per_image = paddle.matmul(paddle.ones([batch, 1], dtype=w.dtype), w.reshape([1, -1]))
                h = paddle.matmul(per_image.reshape([batch, tasks, channels, -1]), patches)
                h = norm(h.reshape([batch, tasks * channels, out_h, out_w]), scale, shift)
            else:  # Paddle's conv2d sees the data only when differentiated once at most (grouped, [B, T*C, H, W])
                h = x.transpose([1, 0, 2, 3, 4]).reshape([batch, -1] + x.shape[3:]) if i == 0 else h
                kernels = w.reshape([tasks * channels, w.shape[2], 3, 3])
                if custom:
                    h = conv_op.conv2d(h, kernels, stride, paddings, groups=tasks)
                elif self.downsample == "stride":
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

    def _stride_and_paddings(self, size):
        """(stride, (top, bottom, left, right)) of a convolution of an input of SIZE (H, W)."""
        if self.downsample == "stride":  # TF's SAME: the odd extra row/column at the end
            return 2, same_padding(size[0]) + same_padding(size[1])
        return 1, (1, 1, 1, 1)

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


def task_copies(weights, tasks):
    """One copy of every weight per task, {name: [T, ...]}, differentiable back to
    WEIGHTS (their gradient is the sum over the tasks). A column of ones times the
    flattened weight: its gradient is one matrix-vector product, about twice as fast
    as paddle.tile's on CPU (16 vs 10 ms for a [64, 64, 3, 3] weight and 32 tasks)."""
    first = next(iter(weights.values()))
    ones = paddle.ones([tasks, 1], dtype=first.dtype)
    return {name: paddle.matmul(ones, w.reshape([1, -1])).reshape([tasks] + list(w.shape))
            for name, w in weights.items()}


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


def conv4_from_config(config, network_class=MAMLConvNet, **extra):
    """The network a config describes: filters and downsampling from its
    hyper_parameters (NETWORK_OPTIONS), input channels and classes from the data
    its reader describes (config["data"]); EXTRA goes to NETWORK_CLASS (a subclass: Meta-SGD)."""
    hp, data = config["hyper_parameters"], config["data"]
    if ways(config, "infer") != ways(config):
        raise ValueError(f"config file {config['config_path']}: hyper_parameters.n_way_test = {hp['n_way_test']}, "
                         f"but this network's classifier has n_way = {hp['n_way']} outputs (set 0)")
    return network_class(n_way=ways(config), in_channels=data["image_shape"][0],
                         hidden_channels=hp["bn_channel"], downsample=hp["downsample"],
                         bn_scale=hp.get("bn_scale", True), bn_epsilon=hp.get("bn_epsilon", BN_EPSILON),
                         head_init=hp.get("fc_init", "xavier"), features=hp.get("features", "mean"),
                         image_size=data["image_shape"][1], **extra)


def conv4_description(config):
    """What a checkpoint of conv4_from_config(config) must match to be loaded."""
    hp, data = config["hyper_parameters"], config["data"]
    description = {"model": "maml_conv4", "downsample": hp["downsample"], "bn_channel": hp["bn_channel"],
                   "n_way": ways(config)}
    if data["image_shape"][0] != 1:  # absent from checkpoints made when all data was grey
        description["in_channels"] = data["image_shape"][0]
    if not hp.get("bn_scale", True):  # likewise: absent from checkpoints made before the option
        description["bn_scale"] = False
    if hp.get("features", "mean") != "mean":
        description["features"] = hp["features"]
        description["image_size"] = data["image_shape"][1]
    return description


def inner_steps(config):
    """Steps that per-step weights (learned rates, batch norm) are made for."""
    return max(config["hyper_parameters"]["update_step"], 1)


def build_network(config, initial_inner_lr):
    """MAML's network for CONFIG, with the MAML++ weights its options ask for."""
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
