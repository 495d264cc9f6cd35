"""Functional building blocks of the conv-4 network family, written so that
Paddle can differentiate them twice on CPU (Paddle 3.x and 2.6).

Everything used with twice_differentiable=True is built from operators whose double gradient
Paddle 3.x and 2.6 implement on CPU (conv2d, also grouped, matmul, also batched, mean, rsqrt, relu,
reshape, transpose, tile, unbind, slice, sigmoid, divide, log; unfold only on the data, which is
not differentiated): Paddle has no CPU double-grad kernel for max_pool2d, flatten, log_softmax,
logsumexp or max, and the fused batch_norm double grad is very slow. Second-order MAML
differentiates through the support-set forward twice, so no other operator may appear there; the
query forward and evaluation are differentiated at most once and use the fused kernels.
"""
import paddle
import paddle.nn.functional as F

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

    x: [N, C, H, W] -> [N, C, H // 2, W // 2]. Built as max(a, b) = b + relu(a - b),
    which Paddle can differentiate twice: first over the two columns of every window,
    then over its two rows. (Over the four positions of a transposed [..., 2, 2] view
    it was 3x slower: the transpose's strided copy dominated.)
    """
    n, c, h, w = x.shape
    h2, w2 = h // 2, w // 2
    if h != 2 * h2 or w != 2 * w2:
        x = x[:, :, : 2 * h2, : 2 * w2]
    left, right = x.reshape([n, c, h2, 2, w2, 2]).unbind(axis=-1)  # [N, C, H/2, 2, W/2] each
    columns = right + F.relu(left - right)
    top, bottom = columns.unbind(axis=3)
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


def first_layer_patches(x, downsample):
    """x: [T, B, C, H, W] (data) -> the first convolution's input patches
    [B, T, C*9, L] (L output positions) and the output size (H', W'), for the
    conv-4 network's first layer as a matmul (Paddle's conv2d double gradient is
    wrong for the data). The data is put image-major first: transposing the C
    input channels is far cheaper than transposing the first layer's output."""
    tasks, batch, channels, height, width = x.shape
    images = x.transpose([1, 0, 2, 3, 4]).reshape([batch * tasks, channels, height, width])
    if downsample == "stride":  # TF's SAME padding: the odd extra row/column at the end
        (top, bottom), (left, right) = same_padding(height), same_padding(width)
        patches = F.unfold(images, [3, 3], strides=2, paddings=[top, left, bottom, right])
        out_size = (-(-height // 2), -(-width // 2))
    else:
        patches = F.unfold(images, [3, 3], strides=1, paddings=1)
        out_size = (height, width)
    return patches.reshape([batch, tasks, channels * 9, out_size[0] * out_size[1]]), out_size
