"""The kernels' shared torch helpers: padding, kernel size, argument checks, the interpreter's dtype."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from degtrans.kernels._utils import INTERPRET, check_choice, kernel_size, pad_image, triton_dtype


@pytest.mark.parametrize("halo", [1, 2])
@pytest.mark.parametrize("padding", ["zeros", "reflect"])
def test_pad_image_is_torch_pad_when_torch_can(halo, padding):
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    mode = {"zeros": "constant", "reflect": "reflect"}[padding]
    assert torch.equal(pad_image(x, halo, padding), F.pad(x, (halo,) * 4, mode=mode))


def test_pad_image_mirrors_a_halo_wider_than_the_image():
    x = torch.arange(6, dtype=torch.float64).reshape(1, 1, 3, 2)
    expected = np.pad(x.numpy(), ((0, 0), (0, 0), (4, 4), (4, 4)), mode="reflect")
    assert np.array_equal(pad_image(x, 4, "reflect").numpy(), expected)
    assert pad_image(x, 0, "reflect") is x


def test_kernel_size_and_choices():
    assert kernel_size(49) == 7 and kernel_size(1) == 1
    assert kernel_size(50) ** 2 != 50  # not square: callers reject it
    check_choice("op", "padding", "zeros", ("zeros", "reflect"))
    with pytest.raises(ValueError, match=r"op: padding must be one of \('zeros', 'reflect'\), got 'wrap'"):
        check_choice("op", "padding", "wrap", ("zeros", "reflect"))


def test_half_precision_computes_in_float32_only_under_the_interpreter():
    # The interpreter runs on numpy, which has no bfloat16; a GPU computes in the input's dtype.
    for half in (torch.float16, torch.bfloat16):
        assert triton_dtype(half) == (torch.float32 if INTERPRET else half)
    assert triton_dtype(torch.float64) == torch.float64
