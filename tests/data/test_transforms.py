"""adapt (channels, padding, resizing) and Normalise on hand-made tensors."""

import pytest
import torch

from ac_toolchain.data.transforms import LUMA, Normalise, adapt
from ac_toolchain.errors import DataError


def test_pad_28_to_32_is_centred_zero_padding() -> None:
    x = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    out = adapt(x, (1, 32, 32))
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.float32
    assert torch.all(out[:, :, 2:30, 2:30] == 1.0)
    assert out[:, :, :2].abs().sum() == 0 and out[:, :, 30:].abs().sum() == 0
    assert out[:, :, :, :2].abs().sum() == 0 and out[:, :, :, 30:].abs().sum() == 0


def test_uneven_padding_puts_the_extra_pixel_after() -> None:
    out = adapt(torch.full((1, 1, 2, 3), 255, dtype=torch.uint8), (1, 5, 4))
    assert out[0, 0].tolist() == [[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_an_image_that_fits_is_padded_not_upscaled() -> None:
    out = adapt(torch.full((1, 3, 32, 32), 255, dtype=torch.uint8), (3, 64, 64))
    assert out.sum() == 3 * 32 * 32 and torch.all(out[:, :, 16:48, 16:48] == 1)


def test_pixels_scale_exactly_to_unit_range() -> None:
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert torch.equal(adapt(x, (1, 16, 16)), x.float() / 255)


def test_one_channel_to_three_repeats() -> None:
    grey = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    rgb = adapt(grey, (3, 8, 8))
    assert rgb.shape == (2, 3, 8, 8)
    for c in range(3):
        assert torch.equal(rgb[:, c], grey[:, 0].float() / 255)


@pytest.mark.parametrize("channel", [0, 1, 2])
def test_three_channels_to_one_uses_luminance(channel: int) -> None:
    colour = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    colour[:, channel] = 255
    assert torch.allclose(adapt(colour, (1, 4, 4)), torch.full((1, 1, 4, 4), LUMA[channel]))


def test_unsupported_channel_counts() -> None:
    with pytest.raises(DataError, match="cannot adapt 3-channel images to a 2-channel model"):
        adapt(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), (2, 4, 4))


@pytest.mark.parametrize("size", [(16, 16), (16, 24), (48, 24), (20, 40)])  # down, down, up + down, down + up
def test_resize_when_a_side_does_not_fit_keeps_a_flat_image_flat(size: tuple[int, int]) -> None:
    x = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    out = adapt(x, (3, *size))
    assert out.shape == (1, 3, *size)
    assert torch.allclose(out, torch.full_like(out, 128 / 255), atol=1e-5)


def test_downsizing_is_antialiased() -> None:
    stripes = torch.zeros(1, 1, 48, 48, dtype=torch.uint8)
    stripes[..., ::2] = 255  # one-pixel stripes; a plain 3x bilinear shrink samples single pixels: 0, 1, 0, ...
    small = adapt(stripes, (1, 16, 16))
    assert small.shape == (1, 1, 16, 16) and float(small.max() - small.min()) < 0.2


def test_a_side_that_grows_is_interpolated_when_the_other_shrinks() -> None:
    ramp = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 1, 4, 2)  # [1, 1, 4, 2]
    out = adapt(ramp, (1, 2, 4))  # height 4 -> 2 (does not fit), width 2 -> 4
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 2))


def test_normalise_fit_is_exact_over_batches() -> None:
    data = torch.rand(10, 3, 5, 7) * torch.tensor([1.0, 2.0, 0.0]).view(1, 3, 1, 1)  # channel 2 constant 0
    stats = Normalise.fit([data[:4], data[4:]])
    flat = data.permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(stats.mean, flat.mean(1), atol=1e-6)
    assert torch.allclose(stats.std[:2], flat[:2].std(1, unbiased=False), atol=1e-6)
    assert stats.std[2] == 1  # a constant channel is left unscaled instead of dividing by 0
    out = stats(data)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(out[:, :2].std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-5)


def test_normalise_fit_needs_data() -> None:
    with pytest.raises(DataError, match="training split is empty"):
        Normalise.fit([])
