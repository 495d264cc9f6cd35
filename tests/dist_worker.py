"""Run by tests/test_distributed.py under paddle.distributed.launch (and alone):
writes this process's all-reduced meta-gradient of a fixed meta-batch of 4
tasks, then its parameters after 3 meta-updates, to OUT/rank{r}.npz."""
import os
import sys

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools.utils  # noqa: F401  (the runtime settings, before Paddle loads)
import numpy as np
import paddle

from tools.trainer import backward
from tools.utils import distributed, runtime

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models", "multitask", "maml",
                      "config.yaml")


def episodes(rng, count):
    return [(rng.rand(5, 1, 28, 28), np.arange(5), rng.rand(10, 1, 28, 28), np.repeat(np.arange(5), 2))
            for _ in range(count)]


def main(out):
    paddle.set_default_dtype("float64")
    config, model_def, _ = runtime.load_model_and_config(CONFIG, ["hyper_parameters.bn_channel=8",
                                                                  "runner.use_fleet=True"])
    rank, world = distributed.init(True, "config")
    paddle.seed(3)
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    metrics, _ = model_def.create_metrics(config)
    rng = np.random.RandomState(0)
    loss = backward(model_def, model, metrics, episodes(rng, 4), config, rank, world)
    result = {"loss": loss}
    result.update({f"grad{i}": p.grad.numpy() for i, p in enumerate(model.parameters())})
    optimizer.clear_grad()
    for _ in range(3):
        backward(model_def, model, metrics, episodes(rng, 4), config, rank, world)
        optimizer.step()
        optimizer.clear_grad()
    result.update({f"param{i}": p.numpy() for i, p in enumerate(model.parameters())})
    np.savez(os.path.join(out, f"rank{rank}_of{world}.npz"), **result)


if __name__ == "__main__":
    main(sys.argv[1])
