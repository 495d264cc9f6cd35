"""VisualDL logging for runner.use_visual, as PaddleRec users expect.

The training curve (loss and every metric against iterations) goes to
MODEL_SAVE_PATH/visualdl, the test results of infer.py (each metric's mean
against the iterations of the evaluated epoch) to INFER_LOAD_PATH/visualdl;
view them with `visualdl --logdir PATH`. VisualDL is optional, like matplotlib:
asking for it without it installed is one clear error before any work.
"""
import os


def open_writer(use_visual, folder):
    """A visualdl LogWriter writing to FOLDER/visualdl, or None when not asked for."""
    if not use_visual:
        return None
    try:
        from visualdl import LogWriter
    except ImportError:
        raise ValueError("runner.use_visual is True but visualdl is not installed "
                         "(pip install visualdl, or -o runner.use_visual=False)") from None
    logdir = os.path.join(folder, "visualdl")
    probe = os.path.join(logdir, f"vdlrecords.probe-{os.getpid()}")
    try:  # VisualDL itself only warns, from its writer thread, and drops every record
        os.makedirs(logdir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise OSError(f"runner.use_visual: cannot write VisualDL's logs to {logdir}: {e.strerror or e}") from None
    return LogWriter(logdir=logdir)


def add_training(writer, record):
    """One printed training record (trainer.py's train_log.jsonl line)."""
    if writer is None:
        return
    writer.add_scalar(tag="train/loss", step=record["iteration"], value=record["loss"])
    for name, value in record["metrics"].items():
        writer.add_scalar(tag=f"train/{name}", step=record["iteration"], value=value)
    writer.flush()


def add_test(writer, iteration, rows):
    """One evaluated epoch: rows as infer.py writes them."""
    if writer is None:
        return
    for row in rows:
        writer.add_scalar(tag=f"test/{row['metric']}", step=iteration, value=row["mean"])
    writer.flush()


def add_validation(writer, record):
    """One end-of-epoch validation record (trainer.py's train_log.jsonl line with "val")."""
    if writer is None:
        return
    for name, value in record["val"].items():
        writer.add_scalar(tag=f"val/{name}", step=record["iteration"], value=value)
    writer.flush()
