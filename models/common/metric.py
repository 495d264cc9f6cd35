"""Nearest-centroid classification in feature space, the core of Prototypical
Networks (negative squared Euclidean distance, Snell et al. 2017) and of
Classifier-/Meta-Baseline (cosine similarity times a temperature, Chen et al. 2021).
Every function works on a batch of episodes (leading axis T)."""
import paddle
import paddle.nn.functional as F


def centroids(features, labels, n_way):
    """Mean feature of each class: features [T, S, F], labels [T, S] in 0..n_way-1 -> [T, n_way, F]."""
    one_hot = F.one_hot(labels, n_way).astype(features.dtype)  # [T, S, n_way]
    sums = paddle.matmul(one_hot, features, transpose_x=True)
    return sums / one_hot.sum(axis=1).unsqueeze(-1)


def squared_euclidean_logits(query, centres):
    """-||q - c||^2: query [T, Q, F], centres [T, N, F] -> [T, Q, N]."""
    return -((query.unsqueeze(2) - centres.unsqueeze(1)) ** 2).sum(axis=-1)


def cosine_logits(query, centres, temperature=1.0):
    """temperature * cos(q, c): query [T, Q, F], centres [T, N, F] -> [T, Q, N]."""
    return temperature * paddle.matmul(F.normalize(query, axis=-1), F.normalize(centres, axis=-1),
                                       transpose_y=True)


def episode_features(encoder, support_x, query_x):
    """Features of every support and query image of T episodes in one pass of
    ENCODER.features (batch norm sees them together, as the authors' code does):
    [T, S, C, H, W], [T, Q, C, H, W] -> [T, S, F], [T, Q, F]."""
    tasks, support, query = support_x.shape[0], support_x.shape[1], query_x.shape[1]
    images = paddle.concat([support_x.reshape([tasks * support] + support_x.shape[2:]),
                            query_x.reshape([tasks * query] + query_x.shape[2:])])
    features = encoder.features(images)
    return (features[: tasks * support].reshape([tasks, support, -1]),
            features[tasks * support:].reshape([tasks, query, -1]))
