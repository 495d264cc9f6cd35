"""The support-set inner loop of the conv-4 learners and their test-time
evaluation: adapt to each episode's support set, record the query accuracy
after every step (MAML, its relatives and Reptile evaluate this way)."""
import paddle

from models.common.layers import cross_entropy
from utils.metrics import EpisodeAccuracy, accuracy


def step_metrics(steps):
    """One EpisodeAccuracy per number of inner steps 0..steps (query accuracy)."""
    metrics = [EpisodeAccuracy(f"acc_step{k}") for k in range(steps + 1)]
    return metrics, [m.name() for m in metrics]


def adapt_to_support(net, loop, x, y, steps, fast, on_step=None):
    """STEPS inner steps of LOOP (an InnerLoop) on every task's support loss
    cross_entropy(net.forward_tasks(x_t, fast_t), y_t), all tasks at once, from
    the fast weights FAST. Step k's forward uses the batch-norm weights of step
    k - 1 (per-step weights, MAML++); on_step(step, fast) is called after each.
    Returns the fast weights."""
    twice = loop.second_order  # only the exact meta-gradient needs the twice differentiable forward
    for step in range(1, steps + 1):
        logits = net.forward_tasks(x, fast, twice_differentiable=twice, bn_step=step - 1)
        fast = loop.adapt(cross_entropy(logits, y, twice_differentiable=twice).sum(), fast, step)
        if on_step is not None:
            on_step(step, fast)
    return fast


def query_accuracy_recorder(net, xq, yq, metrics, skip_step=None):
    """on_step callback: every task's query accuracy with the current fast weights
    into metrics[step], except at SKIP_STEP (recorded by the caller). After step
    k the query forward uses step k's batch-norm weights, as the support forward
    of that step did (MAML++)."""

    def record(step, fast):
        if step == skip_step:
            return
        with paddle.no_grad():
            logits = net.forward_tasks(xq, fast, twice_differentiable=False, bn_step=max(step - 1, 0))
            metrics[step].update(accuracy(logits, yq))

    return record


def evaluate_adaptation(net, loop, feeds, steps, metrics):
    """Adapt to each episode's support set with LOOP (track=False) for STEPS
    steps; metrics[k] receives the query accuracy after k steps."""
    xs, ys, xq, yq = feeds
    record = query_accuracy_recorder(net, xq, yq, metrics)
    fast = loop.task_copies(net.weights(), xs.shape[0])
    record(0, fast)
    adapt_to_support(net, loop, xs, ys, steps, fast, on_step=record)


def adapted_query_logits(net, loop, feeds, steps):
    """Every episode's query logits [T, Q, N] after STEPS steps of LOOP (track=False)
    on its support set, and the query labels [T, Q]: what an ensemble averages."""
    xs, ys, xq, yq = feeds
    fast = adapt_to_support(net, loop, xs, ys, steps, loop.task_copies(net.weights(), xs.shape[0]))
    with paddle.no_grad():
        logits = net.forward_tasks(xq, fast, twice_differentiable=False, bn_step=max(steps - 1, 0))
    return logits, yq
