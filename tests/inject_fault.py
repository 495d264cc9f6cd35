"""Run a driver with a write fault injected, as a full disk or a read-only folder
would cause it, for the fault-injection tests (test_fault_table.py):

    python tests/inject_fault.py PATTERN ERRNO ALLOWED SCRIPT [ARGS ...]

Files whose name matches PATTERN (fnmatch) opened for writing fail after the
first ALLOWED such opens: with ENOSPC the write fails after half the data is on
disk (what a full disk leaves), with any other errno (EACCES, EROFS) the open
itself fails. With SIGKILL, SIGINT or SIGTERM in place of the errno, the process
sends itself that signal once half the data is on disk (a kill or Ctrl-C in the
middle of the write); if it lives on, the rest is written. SCRIPT then runs as
__main__ with ARGS."""
import builtins
import errno
import fnmatch
import os
import runpy
import signal
import sys

SIGNALS = ("SIGKILL", "SIGINT", "SIGTERM")


class HalfWrittenFile:
    """A file whose first write puts half its data on disk, then fails with ENOSPC
    or, given a signal, is interrupted by it."""

    def __init__(self, file, fault):
        self._file, self._fault = file, fault

    def write(self, data):
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        if self._fault == errno.ENOSPC:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if self._fault is not None:
            fault, self._fault = self._fault, None
            os.kill(os.getpid(), fault)
        return self._file.write(data[len(data) // 2:]) + len(data) // 2

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def install(pattern, code, allowed):
    real_open = builtins.open
    opened = [0]

    def faulty_open(file, mode="r", *args, **kwargs):
        writing = any(flag in mode for flag in "wax+")
        if not (writing and isinstance(file, (str, os.PathLike))
                and fnmatch.fnmatch(os.path.basename(os.fspath(file)), pattern)):
            return real_open(file, mode, *args, **kwargs)
        opened[0] += 1
        if opened[0] <= allowed:
            return real_open(file, mode, *args, **kwargs)
        if code != errno.ENOSPC and not isinstance(code, signal.Signals):
            raise OSError(code, os.strerror(code), os.fspath(file))
        return HalfWrittenFile(real_open(file, mode, *args, **kwargs), code)

    builtins.open = faulty_open


def main():
    pattern, name, allowed, script = sys.argv[1:5]
    install(pattern, getattr(signal, name) if name in SIGNALS else getattr(errno, name), int(allowed))
    sys.argv = [script] + sys.argv[5:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
