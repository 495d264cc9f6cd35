"""LEO's data (models/multitask/leo): the Omniglot features cache, the LEO
authors' embedding files generated here in their exact format (prepare, broken
sources, the reader) and train + infer of every config on them."""
import json
import os
import pickle

import numpy as np
import paddle
import pytest

from conftest import ROOT, SAMPLE_DATA, SHIPPED_ENCODER, load_model_config, shipped_configs, train_and_infer

pytestmark = pytest.mark.slow  # end-to-end: runs the drivers or prepares data (python -m pytest -m "not slow" skips it)


def write_leo_pickle(path, classes, per_class, dim, rng, prefix="0"):
    """A file in the authors' format: a Python-2 style dict pickle (protocol 2), keys
    '<anything>-<class>-<class>_<file>', float32 embeddings."""
    keys, rows = [], []
    for c in range(classes):
        name = f"n{c:08d}"
        for i in range(per_class):
            keys.append(f"{prefix}{i}-{name}-{name}_{i:05d}.JPEG")
            rows.append(rng.randn(dim).astype("float32") + c)
    with open(path, "wb") as f:
        pickle.dump({"keys": np.array(keys), "embeddings": np.stack(rows)}, f, protocol=2)


def test_leo_embeddings_reader_reads_the_authors_format_and_refuses_broken_files(tmp_path):
    from models.common.readers import leo_embeddings_reader as reader

    rng = np.random.RandomState(8)
    path = tmp_path / "train_embeddings.pkl"
    write_leo_pickle(path, 6, 7, 640, rng)
    classes = reader.load_embeddings(str(path), "runner.train_data_dir", 640)
    assert len(classes) == 6 and all(c.shape == (7, 640) and c.dtype == np.float32 for c in classes)
    assert abs(float(classes[3].mean()) - 3) < 0.2  # the rows of class 3, in order
    with pytest.raises(ValueError, match="expected \\[42, 64\\]"):
        reader.load_embeddings(str(path), "runner.train_data_dir", 64)
    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated.pkl is not a readable LEO embeddings pickle"):
        reader.load_embeddings(str(truncated), "runner.train_data_dir", 640)
    bad = tmp_path / "bad.pkl"
    with open(bad, "wb") as f:
        pickle.dump({"keys": np.array(["a-n1-n2_x.JPEG"]), "embeddings": np.zeros([1, 640], "float32")}, f)
    with pytest.raises(ValueError, match="key 'a-n1-n2_x.JPEG' is not"):
        reader.load_embeddings(str(bad), "runner.train_data_dir", 640)


def test_omniglot_features_are_computed_once_and_keyed_by_the_checkpoint(tmp_path, monkeypatch):
    import shutil

    from models.common.readers import encoder_features_reader as reader
    from models.lib import checkpoint

    paddle.set_default_dtype("float32")
    data = tmp_path / "test"
    shutil.copytree(os.path.join(SAMPLE_DATA, "test"), data, ignore=shutil.ignore_patterns("features"))
    config, _ = load_model_config(path=LEO_CONFIG, overrides=[
        f"runner.test_data_dir={data}", f"hyper_parameters.encoder_path={SHIPPED_ENCODER}"])
    calls = []
    compute = reader.compute_features
    monkeypatch.setattr(reader, "compute_features", lambda *a: calls.append(1) or compute(*a))
    first = reader.RecDataset.from_config(config, "infer")
    again = reader.RecDataset.from_config(config, "infer")
    assert len(calls) == 1 and len(os.listdir(data / "features")) == 1
    assert all(np.array_equal(a, b) for a, b in zip(first.classes, again.classes))
    assert len(first.classes) == 30 and first.classes[0].shape == (20, 64)
    np.testing.assert_allclose(np.linalg.norm(first.classes[0], axis=1), 1.0, rtol=1e-5)  # l2_normalize
    # another checkpoint (other weights): other features, another cache file
    other = tmp_path / "other"
    shutil.copytree(SHIPPED_ENCODER, other / "19")
    model = paddle.load(str(other / "19" / "rec.pdparams"))
    model["encoder.conv0_weight"] = model["encoder.conv0_weight"] * 2
    meta = checkpoint.verify(str(other / "19"))
    paddle.save(model, str(other / "19" / "rec.pdparams"))
    meta["sha256"]["rec.pdparams"] = checkpoint._sha256(str(other / "19" / "rec.pdparams"))
    json.dump(meta, open(other / "19" / "meta.json", "w"))
    config["hyper_parameters"]["encoder_path"] = str(other)
    changed = reader.RecDataset.from_config(config, "infer")
    assert len(calls) == 2 and len(os.listdir(data / "features")) == 2
    assert not np.allclose(changed.classes[0], first.classes[0])


def test_non_finite_embeddings_are_refused_in_one_line(tmp_path):
    from models.common.readers import leo_embeddings_reader as reader

    path = tmp_path / "train_embeddings.pkl"
    write_leo_pickle(path, 3, 4, 640, np.random.RandomState(2))
    raw = pickle.load(open(path, "rb"))
    raw["embeddings"][5, 7] = np.nan
    raw["embeddings"][9, 0] = np.inf
    pickle.dump(raw, open(path, "wb"), protocol=2)
    with pytest.raises(ValueError, match=r"runner.train_data_dir: .*train_embeddings.pkl: 2 embeddings hold NaN or "
                                         r"infinite values \(the first: row 5\); expected finite numbers"):
        reader.load_embeddings(str(path), "runner.train_data_dir", 640)


@pytest.mark.parametrize("damage", ["empty", "cut short", "not finite", "read-only folder"])
def test_a_damaged_feature_cache_is_rebuilt_and_a_read_only_folder_only_warned_about(tmp_path, capsys, monkeypatch,
                                                                                       damage):
    import errno
    import shutil

    from models.common.readers import encoder_features_reader as reader

    paddle.set_default_dtype("float32")
    data = tmp_path / "test"
    shutil.copytree(os.path.join(SAMPLE_DATA, "test"), data, ignore=shutil.ignore_patterns("features"))
    config, _ = load_model_config(path=LEO_CONFIG, overrides=[
        f"runner.test_data_dir={data}", f"hyper_parameters.encoder_path={SHIPPED_ENCODER}"])
    if damage == "read-only folder":  # as a read-only data folder answers (also for root, who may write anyway)
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(reader.os, "makedirs", refuse)
        dataset = reader.RecDataset.from_config(config, "infer")
        assert "warning: cannot cache the features in" in capsys.readouterr().out
        assert len(dataset.classes) == 30 and not (data / "features").exists()
        return
    expected = reader.RecDataset.from_config(config, "infer").classes
    (cache,) = (data / "features").iterdir()
    content = cache.read_bytes()
    if damage == "empty":
        cache.write_bytes(b"")
    elif damage == "cut short":
        cache.write_bytes(content[: len(content) // 2])
    else:
        array = np.load(cache)
        array[0, 0] = np.nan
        np.save(cache, array)
    rebuilt = reader.RecDataset.from_config(config, "infer").classes
    assert all(np.array_equal(a, b) for a, b in zip(expected, rebuilt))
    assert cache.read_bytes() == content  # written again, whole


LEO_CONFIG = os.path.join(ROOT, "models", "multitask", "leo", "config.yaml")
CLASS_COUNTS = {"miniImageNet": (64, 16, 20), "tieredImageNet": (351, 97, 160)}
PER_CLASS = 6


def write_embeddings_zip(path, datasets=("miniImageNet", "tieredImageNet"), skip=None):
    """embeddings.zip as the authors publish it: embeddings/<dataset>/center/<split>_embeddings.pkl."""
    import io
    import zipfile

    rng = np.random.RandomState(9)
    with zipfile.ZipFile(path, "w") as archive:
        for dataset in datasets:
            for split, classes in zip(("train", "val", "test"), CLASS_COUNTS[dataset]):
                if skip == (dataset, split):
                    continue
                buffer = io.BytesIO()
                target = path.parent / "one.pkl"
                write_leo_pickle(target, classes, PER_CLASS, 640, rng)
                buffer.write(target.read_bytes())
                archive.writestr(f"embeddings/{dataset}/center/{split}_embeddings.pkl", buffer.getvalue())


def run_prepare(out, source=None):
    import subprocess

    env = dict(os.environ, LEO_EMBEDDINGS_DATA=str(out))
    env.pop("LEO_EMBEDDINGS_SOURCE", None)
    if source is not None:
        env["LEO_EMBEDDINGS_SOURCE"] = str(source)
    return subprocess.run(["sh", os.path.join(ROOT, "datasets", "leo_embeddings", "run.sh"),
                           "--examples-per-class", str(PER_CLASS)], env=env, capture_output=True, text=True,
                          timeout=300, cwd="/")


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory):
    base = tmp_path_factory.mktemp("leo_embeddings")
    write_embeddings_zip(base / "embeddings.zip")
    result = run_prepare(base / "data", base / "embeddings.zip")
    assert result.returncode == 0, result.stderr
    return base / "data"


def test_the_authors_zip_is_checked_and_copied_unchanged(embeddings):
    meta = json.load(open(embeddings / "READY"))
    assert meta["counts"]["tieredImageNet/center/train_embeddings.pkl"] == {"classes": 351, "examples": 351 * 6}
    assert meta["counts"]["miniImageNet/center/test_embeddings.pkl"] == {"classes": 20, "examples": 20 * 6}
    again = run_prepare(embeddings)
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize("damage, message", [
    ("skip", "miniImageNet/center/val_embeddings.pkl is missing; incomplete?"),
    ("truncate", "not a readable zip"),
    ("none", "set LEO_EMBEDDINGS_SOURCE to embeddings.zip"),
])
def test_broken_embedding_sources_are_one_line_and_leave_nothing(tmp_path, damage, message):
    source = tmp_path / "embeddings.zip"
    write_embeddings_zip(source, datasets=("miniImageNet",),
                         skip=("miniImageNet", "val") if damage == "skip" else None)
    if damage == "truncate":
        source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    result = run_prepare(tmp_path / "data", None if damage == "none" else source)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("config", shipped_configs("leo_embeddings"))
def test_every_leo_embeddings_config_trains_and_infers(embeddings, tmp_path, config):
    dataset = "miniImageNet" if "miniimagenet" in config else "tieredImageNet"
    folder = embeddings / dataset / "center"
    small = {"runner.train_data_dir": folder / "train_embeddings.pkl",
             "runner.test_data_dir": folder / "test_embeddings.pkl",
             "runner.val_data_dir": folder / "val_embeddings.pkl", "runner.val_episodes": 2,
             "runner.train_batch_size": 2, "runner.train_batches_per_epoch": 2, "runner.epochs": 1,
             "runner.infer_episodes": 2, "runner.infer_start_epoch": 0, "runner.infer_end_epoch": 1,
             "hyper_parameters.k_query": 1, "hyper_parameters.k_query_test": 1,
             "runner.model_save_path": tmp_path / "ckpt", "runner.infer_load_path": tmp_path / "ckpt"}
    stdout = train_and_infer(config, small)
    assert "epoch 0: 2 test episodes" in stdout and "  acc_latent: " in stdout


def test_a_feature_cache_write_removes_the_temporary_files_of_killed_writers(tmp_path):
    """A writer killed between its write and its rename leaves PATH.tmp-PID; the next
    write removes those of processes that are gone and leaves a live writer's."""
    from models.common.readers import encoder_features_reader as reader
    from models.lib import atomic_file

    dead = next(pid for pid in range(4_000_000, 4_100_000) if not atomic_file._alive(pid))
    cache = tmp_path / "features" / "abc.npy"
    cache.parent.mkdir()
    orphan, live = cache.parent / f"abc.npy.tmp-{dead}", cache.parent / f"abc.npy.tmp-{os.getppid()}"
    orphan.write_bytes(b"half")
    live.write_bytes(b"being written")
    reader._save(str(cache), np.ones((2, 3), dtype="float32"))
    assert np.load(cache).shape == (2, 3)
    assert not orphan.exists() and live.exists()
    assert sorted(p.name for p in cache.parent.iterdir()) == ["abc.npy", live.name]
