"""Paddle's eager CPU kernels against PyTorch's on the miniImageNet MAML shapes
(issue 18: why the max-pool network's step is several times PyTorch's).

    OMP_NUM_THREADS=2 python benchmarks/kernel_gap.py

Each operator's forward + backward at the query pass of config_bigdata_miniimagenet_1shot.yaml
(4 tasks x 75 query images, 32 filters, tasks in the channel axis as the project runs
them), median of 5 after a warm-up, in both frameworks in this process; prints
milliseconds and the ratio Paddle / PyTorch."""
import statistics
import time

import numpy as np

TASKS, IMAGES, FILTERS = 4, 75, 32


def timed(run, reps=5):
    run()
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return 1000 * statistics.median(seconds)


def cases(F, lib):
    """name -> (input shapes, function of the inputs), the same in both libraries."""
    c = TASKS * FILTERS
    return {
        "conv2d 3x3, 42x42, groups=4": ([[IMAGES, c, 42, 42], [c, FILTERS, 3, 3]],
                                         lambda x, w: F.conv2d(x, w, padding=1, groups=TASKS)),
        "batch_norm, 84x84": ([[IMAGES, c, 84, 84], [c], [c]],
                              lambda x, g, b: F.batch_norm(x, lib.zeros([c]), lib.ones([c]), g, b, training=True)),
        "relu, 84x84": ([[IMAGES, c, 84, 84]], F.relu),
        "max_pool2d 2x2, 84x84": ([[IMAGES, c, 84, 84]], lambda x: F.max_pool2d(x, 2)),
    }


def run_paddle(shapes, fn):
    import paddle

    inputs = [paddle.to_tensor(np.random.rand(*s).astype("float32"), stop_gradient=False) for s in shapes]
    return timed(lambda: fn(*inputs).sum().backward())


def run_torch(shapes, fn):
    import torch

    inputs = [torch.from_numpy(np.random.rand(*s).astype("float32")).requires_grad_() for s in shapes]
    return timed(lambda: fn(*inputs).sum().backward())


def main():
    import os
    import sys

    if not __package__:  # run as a script: make the project root importable
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tools.utils  # noqa: F401  (the project's runtime settings: MKL's fast path on AMD)
    import paddle
    import paddle.nn.functional as PF
    import torch
    import torch.nn.functional as TF

    print(f"forward + backward, ms (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')})")
    for (name, (shapes, pf)), (_, (_, tf)) in zip(cases(PF, paddle).items(), cases(TF, torch).items()):
        p, t = run_paddle(shapes, pf), run_torch(shapes, tf)
        print(f"{name:28} paddle {p:8.1f}  torch {t:8.1f}  ratio {p / t:5.2f}", flush=True)


if __name__ == "__main__":
    main()
