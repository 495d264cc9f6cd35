"""The measurements of bench_maml.py, each run in its own subprocess
(`bench_maml.py --worker VARIANT SETTING ORDER REPS`): the project's training
step and evaluation, a naive Paddle loop, a PyTorch loop, the reader."""
import functools
import os
import resource
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "multitask", "maml")

OMNIGLOT = dict(config="config_bigdata.yaml", channels=1, size=28, filters=64, net="stride")
SETTINGS = {
    "5way1shot": dict(OMNIGLOT, n_way=5, k_spt=1, k_query=1, meta_batch=32, steps=1, alpha=0.4, tasks_per_pass=0),
    "20way1shot": dict(OMNIGLOT, n_way=20, k_spt=1, k_query=1, meta_batch=16, steps=5, alpha=0.1, tasks_per_pass=4),
    # config_bigdata_miniimagenet_1shot.yaml: 84 x 84 x 3, 32 filters, max-pool, the classifier on 32 x 5 x 5
    "mini5way1shot": dict(config="config_bigdata_miniimagenet_1shot.yaml", channels=3, size=84, filters=32,
                          net="maxpool_flatten", n_way=5, k_spt=1, k_query=15, meta_batch=4, steps=5, alpha=0.01,
                          tasks_per_pass=0),
    # config_bigdata_maml_plus_plus.yaml: max-pool network, meta-batch 8, 5 steps of 0.1 (learned), the query
    # loss after every step (multi-step loss; the references weigh them equally, as MAML++ does at epoch 0)
    "mamlpp5way1shot": dict(OMNIGLOT, config="config_bigdata_maml_plus_plus.yaml", net="maxpool", n_way=5, k_spt=1,
                            k_query=1, meta_batch=8, steps=5, alpha=0.1, tasks_per_pass=0, multi_step=True),
}


def conv4_shapes(s):
    """Parameter shapes of the setting's conv-4 network, in the project's order."""
    shapes, channels, width = [], s["channels"], s["filters"]
    for _ in range(4):
        shapes += [[width, channels, 3, 3], [width], [width], [width]]
        channels = width
    features = width * 5 * 5 if s["net"] == "maxpool_flatten" else width
    return shapes + [[features, s["n_way"]], [s["n_way"]]]


def timed(step, reps):
    """Medians over REPS calls after a warm-up: wall-clock seconds and this
    process's CPU seconds (all threads; on a shared virtual machine the CPU
    time leaves out the time the hypervisor gave to other guests)."""
    step()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"seconds": statistics.median(wall), "cpu_seconds": statistics.median(cpu)}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fake_episodes(s, rng):
    import numpy as np

    n, k, q, image = s["n_way"], s["k_spt"], s["k_query"], (s["channels"], s["size"], s["size"])
    return [(rng.rand(n * k, *image).astype("float32"), np.repeat(np.arange(n), k),
             rng.rand(n * q, *image).astype("float32"), np.repeat(np.arange(n), q))
            for _ in range(s["meta_batch"])]


def load_maml(overrides=(), config="config_bigdata.yaml"):
    """(config, DygraphModel) of one of MAML's configs, as the drivers load them."""
    import tools.utils  # noqa: F401  (the project's runtime settings, as the drivers)
    from tools.utils import runtime

    return runtime.load_model_and_config(os.path.join(MODEL_DIR, config), list(overrides))[:2]


def worker_project(s, order, reps):
    return timed(project_step(s, order), reps)


def project_step(s, order):
    """The project's training step for setting S, as a function of no arguments."""
    import numpy as np

    config, model_def = load_maml([
        f"hyper_parameters.n_way={s['n_way']}", f"hyper_parameters.k_spt={s['k_spt']}",
        f"hyper_parameters.k_query={s['k_query']}", f"hyper_parameters.update_step={s['steps']}",
        f"hyper_parameters.base_optimizer.learning_rate={s['alpha']}", f"hyper_parameters.tasks_per_pass={s['tasks_per_pass']}",
        "hyper_parameters.inner_loss_reduction=mean", f"hyper_parameters.first_order={order == 'first'}"],
        s["config"])
    from tools.trainer import backward
    from tools.utils import distributed

    rank, world = distributed.init(True, "benchmark")  # (0, 1) unless started by the launcher
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    batch = fake_episodes(s, np.random.RandomState(0))
    metrics, _ = model_def.create_metrics(config)

    def step():  # the trainer's own backward (shard, backward, all-reduce), then the update
        backward(model_def, model, metrics, batch, config, rank, world)
        optimizer.step()
        optimizer.clear_grad()

    return step


def worker_naive(s, order, reps):
    import numpy as np
    import paddle
    import paddle.nn.functional as F

    def bn(x, g, b):
        mean = x.mean(axis=[0, 2, 3], keepdim=True)
        var = ((x - mean) ** 2).mean(axis=[0, 2, 3], keepdim=True)
        return (x - mean) / paddle.sqrt(var + 1e-5) * g.reshape([1, -1, 1, 1]) + b.reshape([1, -1, 1, 1])

    def forward(x, p):
        h = x
        for i in range(4):
            if s["net"] == "stride":
                h = F.relu(bn(F.conv2d(h, p[4 * i], p[4 * i + 1], stride=2, padding="SAME"), p[4 * i + 2], p[4 * i + 3]))
            else:  # Paddle has no CPU double gradient for max_pool2d: second order fails here
                h = F.max_pool2d(F.relu(bn(F.conv2d(h, p[4 * i], p[4 * i + 1], padding=1), p[4 * i + 2], p[4 * i + 3])), 2)
        features = h.mean(axis=[2, 3]) if s["net"] == "stride" else h.reshape([h.shape[0], -1])
        return paddle.matmul(features, p[16]) + p[17]

    def xent(logits, y):
        m = logits.detach().max(axis=-1, keepdim=True)
        lse = paddle.log(paddle.exp(logits - m).sum(-1)) + m.squeeze(-1)
        return (lse - (logits * F.one_hot(y, logits.shape[-1])).sum(-1)).mean()

    params = [paddle.create_parameter(sh, "float32") for sh in conv4_shapes(s)]
    optimizer = paddle.optimizer.Adam(0.001, parameters=params)
    batch = [[paddle.to_tensor(a) for a in e] for e in fake_episodes(s, np.random.RandomState(0))]

    def step():
        losses = []
        for xs, ys, xq, yq in batch:
            fast, task_losses = params, []
            for step in range(s["steps"]):
                x = xs.detach()
                x.stop_gradient = False  # the conv2d double-grad workaround, needed for a right answer
                grads = paddle.grad(xent(forward(x, fast), ys), fast + [x], create_graph=order == "second")[:-1]
                fast = [p - s["alpha"] * g for p, g in zip(fast, grads)]
                if s.get("multi_step") or step == s["steps"] - 1:
                    task_losses.append(xent(forward(xq, fast), yq))
            losses.append(paddle.stack(task_losses).mean())
        loss = paddle.stack(losses).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    return timed(step, reps)


def torch_forward(s, x, p):
    """The setting's conv-4 network in functional PyTorch, weights P in conv4_shapes order."""
    import torch.nn.functional as F

    h = x
    for i in range(4):
        stride, padding = (2, 1) if s["net"] == "stride" else (1, 1)
        h = F.conv2d(h, p[4 * i], p[4 * i + 1], stride=stride, padding=padding)
        h = F.relu(F.batch_norm(h, None, None, p[4 * i + 2], p[4 * i + 3], training=True))
        if s["net"] != "stride":
            h = F.max_pool2d(h, 2)
    features = h.mean(dim=[2, 3]) if s["net"] == "stride" else h.flatten(1)
    return features @ p[16] + p[17]


def worker_torch(s, order, reps):
    return timed(torch_step(s, order), reps)


def torch_step(s, order):
    """The functional PyTorch reference step for setting S, as a function of no arguments."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    forward = functools.partial(torch_forward, s)

    torch.manual_seed(0)
    params = [(torch.randn(sh) * 0.1).requires_grad_() for sh in conv4_shapes(s)]
    optimizer = torch.optim.Adam(params, 0.001)
    batch = [[torch.from_numpy(np.asarray(a)) for a in e] for e in fake_episodes(s, np.random.RandomState(0))]

    def step():
        losses = []
        for xs, ys, xq, yq in batch:
            fast, task_losses = params, []
            for step in range(s["steps"]):
                grads = torch.autograd.grad(F.cross_entropy(forward(xs, fast), ys), fast,
                                            create_graph=order == "second")
                fast = [p - s["alpha"] * g for p, g in zip(fast, grads)]
                if s.get("multi_step") or step == s["steps"] - 1:
                    task_losses.append(F.cross_entropy(forward(xq, fast), yq))
            losses.append(torch.stack(task_losses).mean())
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        float(loss)

    return step


def worker_eval(s, order, reps):
    """Evaluation episodes per second: adapt 3 steps, query accuracy after each."""
    import numpy as np

    config, model_def = load_maml()
    model = model_def.create_model(config)
    episodes = fake_episodes(s, np.random.RandomState(1))
    metrics, _ = model_def.create_metrics(config, "infer")
    result = timed(lambda: model_def.infer_forward(model, metrics, episodes, config), reps)
    return {key: value / len(episodes) for key, value in result.items()}


def worker_reader(s, order, reps):
    """Seconds to sample one meta-batch of episodes from the prepared full data
    (or the sample data if run.sh has not been run)."""
    import itertools

    from models.multitask.maml.omniglot_reader import RecDataset

    prepared = os.path.join(ROOT, "datasets", "omniglot", "data", "paper", "train")
    data = prepared if os.path.isdir(prepared) else os.path.join(MODEL_DIR, "data", "sample_data", "train")
    dataset = RecDataset(data, s["n_way"], s["k_spt"], s["k_query"], 28, seed=0, rotations=(0, 90, 180, 270))
    episodes = iter(dataset)
    return timed(lambda: list(itertools.islice(episodes, s["meta_batch"])), reps)


def worker_eval_torch(s, order, reps):
    """The PyTorch reference of worker_eval: the same episodes and work (3 steps of
    0.4 on the mean support loss, the query accuracy after 0..3 steps), one task at a time."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    params = [(torch.randn(sh) * 0.1).requires_grad_() for sh in conv4_shapes(s)]
    episodes = [[torch.from_numpy(np.asarray(a)) for a in e] for e in fake_episodes(s, np.random.RandomState(1))]

    def evaluate():
        for xs, ys, xq, yq in episodes:
            fast = params
            for step in range(4):
                if step:
                    grads = torch.autograd.grad(F.cross_entropy(torch_forward(s, xs, fast), ys), fast)
                    fast = [p - 0.4 * g for p, g in zip(fast, grads)]
                with torch.no_grad():
                    float((torch_forward(s, xq, fast).argmax(-1) == yq).float().mean())

    result = timed(evaluate, reps)
    return {key: value / len(episodes) for key, value in result.items()}


WORKERS = {"project": worker_project, "naive": worker_naive, "torch": worker_torch,
           "eval": worker_eval, "eval_torch": worker_eval_torch, "reader": worker_reader}
