"""Per-episode metrics and the few-shot papers' summary: mean +- 95 % confidence interval.

A model's create_metrics(config, mode) returns metrics of this kind; its
train_forward / infer_forward update them with one value per episode (task);
the drivers gather `values()` from every process and report mean_and_ci95.
"""
import numpy as np
import paddle


def accuracy(logits, labels):
    """Fraction of correct argmax predictions: logits [B, n_way], labels [B] ->
    a 0-d float tensor; logits [T, B, n_way], labels [T, B] -> one per task [T]."""
    return (logits.argmax(axis=-1) == labels).astype("float32").mean(axis=-1)


def mean_and_ci95(values):
    """(mean, half-width of the 95 % normal confidence interval) of VALUES [n]."""
    values = np.asarray(values, dtype="float64")
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


class EpisodeAccuracy(paddle.metric.Metric):
    """Collects one accuracy per episode; values() returns them all (the drivers
    gather them across processes), accumulate() their mean."""

    def __init__(self, name):
        super().__init__()
        self._name = name
        self.reset()

    def name(self):
        return self._name

    def reset(self):
        self._values = []

    def update(self, values):
        self._values.append(values)  # tensors: no host sync inside the step

    def values(self):
        """Every value collected since reset(), float64 [n]."""
        if not self._values:
            return np.zeros([0])
        return np.concatenate([np.asarray(v, dtype="float64").reshape(-1) for v in self._values])

    def accumulate(self):
        return mean_and_ci95(self.values())[0]
