"""Seconds per MAML meta-iteration: this project against a naive Paddle loop and PyTorch.

    python benchmarks/bench_maml.py            # full run (a few minutes)
    python benchmarks/bench_maml.py --quick    # fewer repetitions, 5-way only (about 5 minutes)

Every measurement runs in its own subprocess (clean peak memory, its own
environment), at the shapes of config_bigdata.yaml (5-way 1-shot) and
config_bigdata_20way1shot.yaml, second and first order:
  project  the project's own training step (DygraphModel.train_forward, backward, Adam step)
  naive    a per-task Paddle loop written here, PaddleRec style: F.conv2d with its bias,
           batch norm from primitives on NCHW, no fused kernels, no MKL setting
  torch    a functional PyTorch loop (torch.func-free: autograd.grad), if torch is importable
Also meta-iterations per second with 1 and 2 processes (paddle.distributed.launch,
runner.use_fleet), evaluation episodes per second (infer path) and the reader's time
per meta-batch.
Each variant is measured in several rounds, the variants one after another in
each round, because a shared virtual machine's speed drifts (here up to 2x within
minutes); a ratio compares the project with a reference of the same round and
the printed ratio is the median over the rounds. Prints a table of medians (of
>= 5 runs after a warm-up) with ratios, writes JSON (with every round and the
CPU seconds next to the wall-clock seconds).
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "multitask", "maml")
SETTINGS = {
    "5way1shot": dict(n_way=5, k_spt=1, k_query=1, meta_batch=32, steps=1, alpha=0.4, tasks_per_pass=0),
    "20way1shot": dict(n_way=20, k_spt=1, k_query=1, meta_batch=16, steps=5, alpha=0.1, tasks_per_pass=4),
}


def conv4_shapes(n_way):
    """Parameter shapes of the conv-4 network, in the project's order."""
    shapes, channels = [], 1
    for _ in range(4):
        shapes += [[64, channels, 3, 3], [64], [64], [64]]
        channels = 64
    return shapes + [[64, n_way], [n_way]]


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

    n, k, q = s["n_way"], s["k_spt"], s["k_query"]
    return [(rng.rand(n * k, 1, 28, 28).astype("float32"), np.repeat(np.arange(n), k),
             rng.rand(n * q, 1, 28, 28).astype("float32"), np.repeat(np.arange(n), q))
            for _ in range(s["meta_batch"])]


def worker_project(s, order, reps):
    sys.path[:0] = [MODEL_DIR, os.path.join(ROOT, "tools")]
    import utils  # noqa: F401  (the project's runtime settings, as the drivers)
    import numpy as np
    from dygraph_model import DygraphModel
    from utils import distributed
    from utils.config import load_config

    rank, world = distributed.init(True, "benchmark")  # (0, 1) unless started by the launcher

    model_def = DygraphModel()
    config = load_config(os.path.join(MODEL_DIR, "config_bigdata.yaml"), [
        f"hyper_parameters.n_way={s['n_way']}", f"hyper_parameters.k_spt={s['k_spt']}",
        f"hyper_parameters.k_query={s['k_query']}", f"hyper_parameters.update_step={s['steps']}",
        f"hyper_parameters.base_optimizer.learning_rate={s['alpha']}", f"hyper_parameters.tasks_per_pass={s['tasks_per_pass']}",
        "hyper_parameters.inner_loss_reduction=mean", f"hyper_parameters.first_order={order == 'first'}"],
        model_def.HYPER_PARAMETER_OPTIONS)
    model = model_def.create_model(config)
    optimizer = model_def.create_optimizer(model, config)
    batch = fake_episodes(s, np.random.RandomState(0))
    metrics, _ = model_def.create_metrics(s["steps"])

    def step():
        loss = distributed.meta_gradient(model_def, model, metrics, batch, config, rank, world)
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    return timed(step, reps)


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
            h = F.conv2d(h, p[4 * i], p[4 * i + 1], stride=2, padding="SAME")
            h = F.relu(bn(h, p[4 * i + 2], p[4 * i + 3]))
        return paddle.matmul(h.mean(axis=[2, 3]), p[16]) + p[17]

    def xent(logits, y):
        m = logits.detach().max(axis=-1, keepdim=True)
        lse = paddle.log(paddle.exp(logits - m).sum(-1)) + m.squeeze(-1)
        return (lse - (logits * F.one_hot(y, logits.shape[-1])).sum(-1)).mean()

    params = [paddle.create_parameter(sh, "float32") for sh in conv4_shapes(s["n_way"])]
    optimizer = paddle.optimizer.Adam(0.001, parameters=params)
    batch = [[paddle.to_tensor(a) for a in e] for e in fake_episodes(s, np.random.RandomState(0))]

    def step():
        losses = []
        for xs, ys, xq, yq in batch:
            fast = params
            for _ in range(s["steps"]):
                x = xs.detach()
                x.stop_gradient = False  # the conv2d double-grad workaround, needed for a right answer
                grads = paddle.grad(xent(forward(x, fast), ys), fast + [x], create_graph=order == "second")[:-1]
                fast = [p - s["alpha"] * g for p, g in zip(fast, grads)]
            losses.append(xent(forward(xq, fast), yq))
        loss = paddle.stack(losses).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)

    return timed(step, reps)


def worker_torch(s, order, reps):
    import numpy as np
    import torch
    import torch.nn.functional as F

    def forward(x, p):
        h = x
        for i in range(4):
            h = F.conv2d(h, p[4 * i], p[4 * i + 1], stride=2, padding=1)
            h = F.relu(F.batch_norm(h, None, None, p[4 * i + 2], p[4 * i + 3], training=True))
        return h.mean(dim=[2, 3]) @ p[16] + p[17]

    torch.manual_seed(0)
    params = [(torch.randn(sh) * 0.1).requires_grad_() for sh in conv4_shapes(s["n_way"])]
    optimizer = torch.optim.Adam(params, 0.001)
    batch = [[torch.from_numpy(np.asarray(a)) for a in e] for e in fake_episodes(s, np.random.RandomState(0))]

    def step():
        losses = []
        for xs, ys, xq, yq in batch:
            fast = params
            for _ in range(s["steps"]):
                grads = torch.autograd.grad(F.cross_entropy(forward(xs, fast), ys), fast,
                                            create_graph=order == "second")
                fast = [p - s["alpha"] * g for p, g in zip(fast, grads)]
            losses.append(F.cross_entropy(forward(xq, fast), yq))
        loss = torch.stack(losses).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        float(loss)

    return timed(step, reps)


def worker_eval(s, order, reps):
    """Evaluation episodes per second: adapt 3 steps, query accuracy after each."""
    sys.path[:0] = [MODEL_DIR, os.path.join(ROOT, "tools")]
    import utils  # noqa: F401
    import numpy as np
    from dygraph_model import DygraphModel
    from utils.config import load_config

    model_def = DygraphModel()
    config = load_config(os.path.join(MODEL_DIR, "config_bigdata.yaml"), [], model_def.HYPER_PARAMETER_OPTIONS)
    model = model_def.create_model(config)
    episodes = fake_episodes(s, np.random.RandomState(1))
    metrics, _ = model_def.create_metrics(config["hyper_parameters"]["update_step_test"])
    result = timed(lambda: model_def.infer_forward(model, metrics, episodes, config), reps)
    return {key: value / len(episodes) for key, value in result.items()}


def worker_reader(s, order, reps):
    """Seconds to sample one meta-batch of episodes from the prepared full data
    (or the sample data if run.sh has not been run)."""
    sys.path[:0] = [MODEL_DIR]
    import itertools

    from omniglot_reader import RecDataset

    prepared = os.path.join(ROOT, "datasets", "omniglot", "data", "paper", "train")
    data = prepared if os.path.isdir(prepared) else os.path.join(MODEL_DIR, "data", "sample_data", "train")
    dataset = RecDataset(data, s["n_way"], s["k_spt"], s["k_query"], 28, seed=0, rotations=(0, 90, 180, 270))
    episodes = iter(dataset)
    return timed(lambda: list(itertools.islice(episodes, s["meta_batch"])), reps)


WORKERS = {"project": worker_project, "naive": worker_naive, "torch": worker_torch,
           "eval": worker_eval, "reader": worker_reader}


def run_worker(variant, setting, order, reps, threads, processes=1):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if variant == "naive":
        env.pop("MKL_DEBUG_CPU_TYPE", None)
    script = [os.path.abspath(__file__), "--worker", variant, setting, order, str(reps)]
    if processes == 1:
        result = subprocess.run([sys.executable] + script, env=env, capture_output=True, text=True)
        output = result.stdout
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as logs:
            result = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node",
                                     str(processes), "--log_dir", logs] + script,
                                    env=env, capture_output=True, text=True)
            output = open(os.path.join(logs, "workerlog.0")).read()
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(output.strip().splitlines()[-1])


def median_of(rounds, variant, key):
    values = [r[variant][key] for r in rounds if key in r[variant]]
    return statistics.median(values) if values else float("nan")


def median_ratio(rounds, reference):
    """Median over the rounds of project time / reference time within a round."""
    ratios = [r["project"]["seconds"] / r[reference]["seconds"] for r in rounds
              if "seconds" in r["project"] and "seconds" in r[reference]]
    return statistics.median(ratios) if ratios else float("nan")


def torch_available():
    return subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions, the 5-way setting only")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (median taken), >= 5")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every worker")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of all variants, one after another (the machine's speed drifts)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results.json"))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), help="only these settings")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        variant, setting, order, reps = args.worker
        result = WORKERS[variant](SETTINGS[setting], order, int(reps))
        print(json.dumps(dict(result, peak_rss_mb=peak_rss_mb())))
        return
    reps = max(5, args.reps or (5 if args.quick else 7))
    settings = args.settings or (["5way1shot"] if args.quick else list(SETTINGS))
    variants = ["project", "naive"] + (["torch"] if torch_available() else [])
    references = variants[1:]
    results = {"reps": reps, "rounds": args.rounds, "threads": args.threads, "rows": []}
    print(f"median of {reps} meta-iterations after a warm-up, in each of {args.rounds} rounds that run the "
          f"variants one after another; OMP_NUM_THREADS={args.threads}.\nratio = project time / reference "
          f"time in the same round, median over the rounds (below 1: project faster)")
    print(f"{'setting':11} {'order':6} " + " ".join(f"{v + ' s/iter':>14}" for v in variants) +
          "".join(f" {'vs ' + v:>9}" for v in references) + f" {'peak MB':>9}")
    for setting in settings:
        for order in ("second", "first"):
            rounds = [{v: run_worker(v, setting, order, reps, args.threads) for v in variants}
                      for _ in range(args.rounds)]
            row = {"setting": setting, "order": order, "rounds": rounds}
            for v in variants:
                row[v] = median_of(rounds, v, "seconds")
            for ref in references:
                row[f"ratio_vs_{ref}"] = median_ratio(rounds, ref)
            row["project_peak_rss_mb"] = median_of(rounds, "project", "peak_rss_mb")
            print(f"{setting:11} {order:6} " + " ".join(f"{row[v]:14.3f}" for v in variants) +
                  "".join(f" {row['ratio_vs_' + ref]:9.2f}" for ref in references) +
                  f" {row['project_peak_rss_mb']:9.0f}", flush=True)
            results["rows"].append(row)
    one = next((r["project"] for r in results["rows"] if (r["setting"], r["order"]) == ("5way1shot", "second")),
               float("nan"))
    two = run_worker("project", "5way1shot", "second", reps, 1, processes=2)
    results["processes"] = {"1": one, "2": two.get("seconds", two)}
    print(f"5-way 1-shot second order, meta-batch 32: {1 / one:.2f} meta-iterations/s in 1 process "
          f"({args.threads} threads{'' if one == one else '; nan: not measured in this run'}), "
          f"{1 / two.get('seconds', float('nan')):.2f} in 2 processes (1 thread each)")
    ev = run_worker("eval", "5way1shot", "none", reps, args.threads)
    rd = run_worker("reader", "5way1shot", "none", reps, args.threads)
    results["eval_episodes_per_s"] = 1.0 / ev["seconds"] if "seconds" in ev else ev
    results["reader_s_per_meta_batch"] = rd.get("seconds", rd)
    print(f"evaluation (5-way 1-shot, 3 steps): {results['eval_episodes_per_s']:.1f} episodes/s; "
          f"reader: {1000 * results['reader_s_per_meta_batch']:.2f} ms per meta-batch of 32 episodes")
    errors = [(r["setting"], r["order"], v, one_round[v]["error"]) for r in results["rows"]
              for one_round in r["rounds"] for v in variants if "error" in one_round[v]]
    for e in errors:
        print("error:", *e)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
