"""The MAML meta-step and evaluation compiled with paddle.jit.to_static, against
the same code in eager mode (issue 18's compiled-path attempt, benchmarks/README.md).

    OMP_NUM_THREADS=1 python benchmarks/compiled_step.py --setting 5way1shot --order second
    OMP_NUM_THREADS=1 python benchmarks/compiled_step.py --eval

Prints the eager and compiled seconds (median of REPS after a warm-up), the build
time and the largest relative difference between their results. Two things make
the whole step compile on Paddle 3.3.1 (PIR), both found here:
  - the outputs are returned detached: a to_static Layer whose outputs need a
    gradient gets a backward program for them, i.e. Paddle would differentiate the
    meta-gradient once more (a third order through conv2d_grad_grad: "has no grad op");
  - first order detaches the inner gradients: under PIR, paddle.grad with
    create_graph=False returns values the outer gradient still walks through.
"""
import argparse
import os
import statistics
import sys
import time

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_workers import SETTINGS, fake_episodes, load_maml

import paddle

from models.multitask.maml import net as maml_net
from models.common.layers import cross_entropy


def detached(values):
    return [v.detach() for v in values]


class MetaStep(paddle.nn.Layer):
    """Meta-loss and meta-gradient of one meta-batch (the trainer's step without the update)."""

    def __init__(self, net, model_def, config, steps, first_order):
        super().__init__()
        self.net, self.model_def, self.config = net, model_def, config
        self.steps, self.first_order = steps, first_order

    def forward(self, xs, ys, xq, yq):
        loop = self.model_def.inner_loop(self.net, self.config, first_order=self.first_order)
        weights = self.net.weights()
        fast = maml_net.task_copies(weights, xs.shape[0])
        for step in range(1, self.steps + 1):
            logits = self.net.forward_tasks(xs, fast, twice_differentiable=not self.first_order, bn_step=step - 1)
            loss = cross_entropy(logits, ys, twice_differentiable=not self.first_order).sum()
            names = [n for n in loop.adapted if n in fast]
            grads = paddle.grad(loss, [fast[n] for n in names], create_graph=not self.first_order)
            if self.first_order:
                grads = detached(grads)
            fast = dict(fast, **{n: fast[n] - loop.rate(n, step) * g for n, g in zip(names, grads)})
        logits = self.net.forward_tasks(xq, fast, twice_differentiable=False, bn_step=self.steps - 1)
        meta_loss = cross_entropy(logits, yq, twice_differentiable=False).mean()
        return detached([meta_loss] + paddle.grad(meta_loss, [weights[n] for n in weights]))


class Evaluation(paddle.nn.Layer):
    """Query logits after each of STEPS inner steps (the infer path's work), nothing tracked."""

    def __init__(self, net, model_def, config, steps):
        super().__init__()
        self.net, self.model_def, self.config, self.steps = net, model_def, config, steps

    def forward(self, xs, ys, xq):
        loop = self.model_def.inner_loop(self.net, self.config, track=False)
        fast = {n: w.detach() for n, w in maml_net.task_copies(self.net.weights(), xs.shape[0]).items()}
        names = [n for n in loop.adapted if n in fast]
        for n in names:
            fast[n].stop_gradient = False
        outputs = []
        for step in range(1, self.steps + 1):
            loss = cross_entropy(self.net.forward_tasks(xs, fast, twice_differentiable=False), ys, False).sum()
            grads = detached(paddle.grad(loss, [fast[n] for n in names]))
            fast = dict(fast)
            for n, g in zip(names, grads):
                fast[n] = (fast[n] - loop.rate(n, step) * g).detach()
                fast[n].stop_gradient = False
            outputs.append(self.net.forward_tasks(xq, fast, twice_differentiable=False).detach())
        return outputs


def timed(run, reps):
    run()
    seconds, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = [o.numpy() for o in run()]
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="5way1shot", choices=list(SETTINGS))
    parser.add_argument("--order", default="second", choices=["second", "first"])
    parser.add_argument("--eval", action="store_true", help="evaluation (5-way 1-shot, 3 steps, 32 episodes)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    import numpy as np

    os.environ["FEWSHOT_CONV"] = "paddle"  # to_static of the custom convolution operator is not built nor tested
    s = SETTINGS["5way1shot" if args.eval else args.setting]
    config, model_def = load_maml([
        f"hyper_parameters.n_way={s['n_way']}", f"hyper_parameters.k_spt={s['k_spt']}",
        f"hyper_parameters.k_query={s['k_query']}", f"hyper_parameters.update_step={s['steps']}",
        f"hyper_parameters.base_optimizer.learning_rate={s['alpha']}", "hyper_parameters.inner_loss_reduction=mean",
        f"hyper_parameters.first_order={args.order == 'first'}"], s["config"])
    net = model_def.create_model(config)
    xs, ys, xq, yq = model_def.create_feeds(fake_episodes(s, np.random.RandomState(0)), config)
    if args.eval:
        layer, inputs, unit = Evaluation(net, model_def, config, 3), (xs, ys, xq), "episodes/s"
    else:
        layer, inputs, unit = MetaStep(net, model_def, config, s["steps"], args.order == "first"), (xs, ys, xq, yq), "s"
    eager_s, eager_out = timed(lambda: layer(*inputs), args.reps)
    compiled = paddle.jit.to_static(layer, full_graph=True)
    start = time.perf_counter()
    compiled(*inputs)
    build = time.perf_counter() - start
    compiled_s, compiled_out = timed(lambda: compiled(*inputs), args.reps)
    diff = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12)) for a, b in zip(compiled_out, eager_out))
    scale = (lambda t: xs.shape[0] / t) if args.eval else (lambda t: t)
    print(f"{'evaluation' if args.eval else args.setting + ' ' + args.order + ' order'}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}: eager {scale(eager_s):.3f} {unit}, "
          f"compiled {scale(compiled_s):.3f} {unit} (built in {build:.1f} s); largest relative difference {diff:.1e}")


if __name__ == "__main__":
    main()
