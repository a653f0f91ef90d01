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
    with pytest.raises(KdgenError, match=r"unknown dataset 'mnist6k'.*choose one of: cifar10, digits, emoji, fashion-mnist, mnist, mnist5k"):
        load_dataset("mnist6k")


def _write_images(folder):
    folder.mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(folder / "wide.png")
    Image.new("L", (30, 30), 128).save(folder / "gray.jpg")
    Image.new("RGB", (20, 20), (0, 0, 255)).save(folder / "blue.webp")


def test_folder_dataset_resizes_and_crops(tmp_path):
    _write_images(tmp_path / "imgs")
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=3, test_fraction=0)
    assert len(ds) == 3 and ds.labels is None
    red = ds[[p.name for p in ds.files].index("wide.png")]["image"]
    assert red.shape == (3, 8, 8) and red[0].min() > 0.9 and red[2].max() < -0.9


def test_folder_corrupt_file_error_or_skip(tmp_path):
    _write_images(tmp_path / "imgs")
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    whole = (tmp_path / "imgs" / "wide.png").read_bytes()
    (tmp_path / "imgs" / "truncated.png").write_bytes(whole[: len(whole) // 2])  # a valid header, half the data
    with pytest.raises(KdgenError, match=r"image '.*broken.png' is corrupt.*data.on_corrupt=skip"):
        load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=1)
    ds = load_dataset(f"folder:{tmp_path / 'imgs'}", image_size=8, channels=1, on_corrupt="skip", test_fraction=0)
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


def _class_folder(root, counts, size=12, mode="RGB"):
    import numpy as np

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(root / name / f"{i:03d}.png")
    return f"folder:{root}"


def test_class_sub_folders_are_labels_and_the_held_out_split_is_seeded_per_class(tmp_path):
    from kdgen.data.folder import split_record

    name = _class_folder(tmp_path / "f", {"cat": 20, "ant": 10, "dog": 30})
    train, test = load_dataset(name, split="train"), load_dataset(name, split="test")
    assert train.classes == ["ant", "cat", "dog"] and test.classes == train.classes
    held = test.labels.bincount().tolist()
    assert all(k >= 1 for k in held) and train.labels.bincount().tolist() == [10 - held[0], 20 - held[1], 30 - held[2]]
    assert 3 <= len(test) <= 12 and not set(train.files) & set(test.files) and len(train) + len(test) == 60
    assert train[0]["image"].shape == (3, 12, 12)  # the folder's own shape: 12 px RGB
    assert [p.parent.name for p in test.files] == [["ant", "cat", "dog"][int(k)] for k in test.labels]
    again, other = load_dataset(name, split="test"), load_dataset(name, split="test", split_seed=1)
    assert again.files == test.files and other.files != test.files  # seeded: the same seed, the same split
    rec = split_record(tmp_path / "f", test_fraction=0.1, seed=0)
    assert rec["test_count"] == len(test) and rec["train_count"] == len(train) and rec["classes"] == ["ant", "cat", "dog"]
    assert rec["test_files_sha256"] != split_record(tmp_path / "f", test_fraction=0.1, seed=1)["test_files_sha256"]
    assert torch.equal(test.images, torch.stack([test[i]["image"] for i in range(len(test))]))


def test_adding_images_never_moves_others_between_the_splits(tmp_path):
    import numpy as np

    name = _class_folder(tmp_path / "f", {"a": 40, "b": 40})
    before_test = set(load_dataset(name, split="test").files)
    rng = np.random.default_rng(5)
    for i in range(40, 80):  # twice the images in class a
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "f" / "a" / f"{i:03d}.png")
    after_test, after_train = set(load_dataset(name, split="test").files), set(load_dataset(name, split="train").files)
    assert before_test <= after_test and not before_test & after_train  # every image held out before is still held out


def test_folder_shape_comes_from_its_images(tmp_path):
    from kdgen.data import native_shape

    assert native_shape(_class_folder(tmp_path / "rgb", {"a": 3, "b": 3}, size=16)) == (16, 3)
    assert native_shape(_class_folder(tmp_path / "grey", {"a": 3, "b": 3}, size=10, mode="L")) == (10, 1)
    assert native_shape("emoji") == (32, 3) and native_shape("mnist5k") == (28, 1)


def test_a_class_too_small_to_hold_one_out_is_a_sentence(tmp_path):
    name = _class_folder(tmp_path / "f", {"a": 5, "b": 1})
    with pytest.raises(KdgenError, match=r"class 'b' .* has 1 image\(s\), too few .* data.test_fraction=0"):
        load_dataset(name, split="test")
    assert len(load_dataset(name, split="test", test_fraction=0)) == 6  # no split: the whole folder


def test_mixed_modes_alpha_over_white_exif_rotation_and_16_bit(tmp_path):
    import numpy as np

    f = tmp_path / "mixed"
    f.mkdir()
    Image.new("L", (8, 8), 0).save(f / "grey.png")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(f / "clear.png")  # fully transparent red: white once composited
    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 255] + [0] * 765)
    pal.save(f / "palette.png")  # blue through a palette
    Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)).save(f / "deep.png")  # 16-bit mid grey
    wide = Image.new("RGB", (16, 8), (255, 0, 0))
    wide.paste((0, 0, 255), (8, 0, 16, 8))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    wide.save(f / "rotated.jpg", exif=exif, quality=95)
    ds = load_dataset(f"folder:{f}", image_size=8, channels=3, test_fraction=0)
    img = {p.name: ds[i]["image"] for i, p in enumerate(ds.files)}
    assert img["grey.png"].shape == (3, 8, 8) and img["grey.png"].max() < -0.99
    assert img["clear.png"].min() > 0.99  # white, not black or red
    assert img["palette.png"][2].min() > 0.99 and img["palette.png"][0].max() < -0.99
    assert abs(float(img["deep.png"].mean())) < 0.02  # scaled from 16 bits; clipping would give +1
    rot = img["rotated.jpg"]  # displayed upright: red on top, blue below (not left / right)
    assert rot[0, :2].mean() > 0.7 and rot[2, :2].mean() < -0.7 and rot[2, -2:].mean() > 0.7 and rot[0, -2:].mean() < -0.7


def test_emoji_is_labelled_rgb_with_a_split_by_emoji(tmp_path):
    from kdgen.data import emoji

    train, test = load_dataset("emoji", split="train"), load_dataset("emoji", split="test")
    assert train[0]["image"].shape == (3, 32, 32) and len(train) + len(test) == 3781 and 300 < len(test) < 450
    assert int(train.labels.max()) == 8 and set(test.labels.tolist()) == set(range(9))
    import numpy as np

    with np.load(emoji.cache_file("~/.cache/kdgen/datasets")) as z:
        groups, mask = z["groups"], emoji.test_mask(z["labels"], z["groups"])
    assert not set(groups[mask]) & set(groups[~mask])  # no emoji in both splits as two skin tones
    with pytest.raises(KdgenError, match=r"dataset 'emoji' is not installed .*kdgen data install emoji --root "):
        load_dataset("emoji", root=str(tmp_path))
    (tmp_path / "x.tgz").write_bytes(b"not a tarball")
    with pytest.raises(KdgenError, match=r"sha1 is .*, not a80ac3e8"):
        emoji.install(tmp_path, tmp_path / "x.tgz")
