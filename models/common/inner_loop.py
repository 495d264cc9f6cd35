"""The inner loop shared by the gradient-based learners (MAML, first-order MAML,
ANIL, MAML++, Reptile's evaluation), in the spirit of learn2learn's
`MAML(model, lr, first_order).adapt(loss)`, for functional networks whose
weights are dicts of tensors keyed by name.

    loop = InnerLoop(lr=0.4, first_order=False)
    fast = loop.task_copies(net.weights(), tasks)          # one copy per task, [T, ...]
    for step in range(1, steps + 1):
        logits = net.forward_tasks(x, fast, twice_differentiable=loop.second_order)
        fast = loop.adapt(loss_fn(logits, y).sum(), fast, step)

The loss is passed in; `first_order` is the one switch between the exact
meta-gradient (paddle.grad(create_graph=True): the caller's backward()
differentiates through every inner gradient) and first-order MAML (the inner
gradients are constants). track=False is evaluation: nothing is kept for a
meta-gradient. The update rule is replaceable; learned per-step learning rates
(MAML++) are data, a dict name -> tensor [steps], not another code path.
"""
import paddle


def sgd(weight, grad, rate):
    """Plain SGD, the MAML paper's inner update."""
    return weight - rate * grad


class InnerAdam:
    """TensorFlow's AdamOptimizer with beta1 = 0, supervised-reptile's inner
    optimizer (Nichol et al. 2018: `partial(tf.train.AdamOptimizer, beta1=0)`):
        t += 1;  v = beta2 v + (1 - beta2) g^2
        w = w - rate * sqrt(1 - beta2^t) * g / (sqrt(v) + epsilon)
    Its second moments v and step count t are ONE state that runs on through every
    task of training (the authors save and restore only the model's variables
    between tasks, not the optimizer's), kept in STATE (an AdamState layer, so
    checkpoints hold it). persist=True (training, one task at a time) writes each
    step back into STATE; persist=False (evaluation) starts every episode from
    STATE and leaves it unchanged, as the authors' evaluation restores it."""

    def __init__(self, state, persist, beta2=0.999, epsilon=1e-8):
        self.state, self.persist, self.beta2, self.epsilon = state, persist, beta2, epsilon
        self.v = {name: state.v(name) for name in state.names}
        self.t = float(state.step)

    def start_step(self):
        self.t += 1
        if self.persist:
            self.state.step.set_value(paddle.full([], self.t, dtype=self.state.step.dtype))

    def update(self, name, weight, grad, rate):
        with paddle.no_grad():
            v = self.beta2 * self.v[name] + (1 - self.beta2) * grad * grad
            self.v[name] = v
            if self.persist:
                self.state.v(name).set_value(v.reshape(self.state.v(name).shape))
            step = rate * (1 - self.beta2 ** self.t) ** 0.5 * grad / (v.sqrt() + self.epsilon)
        return weight - step


class AdamState(paddle.nn.Layer):
    """InnerAdam's state as buffers (saved with the model): v per weight, the step count."""

    def __init__(self, weights):
        super().__init__()
        self.names = list(weights)
        for name, w in weights.items():
            self.register_buffer(self._key(name), paddle.zeros(w.shape, dtype=w.dtype))
        self.register_buffer("step", paddle.zeros([], dtype="float64"))

    @staticmethod
    def _key(name):
        return "v_" + name.replace(".", "_")

    def v(self, name):
        return getattr(self, self._key(name))


def task_copies(weights, tasks):
    """One copy of every weight per task, {name: [T, ...]}, differentiable back to
    WEIGHTS (their gradient is the sum over the tasks).

    Made as a column of ones times the flattened weight: the gradient is then one
    matrix-vector product, about twice as fast as paddle.tile's gradient on CPU
    (16 vs 10 ms for a [64, 64, 3, 3] weight and 32 tasks, forward + backward)."""
    first = next(iter(weights.values()))
    ones = paddle.ones([tasks, 1], dtype=first.dtype)
    return {name: paddle.matmul(ones, w.reshape([1, -1])).reshape([tasks] + list(w.shape))
            for name, w in weights.items()}


def _leaf(tensor):
    leaf = tensor.detach()
    leaf.stop_gradient = False
    return leaf


class InnerLoop:
    """lr: a number, or learned rates {name: tensor [S] or [S, ...]}: step k uses
    row min(k, S) - 1, broadcast against the weight (per-step rates of MAML++,
    per-element rates of LEO as [1, ...]). adapted: the names the loop updates (None: every
    weight it is given); the others pass through unchanged. update_rule(weight,
    grad, rate) -> new weight, or an object with update(name, weight, grad, rate)
    and start_step() (InnerAdam)."""

    def __init__(self, lr, first_order=False, adapted=None, update_rule=sgd, track=True):
        if not track and isinstance(lr, dict):
            lr = {name: rate.detach() for name, rate in lr.items()}
        self.lr, self.first_order, self.track = lr, first_order, track
        self.adapted = None if adapted is None else list(adapted)
        self.update_rule = update_rule

    @property
    def second_order(self):
        """True when the loss handed to adapt() must be twice differentiable."""
        return self.track and not self.first_order

    def task_copies(self, weights, tasks):
        """The starting fast weights of TASKS tasks (detached leaves when not tracking)."""
        if self.track:
            return task_copies(weights, tasks)
        with paddle.no_grad():
            return {name: _leaf(w) for name, w in task_copies(weights, tasks).items()}

    def rate(self, name, step):
        if isinstance(self.lr, dict):
            rates = self.lr[name]
            return rates[min(step, rates.shape[0]) - 1]
        return self.lr

    def adapt(self, loss, fast, step):
        """One inner step (the STEP-th, from 1) on LOSS, a function of the fast
        weights FAST; returns the new fast weights (a new dict).

        For several tasks at once, LOSS is the sum of the per-task losses: task
        t's loss depends only on row t of the stacked weights, so the gradient's
        row t is task t's own gradient."""
        names = [n for n in (self.adapted if self.adapted is not None else fast) if n in fast]
        grads = paddle.grad(loss, [fast[n] for n in names], create_graph=self.second_order,
                            retain_graph=self.track)
        new = dict(fast)
        rule = self.update_rule
        if hasattr(rule, "start_step"):  # a stateful rule (InnerAdam)
            rule.start_step()
        for name, grad in zip(names, grads):
            if hasattr(rule, "update"):
                new[name] = rule.update(name, fast[name], grad, self.rate(name, step))
            else:
                new[name] = rule(fast[name], grad, self.rate(name, step))
        if not self.track:
            new = {name: _leaf(w) for name, w in new.items()}
        return new


def multi_step_loss_weights(steps, epoch, anneal_epochs):
    """MAML++'s weights of the query losses after inner steps 1..steps
    (Antoniou et al. 2019): uniform at epoch 0; every epoch each of the first
    steps - 1 weights loses 1 / (steps * anneal_epochs), down to 0.03 / steps,
    and the last weight gains what they lose."""
    uniform, low = 1.0 / steps, 0.03 / steps
    decay = uniform / anneal_epochs
    weights = [max(uniform - epoch * decay, low)] * (steps - 1)
    return weights + [min(uniform + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * low)]
