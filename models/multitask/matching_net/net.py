"""Matching Networks' model (Vinyals, Blundell, Lillicrap, Kavukcuoglu, Wierstra,
NeurIPS 2016): an encoder (the metric learners' conv-4, models/common/backbones.py)
and, as an option, the full context embeddings (FCE):

    g(x_i, S) = h_fwd_i + h_bwd_i + g'(x_i)     a bidirectional LSTM over the support set
    f(x, S)   = h_K after K steps of            an LSTM attending over g(S):
        h^_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})
        h_k = h^_k + f'(x)
        r_k = sum_i softmax_i(h_k . g(x_i)) g(x_i)

(the paper's appendix A.2; h_0 = r_0 = c_0 = 0). The LSTM cells are written out
(one matmul per gate set), so the same code runs in float32 and float64."""
import math

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from models.common.backbones import backbone_from_config


class LSTMCell(nn.Layer):
    """c, h = LSTM(x, h_in, c): gates from the input and the incoming state
    (h_in may be wider than the cell, as the attention LSTM's [h, r])."""

    def __init__(self, input_size, state_size, hidden_size):
        super().__init__()
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch's LSTM initialisation
        init = nn.initializer.Uniform(-bound, bound)
        self.w_x = self.create_parameter([input_size, 4 * hidden_size], default_initializer=init)
        self.w_h = self.create_parameter([state_size, 4 * hidden_size], default_initializer=init)
        self.b = self.create_parameter([4 * hidden_size], default_initializer=init)

    def forward(self, x, h_in, c):
        i, f, g, o = paddle.split(paddle.matmul(x, self.w_x) + paddle.matmul(h_in, self.w_h) + self.b, 4, axis=-1)
        c = F.sigmoid(f) * c + F.sigmoid(i) * paddle.tanh(g)
        return F.sigmoid(o) * paddle.tanh(c), c


class FullContextEmbeddings(nn.Layer):
    def __init__(self, size, steps):
        super().__init__()
        self.forward_cell = LSTMCell(size, size, size)
        self.backward_cell = LSTMCell(size, size, size)
        self.attention_cell = LSTMCell(size, 2 * size, size)
        self.steps = steps

    def support(self, g):
        """g(x_i, S) for support features g [T, S, D]: both directions of the LSTM plus g'."""
        zeros = paddle.zeros_like(g[:, 0])
        h, c, forward = zeros, zeros, []
        for i in range(g.shape[1]):
            h, c = self.forward_cell(g[:, i], h, c)
            forward.append(h)
        h, c, backward = zeros, zeros, [None] * g.shape[1]
        for i in reversed(range(g.shape[1])):
            h, c = self.backward_cell(g[:, i], h, c)
            backward[i] = h
        return paddle.stack(forward, axis=1) + paddle.stack(backward, axis=1) + g

    def query(self, f, g):
        """f(x, S) for query features f [T, Q, D] against the embedded support g [T, S, D]."""
        h = paddle.zeros_like(f)
        r, c = h, h
        for _ in range(self.steps):
            h_hat, c = self.attention_cell(f, paddle.concat([h, r], axis=-1), c)
            h = h_hat + f
            attention = F.softmax(paddle.matmul(h, g, transpose_y=True), axis=-1)  # [T, Q, S]
            r = paddle.matmul(attention, g)
        return h


SIMILARITIES = ("cosine", "support_normalized")


class MatchingNet(nn.Layer):
    def __init__(self, config):
        super().__init__()
        hp = config["hyper_parameters"]
        self.encoder = backbone_from_config(config)
        self.fce = FullContextEmbeddings(self.encoder.feature_size, hp["fce_steps"]) if hp["fce"] else None
        self.similarity = hp.get("similarity", "cosine")

    def log_probabilities(self, support, ys, query, n_way):
        """log P(class | query) [T, Q, n_way] from support features [T, S, D] with labels
        ys [T, S] and query features [T, Q, D]: attention a(x, x_i) = softmax_i of the
        similarity of f(x, S) and g(x_i, S), the class probabilities the attention summed
        per label. Similarity "cosine" is the paper's; "support_normalized" divides the
        dot product by the support vector's norm only, as the widely copied TensorFlow
        code (AntreasAntoniou/MatchingNetworks, DistanceNetwork) does, so the query's
        norm sets the softmax's sharpness. Computed as a difference of log-sum-exps:
        log sum_{i: y_i = c} e^{s_i} - log sum_i e^{s_i}, finite for any similarity."""
        if self.fce is not None:
            support = self.fce.support(support)
            query = self.fce.query(query, support)
        if self.similarity == "cosine":
            query = F.normalize(query, axis=-1)
        similarity = paddle.matmul(query, F.normalize(support, axis=-1), transpose_y=True)  # [T, Q, S]
        one_hot = F.one_hot(ys, n_way).astype(similarity.dtype).transpose([0, 2, 1])  # [T, N, S]
        outside_class = paddle.where(one_hot > 0, paddle.zeros_like(one_hot),
                                     paddle.full_like(one_hot, -float("inf")))
        per_class = paddle.logsumexp(similarity.unsqueeze(2) + outside_class.unsqueeze(1), axis=-1)  # [T, Q, N]
        return per_class - paddle.logsumexp(similarity, axis=-1, keepdim=True)
