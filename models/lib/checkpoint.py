"""Checkpoints: one folder per epoch, written atomically, verified on load.

MODEL_SAVE_PATH/<epoch>/ holds rec.pdparams (model), rec.pdopt (optimizer),
trainer_state.pkl (epoch, iteration, random states, sampler state) and, written
last, meta.json (the network's shape and the SHA-256 of each file). The folder
is built under a temporary name and renamed into place, so a reader never sees
a half-written checkpoint; a folder whose meta.json is missing or whose files
do not match it is reported and skipped.

Within an epoch, MODEL_SAVE_PATH/in_progress/ (same files, written the same way)
holds the newest state at a print boundary (runner.checkpoint_interval); it is
removed once its epoch's checkpoint is saved. A failed write (disk full,
permission) removes its temporary folder and leaves every saved checkpoint as
it was; clean_stale() removes what killed runs left behind.
"""
import hashlib
import json
import os
import pickle
import shutil

import paddle

FILES = ("rec.pdparams", "rec.pdopt", "trainer_state.pkl")
META = "meta.json"
IN_PROGRESS = "in_progress"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names it."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, permission); the message names it."""


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(root, epoch, model, optimizer, trainer_state, network, folder=None):
    """Write checkpoint EPOCH under ROOT atomically, into ROOT/<epoch> or ROOT/FOLDER.
    network: dict describing the model's shape (checked when loading). A write
    error raises CheckpointWriteError naming the folder and the epoch, after
    removing the temporary folder; the checkpoints already saved are untouched."""
    final = os.path.join(root, folder or str(epoch))
    tmp = os.path.join(root, f".tmp-{folder or epoch}-{os.getpid()}")
    try:
        os.makedirs(root, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _write_files(tmp, epoch, model, optimizer, trainer_state, network)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(f"cannot write the checkpoint of epoch {epoch} to {final}: "
                                   f"{e.strerror or e}; the checkpoints saved before are untouched") from None
    except BaseException:  # Ctrl-C or SIGTERM in the middle of the write: no half-written folder left
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(final):  # a rerun replaces an old checkpoint of the same epoch
        old = os.path.join(root, f".old-{folder or epoch}-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    return final


def _write_files(tmp, epoch, model, optimizer, trainer_state, network):
    paddle.save(model.state_dict(), os.path.join(tmp, "rec.pdparams"))
    paddle.save(optimizer.state_dict() if optimizer is not None else {}, os.path.join(tmp, "rec.pdopt"))
    with open(os.path.join(tmp, "trainer_state.pkl"), "wb") as f:
        pickle.dump(trainer_state, f)
    meta = {"epoch": epoch, "network": network,
            "sha256": {name: _sha256(os.path.join(tmp, name)) for name in FILES}}
    for name in FILES:
        with open(os.path.join(tmp, name), "rb+") as f:
            os.fsync(f.fileno())
    with open(os.path.join(tmp, META), "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)


def clean_stale(root, say=print):
    """Remove the temporary folders and files that killed runs left in ROOT; a
    checkpoint caught between its two renames (.old-E-pid without E) is put back.
    Call only while holding the run lock (another trainer's files would go)."""
    if not os.path.isdir(root):
        return
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith(".old-"):
            target = os.path.join(root, name.split("-")[1])
            if not os.path.exists(target):
                os.replace(path, target)
                say(f"note: restored checkpoint {target} from {path}, left by an interrupted save")
                continue
        if name.startswith((".tmp-", ".old-")) or name.endswith(".tmp"):
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            say(f"note: removed {path}, left by an interrupted write")


def in_progress(root, warn=print):
    """(path, meta) of the verified mid-epoch checkpoint ROOT/in_progress, or None."""
    path = os.path.join(root, IN_PROGRESS)
    if not os.path.isdir(path):
        return None
    try:
        return path, verify(path)
    except CheckpointError as e:
        warn(f"warning: {e}; ignored")
        return None


def remove_in_progress(root):
    shutil.rmtree(os.path.join(root, IN_PROGRESS), ignore_errors=True)


def verify(path):
    """Return the meta dict of checkpoint folder PATH; raise CheckpointError naming
    the file if it is incomplete or corrupt."""
    meta_path = os.path.join(path, META)
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is incomplete ({META} missing)") from None
    except (OSError, ValueError):
        raise CheckpointError(f"checkpoint file {meta_path} is corrupt") from None
    for name in FILES:
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise CheckpointError(f"checkpoint file {file_path} is missing")
        if _sha256(file_path) != meta.get("sha256", {}).get(name):
            raise CheckpointError(f"checkpoint file {file_path} is corrupt (checksum mismatch)")
    return meta


def epochs_in(root):
    """Sorted epoch numbers of the checkpoint folders under ROOT (complete or not)."""
    if not os.path.isdir(root):
        return []
    return sorted(int(name) for name in os.listdir(root) if name.isdigit())


def latest_good(root, warn=print):
    """(epoch, path, meta) of the newest verified checkpoint under ROOT, or None.
    Bad ones are reported and skipped."""
    for epoch in reversed(epochs_in(root)):
        path = os.path.join(root, str(epoch))
        try:
            return epoch, path, verify(path)
        except CheckpointError as e:
            warn(f"warning: {e}; trying an older one")
    return None


def check_network(path, meta, network):
    """Raise CheckpointError if the checkpoint was made for another network shape."""
    saved = meta.get("network", {})
    for key in sorted(set(saved) | set(network)):
        if saved.get(key) != network.get(key):
            raise CheckpointError(f"checkpoint {path} was made for {key} = {saved.get(key)!r}, "
                                  f"but the config says {network.get(key)!r}")


def load(path, model, optimizer=None):
    """Load verified checkpoint PATH into MODEL (and OPTIMIZER); returns trainer_state."""
    params = paddle.load(os.path.join(path, "rec.pdparams"))
    model.set_state_dict(params)
    if optimizer is not None:
        optimizer.set_state_dict(_renamed_optimizer_state(paddle.load(os.path.join(path, "rec.pdopt")),
                                                          params, model))
    with open(os.path.join(path, "trainer_state.pkl"), "rb") as f:
        return pickle.load(f)


def prune(root, keep_last, keep=()):
    """Delete all but the newest KEEP_LAST checkpoint folders and the epochs in KEEP
    (KEEP_LAST 0: keep all)."""
    if keep_last <= 0:
        return
    for epoch in epochs_in(root)[:-keep_last]:
        if epoch not in keep:
            shutil.rmtree(os.path.join(root, str(epoch)), ignore_errors=True)


def _renamed_optimizer_state(state, saved_params, model):
    """STATE with its accumulators renamed to MODEL's parameter names. Paddle keys an
    optimizer's state by the internal parameter names ("<layer>_<n>.w_<k>_moment1_0"),
    which depend on the layer's class name and on how many layers the process made
    before; the saved model tensors keep their names, so they map old to new."""
    current = model.state_dict()
    renames = {tensor.name: current[key].name for key, tensor in saved_params.items()
               if key in current and getattr(tensor, "name", None) and tensor.name != current[key].name}
    if not renames:
        return state
    renamed = {}
    for key, value in state.items():
        old = next((name for name in renames if key.startswith(name + "_")), None)
        renamed[renames[old] + key[len(old):] if old else key] = value
    return renamed
