import pytest
import torch
from PIL import Image

from kdgen.data import load_dataset
from kdgen.errors import KdgenError


def test_mnist5k_fixed_stratified_split():
    train, test = load_dataset("mnist5k", split="train"), load_dataset("mnist5k", split="test")
    assert len(train) == 4500 and len(test) == 500
    assert torch.equal(test.labels.bincount(), torch.full((10,), 50))
    assert train.images.min() >= -1 and train.images.max() <= 1 and train[0]["image"].shape == (1, 28, 28)
    # disjoint: no test image equals a train image row-for-row in these spots
    assert not any(torch.equal(test.images[i], train.images[j]) for i in range(0, 500, 50) for j in range(0, 4500, 450))
    assert torch.equal(load_dataset("mnist5k", split="test").images, test.images)  # fixed, not random


def test_digits_resized_and_channels():
    d = load_dataset("digits", split="train", image_size=16, channels=3)
    assert d[0]["image"].shape == (3, 16, 16) and 0 <= int(d[0]["label"]) <= 9
    assert len(d) + len(load_dataset("digits", split="test")) == 1797


def test_unknown_dataset_lists_names():
    with pytest.raises(KdgenError, match=r"unknown dataset 'mnist6k'.*choose one of: cifar10, digits, fashion-mnist, mnist, mnist5k"):
        load_dataset("mnist6k")


def _write_images(folder):
    folder.mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(folder / "wide.png")
    Image.new("L", (30, 30), 128).save(folder / "gray.jpg")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(folder / "blue.webp")


def test_folder_dataset_resizes_and_crops(tmp_path):
    _write_images(tmp_path / "imgs")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=3)
    assert len(ds) == 3
    red = ds[[p.name for p in ds.files].index("wide.png")]["image"]
    assert red.shape == (3, 8, 8) and red[0].min() > 0.9 and red[2].max() < -0.9


def test_folder_corrupt_file_error_or_skip(tmp_path):
    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    whole = (tmp_path / "imgs" / "wide.png").read_bytes()
    (tmp_path / "imgs" / "truncated.png").write_bytes(whole[: len(whole) // 2])  # a valid header, half the data
    with pytest.raises(KdgenError, match=r"image '.*broken.png' is corrupt.*data.on_corrupt=skip"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=1)
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=1, on_corrupt="skip")
    assert len(ds) == 3 and len(ds.skipped) == 2 and ds[0]["image"].shape == (1, 8, 8)


def test_missing_folder(tmp_path):
    with pytest.raises(KdgenError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}", image_size=8, channels=1)


def test_torchvision_dataset_offline_is_one_sentence(tmp_path):
    try:
        load_dataset("fashion-mnist", root=str(tmp_path))
    except KdgenError as e:
        assert "must be downloaded" in str(e) and "mnist5k" in str(e)
    else:
        pytest.skip("this machine has internet: the download worked")


def test_stack_images_limit_is_a_fair_sample():
    from kdgen.data import stack_images

    train = load_dataset("mnist5k", split="train")  # stored sorted by digit
    sample = stack_images(train, 1000)
    labels = {int(train.labels[(train.images == img).flatten(1).all(1)][0]) for img in sample[:200]}
    assert len(sample) == 1000 and len(labels) == 10
    assert torch.equal(sample, stack_images(train, 1000))  # seeded
