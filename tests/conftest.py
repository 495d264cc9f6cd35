"""Shared test helpers. The project root is importable through pytest.ini's pythonpath."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models", "multitask", "maml")
SAMPLE_DATA = os.path.join(MODEL_DIR, "data", "sample_data")
SHIPPED_ENCODER = os.path.join(ROOT, "models", "multitask", "classifier_baseline", "weights", "omniglot", "19")
# The official Omniglot zips, for the tests that prepare full Omniglot: $OMNIGLOT_SOURCE (as
# datasets/omniglot/run.sh takes them), else beside the clone where CI keeps them; without, those skip.
SHARED_OMNIGLOT = os.environ.get("OMNIGLOT_SOURCE") or os.path.join(os.path.dirname(ROOT), "shared", "omniglot")


def pytest_sessionstart(session):
    """Build the custom convolution operator before any test runs (under xdist the
    controller first, the workers then find it built): a build inside a driver test
    would add its one line to the output that test checks."""
    import tools.utils  # noqa: F401  (as the drivers: before Paddle)
    from models.common import conv_op

    conv_op.load()


def load_model_config(overrides=(), path=os.path.join(MODEL_DIR, "config.yaml")):
    """(config, DygraphModel) as the drivers load them."""
    from tools.utils import runtime

    config, model_def, _ = runtime.load_model_and_config(path, list(overrides))
    return config, model_def


def quick_run_overrides(config_path, classes):
    """What a short test run of a shipped config needs besides smaller sizes: a
    Meta-Baseline config starts from scratch (its pretrained encoder is another
    run's output), training episodes of at most CLASSES classes, and each epoch
    evaluated on its own (an ensemble of the best epochs needs several)."""
    from models.lib.config import read_config_tree

    config = read_config_tree(config_path)
    hp = config["hyper_parameters"]
    overrides = []
    if config["runner"].get("infer_ensemble_top"):  # one epoch: no ensemble (tested in test_drivers)
        overrides += ["-o", "runner.infer_ensemble_top=0"]
    if "pretrained_encoder_path" in hp:
        overrides += ["-o", "hyper_parameters.pretrained_encoder_path="]
    if "encoder_path" in hp:  # LEO's Omniglot features: the shipped Classifier-Baseline encoder
        overrides += ["-o", f"hyper_parameters.encoder_path={SHIPPED_ENCODER}"]
    if hp.get("n_way", 0) > classes:
        overrides += ["-o", f"hyper_parameters.n_way={classes}"]
    return overrides


def shipped_configs(data, pattern="config*.yaml"):
    """The shipped configs (paths relative to ROOT) whose training reader reads DATA:
    "omniglot" (the Omniglot readers, features of Omniglot included), "images" (the
    prepared RGB sets) or "leo_embeddings" (the LEO authors' files)."""
    import glob

    from models.lib.config import read_config_tree

    readers = {"omniglot": ("omniglot_reader", "omniglot_images_reader", "encoder_features_reader"),
               "images": ("image_classes_reader",), "leo_embeddings": ("leo_embeddings_reader",)}[data]
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "models", "multitask", "*", pattern))):
        reader = os.path.basename(read_config_tree(path)["runner"]["train_reader_path"])
        if reader in readers:
            found.append(os.path.relpath(path, ROOT))
    return found


def train_and_infer(config, overrides):
    """tools/trainer.py, then tools/infer.py, on CONFIG (relative to ROOT) with OVERRIDES
    {key: value} as -o options; both must succeed. Returns infer's stdout."""
    import subprocess

    args = [a for key, value in overrides.items() for a in ("-o", f"{key}={value}")]
    for script in ("tools/trainer.py", "tools/infer.py"):
        result = subprocess.run([sys.executable, script, "-m", config] + args, cwd=ROOT, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr
    return result.stdout


def directional_errors(params, loss, analytic, rng, eps=1e-6, directions=3):
    """|five-point central difference - analytic| / max(1, |difference|) of LOSS()
    (a float) along random unit directions of PARAMS (tensors, moved with set_value
    and put back); ANALYTIC: the gradient (arrays) to check. Returns the errors and
    the analytic directional derivatives."""
    import numpy as np

    start = [p.numpy().copy() for p in params]
    errors, derivatives = [], []
    for _ in range(directions):
        direction = [rng.randn(*s.shape) for s in start]
        norm = np.sqrt(sum((d ** 2).sum() for d in direction))
        direction = [d / norm for d in direction]

        def at(t):
            for p, s, d in zip(params, start, direction):
                p.set_value(s + t * d)
            return loss()

        fd = (8 * (at(eps) - at(-eps)) - (at(2 * eps) - at(-2 * eps))) / (12 * eps)
        at(0.0)
        ours = sum(float((g * d).sum()) for g, d in zip(analytic, direction))
        errors.append(abs(fd - ours) / max(1.0, abs(fd)))
        derivatives.append(ours)
    return errors, derivatives
