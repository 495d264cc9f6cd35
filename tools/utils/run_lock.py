"""One training process per run folder.

The trainer (rank 0) holds an exclusive lock on MODEL_SAVE_PATH/.trainer.lock
for the whole run: a second trainer started on the same folder stops with one
line naming the holder. The lock is an flock on an open file, so the kernel
releases it when the holder dies however it dies (SIGKILL included): a lock
file left by a dead process is simply taken over. infer.py takes no lock and
may evaluate saved epochs while training runs.
"""
import datetime
import fcntl
import json
import os
import socket

LOCK_NAME = ".trainer.lock"


class RunLocked(ValueError):
    """Another live trainer holds the folder; the message names it."""


def acquire(save_path, say=print):
    """Lock SAVE_PATH for this process; returns the open lock file (keep it open).
    Raises RunLocked when another process holds it."""
    path = os.path.join(save_path, LOCK_NAME)
    try:
        os.makedirs(save_path, exist_ok=True)
        handle = open(path, "a+")
    except OSError as e:
        raise OSError(f"runner.model_save_path {save_path}: cannot create the folder or its lock file "
                      f"{LOCK_NAME}: {e.strerror or e}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(handle)
        handle.close()
        raise RunLocked(f"runner.model_save_path {save_path} is in use by another trainer ({holder}); "
                        f"wait for it to end or choose another runner.model_save_path") from None
    previous = _read_holder(handle, missing=None)
    if previous is not None:
        say(f"note: {path} was left by a trainer that is no longer running ({previous}); taken over")
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": datetime.datetime.now().isoformat(timespec="seconds")}))
        handle.flush()
    except OSError as e:
        handle.close()
        raise OSError(f"runner.model_save_path {save_path}: cannot write the lock file {LOCK_NAME}: "
                      f"{e.strerror or e}") from None
    return handle


def release(handle):
    """Empty the lock file (no holder) and release the lock."""
    if handle is None or handle.closed:
        return
    handle.seek(0)
    handle.truncate()
    handle.flush()
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    handle.close()


def _read_holder(handle, missing="holder unknown"):
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "null")
    except ValueError:
        return missing
    if not isinstance(holder, dict):
        return missing
    return f"PID {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}"
