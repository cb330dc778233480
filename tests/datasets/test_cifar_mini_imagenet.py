"""CIFAR-FS, FC100 and mini-ImageNet from small files written in the real formats."""

import csv
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
from PIL import Image

from metajax.datasets import cifar, mini_imagenet
from metajax.datasets.download import DataFileError

SUPERCLASSES = {
    "aquatic_mammals": "beaver dolphin otter seal whale",
    "fish": "aquarium_fish flatfish ray shark trout",
    "flowers": "orchid poppy rose sunflower tulip",
    "food_containers": "bottle bowl can cup plate",
    "fruit_and_vegetables": "apple mushroom orange pear sweet_pepper",
    "household_electrical_devices": "clock keyboard lamp telephone television",
    "household_furniture": "bed chair couch table wardrobe",
    "insects": "bee beetle butterfly caterpillar cockroach",
    "large_carnivores": "bear leopard lion tiger wolf",
    "large_man-made_outdoor_things": "bridge castle house road skyscraper",
    "large_natural_outdoor_scenes": "cloud forest mountain plain sea",
    "large_omnivores_and_herbivores": "camel cattle chimpanzee elephant kangaroo",
    "medium_mammals": "fox porcupine possum raccoon skunk",
    "non-insect_invertebrates": "crab lobster snail spider worm",
    "people": "baby boy girl man woman",
    "reptiles": "crocodile dinosaur lizard snake turtle",
    "small_mammals": "hamster mouse rabbit shrew squirrel",
    "trees": "maple_tree oak_tree palm_tree pine_tree willow_tree",
    "vehicles_1": "bicycle bus motorcycle pickup_truck train",
    "vehicles_2": "lawn_mower rocket streetcar tank tractor",
}


pytestmark = pytest.mark.usefixtures("offline_data")


def _pickled(obj) -> bytes:
    return pickle.dumps(obj, protocol=2)


def _write_cifar100(folder, per_class=(2, 1)):
    """cifar-100-python.tar.gz as the official one lays it out: pickled dicts with bytes keys,
    rows of 3072 channel-major pixels. Pixel (0, 0) encodes (fine label, file, index)."""
    coarse_names = sorted(SUPERCLASSES)
    fine_names = sorted(n for names in SUPERCLASSES.values() for n in names.split())
    coarse_of = {f: coarse_names.index(c) for c, v in SUPERCLASSES.items() for f in v.split()}
    members = {"meta": {b"fine_label_names": [n.encode() for n in fine_names],
                        b"coarse_label_names": [n.encode() for n in coarse_names]}}  # fmt: skip
    for part, (name, n) in enumerate(zip(("train", "test"), per_class, strict=True)):
        rows, fine, coarse = [], [], []
        for i in range(n):
            for c, f in enumerate(fine_names):
                img = np.zeros((3, 32, 32), np.uint8)
                img[:, 0, 0] = (c, part, i)  # red, green, blue
                img[2, 5, 7] = 200
                rows.append(img.reshape(-1))
                fine.append(c)
                coarse.append(coarse_of[f])
        members[name] = {b"data": np.stack(rows), b"fine_labels": fine, b"coarse_labels": coarse}
    path = folder / cifar.ARCHIVE
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in members.items():
            data = _pickled(obj)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, fine_names


def test_cifar_fs_and_fc100_splits(tmp_path, monkeypatch):
    path, fine_names = _write_cifar100(tmp_path / "data")
    monkeypatch.setattr(cifar, "CHECKSUM", ("md5", hashlib.md5(path.read_bytes()).hexdigest()))
    everything = cifar.load_cifar100(tmp_path / "data")
    assert everything.images.shape == (100, 3, 32, 32, 3)
    images = np.asarray(everything.images)
    # Channel-major rows decoded to HWC; train-file images before test-file ones.
    np.testing.assert_array_equal(images[:, :, 0, 0, 0], np.arange(100)[:, None].repeat(3, 1))
    np.testing.assert_array_equal(images[0, :, 0, 0, 1], [0, 0, 1])
    assert (images[:, :, 5, 7, 2] == 200).all() and (images[:, :, 7, 5, 2] == 0).all()
    sizes = {}
    for bench in ("cifar-fs", "fc100"):
        splits = {s: cifar.load_split(bench, s, tmp_path / "data") for s in cifar.SPLITS}
        sizes[bench] = [splits[s].num_classes for s in cifar.SPLITS]
        names = [set(splits[s].names) for s in cifar.SPLITS]
        assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
        assert set.union(*names) == set(fine_names)
        for s, data in splits.items():
            # Each class keeps its own images: the red channel of pixel (0, 0) is its label.
            labels = np.asarray(data.images)[:, 0, 0, 0, 0]
            assert [fine_names[i] for i in labels] == list(data.names)
            if bench == "fc100":
                assert set(data.group_names) == set(cifar.FC100[s])
    assert sizes == {"cifar-fs": [64, 16, 20], "fc100": [60, 20, 20]}
    assert set(splits["test"].names) >= {"baby", "bee", "fox", "whale"}


def test_cifar_missing_corrupt_or_foreign_archive(tmp_path, monkeypatch):
    with pytest.raises(DataFileError, match=r"cifar-100-python.tar.gz is not in .* could not be"):
        cifar.load_split("cifar-fs", "train", tmp_path / "none")
    path, _ = _write_cifar100(tmp_path / "data")
    with pytest.raises(DataFileError, match="is corrupt or not the expected file"):
        cifar.load_cifar100(tmp_path / "data")  # the real md5 is not this file's
    with tarfile.open(path, "w:gz") as tar:  # a valid tar without CIFAR's members
        info = tarfile.TarInfo("other/file")
        tar.addfile(info, io.BytesIO(b""))
    monkeypatch.setattr(cifar, "CHECKSUM", ("md5", hashlib.md5(path.read_bytes()).hexdigest()))
    with pytest.raises(DataFileError, match="not CIFAR-100's python archive"):
        cifar.load_cifar100(tmp_path / "data")
    with pytest.raises(ValueError, match="benchmark is cifar-fs or fc100"):
        cifar.load_split("cifar10", "train", tmp_path / "data")


def _write_mini_imagenet(folder, form, classes=("n01532829", "n01558993", "n01704323")):
    """Three classes of four images; each image's colour encodes (class, index)."""
    folder.mkdir(parents=True, exist_ok=True)
    colour = {
        (c, i): (40 * c + 20, 50 * i + 10, 128) for c in range(len(classes)) for i in range(4)
    }
    if form == "pkl":
        data = np.zeros((len(colour), 84, 84, 3), np.uint8)
        class_dict = {}
        for row, ((c, _), rgb) in enumerate(sorted(colour.items(), key=lambda kv: kv[0][::-1])):
            data[row] = rgb
            class_dict.setdefault(classes[c], []).append(row)
        with (folder / "mini-imagenet-cache-test.pkl").open("wb") as f:
            pickle.dump({"image_data": data, "class_dict": class_dict}, f)
    else:
        (folder / "images").mkdir(exist_ok=True)
        with (folder / "test.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            for (c, i), rgb in colour.items():
                name = f"{classes[c]}{i:08d}.jpg"
                Image.new("RGB", (100, 90), rgb).save(folder / "images" / name, quality=95)
                writer.writerow([name, classes[c]])
    return colour, classes


@pytest.mark.parametrize("form", ["pkl", "csv"])
def test_mini_imagenet_from_either_form(tmp_path, form):
    colour, classes = _write_mini_imagenet(tmp_path / "mini-imagenet", form)
    data = mini_imagenet.load_split("test", tmp_path)
    assert data.names == classes and data.images.shape == (3, 4, 84, 84, 3)
    images = np.asarray(data.images).astype(int)
    for (c, i), rgb in colour.items():
        # JPEG is lossy: the centre pixel is within a few levels of the written colour.
        np.testing.assert_allclose(images[c, i, 42, 42], rgb, atol=3)
    if form == "csv":
        # Decoded once, then read from the cache.
        assert len(list((tmp_path / "cache").glob("mini_imagenet_test_84px_*.npz"))) == 1
        again = mini_imagenet.load_split("test", tmp_path)
        np.testing.assert_array_equal(np.asarray(again.images), np.asarray(data.images))


def test_mini_imagenet_missing_or_broken_files(tmp_path):
    with pytest.raises(DataFileError, match="mini-imagenet-cache-val.pkl, or val.csv"):
        mini_imagenet.load_split("val", tmp_path)
    _write_mini_imagenet(tmp_path / "mini-imagenet", "csv")
    (tmp_path / "mini-imagenet" / "images" / "n0155899300000002.jpg").unlink()
    with pytest.raises(DataFileError, match="n0155899300000002.jpg is listed in test.csv"):
        mini_imagenet.load_split("test", tmp_path)
    (tmp_path / "mini-imagenet" / "mini-imagenet-cache-test.pkl").write_bytes(b"junk")
    with pytest.raises(DataFileError, match="is not a mini-ImageNet cache pickle"):
        mini_imagenet.load_split("test", tmp_path)


def test_image_configs_train_on_cifar_fs_and_stop_clearly_without_data(
    tmp_path, monkeypatch, capsys
):
    from metajax.cli import main

    for config, needs in (
        ("miniimagenet-maml", "mini-imagenet-cache-train.pkl, or train.csv"),
        ("miniimagenet-protonet", "mini-imagenet-cache-train.pkl, or train.csv"),
        ("fc100-protonet", "cifar-100-python.tar.gz is not in"),
    ):
        argv = ["train", config, "--data-dir", str(tmp_path / "none"), "--workdir", str(tmp_path / config)]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needs in err and "Traceback" not in err, err
    path, _ = _write_cifar100(tmp_path / "data", per_class=(3, 2))
    monkeypatch.setattr(cifar, "CHECKSUM", ("md5", hashlib.md5(path.read_bytes()).hexdigest()))
    argv = ["train", "cifarfs-protonet", "--data-dir", str(tmp_path / "data"),
            "--workdir", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    for change in ("steps=2", "backbone=conv4", "filters=8", "train_query=2", "k_query=2",
                   "eval_tasks=4"):  # fmt: skip
        argv += ["--set", change]
    assert main(argv) == 0
    assert "accuracy" in capsys.readouterr().out
