"""Files written whole or not at all: a temporary file beside the target, synced,
then renamed over it. A kill, Ctrl-C or a full disk leaves the earlier file as it
was; the temporary file a killed writer leaves (PATH.tmp-PID) is removed by the next
write of the same path."""
import contextlib
import os


@contextlib.contextmanager
def atomic_write(path, mode="w", tmp=None):
    """Yields an open temporary file; when the block ends normally it is synced and
    renamed to PATH. On any exception (OSError, KeyboardInterrupt, ...) the temporary
    file is removed and the exception goes on. TMP: the temporary file's name
    (default PATH.tmp-PID)."""
    remove_orphans(path)
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


def remove_orphans(path):
    """Remove PATH.tmp-PID files whose process is gone (killed while writing)."""
    folder, prefix = os.path.dirname(path) or ".", os.path.basename(path) + ".tmp-"
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        pid = name[len(prefix):]
        if name.startswith(prefix) and pid.isdigit() and not _alive(int(pid)):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass  # another process removed it first


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
