"""An independent PyTorch run of first-order MAML as the MAML authors' code
(cbfinn/maml) computes it on Omniglot 5-way 1-shot, to tell a bug in this
project's first-order path from a property of the protocol (MAML README,
"Relatives"). Nothing of the project's learner is used: only its episode
sampler and the prepared data (sh datasets/omniglot/run.sh).

    python benchmarks/reference_fomaml_torch.py [--iterations 1000] [--reduction authors|mean] [--order first|second]

The authors' network and step: 4 x (3x3 conv, stride 2, TensorFlow SAME padding,
bias 0 at start, Xavier-uniform weights; batch norm over the current batch with an
offset and no scale, epsilon 1e-3, the offset meta-learned but not adapted; ReLU),
spatial mean, a linear classifier with N(0, 1) weights; binary 28 x 28 drawings
(strokes 1). Inner loss: per-image cross-entropy summed and divided by K (their
xent / update_batch_size), one step of 0.4; first order: the inner gradient a
constant (tf.stop_gradient). Meta-batch 32, one query per class, Adam 0.001.
Test: 600 episodes of the test characters x 4 rotations, 3 steps, accuracy
after the last, mean +- 95 % CI.
"""
import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from models.multitask.maml.omniglot_reader import RecDataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATA = os.path.join(ROOT, "datasets", "omniglot", "data", "paper")


def same_pad(size):
    """TensorFlow SAME padding (before, after) of a stride-2 3x3 conv on SIZE."""
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    return total // 2, total - total // 2


def init_params(n_way, generator):
    params = {}
    channels = 1
    for i in range(4):
        bound = (6.0 / (9 * channels + 9 * 64)) ** 0.5  # Xavier uniform of a 3x3 conv
        params[f"conv{i}"] = (torch.rand(64, channels, 3, 3, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        params[f"b{i}"] = torch.zeros(64, dtype=torch.float64)
        params[f"offset{i}"] = torch.zeros(64, dtype=torch.float64)
        channels = 64
    params["w5"] = torch.randn(64, n_way, generator=generator, dtype=torch.float64)
    params["b5"] = torch.zeros(n_way, dtype=torch.float64)
    return {k: v.float().requires_grad_() for k, v in params.items()}


def forward(x, p):
    h = x
    for i in range(4):
        before, after = same_pad(h.shape[-1])
        h = F.conv2d(F.pad(h, (before, after, before, after)), p[f"conv{i}"], p[f"b{i}"], stride=2)
        mean = h.mean(dim=(0, 2, 3), keepdim=True)
        var = h.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        h = F.relu((h - mean) / torch.sqrt(var + 1e-3) + p[f"offset{i}"].view(1, -1, 1, 1))
    return h.mean(dim=(2, 3)) @ p["w5"] + p["b5"]


def adapt(p, xs, ys, steps, alpha, k, create_graph, reduction):
    fast = dict(p)
    names = [n for n in p if not n.startswith("offset")]  # the authors' BN offset is not adapted
    for _ in range(steps):
        losses = F.cross_entropy(forward(xs, fast), ys, reduction="none")
        loss = losses.sum() / k if reduction == "authors" else losses.mean()
        grads = torch.autograd.grad(loss, [fast[n] for n in names], create_graph=create_graph)
        fast.update({n: fast[n] - alpha * g for n, g in zip(names, grads)})
    return fast


def tensors(episode):
    xs, ys, xq, yq = episode
    return torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(xq), torch.from_numpy(yq)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--reduction", choices=["authors", "mean"], default="authors")
    parser.add_argument("--order", choices=["first", "second"], default="first")
    parser.add_argument("--seed", type=int, default=2017)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    rotations = (0, 90, 180, 270)
    train = iter(RecDataset(os.path.join(DATA, "train"), 5, 1, 1, 28, args.seed, rotations=rotations, resize="nearest"))
    params = init_params(5, torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    start = time.time()
    for it in range(1, args.iterations + 1):
        losses = []
        for _ in range(32):
            xs, ys, xq, yq = tensors(next(train))
            fast = adapt(params, xs, ys, 1, 0.4, 1, args.order == "second", args.reduction)
            losses.append(F.cross_entropy(forward(xq, fast), yq, reduction="sum"))
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if it % 100 == 0:
            print(f"iteration {it}: query loss {float(loss):.4f} ({time.time() - start:.0f} s)", flush=True)
    test = RecDataset(os.path.join(DATA, "test"), 5, 1, 1, 28, 1234, num_episodes=600, rotations=rotations,
                      resize="nearest")
    accuracies = []
    for episode in test:
        xs, ys, xq, yq = tensors(episode)
        fast = {n: v.detach() for n, v in adapt(params, xs, ys, 3, 0.4, 1, False, args.reduction).items()}
        with torch.no_grad():
            accuracies.append(float((forward(xq, fast).argmax(-1) == yq).float().mean()))
    acc = np.array(accuracies) * 100
    print(f"{args.order} order, {args.reduction} reduction, {args.iterations} meta-iterations: test "
          f"{acc.mean():.2f} +- {1.96 * acc.std(ddof=1) / np.sqrt(len(acc)):.2f} % (600 episodes, 3 steps)")


if __name__ == "__main__":
    main()
