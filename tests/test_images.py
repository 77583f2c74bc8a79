"""cxrlib.images: one copy of each image conversion, reachable under its old import paths."""

import numpy as np
import pytest
import torch

from cxrlib import classifier, images, metrics, train, widgets
from cxrlib.errors import CxrError


def test_old_import_paths_are_the_one_helper():
    assert train.to_float is metrics.to_float is classifier.to_float is images.to_float
    assert train.as_images is metrics.as_images is classifier.as_images is images.as_images
    assert train.to_uint8 is images.to_uint8
    assert widgets.to_uint8 is images.to_uint8_array  # the old name in widgets keeps returning numpy


def test_to_float_keeps_the_training_arithmetic_bit_for_bit():
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(images.to_float(x), x.float().mul_(2 / 255).sub_(1))
    assert images.to_float(x).dtype == torch.float32
    assert images.to_float(x).flatten()[[0, 255]].tolist() == [-1.0, 1.0]
    f = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 2 - 1  # floats are already [-1, 1]: only made float32
    assert torch.equal(images.to_float(f), f.float())


def test_to_uint8_round_trips_every_grey_level_and_clamps():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(images.to_uint8(images.to_float(x)), x)
    assert images.to_uint8(torch.tensor([-3.0, 3.0, float("inf")])).tolist() == [0, 255, 255]


def test_to_uint8_array_is_the_tensor_pixels_as_numpy():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(1000, generator=g) * 1.2
    a = images.to_uint8_array(y)
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8
    assert np.array_equal(a, images.to_uint8(y).numpy())
    assert np.array_equal(images.to_uint8_array(y.double().numpy()), a)  # arrays of any float dtype
    # what widgets.to_uint8 computed before it became this function
    assert np.array_equal(a, np.clip(np.rint((y.numpy() + 1.0) * 127.5), 0, 255).astype(np.uint8))


def test_as_images_accepts_sets_arrays_and_three_dimensions():
    u8 = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    assert images.as_images(u8) is u8
    assert images.as_images(u8.numpy()[:, 0]).shape == (3, 1, 8, 8)

    class Set:
        images = u8

    assert images.as_images(Set(), size=8, uint8=True) is u8


@pytest.mark.parametrize(
    "x, kw, words",
    [
        ([1, 2], {}, "tensor, array or ImageSet"),
        (torch.zeros(2, 3, 8, 8), {}, "grayscale"),
        (torch.zeros(0, 1, 8, 8), {}, "empty"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.int32), {}, "uint8 in [0, 255] or float"),
        (torch.zeros(2, 1, 8, 8), {"uint8": True}, "float32"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), {"size": 16}, "size=16"),
    ],
)
def test_as_images_says_what_is_wrong(x, kw, words):
    with pytest.raises(CxrError) as e:
        images.as_images(x, **kw)
    assert words in str(e.value)


def test_training_data_errors_name_the_training_data():
    from cxrlib.config import make_config

    with pytest.raises(CxrError) as e:
        train.Trainer(make_config("course", size=32, steps=1), torch.zeros(4, 1, 32, 32))
    assert str(e.value).startswith("training data: ") and "uint8" in str(e.value)
