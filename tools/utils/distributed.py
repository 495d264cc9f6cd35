"""Data parallelism over the tasks of a meta-batch, with paddle.distributed.

Started by `python -m paddle.distributed.launch --nproc_per_node N tools/trainer.py ...`
and `runner.use_fleet: True`. Every process samples the whole batch from the
same seed (sampling costs under 1 % of a step) and takes its share (shard),
tasks rank, rank + N, ...; the trainer scales each process's mean loss by its
share of the batch, so the gradients summed over processes (sum_gradients,
after backward) are exactly the single-process gradient, and every process
applies the same update. This module only shards and communicates.
"""
import os
import time

import paddle.distributed as dist


class LostProcess(ConnectionError):
    """A collective failed: another process stopped (Ctrl-C, SIGTERM, an error)."""


def _collective(op, *args):
    try:
        op(*args)
    except RuntimeError as e:
        # When Ctrl-C or SIGTERM reached every process, this one was waiting inside the
        # collective; give its pending signal the chance to surface as KeyboardInterrupt.
        time.sleep(1)
        raise LostProcess(f"process {dist.get_rank()} lost the others ({str(e).splitlines()[0][:120]}); "
                          f"one of them stopped or failed: see its log") from None


def world_size_from_launcher():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def init(use_fleet, config_path):
    """(rank, world). Initialises the process group when launched with N > 1."""
    world = world_size_from_launcher()
    if world <= 1:
        return 0, 1
    if not use_fleet:
        raise ValueError(f"config file {config_path}: launched with {world} processes but runner.use_fleet "
                         f"is False; add -o runner.use_fleet=True to train one model across them")
    dist.init_parallel_env()
    return dist.get_rank(), dist.get_world_size()


def shard(items, rank, world):
    """This process's share of a list: items rank, rank + world, ..."""
    return items[rank::world]


def sum_over_processes(tensor, world):
    """In-place sum over the processes (no-op in a single process)."""
    if world > 1:
        _collective(dist.all_reduce, tensor)
    return tensor


def gather(obj, world):
    """List of OBJ from every process, in rank order."""
    if world <= 1:
        return [obj]
    objects = []
    _collective(dist.all_gather_object, objects, obj)
    return objects


def sum_gradients(model, world):
    """Sum every parameter's gradient over the processes, in place (after
    backward, outside any double-backward graph)."""
    for p in model.parameters():
        if p.grad is not None:
            sum_over_processes(p.grad, world)
