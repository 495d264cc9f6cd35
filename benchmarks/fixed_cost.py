"""How much of the project's training step is a fixed cost per operator.

    OMP_NUM_THREADS=1 python benchmarks/fixed_cost.py

Times train_forward + backward (5-way, 1 inner step, meta-batch 32, stride-2
network, random images) with 5, 10 and 20 images per support and per query set
(k = 1, 2, 4 per class), second and first order, median of 5 after a warm-up.
The time that does not grow with the number of images is per-operator overhead.
"""
import os
import sys
import time

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools.utils  # noqa: F401  (the MKL setting, before Paddle loads)
import numpy as np
import paddle
from tools.utils import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = os.path.join(ROOT, "models", "multitask", "maml", "config_bigdata.yaml")


def load(first_order):
    """config_bigdata.yaml's network and inner loop (5-way, 1 step, the authors' loss scaling)."""
    return runtime.load_model_and_config(CONFIG, [f"hyper_parameters.first_order={first_order}"])[:2]


def main():
    paddle.set_device("cpu")
    for first_order in (False, True):
        for k in (1, 2, 4):
            rng = np.random.RandomState(0)
            batch = [(rng.rand(5 * k, 1, 28, 28), np.arange(5).repeat(k), rng.rand(5 * k, 1, 28, 28),
                      np.arange(5).repeat(k)) for _ in range(32)]
            cfg, model_def = load(first_order)
            net = model_def.create_model(cfg)
            metrics, _ = model_def.create_metrics(cfg)
            times = []
            for _ in range(6):
                start = time.perf_counter()
                loss, _, _ = model_def.train_forward(net, metrics, batch, cfg)
                loss.backward()
                for p in net.parameters():
                    p.clear_gradient()
                times.append(time.perf_counter() - start)
            print(f"{'first' if first_order else 'second'} order, {5 * k} images per set: "
                  f"{np.median(times[1:]):.3f} s per meta-iteration", flush=True)


if __name__ == "__main__":
    main()
