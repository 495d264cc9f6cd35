"""The MAML conv-4 classifier with separated parameters.

`MAMLConvNet.forward(x, params)` computes with an explicit list of weights, so
the inner loop can hand it fast weights (new tensors, theta - alpha * grad)
without ever writing into the meta-parameters. `forward_tasks` does the same
for every task of a meta-batch at once, each task with its own weights (the
training and evaluation path); `forward` is its one-task case.

Everything inside the network (with twice_differentiable=True) is built from operators whose double gradient
Paddle 3.x and 2.6 implement on CPU (conv2d, also grouped, matmul, also batched, mean, rsqrt, relu,
reshape, transpose, tile, unbind, slice, sigmoid, divide, log; unfold only on the data, which is
not differentiated): Paddle has no double-grad kernel for
max_pool2d, flatten, log_softmax, logsumexp or max, and the fused batch_norm
double grad is very slow on CPU. Second-order MAML differentiates through
the support-set forward twice, so no other operator may appear there; the
query forward and evaluation are differentiated at most once and use the fused
kernels (twice_differentiable=False).
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

DOWNSAMPLE_STYLES = ("stride", "maxpool")
NUM_BLOCKS = 4
BN_EPSILON = 1e-5


def batch_norm_current_batch(x, scale, bias, eps=BN_EPSILON):
    """Batch norm with the statistics of the current batch, always.

    x: [N, C, H, W]; scale, bias: [C]. Mean and (biased) variance are taken
    over N, H and W of this very batch, in training and evaluation alike, as
    in the MAML paper (no running statistics exist). Written for speed under
    double differentiation, where every tensor-sized operation is paid three
    times (forward, backward, double backward): x is viewed as [N*C, H*W] rows,
    because Paddle's CPU kernels broadcast along the last axis several times
    faster than along the channel axis of NCHW, and the output is x * gain +
    offset with per-channel gain and offset, with the variance as
    E[x^2] - mean^2 (no centred copy of x).
    """
    n, c, h, w = x.shape
    rows = x.reshape([n * c, h * w])
    mean = rows.mean(axis=-1).reshape([n, c]).mean(axis=0)
    mean_square = (rows * rows).mean(axis=-1).reshape([n, c]).mean(axis=0)
    gain = scale * paddle.rsqrt(mean_square - mean * mean + eps)
    offset = bias - mean * gain
    out = rows * gain.tile([n]).unsqueeze(-1) + offset.tile([n]).unsqueeze(-1)
    return out.reshape([n, c, h, w])


def fused_batch_norm_current_batch(x, scale, bias, eps=BN_EPSILON):
    """The same function through Paddle's fused kernel: fast, but its double
    gradient is very slow on CPU, so it serves only where no double gradient
    is taken. The running-statistics buffers it insists on are thrown away."""
    c = x.shape[1]
    return F.batch_norm(x, paddle.zeros([c], x.dtype), paddle.ones([c], x.dtype), scale, bias,
                        training=True, epsilon=eps)


def same_padding(size, stride=2, kernel=3):
    """(before, after) padding of TensorFlow's SAME for one spatial axis."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def max_pool_2x2(x):
    """2x2 max-pooling, stride 2, floor mode (an odd last row/column is dropped).

    x: [N, C, H, W] -> [N, C, H // 2, W // 2]. Built as max(a, b) = b + relu(a - b)
    over the four window positions, which Paddle can differentiate twice.
    """
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    if h != 2 * h2 or w != 2 * w2:
        x = x[:, :, : 2 * h2, : 2 * w2]
    windows = x.reshape([n, c, h2, 2, w2, 2]).transpose([0, 1, 2, 4, 3, 5])
    a, b, c_, d = windows.reshape([n, c, h2, w2, 4]).unbind(axis=-1)
    top = b + F.relu(a - b)
    bottom = d + F.relu(c_ - d)
    return bottom + F.relu(top - bottom)


def exp_twice_differentiable(t):
    """exp(t) as sigmoid(t) / sigmoid(-t): Paddle 2.6 has no double gradient for
    exp, but has one for sigmoid and divide (Paddle 3.x has both; one code path
    serves both lines). Used on t <= 0, where both sigmoids are well conditioned."""
    return F.sigmoid(t) / F.sigmoid(-t)


def cross_entropy(logits, labels, twice_differentiable=True):
    """Mean softmax cross-entropy over the images of a task; twice
    differentiable in Paddle unless twice_differentiable=False selects the
    fused F.cross_entropy.

    logits: [B, n_way] float, labels: [B] int64 -> a 0-d loss; or one task per
    row, logits [T, B, n_way], labels [T, B] -> per-task losses [T]. The log-sum-exp is shifted by
    the detached row maximum: the value and every derivative are unchanged by
    a constant shift, and exp() cannot overflow.
    """
    if not twice_differentiable:
        n_way = logits.shape[-1]
        per_image = F.cross_entropy(logits.reshape([-1, n_way]), labels.reshape([-1]), reduction="none")
        return per_image.reshape(labels.shape).mean(axis=-1)
    shift = logits.detach().max(axis=-1, keepdim=True)
    log_sum_exp = paddle.log(exp_twice_differentiable(logits - shift).sum(axis=-1)) + shift.squeeze(-1)
    one_hot = F.one_hot(labels, logits.shape[-1]).astype(logits.dtype)
    picked = (logits * one_hot).sum(axis=-1)
    return (log_sum_exp - picked).mean(axis=-1)


class MAMLConvNet(nn.Layer):
    """Four blocks of 3x3 conv (bn_channel filters) + batch norm + ReLU, then a linear classifier.

    Parameter list (`self.param_list`, fixed order, created once):
        per block i in 0..3: conv{i}.weight [C_out, C_in, 3, 3], conv{i}.bias [C_out],
                             bn{i}.weight [C_out] (scale), bn{i}.bias [C_out]
        then fc.weight [C_out, n_way], fc.bias [n_way]

    learned_inner_lr: None, or (initial value, inner steps) to add the
    parameter `inner_lrs` [len(param_list), steps] (MAML++'s per-layer per-step
    learning rates).

    bn_steps: 0, or S to give every batch norm one scale and bias per inner
    step (MAML++'s per-step batch-norm weights): bn{i}.weight and bn{i}.bias
    are then [S, C_out], and forward(..., bn_step=k) uses row min(k, S - 1).

    downsample:
        "stride":  3x3 conv with stride 2 and TF-style SAME padding, then after the
                   last block the spatial mean (the MAML paper's Omniglot network,
                   28 -> 14 -> 7 -> 4 -> 2 -> mean).
        "maxpool": 3x3 conv with stride 1 and padding 1, then 2x2 max-pooling
                   (the reference article's and PaddleRec's network, 28 -> 14 -> 7
                   -> 3 -> 1), then the spatial mean (a no-op at 1x1).

    Batch norm always uses the statistics of the current batch, in training and
    in evaluation (the paper's setting): there are no running statistics, so
    there is nothing to switch between train() and eval().
    """

    def __init__(self, n_way, in_channels=1, hidden_channels=64, downsample="stride",
                 activation=F.relu, learned_inner_lr=None, bn_steps=0):
        super().__init__()
        if downsample not in DOWNSAMPLE_STYLES:
            raise ValueError(f"downsample must be one of {DOWNSAMPLE_STYLES}, got {downsample!r}")
        self.n_way = n_way
        self.downsample = downsample
        # The activation is a constructor argument so that gradient tests can use
        # a smooth one (ReLU kinks make finite differences jump).
        self.activation = activation
        self.param_names = []
        channels = in_channels
        for i in range(NUM_BLOCKS):
            fan_in, fan_out = channels * 9, hidden_channels * 9
            bound = math.sqrt(6.0 / (fan_in + fan_out))  # Xavier uniform, as the authors' code
            self._add(f"conv{i}.weight", [hidden_channels, channels, 3, 3],
                      nn.initializer.Uniform(-bound, bound))
            self._add(f"conv{i}.bias", [hidden_channels], nn.initializer.Constant(0.0))
            bn_shape = [bn_steps, hidden_channels] if bn_steps else [hidden_channels]
            self._add(f"bn{i}.weight", bn_shape, nn.initializer.Constant(1.0))
            self._add(f"bn{i}.bias", bn_shape, nn.initializer.Constant(0.0))
            channels = hidden_channels
        bound = math.sqrt(6.0 / (channels + n_way))
        self._add("fc.weight", [channels, n_way], nn.initializer.Uniform(-bound, bound))
        self._add("fc.bias", [n_way], nn.initializer.Constant(0.0))
        # MAML++'s learned per-layer per-step inner learning rates: one per
        # parameter tensor and inner step, meta-learned with the weights; not
        # part of param_list (the inner loop does not adapt them).
        self.inner_lrs = None
        if learned_inner_lr is not None:
            initial, steps = learned_inner_lr
            self.inner_lrs = self.create_parameter(
                [len(self.param_names), steps], default_initializer=nn.initializer.Constant(initial))

    def _add(self, name, shape, initializer):
        param = self.create_parameter(shape, default_initializer=initializer)
        # Registered under a dotless name (Paddle forbids dots); the state_dict
        # keys therefore read conv0_weight, ..., fc_bias.
        self.add_parameter(name.replace(".", "_"), param)
        self.param_names.append(name)

    @property
    def param_list(self):
        """The meta-parameters, in the documented order."""
        return [getattr(self, name.replace(".", "_")) for name in self.param_names]

    def forward(self, x, params=None, twice_differentiable=True, bn_step=0):
        """One task. x: [B, C, H, W] float; params: a list ordered like
        `param_list` (fast weights) or None for the module's own. Returns logits
        [B, n_way]. bn_step: the inner step whose batch-norm weights serve (only
        with bn_steps).

        twice_differentiable=False computes the same function with Paddle's fused
        batch_norm and max_pool2d kernels: faster, but only once differentiable
        (enough for evaluation, first-order MAML and the query loss)."""
        if params is None:
            params = self.param_list
        return self.forward_tasks(x.unsqueeze(0), [p.unsqueeze(0) for p in params],
                                  twice_differentiable, bn_step)[0]

    def forward_tasks(self, x, params, twice_differentiable=True, bn_step=0):
        """Every task of a meta-batch in one pass, each with its own weights.

        x: [T, B, C, H, W] float (data: no gradient is taken with respect to it);
        params: a list ordered like `param_list`, each with a leading task axis
        [T, ...]. Returns logits [T, B, n_way]; task t's logits depend only on
        x[t] and the params' row t, so the gradient of a sum of per-task losses
        with respect to the stacked params holds every task's own gradient.

        Why this layout: Paddle pays a fixed cost per operator that is as large
        as the arithmetic at these shapes, so one operator per layer for all
        tasks instead of one per task. The tasks sit in the channel axis
        ([B, T*C, H, W]), so layers 2-4 are one grouped convolution (groups=T)
        and batch norm per (task, channel) is ordinary batch norm over T*C
        channels. The first layer is a batched matmul of the weights with the
        3x3 patches of the data (F.unfold; the data needs no gradient): a
        grouped convolution with one input channel per group would become
        Paddle's depthwise convolution, which has no CPU double grad. Every
        convolution input is then a function of the weights, which also keeps
        clear of Paddle's wrong conv2d double gradient for inputs that are not
        differentiated (see the package README)."""
        if len(params) != len(self.param_names):
            raise ValueError(f"expected {len(self.param_names)} parameters, got {len(params)}")
        tasks, batch = x.shape[0], x.shape[1]
        norm = batch_norm_current_batch if twice_differentiable else fused_batch_norm_current_batch
        for i in range(NUM_BLOCKS):
            w, b, scale, shift = params[4 * i: 4 * i + 4]
            channels = w.shape[1]
            scale, shift = self._batch_norm_weights(scale, shift, bn_step)
            # The conv bias is a constant per channel, which the batch norm right
            # after it subtracts again: it cannot change the output and its exact
            # gradient is zero. Kept as a parameter (the authors' network has it)
            # and in the graph at the cost of a [T*C] operation.
            shift = shift + 0.0 * b.reshape([-1])
            if i == 0:
                patches, (out_h, out_w) = self._first_layer_patches(x)
                h = paddle.matmul(w.reshape([tasks, channels, -1]), patches)  # [T, C, B*L]
                h = self.activation(norm(h.reshape([1, tasks * channels, batch, out_h * out_w]), scale, shift))
                h = h.reshape([tasks * channels, batch, out_h, out_w]).transpose([1, 0, 2, 3])
            else:
                kernels = w.reshape([tasks * channels, w.shape[2], 3, 3])
                if self.downsample == "stride":
                    h = F.conv2d(h, kernels, stride=2, padding="SAME", groups=tasks)
                else:
                    h = F.conv2d(h, kernels, stride=1, padding=1, groups=tasks)
                h = self.activation(norm(h, scale, shift))
            if self.downsample == "maxpool":
                h = max_pool_2x2(h) if twice_differentiable else F.max_pool2d(h, 2, 2)
        features = h.mean(axis=[2, 3]).reshape([batch, tasks, -1]).transpose([1, 0, 2])  # [T, B, C]
        fc_w, fc_b = params[-2], params[-1]
        return paddle.matmul(features, fc_w) + fc_b.unsqueeze(1)

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
        [T, C*9, B*L] (L output positions) and the output size (H', W')."""
        tasks, batch, channels, height, width = x.shape
        images = x.reshape([tasks * batch, channels, height, width])
        if self.downsample == "stride":  # TF's SAME padding: the odd extra row/column at the end
            (top, bottom), (left, right) = same_padding(height), same_padding(width)
            patches = F.unfold(images, [3, 3], strides=2, paddings=[top, left, bottom, right])
            out_size = (-(-height // 2), -(-width // 2))
        else:
            patches = F.unfold(images, [3, 3], strides=1, paddings=1)
            out_size = (height, width)
        positions = out_size[0] * out_size[1]
        patches = patches.reshape([tasks, batch, channels * 9, positions]).transpose([0, 2, 1, 3])
        return patches.reshape([tasks, channels * 9, batch * positions]), out_size
