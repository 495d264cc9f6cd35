"""LEO's network (Rusu et al., ICLR 2019; the authors' model.py, deepmind/leo) on
per-example feature vectors, for a batch of T tasks at once.

    encoder      e_i = dropout(x_i) W_e                              [T, N*K, L]
    relation     r_i = mean_j g([e_i, e_j]), g a 3-layer ReLU MLP     [T, N*K, 2L]
                 averaged over each class's K examples: the latent Gaussian's mean and raw std
    latents      z = mu + sigma * eps, sigma = max(exp(raw) - 1, 1e-10)  [T, N, K, L]
    decoder      (mu_w, raw_w) = z W_d; w = mu_w + sigma_w * eps_w, sigma_w = max(exp(raw_w) - 1 + s, 1e-10)
                 with s = sqrt(2 / (D + N)) (the authors' Glorot offset)        [T, N, K, D]
    predict      logits of x = dropout(x) . mean_k w[:, k]               [T, B, N]

The weights have no biases (snt.Linear(use_bias=False)); W_e, g's and W_d are
Glorot-uniform. Only operators with CPU double gradients in Paddle 3.x and 2.6
appear between the latents and the loss (matmul, slice, relu, sigmoid, divide,
log, mean; exp as a sigmoid ratio, max as a relu), because the meta-gradient
differentiates through the inner gradients with respect to the latents.
"""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common.layers import cross_entropy, exp_twice_differentiable

STD_FLOOR = 1e-10


def glorot(shape):
    return paddle.create_parameter(shape, paddle.get_default_dtype(),
                                   default_initializer=nn.initializer.XavierUniform())


class LEONet(nn.Layer):
    """The meta-learned weights: encoder [D, L], relation network 3 x [2L, 2L],
    decoder [L, 2D], and the learned inner learning rates (one per latent
    dimension, one per feature dimension for fine-tuning)."""

    def __init__(self, feature_size, num_latents, inner_lr_init, finetuning_lr_init):
        super().__init__()
        d, latents = feature_size, num_latents
        self.feature_size, self.num_latents = d, latents
        self.encoder = glorot([d, latents])
        self.relation = nn.ParameterList([glorot([2 * latents, 2 * latents]) for _ in range(3)])
        self.decoder = glorot([latents, 2 * d])
        self.inner_lr = paddle.create_parameter(
            [latents], paddle.get_default_dtype(), default_initializer=nn.initializer.Constant(inner_lr_init))
        self.finetuning_lr = paddle.create_parameter(
            [d], paddle.get_default_dtype(), default_initializer=nn.initializer.Constant(finetuning_lr_init))

    def penalised_weights(self):
        """The weights under the L2 penalty (the authors' regularizers): not the learning rates."""
        return [self.encoder, *self.relation, self.decoder]

    def latent_distribution(self, x_support, mask, n_way):
        """x_support [T, N*K, D] (class-major), mask: dropout mask like it (None: no dropout) ->
        the latent Gaussian's parameters [T, N, K, 2L], the same for a class's K rows."""
        t, nk, _ = x_support.shape
        codes = paddle.matmul(x_support if mask is None else x_support * mask, self.encoder)  # [T, NK, L]
        w0 = self.relation[0]
        left = paddle.matmul(codes, w0[: self.num_latents])  # e_i's share of layer 1 on the pair (i, j)
        right = paddle.matmul(codes, w0[self.num_latents:])
        hidden = F.relu(left.unsqueeze(2) + right.unsqueeze(1))  # [T, NK, NK, 2L]
        hidden = F.relu(paddle.matmul(hidden, self.relation[1]))
        pairs = paddle.matmul(hidden, self.relation[2]).mean(axis=2)  # [T, NK, 2L]
        per_class = pairs.reshape([t, n_way, nk // n_way, -1]).mean(axis=2, keepdim=True)
        return per_class.tile([1, 1, nk // n_way, 1])

    def decode(self, latents, noise, n_way):
        """latents [T, N, K, L] -> classifier weights [T, N, K, D] (sampled when noise is given)."""
        offset = math.sqrt(2.0 / (self.feature_size + n_way))
        weights, _, _ = sample(paddle.matmul(latents, self.decoder), noise, offset)
        return weights


def sample(distribution, noise, offset=0.0):
    """(sample, mean, std) of the Gaussian whose mean and raw std are the two
    halves of DISTRIBUTION's last axis; the mean itself when NOISE is None."""
    half = distribution.shape[-1] // 2
    mean, raw = distribution[..., :half], distribution[..., half:]
    std = exp_twice_differentiable(raw) - (1.0 - offset)
    std = STD_FLOOR + F.relu(std - STD_FLOOR)  # max(std, 1e-10), twice differentiable
    if noise is None:
        return mean, mean, std
    return mean + std * noise, mean, std


def kl_divergence(value, mean, std):
    """The authors' one-sample estimate, mean over the elements of each task:
    log N(value; mean, std) - log N(value; 0, 1) -> [T]."""
    log_q = -0.5 * ((value - mean) / std) ** 2 - paddle.log(std)
    log_p = -0.5 * value ** 2
    return (log_q - log_p).reshape([value.shape[0], -1]).mean(axis=-1)


def predict(x, mask, weights):
    """x [T, B, D], weights [T, N, K, D] -> logits [T, B, N] (the K samples of a class averaged)."""
    return paddle.matmul(x if mask is None else x * mask, weights.mean(axis=2), transpose_y=True)


def summed_loss(x, mask, labels, weights, twice_differentiable=True):
    """Cross-entropy summed over the images of each task -> [T] (the authors'
    tf.gradients of a per-image loss vector differentiate its sum)."""
    logits = predict(x, mask, weights)
    return cross_entropy(logits, labels, twice_differentiable) * labels.shape[-1]


def orthogonality(weight):
    """Mean squared difference between the correlation matrix of WEIGHT's rows and the identity."""
    norms = weight.norm(p=2, axis=1, keepdim=True) + 1e-32
    correlation = paddle.matmul(weight, weight, transpose_y=True) / paddle.matmul(norms, norms, transpose_y=True)
    identity = paddle.eye(weight.shape[0], dtype=weight.dtype)
    return ((correlation - identity) ** 2).mean()
