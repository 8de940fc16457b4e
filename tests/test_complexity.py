"""Input complexity L(x) (course_utils.complexity): lossless, deterministic, ordered by complexity."""

from __future__ import annotations

import bz2
import io
import lzma
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils.complexity import CODECS, compress, compressed_bits, png_bits, quantise_gray


def _decode(data: bytes, codec: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode with a decoder that is NOT the encoder under test (PIL's readers, the stdlib decompressors)."""
    if codec in ("zlib", "bz2"):
        raw = {"zlib": zlib.decompress, "bz2": bz2.decompress}[codec](data)
    elif codec == "lzma":
        raw = lzma.decompress(data, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}])
    else:
        return np.array(Image.open(io.BytesIO(data)).convert("L"))
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


def _digit_like(n: int, seed: int = 0) -> torch.Tensor:
    """n images (n, 1, 28, 28): random bright strokes on black, with gray levels (like MNIST)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, 28, 28)
    for image in images:
        for _ in range(6):
            r, c = (int(v) for v in torch.randint(4, 22, (2,), generator=g))
            image[0, r:r + 3, c:c + 6] = torch.rand(1, generator=g).item() * 0.5 + 0.5
    return images


@pytest.mark.parametrize("codec", CODECS)
def test_every_codec_is_lossless(codec):
    images = torch.cat([_digit_like(3), torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))])
    for image in quantise_gray(images):
        assert np.array_equal(_decode(compress(image, codec), codec, image.shape), image)


@pytest.mark.parametrize("codec", CODECS)
def test_lengths_are_deterministic_and_order_complexity(codec):
    images = _digit_like(4)
    first = compressed_bits(images, codec)
    assert first.dtype == np.float64 and first.shape == (4,)
    assert np.array_equal(first, compressed_bits(images.clone(), codec))
    black = torch.zeros(1, 1, 28, 28)
    noise = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert compressed_bits(black, codec)[0] < first.min() <= first.max() < compressed_bits(noise, codec)[0]


def test_codecs_differ_and_png_bits_is_the_png_codec():
    images = _digit_like(5, seed=3)
    lengths = {codec: compressed_bits(images, codec) for codec in CODECS}
    assert len({tuple(v) for v in lengths.values()}) == len(CODECS)  # six different compressors
    assert np.array_equal(png_bits(images), lengths["png"])


def test_colour_images_are_averaged_to_gray_first():
    gray = _digit_like(2, seed=4)
    colour = gray.repeat(1, 3, 1, 1)
    assert np.array_equal(quantise_gray(colour), quantise_gray(gray))
    assert np.array_equal(compressed_bits(colour, "webp"), compressed_bits(gray, "webp"))


def test_bad_codec_and_bad_images_say_what_to_do():
    with pytest.raises(ValueError, match="unknown codec 'flif'; choose one of png, webp"):
        compressed_bits(_digit_like(1), "flif")
    with pytest.raises(ValueError, match=r"\(H, W\) uint8"):
        compress(np.zeros((1, 28, 28), np.uint8))
    with pytest.raises(ValueError):
        compressed_bits(torch.full((1, 1, 28, 28), 2.0))  # outside [0, 1]
