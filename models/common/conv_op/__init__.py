"""A 2-D convolution as a Paddle custom C++ operator (conv2d.cc): forward,
gradient and double gradient, each one GEMM per group over many images.

Built with paddle.utils.cpp_extension at first use (about 20 s, once per Paddle
version and source; cached under ~/.cache/fewshot_paddle or $FEWSHOT_EXTENSION_DIR). Without a
compiler, or when the build fails, `conv2d` is Paddle's own F.conv2d and one
warning says why. $FEWSHOT_CONV picks the form for the whole process: `custom`
(this operator on every layer; an error if it cannot be built), `paddle` (F.conv2d), or
unset / `auto` (the operator where it builds and is faster, `use_custom`).

Why it exists: Paddle's eager CPU conv2d does im2col and a GEMM per image and
group (benchmarks/README.md), and its conv2d double gradient is wrong for an input
that takes no gradient (the data), which forced the first layer into a slower
unfold + matmul form. This operator's double gradient is right in both cases
(tests/test_conv_op.py compares it with F.conv2d and with finite differences).
"""
import contextlib
import fcntl
import hashlib
import logging
import os
import sys
import warnings

import paddle

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conv2d.cc")
FORMS = ("auto", "custom", "paddle")
# 'auto' uses the operator on layers with at most this many output positions per image: there one
# GEMM over all images beats Paddle's GEMM per image (Omniglot's 7 x 7 and 14 x 14 outputs: 1.2-1.3x
# per layer), while at miniImageNet's 42 x 42 each image's GEMM is already large and Paddle's is
# level or faster (benchmarks/README.md, "Speed round 3").
AUTO_MAX_POSITIONS = 196
_state = {"module": None, "error": None}


def _build_directory(stamp):
    """One folder per Paddle version and source: a rebuild never overwrites a library another
    process (a training of another checkout) has loaded."""
    root = os.environ.get("FEWSHOT_EXTENSION_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "fewshot_paddle")
    return os.path.join(root, f"conv_op-paddle{paddle.__version__}-{stamp[:12]}")


def load():
    """The compiled operator module, or None (and the reason in `build_error()`)."""
    if _state["module"] is None and _state["error"] is None:
        try:
            _state["module"] = _compile()
        except (RuntimeError, OSError, ImportError) as error:  # a failed build, an unwritable cache
            _state["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    return _state["module"]


def build_error():
    return _state["error"]


def _compile():
    """Build (or reuse the build of) conv2d.cc. Paddle's `load` starts a setup.py
    subprocess even when nothing changed (seconds per process), so a build stamped
    with the source's hash is imported directly."""
    libs = os.path.join(os.path.dirname(paddle.__file__), "libs")
    if not os.path.isfile(os.path.join(libs, "libmklml_intel.so")):
        raise RuntimeError(f"{libs}/libmklml_intel.so not found (the CBLAS this operator calls)")
    flags = dict(extra_cxx_cflags=["-O3"], extra_ldflags=[f"-L{libs}", "-l:libmklml_intel.so", f"-Wl,-rpath,{libs}"])
    with open(SOURCE, "rb") as f:
        stamp = hashlib.sha256(f.read() + repr(flags).encode()).hexdigest()
    directory = _build_directory(stamp)
    os.makedirs(directory, exist_ok=True)
    stamp_path, name = os.path.join(directory, "built-from.sha256"), "fewshot_conv_op"
    with open(os.path.join(directory, ".lock"), "w") as lock:  # parallel test workers build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        built = os.path.isfile(stamp_path) and open(stamp_path).read() == stamp
        failed_path = os.path.join(directory, "failed-" + stamp[:16])
        if os.path.isfile(failed_path):  # not retried in every process
            raise RuntimeError(f"{open(failed_path).read().strip()} (an earlier build; delete {failed_path} to retry)")
        if not built:
            print(f"building the custom convolution operator (once, about 20 s) in {directory}", file=sys.stderr)
        try:
            with _quiet(os.path.join(directory, "load.log" if built else "build.log")):
                from paddle.utils.cpp_extension import extension_utils, load as load_extension

                if built:
                    return extension_utils._import_module_from_library(name, os.path.join(directory, name))
                module = load_extension(name=name, sources=[SOURCE], build_directory=directory, verbose=False,
                                        **flags)
        except RuntimeError as error:
            if not built:
                with open(failed_path, "w") as f:
                    f.write(str(error))
            raise
        with open(stamp_path, "w") as f:
            f.write(stamp)
        return module


@contextlib.contextmanager
def _quiet(log_path):
    """Paddle's extension loader prints, logs and warns its progress on every load, and
    the compiler's output reaches the process's own file descriptors: all go to LOG_PATH."""
    logging.disable(logging.INFO)
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(log_path, "w") as log, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
            yield
    except Exception as error:  # the build's own words name the cause
        with open(log_path) as log:
            lines = [line.strip() for line in log if "error" in line.lower()]
        raise RuntimeError(f"{error} ({lines[-1] if lines else 'see ' + log_path})") from error
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        os.close(saved[0]), os.close(saved[1])
        logging.disable(logging.NOTSET)


def resolve(form="auto"):
    """FORM (auto / custom / paddle) as it can run here: 'auto' becomes 'paddle' when the
    operator does not build; $FEWSHOT_CONV, when set, decides instead of FORM."""
    form = os.environ.get("FEWSHOT_CONV") or form
    if form not in FORMS:
        raise ValueError(f"FEWSHOT_CONV / conv form must be one of {', '.join(FORMS)}, got {form!r}")
    if form == "paddle":
        return "paddle"
    if not paddle.device.get_device().startswith("cpu"):  # a CPU operator; GPUs have cuDNN
        if form == "custom":
            raise RuntimeError(f"the custom convolution operator runs on CPU only, not {paddle.device.get_device()}")
        return "paddle"
    if load() is not None:
        return form
    if form == "custom":
        raise RuntimeError(f"the custom convolution operator could not be built: {build_error()}")
    if not _state.get("warned"):
        _state["warned"] = True
        warnings.warn(f"the custom convolution operator could not be built ({build_error()}); "
                      "using Paddle's conv2d (slower, and the first layer in its unfold form)")
    return "paddle"


def use_custom(form, stride, paddings, size):
    """Whether a layer convolves with the operator: FORM from `resolve`; under 'auto' where
    each image has at most AUTO_MAX_POSITIONS output positions (SIZE: the input's (H, W))."""
    if form != "auto":
        return form == "custom"
    top, bottom, left, right = paddings
    positions = ((size[0] + top + bottom - 3) // stride + 1) * ((size[1] + left + right - 3) // stride + 1)
    return positions <= AUTO_MAX_POSITIONS


def conv2d(x, weight, stride, paddings, groups):
    """The operator: x [N, G*Ci, H, W], weight [G*Co, Ci, kh, kw], paddings
    (top, bottom, left, right) -> [N, G*Co, H', W']. Call `resolve` first."""
    return load().fewshot_conv2d(x, weight, stride, [int(p) for p in paddings], groups)
