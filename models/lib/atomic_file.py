"""Files written whole or not at all: a temporary file beside the target, synced,
then renamed over it. A kill, Ctrl-C or a full disk leaves the earlier file as it
was (and at most a temporary file, which the next write of the same path replaces)."""
import contextlib
import os


@contextlib.contextmanager
def atomic_write(path, mode="w", tmp=None):
    """Yields an open temporary file; when the block ends normally it is synced and
    renamed to PATH. On any exception (OSError, KeyboardInterrupt, ...) the temporary
    file is removed and the exception goes on. TMP: the temporary file's name
    (default PATH.tmp-PID)."""
    tmp = tmp or f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
