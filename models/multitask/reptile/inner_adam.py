"""Reptile's inner optimizer as the authors ran it: TensorFlow's Adam with beta1 = 0,
its state running on through every task of training."""
import paddle


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
