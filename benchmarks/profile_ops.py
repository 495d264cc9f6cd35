"""Where a training step's time goes, per operator class, the project and the
PyTorch reference side by side (issue "speed, round 3", step 3):

    OMP_NUM_THREADS=1 python benchmarks/profile_ops.py [--settings 20way1shot ...] [--iterations 2]

Each setting and order is profiled in this process after a warm-up step: the
project with paddle.profiler (self time of each operator and autograd node, from
its Chrome trace), PyTorch with torch.profiler (self CPU time per aten operator).
Operators are grouped into convolution forward / gradient / double gradient,
elementwise arithmetic (batch norm is mostly this), matmul, and the rest; the
table gives each group's share of the profiled time and the time per iteration.
"""
import argparse
import glob
import json
import os
import re
import sys
import tempfile

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_workers import SETTINGS, project_step, torch_step

GROUPS = ["conv forward", "conv gradient", "conv double gradient", "elementwise", "matmul", "other"]
ELEMENTWISE = ("multiply", "add", "subtract", "divide", "mul", "sub", "div", "scale", "rsqrt", "sqrt", "relu",
               "threshold", "sigmoid", "tanh", "sum", "mean", "pow", "square", "exp", "log", "neg")


def group_of(name):
    """The group of an operator name from either framework's profiler."""
    low = name.lower()
    if "conv" in low:
        if "double" in low or "grad_grad" in low:
            return "conv double gradient"
        return "conv gradient" if ("grad" in low or "backward" in low) else "conv forward"
    if "matmul" in low or re.search(r"\b(aten::)?(mm|bmm|addmm)\b", low):
        return "matmul"
    base = re.sub(r"^(aten::|global_)", "", low)
    return "elementwise" if any(base.startswith(e) for e in ELEMENTWISE) else "other"


def self_times(events):
    """{name: self microseconds} of nested (begin, duration, thread, name) events."""
    totals, stacks = {}, {}
    for begin, duration, thread, name in sorted(events, key=lambda e: (e[2], e[0], -e[1])):
        stack = stacks.setdefault(thread, [])
        while stack and stack[-1][0] + stack[-1][1] <= begin:
            stack.pop()
        if stack:  # the parent's self time loses this child's
            totals[stack[-1][2]] = totals.get(stack[-1][2], 0.0) - duration
        totals[name] = totals.get(name, 0.0) + duration
        stack.append((begin, duration, name))
    return totals


def profile_paddle(step, iterations):
    import paddle.profiler as profiler

    folder = tempfile.mkdtemp()
    step()
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=profiler.export_chrome_tracing(folder))
    prof.start()
    for _ in range(iterations):
        step()
        prof.step()
    prof.stop()
    trace = json.load(open(glob.glob(os.path.join(folder, "*.json"))[0]))
    events = [(e["ts"], e["dur"], re.sub(r"\(.*\)", "", str(e.get("tid"))),  # "123(Python)", "123(C++)": one thread
               re.sub(r" (dygraph|kernel launch)$", "", re.sub(r"\[.*?\]$", "", e["name"])).strip())
              for e in (trace["traceEvents"] if isinstance(trace, dict) else trace) if "dur" in e]
    return self_times(events)  # what no operator event covers (Python, dispatch) stays with the step: "other"


def record_custom_convolutions():
    """Paddle's profiler records no event for a custom operator's forward: wrap it in one."""
    import paddle.profiler as profiler
    from models.common import conv_op

    def recorded(*args, _conv=conv_op.conv2d, **kwargs):
        with profiler.RecordEvent("fewshot_conv2d"):
            return _conv(*args, **kwargs)

    conv_op.conv2d = recorded


def profile_torch(step, iterations):
    import torch

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(iterations):
            step()
    return {e.key: e.self_cpu_time_total for e in prof.key_averages()}


def shares(times, iterations):
    grouped = dict.fromkeys(GROUPS, 0.0)
    for name, us in times.items():
        grouped[group_of(name)] += us
    total = sum(grouped.values())
    return {g: (100 * v / total, v / 1000 / iterations) for g, v in grouped.items()}, total / 1000 / iterations


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--orders", nargs="+", default=["second", "first"], choices=["second", "first"])
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    import tools.utils  # noqa: F401  (before Paddle: the drivers' runtime settings)

    record_custom_convolutions()

    try:
        import torch  # noqa: F401
        sides = [("project", project_step, profile_paddle), ("torch", torch_step, profile_torch)]
    except ImportError:
        sides = [("project", project_step, profile_paddle)]
    print("| setting | order | side | ms per iteration (profiled) | " + " | ".join(GROUPS) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---" for _ in GROUPS) + " |")
    for setting in args.settings:
        for order in args.orders:
            for side, make_step, profile in sides:
                share, total = shares(profile(make_step(SETTINGS[setting], order), args.iterations), args.iterations)
                cells = " | ".join(f"{share[g][0]:.0f} % ({share[g][1]:.0f} ms)" for g in GROUPS)
                print(f"| {setting} | {order} | {side} | {total:.0f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
