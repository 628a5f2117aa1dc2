"""Every kind of awkward or broken image file: it either embeds correctly or is skipped with its
reason, and one bad file never stops the run. Every file is built here, byte for byte."""

from __future__ import annotations

import io
import logging
import struct
import zlib

import numpy as np
import pytest
import skimage.data
from PIL import Image

from clusterclean.backbones import load_backbone
from clusterclean.embed import SkippedImage, embed_images, read_image
from clusterclean.errors import InvalidInputError

RNG = np.random.default_rng(7)
PHOTO = skimage.data.astronaut()[::4, ::4].copy()  # (128, 128, 3) uint8


def png_bytes(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` 8-bit RGB pixels and whose data is empty.

    Pillow checks the pixel count when it opens the file, so this is a faithful
    decompression bomb without the gigabytes.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_orientation_6(image: Image.Image, fmt: str) -> bytes:
    """The pixels stored rotated 90 degrees clockwise, with EXIF orientation 6 to undo it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 CW
    return encoded(image.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif.tobytes())


# --------------------------------------------------------------------------- read_image


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = RNG.integers(0, 256, size=(20, 30), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = np.asarray(read_image(tmp_path / "g.png"))
    assert rgb.shape == (20, 30, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    deep = np.array([[0, 257, 65535], [32896, 1000, 60000]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    rgb = np.asarray(read_image(tmp_path / "deep.png"))
    # value / 257, truncated: 0, 1, 255, 128, 3, 233
    np.testing.assert_array_equal(rgb[..., 0], [[0, 1, 255], [128, 3, 233]])


def test_transparency_is_composited_over_white(tmp_path):
    rgba = np.array([[[10, 20, 30, 0], [100, 0, 0, 255], [0, 200, 0, 102]]], dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    rgb = np.asarray(read_image(tmp_path / "a.png")).astype(int)
    # out = a * src + (1 - a) * 255 with a = alpha / 255; a = 0.4 -> 0.6 * 255 = 153
    np.testing.assert_allclose(rgb[0], [[255, 255, 255], [100, 0, 0], [153, 233, 153]], atol=1)


def test_palette_with_a_transparent_colour(tmp_path):
    image = Image.new("P", (2, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    image.save(tmp_path / "p.png", transparency=1)
    np.testing.assert_array_equal(
        np.asarray(read_image(tmp_path / "p.png")), [[[255, 0, 0], [255, 255, 255]]]
    )


def test_cmyk_jpeg_keeps_its_colours(tmp_path):
    (tmp_path / "cmyk.jpg").write_bytes(
        encoded(Image.fromarray(PHOTO).convert("CMYK"), "JPEG", quality=95)
    )
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    rgb = np.asarray(read_image(tmp_path / "cmyk.jpg")).astype(float)
    assert np.abs(rgb - PHOTO).mean() < 6


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    path = tmp_path / f"rotated.{fmt.lower()}"
    path.write_bytes(with_orientation_6(Image.fromarray(PHOTO[:, :96]), fmt))
    assert Image.open(path).size == (128, 96)  # stored sideways
    upright = np.asarray(read_image(path))
    assert upright.shape == (128, 96, 3)
    if fmt == "PNG":  # lossless: the exact pixels come back
        np.testing.assert_array_equal(upright, PHOTO[:, :96])


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def lite0():
    return load_backbone("efficientnet_lite0", device="cpu")


def build_zoo(root) -> tuple[list[str], dict[str, str]]:
    """Write every awkward file; return all paths (input order) and the expected skip reasons."""
    photo = Image.fromarray(PHOTO)
    jpeg = encoded(photo, "JPEG", quality=90)
    png = encoded(photo, "PNG")
    folder = root / "dir with spaces" / "données 写真"
    folder.mkdir(parents=True)
    files = {
        "upright.png": png,
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "notes.jpg": b"these are notes, not pixels\n" * 10,
        "cmyk.jpg": encoded(photo.convert("CMYK"), "JPEG", quality=95),
        "deep16.png": encoded(Image.fromarray(PHOTO[..., 0].astype(np.uint16) * 257), "PNG"),
        "palette.png": encoded(photo.convert("P"), "PNG"),
        "rgba.png": encoded(photo.convert("RGBA"), "PNG"),
        "gray.jpg": encoded(photo.convert("L"), "JPEG"),
        "rotated.png": with_orientation_6(photo, "PNG"),
        "bomb.png": png_bytes(20_000, 20_000),  # 4e8 pixels > 2 x Pillow's 89.5e6 limit
        "été 2024 – photo.jpg": jpeg,
    }
    paths = []
    for name, data in files.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(str(path))
    paths.insert(3, str(folder / "missing.jpg"))
    reasons = {
        "empty.jpg": "empty file (0 bytes)",
        "truncated.jpg": "truncated or corrupt image: ",
        "truncated.png": "truncated or corrupt image: ",
        "missing.jpg": "file not found",
        "notes.jpg": "not an image Pillow can read",
        "bomb.png": "decompression bomb refused by Pillow's MAX_IMAGE_PIXELS limit: ",
    }
    return paths, {str(folder / name): reason for name, reason in reasons.items()}


def test_bad_files_are_skipped_with_their_reason(tmp_path, lite0, caplog):
    paths, reasons = build_zoo(tmp_path)
    skipped: list[SkippedImage] = []
    with caplog.at_level(logging.WARNING, logger="clusterclean.embed"):
        embeddings = embed_images(
            paths,
            backbone=lite0,
            batch_size=4,
            num_workers=2,  # failures inside worker processes come back too
            skipped=skipped,
            progress=False,
        )

    good = [p for p in paths if p not in reasons]
    assert embeddings.ids.tolist() == good  # input order, bad ones left out
    assert [s.path for s in skipped] == [p for p in paths if p in reasons]
    assert all(s.image_id == s.path for s in skipped)
    for item in skipped:
        assert item.reason.startswith(reasons[item.path]), (item.path, item.reason)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"Skipped 6 of {len(paths)} images that could not be read")

    # each good file embeds to what it shows: variants of the photo stay close to the original
    vectors = dict(zip(embeddings.ids.tolist(), embeddings.vectors, strict=True))
    original = vectors[good[0]]
    for path in good[1:]:
        similarity = float(vectors[path] @ original)
        floor = 0.6 if path.endswith(("deep16.png", "gray.jpg")) else 0.85  # colour lost
        assert similarity > floor, (path, similarity)


def test_rotated_photo_embeds_like_the_upright_one(tmp_path, lite0):
    upright = tmp_path / "up.png"
    upright.write_bytes(encoded(Image.fromarray(PHOTO), "PNG"))
    rotated = tmp_path / "rot.png"
    rotated.write_bytes(with_orientation_6(Image.fromarray(PHOTO), "PNG"))
    vectors = embed_images([upright, rotated], backbone=lite0, progress=False).vectors
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_on_error_raise_names_the_first_bad_file(tmp_path, lite0):
    paths, reasons = build_zoo(tmp_path)
    with pytest.raises(InvalidInputError) as err:
        embed_images(paths, backbone=lite0, on_error="raise", progress=False)
    first = next(p for p in paths if p in reasons)
    assert str(err.value).startswith(
        f"6 of {len(paths)} images could not be read (first: {first!r}: empty file (0 bytes))."
    )
