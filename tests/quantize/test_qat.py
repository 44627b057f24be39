"""Quantization-aware fine-tuning: the fake quantizers put values on the int8 grid onnxruntime uses, training
moves the weights, and the pruned columns stay exactly zero."""

import torch
from torch import nn

import ac_toolchain as ac
from ac_toolchain.quantize.qat import QatLayer, RangeFakeQuant, fake_weight, qat, quantizable, zero_columns
from ac_toolchain.train import FitSettings


def _compact() -> nn.Module:
    torch.manual_seed(0)
    net = ac.build_model("lenet5", num_classes=10, in_channels=1, input_size=(28, 28))
    x = torch.randn(1, 1, 28, 28)
    ac.prune(net, x, 0.5, scheme="filter+column")
    return ac.compact(net.eval(), x).eval()


def test_fake_weights_are_int8_per_output_channel_symmetric() -> None:
    w = torch.randn(6, 3, 3, 3) * torch.arange(1, 7).view(6, 1, 1, 1)
    q = fake_weight(w)
    scale = w.abs().flatten(1).amax(1) / 127
    levels = q / scale.view(6, 1, 1, 1)
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 127 + 1e-4
    assert torch.allclose(q, (w / scale.view(6, 1, 1, 1)).round() * scale.view(6, 1, 1, 1), atol=1e-6)


def test_activation_fake_quant_tracks_the_range_and_puts_values_on_256_levels() -> None:
    fq = RangeFakeQuant().train()
    x = torch.linspace(-1.0, 3.0, 1000)
    y = fq(x)
    assert (float(fq.lo), float(fq.hi)) == (-1.0, 3.0)  # the first batch sets the range
    assert torch.unique(y).numel() <= 256 and (y - x).abs().max() <= 4.0 / 255 / 2 + 1e-6
    fq(torch.full((10,), 13.0))
    assert float(fq.hi) == 3.0 + 0.1 * (13.0 - 3.0)  # then it moves at momentum 0.1


def test_qat_trains_the_weights_and_keeps_the_pruned_columns_zero() -> None:
    small = _compact()
    before = quantizable(small)
    masks = zero_columns(before)
    assert any((m == 0).any() for m in masks.values())  # column pruning left zero columns
    gen = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(96, 1, 28, 28, generator=gen), torch.randint(0, 10, (96,)))
    after = qat(small, data, FitSettings(epochs=2, lr=0.05, batch_size=32), torch.device("cpu"))
    assert not any(isinstance(m, QatLayer) for m in after.modules())  # a plain model comes back
    weights = {f"{n}.weight": m.weight for n, m in after.named_modules() if isinstance(m, nn.Conv2d)}
    assert weights.keys() == masks.keys()
    for name, mask in masks.items():
        assert torch.equal(weights[name][mask == 0], torch.zeros(int((mask == 0).sum())))  # exactly zero
    trained = dict(after.named_parameters())
    assert all(not torch.equal(p, trained[n]) for n, p in before.named_parameters())  # every weight and bias moved
