"""Convolution forms for MAML's per-task weights, timed per layer shape
(issue "speed, round 3"): Paddle's grouped conv2d, as the project ran
layers 2-4 ([B, T*C, H, W], groups = T), against (step 1) the same convolution as one
batched matmul of the weights with the 3x3 taps of a task-major layout
([T, C, B, H, W] -> patches [T, C*9, B*H'*W']), built only from operators with
CPU double gradients (pad, reshape, unbind, slice, stack, matmul; stride 2 takes
its taps from the four stride phases, since strided slices have no double grad),
and (step 2) the custom C++ operator of models/common/conv_op (one GEMM per
group over all images), when it builds.

    OMP_NUM_THREADS=1 python benchmarks/conv_forms.py [--reps 5]

For each shape it checks that the forms give the same output, then prints the
milliseconds of the forward pass, forward + backward, and forward + backward +
double backward (the second-order pattern: the gradient of a function of the
first gradients), each the best of two alternating rounds, and grouped / taps,
grouped / custom (above 1: the other form is faster).
"""
import argparse
import os
import sys
import time

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools.utils  # noqa: F401  (before Paddle: MKL's fast path on AMD, as the drivers)
import numpy as np
import paddle
import paddle.nn.functional as F

from models.common import conv_op

# name, tasks per pass, images per task, channels, input size, stride
SHAPES = [
    ("Omniglot 20-way 1-shot, layer 2 (support, 4 tasks per pass)", 4, 20, 64, 14, 2),
    ("Omniglot 20-way 1-shot, layer 3", 4, 20, 64, 7, 2),
    ("Omniglot 5-way 1-shot, layer 2 (meta-batch 32)", 32, 5, 64, 14, 2),
    ("MAML++ max-pool network, layer 2 (8 tasks, 5 images)", 8, 5, 64, 14, 1),
    ("miniImageNet 5-way 1-shot, layer 2 (4 tasks, 75 queries, 32 filters)", 4, 75, 32, 42, 1),
]


def same_padding(size):
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    return total // 2, total - total // 2


def grouped(h, w, stride):
    """h [B, T*C, H, W], w [T, O, C, 3, 3] -> [B, T*O, H', W']."""
    tasks, out_channels, channels = w.shape[:3]
    kernels = w.reshape([tasks * out_channels, channels, 3, 3])
    return F.conv2d(h, kernels, stride=stride, padding="SAME" if stride == 2 else 1, groups=tasks)


def taps_matmul(h, w, stride):
    """h [T, C, B, H, W], w [T, O, C, 3, 3] -> [T, O, B, H', W'] as one batched matmul."""
    tasks, channels, batch, height, width = h.shape
    if stride == 2:
        (top, bottom), (left, right) = same_padding(height), same_padding(width)
        bottom += (height + top + bottom) % 2  # an even padded size for the phases (the extra row unused)
        right += (width + left + right) % 2
    else:
        top = bottom = left = right = 1
    padded = F.pad(h.reshape([tasks * channels, batch, height, width]), [left, right, top, bottom])
    out_h, out_w = (height + top + bottom - 3) // stride + 1, (width + left + right - 3) // stride + 1
    if stride == 2:
        rows, cols = padded.shape[2] // 2, padded.shape[3] // 2
        halves = padded.reshape([tasks * channels, batch, rows, 2, cols, 2]).unbind(axis=-1)
        phases = [half.unbind(axis=3) for half in halves]  # phases[b][a][r, c] = padded[2r + a, 2c + b]
        taps = [phases[j % 2][i % 2][:, :, i // 2: i // 2 + out_h, j // 2: j // 2 + out_w]
                for i in range(3) for j in range(3)]
    else:
        taps = [padded[:, :, i: i + out_h, j: j + out_w] for i in range(3) for j in range(3)]
    patches = paddle.stack(taps, axis=1).reshape([tasks, channels * 9, batch * out_h * out_w])
    out = paddle.matmul(w.reshape([tasks, w.shape[1], channels * 9]), patches)
    return out.reshape([tasks, w.shape[1], batch, out_h, out_w])


def custom(h, w, stride):
    """The custom operator on the grouped layout: h [B, T*C, H, W] -> [B, T*O, H', W']."""
    tasks, out_channels, channels = w.shape[:3]
    paddings = same_padding(h.shape[2]) + same_padding(h.shape[3]) if stride == 2 else (1, 1, 1, 1)
    return conv_op.conv2d(h, w.reshape([tasks * out_channels, channels, 3, 3]), stride, paddings, tasks)


def passes(form, x, w, stride):
    def forward():
        form(x, w, stride)

    def backward():
        y = form(x, w, stride)
        paddle.grad((y * y).sum(), [x, w])

    def double():
        y = form(x, w, stride)
        gx, gw = paddle.grad((y * y).sum(), [x, w], create_graph=True)
        paddle.grad((gw * gw).sum() + (gx * gx).sum(), [x, w])

    return {"forward": forward, "forward + backward": backward, "+ double backward": double}


def best_ms(fn, reps):
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return 1000 * (time.perf_counter() - start) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    have_custom = conv_op.load() is not None
    print("| layer | pass | grouped conv2d ms | taps + batched matmul ms | custom operator ms | grouped / taps | "
          "grouped / custom |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, tasks, batch, channels, size, stride in SHAPES:
        data = rng.randn(batch, tasks * channels, size, size).astype("float32")
        x_grouped = paddle.to_tensor(data, stop_gradient=False)
        x_taps = paddle.to_tensor(data.reshape(batch, tasks, channels, size, size).transpose(1, 2, 0, 3, 4).copy(),
                                  stop_gradient=False)
        w = paddle.to_tensor((0.1 * rng.randn(tasks, channels, channels, 3, 3)).astype("float32"), stop_gradient=False)
        a = grouped(x_grouped, w, stride).numpy()
        b = taps_matmul(x_taps, w, stride).numpy()
        side = a.shape[-1]
        difference = np.abs(a.reshape(batch, tasks, channels, side, side).transpose(1, 2, 0, 3, 4) - b).max()
        assert difference < 1e-3 * np.abs(a).max(), (name, difference)
        forms = [passes(grouped, x_grouped, w, stride), passes(taps_matmul, x_taps, w, stride)]
        if have_custom:
            assert np.abs(custom(x_grouped, w, stride).numpy() - a).max() < 1e-4 * np.abs(a).max(), name
            forms.append(passes(custom, x_grouped, w, stride))
        for key in forms[0]:
            ms = [min(best_ms(form[key], args.reps), best_ms(form[key], args.reps)) for form in forms]
            ratios = [f"{ms[0] / m:.2f}" for m in ms[1:]] + ["-"] * (3 - len(ms))
            cells = [f"{m:.1f}" for m in ms] + ["-"] * (3 - len(ms))
            print(f"| {name} | {key} | {' | '.join(cells)} | {' | '.join(ratios)} |", flush=True)


if __name__ == "__main__":
    main()
