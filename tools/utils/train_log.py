"""MODEL_SAVE_PATH/train_log.jsonl: one JSON object per printed interval and per
validation. A resumed run first drops the lines after the iteration it resumes
from (they are redone), so every iteration appears once."""
import json

from models.lib.atomic_file import atomic_write


class TrainLog:
    def __init__(self, path, resumed_iteration):
        self.path = path
        _drop_after(path, resumed_iteration)
        try:
            self.file = open(path, "a")
        except OSError as e:
            raise OSError(f"cannot open the training log {path}: {e.strerror or e}") from None

    def write(self, record):
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            raise OSError(f"cannot write the training log {path_and_epoch(self.path, record)}: "
                          f"{e.strerror or e}") from None

    def close(self):
        try:
            self.file.close()
        except OSError:
            pass


def read_records(path):
    """The records of PATH in order. A torn last line (a kill while writing it) is
    left out, as the trainer drops it when it resumes; any other line that is not a
    JSON object is an error naming the file and line."""
    with open(path) as f:
        lines = f.readlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines) and not line.endswith("\n"):
                continue
            record = None
        if not isinstance(record, dict):
            raise ValueError(f"{path} line {number} is not a JSON record of the training log")
        records.append(record)
    return records


def path_and_epoch(path, record):
    return f"{path} (epoch {record.get('epoch')}, iteration {record.get('iteration')})"


def _drop_after(path, iteration):
    """Keep the records of PATH up to ITERATION (and no torn last line)."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except FileNotFoundError:
        return
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a kill
        if isinstance(record, dict) and record.get("iteration", 0) <= iteration:
            kept.append(json.dumps(record) + "\n")
    if len(kept) == len(lines) and all(a == b for a, b in zip(kept, lines)):
        return
    try:
        with atomic_write(path, tmp=path + ".tmp") as f:
            f.writelines(kept)
    except OSError as e:
        raise OSError(f"cannot rewrite the training log {path}: {e.strerror or e}") from None
