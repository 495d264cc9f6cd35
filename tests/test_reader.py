"""Episodes from the bundled sample data: shapes, labels, disjointness, reproducibility."""
import numpy as np
import pytest

from conftest import SAMPLE_DATA
from models.multitask.maml.omniglot_reader import OmniglotCharacters, RecDataset

TRAIN = f"{SAMPLE_DATA}/train"


@pytest.fixture(scope="module")
def characters():
    return OmniglotCharacters(TRAIN, 28, min_images=20)


def episodes(characters, seed, n=20, n_way=5, k_spt=2, k_query=3):
    dataset = RecDataset(TRAIN, n_way, k_spt, k_query, 28, seed, num_episodes=n, characters=characters)
    return list(dataset)


def test_sample_data_is_real_omniglot(characters):
    assert len(characters) == 40
    for images in characters.images:
        assert images.shape == (20, 28, 28) and images.dtype == np.uint8
        assert 0.02 < (images > 127).mean() < 0.5  # strokes on a blank background, inverted


def test_episode_shapes_and_labels(characters):
    for sx, sy, qx, qy in episodes(characters, 0):
        assert sx.shape == (10, 1, 28, 28) and sx.dtype == np.float32
        assert qx.shape == (15, 1, 28, 28)
        assert sy.dtype == np.int64 and sorted(set(sy)) == list(range(5))
        assert np.bincount(sy).tolist() == [2] * 5 and np.bincount(qy).tolist() == [3] * 5
        assert 0.0 <= sx.min() and sx.max() <= 1.0


def find_class(characters, image):
    hits = [c for c, imgs in enumerate(characters.images)
            if any(np.array_equal(image, im) for im in imgs)]
    assert len(hits) == 1
    return hits[0]


def test_classes_distinct_and_support_query_disjoint(characters):
    for sx, sy, qx, qy in episodes(characters, 1, n=5):
        support_u8 = np.rint(sx[:, 0] * 255).astype(np.uint8)
        query_u8 = np.rint(qx[:, 0] * 255).astype(np.uint8)
        classes = {label: find_class(characters, support_u8[sy == label][0]) for label in range(5)}
        assert len(set(classes.values())) == 5  # no repeated class
        for label in range(5):  # query images of a label come from the same character
            assert all(find_class(characters, im) == classes[label] for im in query_u8[qy == label])
        for s in support_u8:
            assert not any(np.array_equal(s, q) for q in query_u8)


def test_reproducible_and_seed_dependent(characters):
    a, b, c = episodes(characters, 7), episodes(characters, 7), episodes(characters, 8)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c))


def test_labels_are_permuted_across_episodes(characters):
    first_label_class = {find_class(characters, np.rint(sx[0, 0] * 255).astype(np.uint8))
                         for sx, *_ in episodes(characters, 3, n=10)}
    assert len(first_label_class) > 3  # label 0 is not tied to one character


def test_rotations_make_new_classes():
    rotated = OmniglotCharacters(TRAIN, 28, 20, rotations=(0, 90))
    assert len(rotated) == 80
    assert np.array_equal(rotated.images[40], np.rot90(rotated.images[0], 1, axes=(1, 2)))


def test_too_few_classes_or_images_are_clear_errors(characters):
    with pytest.raises(ValueError, match="fewer than n_way = 41"):
        RecDataset(TRAIN, 41, 1, 1, 28, 0, characters=characters)
    with pytest.raises(ValueError, match="fewer than k_spt \\+ k_query = 21"):
        OmniglotCharacters(TRAIN, 28, min_images=21)


def test_task_rotation_turns_a_whole_episode_by_one_multiple_of_90_degrees(characters):
    plain = RecDataset(TRAIN, 5, 1, 2, 28, 4, num_episodes=30, characters=characters)
    turned = RecDataset(TRAIN, 5, 1, 2, 28, 4, num_episodes=30, characters=characters, task_rotation=True)
    seen = set()
    for (sx, _, qx, _), (tx, _, tqx, _) in zip(plain, turned):
        plain.rng.randint(4)  # keep the two samplers in step (the turned one draws the angle)
        turns = [k for k in range(4) if np.array_equal(np.rot90(sx, k, axes=(2, 3)), tx)]
        assert len(turns) == 1 and np.array_equal(np.rot90(qx, turns[0], axes=(2, 3)), tqx)
        seen.add(turns[0])
    assert seen == {0, 1, 2, 3}


def test_nearest_resize_keeps_the_drawings_binary():
    area = OmniglotCharacters(TRAIN, 28, 20)
    nearest = OmniglotCharacters(TRAIN, 28, 20, resize="nearest")
    assert set(np.unique(np.concatenate(nearest.images))) == {0, 255}
    assert len(np.unique(np.concatenate(area.images))) > 2
    assert all(a.shape == b.shape for a, b in zip(area.images, nearest.images))


def test_a_character_of_flat_images_is_refused_naming_its_folder(tmp_path):
    """A conversion that wrote blank PNGs passes every count check; the reader
    refuses it before any training."""
    import shutil

    import cv2

    data = tmp_path / "train"
    shutil.copytree(TRAIN, data)
    character = sorted(p for p in (data / sorted(p.name for p in data.iterdir())[0]).iterdir())[0]
    for png in character.iterdir():
        cv2.imwrite(str(png), np.full((105, 105), 255, dtype=np.uint8))
    with pytest.raises(ValueError, match=f"{character}: every image is one flat colour"):
        OmniglotCharacters(str(data), 28, min_images=20)
