"""Augmented views: real images through the real EfficientNet-Lite0, seeded augmentations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import skimage.data
import torch
from PIL import Image

from clusterclean._contracts import Dataset
from clusterclean.backbones import load_backbone
from clusterclean.embed import read_image
from clusterclean.errors import InvalidInputError, InvalidTypeError
from clusterclean.views import AugmentedViews, augment_image, colour_jitter, embed_views

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def _photo(name: str) -> Image.Image:
    array = getattr(skimage.data, name)()
    image = Image.fromarray(array).convert("RGB")
    return image.resize((96, 80))


def make_dataset(folder, names=PHOTOS) -> Dataset:
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        _photo(name).save(path, quality=95)
        paths.append(str(path))
    table = pd.DataFrame({"image_id": list(names), "path": paths})
    return Dataset(table=table, labels=np.zeros((len(names), 0)), attributes=())


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def views(dataset, lite0) -> AugmentedViews:
    """Two views of every photo, seed 5, one batch, no worker process."""
    return embed_views(dataset, backbone=lite0, n_views=2, seed=5, num_workers=0, progress=False)


# --------------------------------------------------------------------------- augment_image


def test_augment_image_is_seeded_and_keeps_the_size():
    image = _photo("astronaut")
    first = augment_image(image, np.random.default_rng(3))
    again = augment_image(image, np.random.default_rng(3))
    other = augment_image(image, np.random.default_rng(4))
    assert first.size == image.size and first.mode == "RGB"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert not np.array_equal(np.asarray(first), np.asarray(image))


def test_augment_image_works_at_the_backbone_size_with_the_same_draws():
    image = Image.fromarray(skimage.data.astronaut()).resize((500, 375))
    small = augment_image(image, np.random.default_rng(7), max_short_side=256)
    assert small.size == (341, 256)  # shorter side 256, aspect kept: round(500 * 256 / 375)
    again = augment_image(image, np.random.default_rng(7), max_short_side=256)
    assert np.array_equal(np.asarray(small), np.asarray(again))
    # the same draws as at full size: the full-size view shrunk to 341x256 is close
    full = augment_image(image, np.random.default_rng(7)).resize((341, 256))
    difference = np.abs(np.asarray(small, dtype=float) - np.asarray(full, dtype=float))
    assert difference.mean() < 8.0
    # a side already at or below the limit is left as it is: the image's own size
    assert augment_image(_photo("coffee"), np.random.default_rng(7), max_short_side=256).size == (
        96,
        80,
    )


def _pixel(rgb: tuple[int, int, int], *args: float) -> np.ndarray:
    """colour_jitter of a one-pixel image, as floats."""
    image = Image.new("RGB", (1, 1), rgb)
    return np.asarray(colour_jitter(image, *args), dtype=float)[0, 0]


def test_colour_jitter_hand_computed_pixels():
    # x = (100, 150, 200); its luma 0.299*100 + 0.587*150 + 0.114*200 = 140.75 -> 141
    x = (100, 150, 200)
    assert np.allclose(_pixel(x, 1, 1, 1, 0), x, atol=1)  # identity
    assert np.allclose(_pixel(x, 1.2, 1, 1, 0), (120, 180, 240), atol=1)  # b x
    assert np.allclose(_pixel(x, 1.5, 1, 1, 0), (150, 225, 255), atol=1)  # clipped at 255
    # contrast 0.5 about the mean luma (the pixel's own, 141): 0.5 x + 0.5 * 141
    assert np.allclose(_pixel(x, 1, 0.5, 1, 0), (120.5, 145.5, 170.5), atol=1)
    # saturation 0: the pixel's grey; saturation 2: 2 x - grey
    assert np.allclose(_pixel(x, 1, 1, 0, 0), (140.75,) * 3, atol=1)
    assert np.allclose(_pixel(x, 1, 1, 2, 0), (59.25, 159.25, 255), atol=1)
    # a hue shift turns the colour about the grey axis: the channel mean (150) and the
    # distance from grey stay, grey stays grey; a full turn is the identity
    turned = _pixel(x, 1, 1, 1, 0.25)
    assert abs(turned.mean() - 150) <= 1
    assert abs(np.linalg.norm(turned - turned.mean()) - np.linalg.norm(np.subtract(x, 150))) <= 2
    assert not np.allclose(turned, x, atol=5)
    assert np.allclose(_pixel(x, 1, 1, 1, 1.0), x, atol=1)
    assert np.allclose(_pixel((90, 90, 90), 1, 1, 1, 0.25), (90, 90, 90), atol=1)


def test_colour_jitter_matches_torchvisions_adjustments():
    import torchvision.transforms.functional as TF

    image = _photo("astronaut")
    # brightness, contrast and saturation alone: the same blends, within rounding (theirs
    # rounds after each step, ours once)
    for b, c, s in [(1.2, 1, 1), (1, 0.8, 1), (1, 1, 1.3), (0.8, 1.2, 0.7)]:
        steps = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(image, b), c), s)
        difference = np.asarray(colour_jitter(image, b, c, s, 0), float) - np.asarray(steps)
        assert np.abs(difference).mean() < 1.5, (b, c, s)
    # the hue: HSV hue of the coloured pixels moves by about h, in the same direction
    hsv = np.asarray(image.convert("HSV"), dtype=float)
    coloured = (hsv[..., 1] > 80) & (hsv[..., 2] > 60)
    for h in (0.03, -0.03, 0.1):
        for turned in (colour_jitter(image, 1, 1, 1, h), TF.adjust_hue(image, h)):
            moved = np.asarray(turned.convert("HSV"), dtype=float)[..., 0] - hsv[..., 0]
            moved = ((moved + 128) % 256 - 128) / 256  # Pillow's hue: 0..255 for the circle
            assert abs(np.median(moved[coloured]) - h) < 0.01, h


def test_augment_image_keeps_a_flat_grey_image_grey():
    # crop, mirror, contrast (around the mean), saturation, hue and blur leave a flat grey
    # image flat grey; only brightness (x 0.7 .. 1.3) and JPEG rounding change its value
    image = Image.new("RGB", (40, 30), (100, 100, 100))
    for seed in range(10):
        values = np.asarray(augment_image(image, np.random.default_rng(seed)), dtype=float)
        assert values.std() < 2.0
        assert 70 - 2 <= values.mean() <= 130 + 2


# --------------------------------------------------------------------------- embed_views


def test_views_are_the_backbone_features_of_the_seeded_augmentations(dataset, lite0, views):
    assert isinstance(views, AugmentedViews)
    assert views.backbone == "efficientnet_lite0"
    assert views.rows.tolist() == [0, 1, 2, 3] and views.rows.dtype == np.int64
    assert views.vectors.shape == (4, 2, 1280) and views.vectors.dtype == np.float32
    assert views.n_views == 2
    # by hand: read, augment with the generator seeded (seed, row, view), transform, forward
    min_size = math.ceil(max(lite0.input_size) * 8 / 7)
    with torch.inference_mode():
        for row in (0, 3):
            for view in (0, 1):
                image = read_image(dataset.table["path"][row], min_size=min_size)
                augmented = augment_image(
                    image, np.random.default_rng([5, row, view]), max_short_side=min_size
                )
                out = lite0.model(lite0.transform(augmented)[None])[0].numpy()
                np.testing.assert_allclose(
                    views.vectors[row, view], out / np.linalg.norm(out), atol=1e-5
                )


def test_views_of_one_photo_are_closer_than_other_photos(views):
    first, second = views.vectors[:, 0], views.vectors[:, 1]
    cross = first @ second.T
    same = np.diag(cross)
    other = cross[~np.eye(len(cross), dtype=bool)].reshape(len(cross), -1).max(axis=1)
    assert (same > other).all()


def test_batching_and_workers_do_not_change_the_views(dataset, lite0, views):
    other = embed_views(
        dataset, backbone=lite0, seed=5, batch_size=3, num_workers=1, progress=False
    )
    np.testing.assert_allclose(other.vectors, views.vectors, atol=1e-5)


def test_sample_of_max_images_is_seeded_and_keeps_each_rows_views(dataset, lite0, views):
    sample = embed_views(
        dataset, backbone=lite0, seed=5, max_images=2, num_workers=0, progress=False
    )
    expected_rows = np.sort(np.random.default_rng(5).choice(4, 2, replace=False))
    assert sample.rows.tolist() == expected_rows.tolist()
    # a row's views depend on (seed, row, view) only, not on which rows are sampled
    np.testing.assert_allclose(sample.vectors, views.vectors[sample.rows], atol=1e-5)


def test_unreadable_images_are_left_out(dataset, lite0, tmp_path, caplog):
    # one view, a seed of its own: the fixture's rows are not what is checked here
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    table = pd.concat(
        [dataset.table, pd.DataFrame({"image_id": ["broken"], "path": [str(broken)]})],
        ignore_index=True,
    )
    with_broken = Dataset(table=table, labels=np.zeros((5, 0)), attributes=())
    found = embed_views(with_broken, backbone=lite0, n_views=1, progress=False)
    assert found.rows.tolist() == [0, 1, 2, 3]
    assert found.vectors.shape == (4, 1, 1280)
    assert "skipped 1 of 5 images" in caplog.text

    only_broken = Dataset(
        table=table.iloc[[4]].reset_index(drop=True), labels=np.zeros((1, 0)), attributes=()
    )
    with pytest.raises(InvalidInputError, match="None of the 1 sampled images could be read"):
        embed_views(only_broken, backbone=lite0, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"n_views": 0},
            InvalidInputError,
            "'n_views' parameter of embed_views must be an int >= 1",
        ),
        ({"max_images": 0}, InvalidInputError, "'max_images' parameter of embed_views"),
        ({"seed": -1}, InvalidInputError, "'seed' parameter of embed_views"),
        ({"batch_size": 1.5}, InvalidTypeError, "'batch_size' parameter of embed_views"),
        ({"backbone": 3}, InvalidTypeError, "'backbone' parameter of embed_views"),
    ],
)
def test_bad_parameters(dataset, kwargs, error, message):
    with pytest.raises(error, match=message):
        embed_views(dataset, progress=False, **kwargs)


def test_bad_data(lite0):
    with pytest.raises(InvalidTypeError, match="'dataset' parameter of embed_views"):
        embed_views(["a.jpg"], backbone=lite0)
    no_paths = Dataset(pd.DataFrame({"image_id": ["a"]}), np.zeros((1, 0)), ())
    with pytest.raises(InvalidInputError, match="no 'path' column"):
        embed_views(no_paths, backbone=lite0)


def test_several_views_of_an_image_batch_like_one(dataset, lite0):
    # each image is decoded once for all its views; one image per batch or all in one
    # batch, the same views
    alone = embed_views(
        dataset, backbone=lite0, n_views=3, seed=2, batch_size=1, num_workers=0, progress=False
    )
    together = embed_views(dataset, backbone=lite0, n_views=3, seed=2, progress=False)
    assert alone.vectors.shape == (4, 3, 1280)
    np.testing.assert_allclose(alone.vectors, together.vectors, atol=1e-5)


def test_views_are_cached_per_file_and_row(tmp_path, lite0, caplog):
    import logging
    import os

    from clusterclean.embed import embed_images

    (tmp_path / "photos").mkdir()
    data = make_dataset(tmp_path / "photos")
    cache = tmp_path / "cache"
    options = {"backbone": lite0, "seed": 5, "num_workers": 0, "progress": False}
    plain = embed_views(data, **options)
    with caplog.at_level(logging.INFO, logger="clusterclean.views"):
        first = embed_views(data, cache_dir=cache, **options)
        again = embed_views(data, cache_dir=str(cache), **options)
    np.testing.assert_array_equal(first.vectors, plain.vectors)
    np.testing.assert_array_equal(again.vectors, plain.vectors)
    assert "0 of 4 images' views from the cache" in caplog.text
    assert "4 of 4 images' views from the cache" in caplog.text

    # a changed file is embedded again; another seed draws other views: none from the cache
    caplog.clear()
    path = data.table["path"].iloc[1]
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    with caplog.at_level(logging.INFO, logger="clusterclean.views"):
        touched = embed_views(data, cache_dir=cache, **options)
        other_seed = embed_views(data, cache_dir=cache, **{**options, "seed": 6})
    np.testing.assert_array_equal(touched.vectors, plain.vectors)
    assert "3 of 4 images' views from the cache" in caplog.text
    assert "0 of 4 images' views from the cache" in caplog.text
    assert not np.allclose(other_seed.vectors, plain.vectors)

    # a row's entry is its row's views: a dataset in another order does not reuse them
    caplog.clear()
    reversed_rows = Dataset(
        table=data.table.iloc[::-1].reset_index(drop=True),
        labels=np.zeros((4, 0)),
        attributes=(),
    )
    with caplog.at_level(logging.INFO, logger="clusterclean.views"):
        embed_views(reversed_rows, cache_dir=cache, **options)
    assert "0 of 4 images' views from the cache" in caplog.text

    # the views live in a folder of their own: the images' cache finds none of them
    with caplog.at_level(logging.INFO, logger="clusterclean.embed"):
        embed_images(data, backbone=lite0, cache_dir=cache, num_workers=0, progress=False)
    assert "0 of 4 images found" in caplog.text
