"""Data parallelism over the tasks of a meta-batch, with paddle.distributed.

Started by `python -m paddle.distributed.launch --nproc_per_node N tools/trainer.py ...`
and `runner.use_fleet: True`. Every process samples the whole meta-batch from
the same seed (sampling costs under 1 % of a step) and adapts its share,
tasks rank, rank + N, ...; each process scales its mean task loss by its share
of the meta-batch, so the gradients summed over processes (all_reduce after
backward, outside paddle.grad's double-backward graph) are exactly the
single-process meta-gradient, and every process applies the same update.
"""
import os

import paddle.distributed as dist


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
        dist.all_reduce(tensor)
    return tensor


def gather(obj, world):
    """List of OBJ from every process, in rank order."""
    if world <= 1:
        return [obj]
    objects = []
    dist.all_gather_object(objects, obj)
    return objects


def meta_gradient(model_def, model, metrics, batch, config, rank, world):
    """Leaves the meta-gradient of the whole meta-batch BATCH in every
    parameter's .grad, on every process; returns the meta-loss (a 0-d tensor,
    identical on every process)."""
    local = shard(batch, rank, world)
    loss, _, _ = model_def.train_forward(model, metrics, local, config)
    scaled = loss * (len(local) / len(batch))  # the mean over the whole meta-batch, summed over ranks
    scaled.backward()
    for p in model.parameters():
        if p.grad is not None:
            sum_over_processes(p.grad, world)
    return sum_over_processes(scaled.detach(), world)
