"""PASCAL VOC's folder layout: lazy reading at each image's size, training crops, and the
train / evaluate / compare commands on it, with a tiny VOC-layout folder built here."""

import os

import numpy as np
import pytest
from PIL import Image

from fcn_scratch.cli import main
from fcn_scratch.data import IGNORE_INDEX, VOC_CLASSES, DataLoader, VOCCrops, VOCDataset
from fcn_scratch.data.images import read_mask, write_mask
from fcn_scratch.train import TrainConfig, Trainer

SIZES = {"a": (40, 56), "b": (33, 47), "c": (61, 38), "d": (45, 45), "e": (37, 52)}
CLASSES = ["background", "class 1", "class 2"]
SMALL = {"widths": (4, 4, 4, 4, 4), "convs_per_stage": (1, 1, 1, 1, 1), "fc_width": 8}


def make_voc(root, classes=CLASSES):
    """Images a-e of different sizes; train a, b, c (+ 'ghost' without files), val d, e;
    'x' has an image but is in no split. Masks: random ids 0-2 with a 255 border.
    ``classes`` go to classes.txt (None: no classes.txt)."""
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", os.path.join("ImageSets", "Segmentation")):
        os.makedirs(os.path.join(root, sub))
    truth = {}
    for name, (h, w) in {**SIZES, "x": (20, 20)}.items():
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(os.path.join(root, "JPEGImages", f"{name}.jpg"))
        label = rng.integers(0, 3, (h, w))
        label[0, :] = IGNORE_INDEX
        write_mask(os.path.join(root, "SegmentationClass", f"{name}.png"), label)
        truth[name] = label
    splits = os.path.join(root, "ImageSets", "Segmentation")
    with open(os.path.join(splits, "train.txt"), "w") as f:
        f.write("a\nghost\nb\nc\n")
    with open(os.path.join(splits, "val.txt"), "w") as f:
        f.write("d\ne\n")
    if classes is not None:
        with open(os.path.join(root, "classes.txt"), "w") as f:
            f.write("\n".join(classes) + "\n")
    return truth


@pytest.fixture
def voc(tmp_path):
    root = str(tmp_path / "VOC")
    return root, make_voc(root)


def test_voc_dataset_reads_each_image_at_its_own_size(voc):
    root, truth = voc
    train = VOCDataset(root, "train")
    assert train.ids == ["a", "b", "c"] and train.image_size is None
    assert train.class_names == tuple(CLASSES)
    for i, name in enumerate(train.ids):
        image, label = train[i]
        assert image.shape == (3, *SIZES[name]) and image.dtype == np.float32
        assert 0 <= image.min() and image.max() <= 1
        np.testing.assert_array_equal(label, truth[name])
    assert VOCDataset(root, "val").ids == ["d", "e"]


def test_voc_class_names_default_to_vocs_and_bad_ids_are_named(tmp_path):
    root = str(tmp_path / "VOC")
    make_voc(root, classes=None)
    assert VOCDataset(root, "val").class_names == VOC_CLASSES
    with pytest.raises(ValueError, match=r"mask .*a.png holds ids \[2\] outside \[0, 2\)"):
        VOCDataset(root, "train", class_names=["bg", "fg"])[0]
    with pytest.raises(FileNotFoundError, match="test.txt"):
        VOCDataset(root, "test")


def test_masks_written_as_palette_pngs_keep_ids_and_voc_colours(tmp_path):
    label = np.array([[0, 1, 15], [20, 255, 3]])
    path = str(tmp_path / "m.png")
    write_mask(path, label)
    with Image.open(path) as im:
        assert im.mode == "P"
        assert im.getpalette()[3 * 15 : 3 * 15 + 3] == [192, 128, 128]  # person
    np.testing.assert_array_equal(read_mask(path), label)


def test_crops_pad_with_ignore_flip_and_depend_only_on_seed_epoch_index(voc):
    root, truth = voc
    crops = VOCCrops(VOCDataset(root, "train"), 48, seed=5)
    seen_flip = False
    for epoch in range(4):
        crops.set_epoch(epoch)
        for i, name in enumerate(["a", "b", "c"]):
            x, y = crops[i]
            assert x.shape == (3, 48, 48) and y.shape == (48, 48)
            h, w = SIZES[name]
            padded = np.full((max(h, 48), max(w, 48)), IGNORE_INDEX)
            padded[:h, :w] = truth[name]
            windows = [
                padded[t : t + 48, s : s + 48]
                for t in range(padded.shape[0] - 47)
                for s in range(padded.shape[1] - 47)
            ]
            plain = any((y == win).all() for win in windows)
            flipped = any((y[:, ::-1] == win).all() for win in windows)
            assert plain or flipped
            seen_flip |= flipped and not plain
            assert ((y == IGNORE_INDEX) | (y < 3)).all()
            again = VOCCrops(crops.dataset, 48, seed=5)
            again.set_epoch(epoch)
            np.testing.assert_array_equal(again[i][0], x)
    assert seen_flip
    crops.set_epoch(0)
    a0 = crops[0][1]
    crops.set_epoch(1)
    assert not np.array_equal(a0, crops[0][1])


def test_loader_over_crops_resumes_with_the_same_batches(voc):
    root, _ = voc

    def loader():
        return DataLoader(VOCCrops(VOCDataset(root, "train"), 32, seed=1), batch_size=2, seed=3)

    whole = loader()
    batches = [y for _, y in whole] + [y for _, y in whole]  # two epochs of 2 batches
    interrupted = loader()
    list(interrupted)  # epoch 0
    next(iter(interrupted))  # the first batch of epoch 1
    resumed = loader()
    resumed.load_state_dict(interrupted.state_dict())
    rest = [y for _, y in resumed]
    assert len(rest) == 1
    np.testing.assert_array_equal(rest[0], batches[3])
    assert not np.array_equal(batches[0], batches[2])  # epochs crop differently


def test_train_evaluate_and_compare_on_a_voc_folder(voc, tmp_path, capsys):
    root, _ = voc
    config = TrainConfig(
        data=root,
        image_size=32,
        epochs=1,
        batch_size=2,
        val_size=8,
        out=str(tmp_path / "run"),
        **SMALL,
    )
    trainer = Trainer(config, progress=False)
    assert isinstance(trainer.train_set, VOCCrops) and len(trainer.val_set) == 2
    trainer.fit()
    assert trainer.metrics["pixel_acc"] > 0
    ckpt = os.path.join(config.out, "checkpoint.npz")
    assert main(["evaluate", ckpt, "--data", root]) == 0
    out = capsys.readouterr().out
    assert "(2 images of their own sizes)" in out and "class 2" in out
    argv = ["compare", "--models", "fcn32s", "--epochs", "1", "--data", root, "--image-size", "32"]
    argv += [
        "--widths",
        "4,4,4,4,4",
        "--fc-width",
        "8",
        "--out",
        str(tmp_path / "cmp"),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "2 held-out images of their own sizes from" in capsys.readouterr().out


def test_evaluate_refuses_a_val_image_over_the_memory_budget(voc, tmp_path, capsys):
    root, _ = voc
    config = TrainConfig(
        data=root, image_size=32, epochs=1, batch_size=2, out=str(tmp_path / "r"), **SMALL
    )
    Trainer(config, progress=False).fit()
    ckpt = os.path.join(config.out, "checkpoint.npz")
    assert main(["evaluate", ckpt, "--data", root, "--max-memory", "0.0001"]) == 2
    err = capsys.readouterr().err
    assert "fcn-scratch evaluate: error: image" in err and "d.jpg is 45x45 (HxW)" in err
    assert "memory budget of 0.0001 GiB" in err


def test_median_frequency_weights_from_label_maps_read_one_by_one(voc):
    from fcn_scratch.train.setup import class_weights

    root, truth = voc
    crops = VOCCrops(VOCDataset(root, "train"), 32)
    weights = class_weights(TrainConfig(class_weights="median_freq"), crops.labels, 3)
    maps = [truth[n][truth[n] != IGNORE_INDEX] for n in ("a", "b", "c")]
    freq = np.array(
        [
            sum((m == c).sum() for m in maps) / sum(m.size for m in maps if (m == c).any())
            for c in range(3)
        ]
    )
    np.testing.assert_allclose(weights, np.median(freq) / freq, rtol=1e-6)
