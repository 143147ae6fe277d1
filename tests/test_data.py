"""Datasets: synthetic shapes (determinism, labels, ignore band, balance, occlusion), the
seeded DataLoader, the folder loader (round trip through PNG files, and its errors), and
the label palette."""

import numpy as np
import pytest

from fcn_scratch.data import (
    IGNORE_INDEX,
    DataLoader,
    FolderDataset,
    ShapesDataset,
    colorize,
    overlay,
    voc_palette,
)
from fcn_scratch.data.render import (
    KINDS,
    ShapeParams,
    draw_shapes,
    draw_shapes_reference,
    ignore_band,
    signed_distance,
)
from fcn_scratch.data.shapes import background, sample_params

# ---- synthetic shapes --------------------------------------------------------------------


@pytest.fixture(scope="module")
def shapes():
    return ShapesDataset(400, seed=7)


def test_same_seed_same_bits_other_seed_other_data():
    a, c = ShapesDataset(300, seed=3), ShapesDataset(300, seed=4)
    b = ShapesDataset(300, seed=3, workers=1)  # more than one chunk; threads do not matter
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.labels, c.labels)


def test_images_and_labels_have_the_documented_layout(shapes):
    assert shapes.images.shape == (400, 3, 64, 64) and shapes.images.dtype == np.float32
    assert shapes.images.min() >= 0.0 and shapes.images.max() <= 1.0
    assert shapes.class_names == ("background", "circle", "square", "triangle")
    assert set(np.unique(shapes.labels).tolist()) == {0, 1, 2, 3}
    image, label = shapes[5]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64) and label.dtype == np.int64
    x, y = shapes.get_batch(np.array([3, 1]))
    assert x.shape == (2, 3, 64, 64) and y.dtype == np.int64
    assert np.array_equal(y[1], shapes.labels[1])


def test_texture_and_noise_options():
    flat = ShapesDataset(8, seed=2, texture=0, noise=0)
    textured = ShapesDataset(8, seed=2)
    for ds, flat_expected in ((flat, True), (textured, False)):
        for image, label in zip(ds.images, ds.labels, strict=True):
            background = image[:, label == 0]  # (3, pixels)
            share_at_base = (
                np.isclose(background, np.median(background, axis=1)[:, None]).all(axis=0).mean()
            )  # anti-aliased rims of shapes are labelled background too
            assert (share_at_base > 0.95) == flat_expected


@pytest.mark.parametrize("size", [(40, 72), (97, 33)], ids=["40x72", "97x33"])
def test_any_image_size(size):
    ds = ShapesDataset(6, size=size, seed=0, kinds=KINDS)
    assert ds.images.shape == (6, 3, *size) and ds.labels.shape == (6, *size)
    assert ds.num_classes == 5 and ds.labels.max() <= 4


def test_ignore_band_absent_by_default_and_around_every_border():
    plain = ShapesDataset(30, seed=1)
    banded = ShapesDataset(30, seed=1, ignore_border=2)
    assert not (plain.labels == IGNORE_INDEX).any()
    band = banded.labels == IGNORE_INDEX
    assert 0.02 < band.mean() < 0.4
    assert np.array_equal(plain.images, banded.images)  # the band changes labels only
    assert np.array_equal(banded.labels[~band], plain.labels[~band])
    # every border pixel (a 4-neighbour differs) is inside the band
    lab = plain.labels.astype(int)
    border = np.zeros_like(band)
    border[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    border[:, :, 1:] |= lab[:, :, 1:] != lab[:, :, :-1]
    assert band[border].all()


def test_ignore_band_by_hand():
    labels = np.zeros((1, 9, 9), dtype=np.uint8)
    labels[0, 3:6, 3:6] = 2  # a 3x3 block
    out = ignore_band(labels, 1)
    expected = np.zeros((9, 9), dtype=bool)
    expected[2:7, 2:7] = True  # within one pixel (8-neighbourhood) of the other label...
    expected[4, 4] = False  # ...except the block's centre
    assert np.array_equal(out[0] == 255, expected)
    assert np.array_equal(out[0][~expected], labels[0][~expected])
    assert np.array_equal(ignore_band(labels, 0), labels)


def test_classes_are_balanced_and_colour_does_not_give_them_away(shapes):
    fractions = np.bincount(shapes.labels.ravel(), minlength=4) / shapes.labels.size
    assert 0.6 < fractions[0] < 0.95
    shape_fractions = fractions[1:]
    assert shape_fractions.max() < 1.5 * shape_fractions.min()
    images_with = [(shapes.labels == c).any(axis=(1, 2)).mean() for c in (1, 2, 3)]
    assert min(images_with) > 0.3
    mean_colour = np.stack(
        [shapes.images.transpose(1, 0, 2, 3)[:, shapes.labels == c].mean(axis=1) for c in (1, 2, 3)]
    )  # (3 classes, RGB)
    assert np.abs(mean_colour - mean_colour.mean(axis=0)).max() < 0.05


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_covers_the_area_of_its_circle(kind):
    r = 30.0
    c = np.arange(-50, 50, dtype=np.float32) + 0.5
    x, y = np.meshgrid(c, c)  # (100, 100) pixel centres around the shape's centre
    cos, sin = np.cos(0.37), np.sin(0.37)  # rotated off the pixel grid
    u, v = x * cos + y * sin, y * cos - x * sin
    area = (signed_distance(kind, u[None], v[None], np.float32(r)) < 0).sum()
    assert abs(area / (np.pi * r * r) - 1) < 0.02


def _params(kind, cx, cy, radius, colour):
    """One image whose slots hold the given shapes, unrotated and unshaded."""
    s = len(kind)
    return ShapeParams(
        kind=np.array([kind]),
        cx=np.array([cx], float),
        cy=np.array([cy], float),
        radius=np.array([radius], float),
        angle=np.zeros((1, s)),
        colour=np.array([colour], float),
        shade=np.zeros((1, s, 2)),
    )


def test_later_shape_occludes_earlier():
    kinds = ("circle", "square")
    params = _params([0, 1], [12.0, 20.0], [16.0, 16.0], [8.0, 8.0], [[1, 0, 0], [0, 0, 1]])
    images = np.zeros((1, 3, 32, 32), dtype=np.float32)
    labels = np.zeros((1, 32, 32), dtype=np.uint8)
    draw_shapes(images, labels, params, kinds)
    # (16, 16) lies inside both; the square came second
    assert labels[0, 16, 16] == 2 and np.allclose(images[0, :, 16, 16], [0, 0, 1])
    assert labels[0, 16, 6] == 1 and np.allclose(images[0, :, 16, 6], [1, 0, 0])
    assert labels[0, 2, 2] == 0 and np.allclose(images[0, :, 2, 2], 0)
    swapped = _params([1, 0], [20.0, 12.0], [16.0, 16.0], [8.0, 8.0], [[0, 0, 1], [1, 0, 0]])
    labels2 = np.zeros_like(labels)
    draw_shapes(np.zeros_like(images), labels2, swapped, kinds)
    assert labels2[0, 16, 16] == 1


def test_empty_slots_draw_nothing():
    params = _params([-1, -1], [10.0, 20.0], [10.0, 20.0], [6.0, 6.0], [[1, 1, 1]] * 2)
    images = np.zeros((1, 3, 32, 32), dtype=np.float32)
    labels = np.zeros((1, 32, 32), dtype=np.uint8)
    draw_shapes(images, labels, params, ("circle",))
    assert not images.any() and not labels.any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kinds": ("circle", "hexagon")}, "kinds"),
        ({"size": 4}, "size"),
        ({"ignore_border": -1}, "ignore_border"),
        ({"min_shapes": 3, "max_shapes": 2}, "min_shapes"),
        ({"radius": (0.3, 0.1)}, "radius"),
    ],
    ids=["unknown-kind", "tiny", "negative-band", "min>max", "radius-order"],
)
def test_shapes_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShapesDataset(2, **kwargs)


# ---- batching ----------------------------------------------------------------------------


def _ids(loader_or_batches):
    """The sample each batch row came from (labels of ArangeDataset hold the index)."""
    return [x[:, 0, 0, 0].astype(int).tolist() for x, _ in loader_or_batches]


class ArangeDataset:
    """10 images whose pixels hold their own index."""

    def __init__(self, n=10):
        from fcn_scratch.data import ArrayDataset

        images = np.repeat(np.arange(n, dtype=np.float32), 3 * 4).reshape(n, 3, 2, 2)
        self.ds = ArrayDataset(images, np.zeros((n, 2, 2), np.int64), ["background"])


def test_loader_covers_every_sample_once_in_a_seeded_order():
    ds = ArangeDataset().ds
    first = _ids(DataLoader(ds, 4, seed=1))
    assert [len(b) for b in first] == [4, 4, 2]
    assert sorted(sum(first, [])) == list(range(10))
    assert first == _ids(DataLoader(ds, 4, seed=1))
    assert first != _ids(DataLoader(ds, 4, seed=2))
    plain = DataLoader(ds, 4, shuffle=False, drop_last=True)
    assert _ids(plain) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_loader_resumes_mid_epoch_with_the_same_batches():
    ds = ArangeDataset().ds
    reference = DataLoader(ds, 3, seed=5)
    epochs = [_ids(reference) for _ in range(3)]
    assert len(reference) == 4 and epochs[0] != epochs[1]
    assert all(sorted(sum(e, [])) == list(range(10)) for e in epochs)

    loader = DataLoader(ds, 3, seed=5)
    _ids(loader)  # epoch 0
    it = iter(loader)
    seen = [next(it)[0][:, 0, 0, 0].astype(int).tolist() for _ in range(2)]
    state = {k: np.array(v) for k, v in loader.state_dict().items()}
    assert int(state["epoch"]) == 1 and int(state["position"]) == 2

    resumed = DataLoader(ds, 3, seed=0)
    resumed.load_state_dict(state)
    assert seen + _ids(resumed) == epochs[1]
    assert _ids(resumed) == epochs[2]


def test_loader_state_errors():
    loader = DataLoader(ArangeDataset().ds, 3)
    with pytest.raises(KeyError, match="position"):
        loader.load_state_dict({"seed": 0, "epoch": 0})
    with pytest.raises(ValueError, match="batch size"):
        loader.load_state_dict({"seed": 0, "epoch": 0, "position": 9})
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ArangeDataset().ds, 0)


def test_split_is_disjoint_and_seeded(shapes):
    rest, held = shapes.split(50, seed=0)
    assert len(rest) == 350 and len(held) == 50 and held.class_names == shapes.class_names
    all_images = np.concatenate([rest.images, held.images])
    assert np.unique(all_images.reshape(400, -1), axis=0).shape[0] == 400
    assert np.array_equal(shapes.split(50, seed=0)[1].images, held.images)
    with pytest.raises(ValueError, match="holdout"):
        shapes.split(400)


# ---- folder of images and masks ----------------------------------------------------------


def _write_folder(root, sizes, num_classes=3, rng=None):
    """Random RGB PNGs and 'L' masks (ids < num_classes, a few 255); returns the arrays."""
    from PIL import Image

    rng = rng or np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    out = []
    for i, (h, w) in enumerate(sizes):
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, num_classes, size=(h, w), dtype=np.uint8)
        mask[0, :2] = 255
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask, mode="L").save(root / "masks" / f"img{i}.png")
        out.append((image, mask))
    return out


def test_folder_round_trip(tmp_path):
    written = _write_folder(tmp_path, [(12, 10), (12, 10)], num_classes=3)
    ds = FolderDataset(str(tmp_path))
    assert len(ds) == 2 and ds.num_classes == 3 and ds.images.shape == (2, 3, 12, 10)
    for (image, mask), (x, y) in zip(written, (ds[0], ds[1]), strict=True):
        assert np.array_equal(np.round(x.transpose(1, 2, 0) * 255).astype(np.uint8), image)
        assert np.array_equal(y, mask)
    named = FolderDataset(str(tmp_path), num_classes=5, class_names="abcde")
    assert named.class_names == tuple("abcde")


def test_folder_palette_masks_and_jpegs(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "images" / "a.jpg")
    mask = Image.fromarray(np.eye(8, dtype=np.uint8) * 2, mode="P")
    mask.putpalette(voc_palette().ravel().tolist())
    mask.save(tmp_path / "masks" / "a.png")
    ds = FolderDataset(str(tmp_path))
    assert ds.num_classes == 3 and np.array_equal(ds[0][1], np.eye(8, dtype=np.int64) * 2)


def test_folder_resize_and_crop(tmp_path):
    _write_folder(tmp_path, [(20, 30), (25, 16)])
    resized = FolderDataset(str(tmp_path), size=(8, 12))
    assert resized.images.shape == (2, 3, 8, 12) and resized.labels.max() < 3
    cropped = FolderDataset(str(tmp_path), size=16, crop=True, seed=1)
    assert cropped.images.shape == (2, 3, 16, 16)
    again = FolderDataset(str(tmp_path), size=16, crop=True, seed=1)
    assert np.array_equal(cropped.images, again.images)
    with pytest.raises(ValueError, match="cannot crop"):
        FolderDataset(str(tmp_path), size=24, crop=True)


def test_folder_errors(tmp_path):
    from PIL import Image

    with pytest.raises(FileNotFoundError, match="no folder"):
        FolderDataset(str(tmp_path / "nowhere"))
    _write_folder(tmp_path, [(6, 6), (6, 8)], num_classes=4)
    with pytest.raises(ValueError, match="different sizes"):
        FolderDataset(str(tmp_path))
    with pytest.raises(ValueError, match=r"num_classes=2.*img\d.png"):
        FolderDataset(str(tmp_path), size=6, num_classes=2)

    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "images" / "lonely.png")
    with pytest.raises(FileNotFoundError, match="lonely.png"):
        FolderDataset(str(tmp_path))
    Image.fromarray(np.zeros((6, 6), np.uint8), mode="L").save(tmp_path / "masks" / "lonely.png")
    with pytest.raises(ValueError, match="lonely.png.*5x5.*6x6"):
        FolderDataset(str(tmp_path))
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "masks" / "lonely.png")
    with pytest.raises(ValueError, match="mode 'RGB'"):
        FolderDataset(str(tmp_path))


# ---- palette -----------------------------------------------------------------------------


def test_voc_palette_known_colours():
    p = voc_palette()
    assert p.shape == (256, 3) and p.dtype == np.uint8
    assert p[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert p[15].tolist() == [192, 128, 128]  # VOC "person"
    assert p[255].tolist() == [224, 224, 192]  # VOC "void" border


def test_colorize_and_overlay():
    label = np.array([[0, 1], [2, 255]])
    assert colorize(label).tolist() == [[[0, 0, 0], [128, 0, 0]], [[0, 128, 0], [224, 224, 192]]]
    with pytest.raises(ValueError, match="colorize"):
        colorize(np.array([[300]]))
    image = np.ones((3, 2, 2), dtype=np.float32)
    out = overlay(image, label, alpha=0.5)
    assert out.dtype == np.uint8 and out[0, 0].tolist() == [255, 255, 255]  # background kept
    assert out[0, 1].tolist() == [192, 128, 128]  # half white, half (128, 0, 0)


@pytest.mark.parametrize("size, kinds", [((64, 64), KINDS), ((23, 41), ("triangle", "circle"))])
def test_draw_shapes_equals_the_numpy_reference_bit_for_bit(size, kinds):
    # every kind, radii from tiny to half the image, shapes past the edges, up to 6 slots
    rng = np.random.default_rng(5)
    n = 120
    base = rng.uniform(size=(n, 3))
    params = sample_params(n, size, len(kinds), base, rng, 0, 6, (0.03, 0.5))
    images = background(base, size, rng)
    labels = np.zeros((n, *size), dtype=np.uint8)
    fast_images, fast_labels = images.copy(), labels.copy()
    draw_shapes_reference(images, labels, params, kinds)
    draw_shapes(fast_images, fast_labels, params, kinds)
    assert np.array_equal(fast_images.view(np.uint32), images.view(np.uint32))
    assert np.array_equal(fast_labels, labels)
    assert set(np.unique(labels)) == set(range(len(kinds) + 1))


def test_draw_shapes_refuses_other_arrays():
    params = _params([0], [8.0], [8.0], [4.0], [[1, 0, 0]])
    images = np.zeros((1, 3, 16, 16), dtype=np.float32)
    labels = np.zeros((1, 16, 16), dtype=np.uint8)
    for bad in (
        (images.astype(np.float64), labels),
        (images, labels.astype(np.int64)),
        (images[:, :, :8], labels),
        (images, labels[0]),
    ):
        with pytest.raises(ValueError, match=r"draw_shapes: need images \(N, 3, H, W\) float32"):
            draw_shapes(*bad, params, ("circle",))
