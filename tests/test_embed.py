"""Embedding stage: real image files through real models; vectors brought as Parquet / .npy."""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import skimage.data
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from tiny_model import save_tiny_torchscript

from clusterclean._contracts import Dataset
from clusterclean.backbones import Backbone, load_backbone
from clusterclean.embed import balanced_batches, embed_images, load_embeddings, read_image
from clusterclean.errors import InvalidInputError, InvalidTypeError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: Unit vectors computed along two paths (batched channels-last vs one by one) agree to this.
TOL = 1e-5


def write_photo(path, name: str, box: tuple[int, int, int, int] | None = None) -> str:
    """Save a scikit-image sample photo (optionally cropped to ``box``) as a JPEG."""
    image = Image.fromarray(getattr(skimage.data, name)())
    if box is not None:
        image = image.crop(box)
    image.save(path, quality=95)
    return str(path)


@pytest.fixture
def photos(tmp_path) -> list[str]:
    return [write_photo(tmp_path / f"{name}.jpg", name) for name in PHOTOS]


@pytest.fixture(scope="module")
def tiny_script(tmp_path_factory) -> str:
    return save_tiny_torchscript(tmp_path_factory.mktemp("script") / "tiny.pt")


@pytest.fixture(scope="module")
def tiny(tiny_script):
    """A fast real backbone (TorchScript conv net) shared by the functional tests."""
    return load_backbone("torchscript", weights=tiny_script, device="cpu")


def stage_input(backbone, path) -> torch.Tensor:
    """One image as the stage feeds it to the model. JPEGs may be decoded at reduced scale,
    down to 8/7 of the largest input side (see test_large_jpegs_are_decoded_at_reduced_scale)."""
    min_size = math.ceil(max(backbone.input_size) * 8 / 7)
    return backbone.transform(read_image(path, min_size=min_size))


def expected_vectors(backbone, paths) -> np.ndarray:
    """The stage's result computed by hand: read, transform, forward one by one, L2-normalise."""
    with torch.inference_mode():
        rows = [backbone.model(stage_input(backbone, p)[None])[0] for p in paths]
    vectors = torch.stack(rows).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def assert_embeddings(embeddings, ids, dim) -> None:
    assert embeddings.ids.tolist() == list(ids)
    assert embeddings.vectors.shape == (len(ids), dim)
    assert embeddings.vectors.dtype == np.float32
    assert embeddings.vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, rtol=1e-5)


# --------------------------------------------------------------------------- each backbone


def test_resnet18_from_a_state_dict_embeds_files(tmp_path, photos):
    torch.manual_seed(0)
    weights = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)

    embeddings = embed_images(photos, backbone="resnet18", weights=weights, progress=False)

    assert_embeddings(embeddings, photos, 512)
    assert embeddings.backbone == "resnet18"
    expected = expected_vectors(load_backbone("resnet18", weights=weights), photos)
    np.testing.assert_allclose(embeddings.vectors, expected, atol=TOL)


def test_torchscript_embeds_files(tiny_script, photos):
    embeddings = embed_images(photos, backbone="torchscript", weights=tiny_script, progress=False)
    assert_embeddings(embeddings, photos, 8)
    assert embeddings.backbone == "torchscript"
    expected = expected_vectors(load_backbone("torchscript", weights=tiny_script), photos)
    np.testing.assert_allclose(embeddings.vectors, expected, atol=TOL)


def test_efficientnet_lite0_shifted_crops_are_closer_than_other_photos(tmp_path):
    files = [
        write_photo(tmp_path / "a.jpg", "astronaut", box=(0, 0, 440, 440)),
        write_photo(tmp_path / "a shifted.jpg", "astronaut", box=(24, 16, 464, 456)),
        write_photo(tmp_path / "coffee.jpg", "coffee"),
        write_photo(tmp_path / "chelsea.jpg", "chelsea"),
    ]
    vectors = embed_images(files, backbone="efficientnet_lite0", progress=False).vectors
    similarity = vectors @ vectors.T
    same_photo = similarity[0, 1]
    assert same_photo > 0.8
    assert same_photo > similarity[0, 2] + 0.3
    assert same_photo > similarity[0, 3] + 0.3
    assert similarity[2, 3] < 0.5


def test_osnet_embeds_person_crops_from_a_torchreid_checkpoint(tmp_path):
    from test_backbones import torchreid_checkpoint

    weights = tmp_path / "osnet_x0_25_market.pth.tar-150"
    torchreid_checkpoint("osnet_x0_25", weights)
    crops = [
        write_photo(
            tmp_path / f"person{i}.jpg", "astronaut", box=(100 + 40 * i, 0, 228 + 40 * i, 256)
        )
        for i in range(3)
    ]
    embeddings = embed_images(crops, backbone="osnet_x0_25", weights=weights, progress=False)
    assert_embeddings(embeddings, crops, 512)
    assert embeddings.backbone == "osnet_x0_25"
    expected = expected_vectors(load_backbone("osnet_x0_25", weights=weights), crops)
    np.testing.assert_allclose(embeddings.vectors, expected, atol=TOL)


# --------------------------------------------------------------------------- behaviour


def test_rows_follow_input_order(tiny, photos):
    forward = embed_images(photos, backbone=tiny, progress=False)
    backward = embed_images(photos[::-1], backbone=tiny, progress=False)
    assert backward.ids.tolist() == photos[::-1]
    np.testing.assert_allclose(backward.vectors, forward.vectors[::-1], atol=TOL)


def test_batch_size_and_workers_do_not_change_the_vectors(tiny, photos):
    reference = embed_images(photos, backbone=tiny, batch_size=1, num_workers=0, progress=False)
    batched = embed_images(photos, backbone=tiny, batch_size=3, num_workers=1, progress=False)
    assert batched.ids.tolist() == reference.ids.tolist()
    np.testing.assert_allclose(batched.vectors, reference.vectors, atol=TOL)
    np.testing.assert_allclose(reference.vectors, expected_vectors(tiny, photos), atol=TOL)


def test_dataset_input_uses_image_ids(tiny, photos):
    table = pd.DataFrame({"image_id": [f"img{i}" for i in range(len(photos))], "path": photos})
    dataset = Dataset(table=table, labels=np.zeros((len(photos), 0)), attributes=())
    embeddings = embed_images(dataset, backbone=tiny, progress=False)
    assert embeddings.ids.tolist() == ["img0", "img1", "img2", "img3"]
    np.testing.assert_allclose(embeddings.vectors, expected_vectors(tiny, photos), atol=TOL)


def test_progress_bar_and_log(tiny, photos, capfd, caplog):
    with caplog.at_level(logging.INFO, logger="clusterclean.embed"):
        embed_images(photos, backbone=tiny, progress=False)
    assert capfd.readouterr().err == ""
    assert any(
        r.getMessage().startswith("Embedded 4 images with torchscript in ") for r in caplog.records
    )
    embed_images(photos, backbone=tiny, progress=True)
    assert "Embedding" in capfd.readouterr().err


def test_flip_tta_averages_the_image_and_its_mirror(tiny, photos):
    embeddings = embed_images(photos, backbone=tiny, tta="flip", progress=False)
    with torch.inference_mode():
        batch = torch.stack([stage_input(tiny, p) for p in photos])
        raw = ((tiny.model(batch) + tiny.model(batch.flip(-1))) / 2).numpy()
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings.vectors, expected, atol=TOL)
    plain = embed_images(photos, backbone=tiny, progress=False).vectors
    assert not np.allclose(plain, expected, atol=1e-3)  # the mirror did change something


def test_large_jpegs_are_decoded_at_reduced_scale(tmp_path, tiny):
    big = Image.fromarray(skimage.data.astronaut()).resize((1200, 900))
    big.save(tmp_path / "big.jpg", quality=95)
    big.save(tmp_path / "big.png")
    # 1200 // 256 = 4, 900 // 256 = 3 -> libjpeg scale 1/2, both sides still >= 256
    assert read_image(tmp_path / "big.jpg", min_size=256).size == (600, 450)
    assert read_image(tmp_path / "big.png", min_size=256).size == (1200, 900)  # JPEG only
    assert read_image(tmp_path / "big.jpg").size == (1200, 900)
    lite = embed_images(
        [tmp_path / "big.jpg", tmp_path / "big.png"], backbone=tiny, progress=False
    ).vectors
    assert float(lite[0] @ lite[1]) > 0.999  # the same picture either way


# --------------------------------------------------------------------------- cache and resume


class Counting(torch.nn.Module):
    """Wraps a model and counts the images it is asked to embed."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return self.inner(x)


def counting(tiny, name: str = "counting") -> Backbone:
    return Backbone(name, Counting(tiny.model), tiny.transform, tiny.dim, tiny.input_size, "w1")


def test_cache_embeds_only_new_or_changed_images(tiny, photos, tmp_path, caplog):
    cache = tmp_path / "cache"
    backbone = counting(tiny)
    first = embed_images(photos[:3], backbone=backbone, cache_dir=cache, progress=False)
    assert backbone.model.seen == 3

    with caplog.at_level(logging.INFO, logger="clusterclean.embed"):
        again = embed_images(photos[:3], backbone=backbone, cache_dir=cache, progress=False)
    assert backbone.model.seen == 3  # nothing embedded
    assert any(
        r.getMessage().endswith("3 of 3 images found; nothing to embed") for r in caplog.records
    )
    np.testing.assert_array_equal(again.vectors, first.vectors)

    write_photo(photos[1], "rocket")  # a changed image: new content, new size and mtime
    changed = embed_images(photos, backbone=backbone, cache_dir=cache, progress=False)
    assert backbone.model.seen == 3 + 2  # the changed one and the new fourth
    np.testing.assert_allclose(changed.vectors, expected_vectors(tiny, photos), atol=TOL)
    np.testing.assert_array_equal(changed.vectors[[0, 2]], first.vectors[[0, 2]])

    embed_images(photos, backbone=backbone, tta="flip", cache_dir=cache, progress=False)
    assert backbone.model.seen == 5 + 2 * 4  # another setup, another cache: all, twice (mirror)
    assert len(list(cache.glob("counting-*/setup.json"))) == 2


def test_damaged_shard_and_dead_temp_files(tiny, photos, tmp_path, caplog):
    cache = tmp_path / "cache"
    backbone = counting(tiny)
    embed_images(photos, backbone=backbone, cache_dir=cache, progress=False)
    (folder,) = cache.iterdir()
    (shard,) = folder.glob("shard-*.parquet")
    shard.write_bytes(b"PAR1 damaged")
    orphan = folder / ".shard-1-999999999-0.parquet.999999999.tmp"  # a dead run's partial shard
    orphan.write_bytes(b"partial")
    with caplog.at_level(logging.WARNING, logger="clusterclean.embed"):
        result = embed_images(photos, backbone=backbone, cache_dir=cache, progress=False)
    assert backbone.model.seen == 8  # the damaged shard's images were embedded again
    assert any("Ignoring unreadable cache shard" in r.getMessage() for r in caplog.records)
    assert not orphan.exists()
    np.testing.assert_allclose(result.vectors, expected_vectors(tiny, photos), atol=TOL)


KILLED_RUN = """
import sys, time, torch
import clusterclean.embed as embed
from clusterclean.backbones import Backbone, load_backbone

class Slow(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        time.sleep(0.25)
        return self.inner(x)

embed._SHARD_ROWS = 2  # a shard per batch, so that the kill lands between shards
tiny = load_backbone("torchscript", weights=sys.argv[1])
backbone = Backbone("counting", Slow(tiny.model), tiny.transform, tiny.dim, tiny.input_size, "w1")
embed.embed_images(sys.argv[3:], backbone=backbone, batch_size=2, num_workers=0,
                   cache_dir=sys.argv[2], progress=False)
"""


def test_a_killed_run_resumes(tiny, tiny_script, tmp_path):
    names = ("astronaut", "coffee", "chelsea", "rocket", "camera")
    paths = [
        write_photo(tmp_path / f"p{i:02d}.png", names[i % 5], box=(i, i, 64 + i, 64 + i))
        for i in range(40)
    ]
    cache = tmp_path / "cache"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, tiny_script, str(cache), *paths],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while len(list(cache.glob("*/shard-*.parquet"))) < 3:
        assert child.poll() is None, child.stderr.read().decode()
        assert time.monotonic() < deadline, "the child wrote no shards"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL
    done = sum(pq.read_metadata(f).num_rows for f in cache.glob("*/shard-*.parquet"))
    assert 6 <= done < 40

    backbone = counting(tiny)
    resumed = embed_images(paths, backbone=backbone, cache_dir=cache, progress=False)
    assert backbone.model.seen == 40 - done
    assert resumed.ids.tolist() == paths
    np.testing.assert_allclose(resumed.vectors, expected_vectors(tiny, paths), atol=TOL)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"batch_size": 0},
            InvalidInputError,
            "The 'batch_size' parameter of embed_images must be an int >= 1. Got 0 instead.",
        ),
        (
            {"batch_size": 2.5},
            InvalidTypeError,
            "The 'batch_size' parameter of embed_images must be an int >= 1. Got 2.5 instead.",
        ),
        (
            {"num_workers": -1},
            InvalidInputError,
            "The 'num_workers' parameter of embed_images must be an int >= 0. Got -1 instead.",
        ),
        (
            {"on_error": "ignore"},
            InvalidInputError,
            "The 'on_error' parameter of embed_images must be one of 'skip', 'raise'. "
            "Got 'ignore' instead.",
        ),
        (
            {"backbone": 3},
            InvalidTypeError,
            "The 'backbone' parameter of embed_images must be a backbone name (str) or a "
            "Backbone. Got int instead.",
        ),
        (
            {"tta": "hflip"},
            InvalidInputError,
            "The 'tta' parameter of embed_images must be one of 'none', 'flip'. "
            "Got 'hflip' instead.",
        ),
        (
            {"cache_dir": 5},
            InvalidTypeError,
            "The 'cache_dir' parameter of embed_images must be a folder path (str or Path) or "
            "None. Got int instead.",
        ),
        (
            {"skipped": ()},
            InvalidTypeError,
            "The 'skipped' parameter of embed_images must be a list or None. Got tuple instead.",
        ),
    ],
)
def test_bad_parameters(photos, kwargs, error, message):
    with pytest.raises(error) as err:
        embed_images(photos, progress=False, **kwargs)
    assert str(err.value) == message


def test_bad_data(tiny, photos):
    with pytest.raises(InvalidTypeError, match="Dataset or a sequence of image paths"):
        embed_images(photos[0], backbone=tiny)
    with pytest.raises(InvalidTypeError, match="Got an element of type int instead"):
        embed_images([photos[0], 7], backbone=tiny)
    with pytest.raises(InvalidInputError, match="got no images"):
        embed_images([], backbone=tiny)
    with pytest.raises(InvalidInputError) as err:
        embed_images([photos[0], photos[1], photos[0]], backbone=tiny)
    assert f"Image id {photos[0]!r} appears more than once" in str(err.value)
    table = pd.DataFrame({"image_id": ["a", "b"], "path": [photos[0], None]})
    dataset = Dataset(table=table, labels=np.zeros((2, 0)), attributes=())
    with pytest.raises(InvalidInputError, match="Image 'b' has no path"):
        embed_images(dataset, backbone=tiny)


def test_weights_with_a_loaded_backbone_is_ambiguous(tiny, tiny_script, photos):
    with pytest.raises(InvalidInputError, match="applies to a backbone given by name"):
        embed_images(photos, backbone=tiny, weights=tiny_script)


def test_unreadable_images_raise_or_are_skipped(tiny, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(InvalidInputError) as err:
        embed_images([photos[0], str(broken)], backbone=tiny, on_error="raise")
    assert str(err.value) == (
        f"1 of 2 images could not be read (first: {str(broken)!r}: not an image Pillow can "
        "read). Fix or remove these files, or pass on_error='skip' to leave them out."
    )
    with pytest.raises(InvalidInputError, match="None of the 1 images could be read"):
        embed_images([str(broken)], backbone=tiny)


# --------------------------------------------------------------------------- load_embeddings

IDS = ["a", "b", "c"]
VECTORS = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
UNIT = np.array([[0.6, 0.8], [0.0, 1.0], [2**-0.5, 2**-0.5]], dtype=np.float32)


def write_parquet(path, columns: dict) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.mark.parametrize(
    "vector_type", [pa.list_(pa.float32(), 2), pa.list_(pa.float64()), pa.large_list(pa.float32())]
)
def test_load_parquet(tmp_path, vector_type):
    path = write_parquet(
        tmp_path / "emb.parquet",
        {
            "image_id": IDS,
            "label": [1, 0, 1],
            "embedding": pa.array(VECTORS.tolist(), type=vector_type),
        },
    )
    embeddings = load_embeddings(path)
    assert embeddings.ids.tolist() == IDS and embeddings.backbone == "user"
    assert embeddings.vectors.dtype == np.float32
    np.testing.assert_allclose(embeddings.vectors, UNIT, rtol=1e-6)


@pytest.mark.parametrize("ids_kind", ["txt", "csv", "parquet"])
def test_load_npy_with_ids(tmp_path, ids_kind):
    np.save(tmp_path / "v.npy", VECTORS)
    ids_path = tmp_path / f"ids.{ids_kind}"
    if ids_kind == "txt":
        ids_path.write_text("a\nb\nc\n")
    elif ids_kind == "csv":
        pd.DataFrame({"n": [1, 2, 3], "image_id": IDS}).to_csv(ids_path, index=False)
    else:
        pd.DataFrame({"image_id": IDS}).to_parquet(ids_path)
    embeddings = load_embeddings(tmp_path / "v.npy", ids_path=ids_path)
    assert embeddings.ids.tolist() == IDS
    np.testing.assert_allclose(embeddings.vectors, UNIT, rtol=1e-6)


def test_parquet_with_several_vector_columns_needs_column(tmp_path):
    path = write_parquet(
        tmp_path / "two.parquet",
        {"image_id": IDS, "emb_a": VECTORS.tolist(), "emb_b": (VECTORS * 2).tolist()},
    )
    with pytest.raises(InvalidInputError) as err:
        load_embeddings(path)
    assert "found 'emb_a', 'emb_b' among columns" in str(err.value)
    assert "Pass column=NAME to pick one." in str(err.value)
    np.testing.assert_allclose(load_embeddings(path, column="emb_b").vectors, UNIT, rtol=1e-6)
    with pytest.raises(InvalidInputError, match="no list-of-floats column 'emb_c'"):
        load_embeddings(path, column="emb_c")


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"id": IDS, "embedding": VECTORS.tolist()}, "has no 'image_id' column"),
        ({"image_id": IDS, "x": [1.0, 2.0, 3.0]}, "found none among columns ['image_id', 'x']"),
        (
            {"image_id": IDS, "embedding": [[1.0, 2.0], [3.0], [1.0, 0.0]]},
            "The vector of image 'b' in {path!r} has 1 values but the first has 2",
        ),
        (
            {"image_id": IDS, "embedding": [[1.0, 2.0], None, [1.0, 0.0]]},
            "The vector of image 'b' in {path!r} (column 'embedding') is null.",
        ),
        (
            {"image_id": IDS, "embedding": [[1.0, 2.0], [0.0, 0.0], [1.0, 0.0]]},
            "1 embedding rows are all zeros (first: image 'b')",
        ),
        (
            {"image_id": IDS, "embedding": [[1.0, 2.0], [1.0, 1.0], [np.nan, 0.0]]},
            "1 embedding rows hold NaN or inf (first: image 'c')",
        ),
        (
            {"image_id": ["a", "b", "a"], "embedding": VECTORS.tolist()},
            "Embedding ids must be unique; 'a' appears more than once.",
        ),
        ({"image_id": ["a", None, "c"], "embedding": VECTORS.tolist()}, "Row 1 of {path!r}"),
    ],
)
def test_bad_parquet(tmp_path, columns, message):
    path = write_parquet(tmp_path / "bad.parquet", columns)
    with pytest.raises(InvalidInputError) as err:
        load_embeddings(path)
    assert message.format(path=path) in str(err.value)


def test_bad_npy(tmp_path):
    vectors = tmp_path / "v.npy"
    np.save(vectors, VECTORS)
    ids = tmp_path / "ids.txt"
    ids.write_text("a\nb\n")
    with pytest.raises(InvalidInputError, match="is a .npy file, which holds no image ids"):
        load_embeddings(vectors)
    with pytest.raises(InvalidInputError) as err:
        load_embeddings(vectors, ids_path=ids)
    assert str(err.value) == (
        f"{str(ids)!r} holds 2 ids but {str(vectors)!r} holds 3 vectors; they must match row "
        "for row."
    )
    with pytest.raises(InvalidInputError, match="The ids file .* does not exist"):
        load_embeddings(vectors, ids_path=tmp_path / "missing.txt")
    no_id_column = tmp_path / "ids.csv"
    pd.DataFrame({"name": IDS}).to_csv(no_id_column, index=False)
    with pytest.raises(InvalidInputError, match="has no 'image_id' column \\(columns: name\\)"):
        load_embeddings(vectors, ids_path=no_id_column)
    np.save(vectors, VECTORS[0])
    ids.write_text("a\nb\n")
    with pytest.raises(InvalidInputError, match="must be a 2-D array"):
        load_embeddings(vectors, ids_path=ids)


def test_bad_embeddings_file(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_embeddings(tmp_path / "none.parquet")
    other = tmp_path / "emb.csv"
    other.write_text("image_id,x\n")
    with pytest.raises(InvalidInputError, match="must be .parquet or .npy; got .csv"):
        load_embeddings(other)
    path = write_parquet(tmp_path / "e.parquet", {"image_id": IDS, "embedding": VECTORS.tolist()})
    with pytest.raises(InvalidInputError, match="'ids_path' parameter of load_embeddings applies"):
        load_embeddings(path, ids_path=other)


@settings(max_examples=25, deadline=None)
@given(
    vectors=arrays(
        np.float32,
        st.tuples(st.integers(1, 6), st.integers(1, 5)),
        elements=st.floats(-100, 100, width=32).filter(lambda v: abs(v) > 1e-3),
    )
)
def test_parquet_round_trip_keeps_directions(tmp_path_factory, vectors):
    path = tmp_path_factory.mktemp("rt") / "e.parquet"
    ids = [f"id{i}" for i in range(len(vectors))]
    write_parquet(path, {"image_id": ids, "embedding": vectors.tolist()})
    embeddings = load_embeddings(path)
    assert embeddings.ids.tolist() == ids
    expected = vectors / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(embeddings.vectors, expected, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- balanced batches


def test_balanced_batches_hand_computed():
    # 2,000 images of batch 32 are 63 batches: rounded up to 64 for 2 workers, 31 or 32 each
    batches = balanced_batches(2000, 32, 2)
    assert len(batches) == 64
    assert [len(b) for b in batches].count(32) == 16 and [len(b) for b in batches].count(31) == 48
    # 10 images, 2 workers: two batches of 5, not one of 10 and an idle worker
    assert balanced_batches(10, 32, 2) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    # fewer images than workers: one image per batch; no worker process: plain batches
    assert balanced_batches(3, 1, 4) == [[0], [1], [2]]
    assert balanced_batches(7, 32, 0) == [list(range(7))]
    assert balanced_batches(0, 32, 2) == []


@given(n_items=st.integers(0, 500), batch_size=st.integers(1, 64), n_workers=st.integers(0, 8))
def test_balanced_batches_cover_every_item_in_order_and_share_the_work(
    n_items, batch_size, n_workers
):
    batches = balanced_batches(n_items, batch_size, n_workers)
    assert [i for b in batches for i in b] == list(range(n_items))
    sizes = [len(b) for b in batches]
    assert all(1 <= s <= batch_size for s in sizes)
    assert not sizes or max(sizes) - min(sizes) <= 1
    plain = -(-n_items // batch_size)
    assert len(batches) >= plain  # never larger batches than asked
    if n_items >= max(1, n_workers) * plain:
        assert len(batches) % max(1, n_workers) == 0
