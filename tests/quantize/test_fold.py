"""BN folding: the folded model equals the unfolded one in eval mode, with no BatchNorm left."""

import torch
from torch import nn

import ac_toolchain as ac
from ac_toolchain.compact import expand_columns
from ac_toolchain.quantize import fold_bn
from tests.nets import randomise_bn


def _no_bn(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_folded_resnet_equals_unfolded_in_eval_mode() -> None:
    torch.manual_seed(0)
    net = randomise_bn(ac.build_model("resnet18", num_classes=10, in_channels=3, input_size=(32, 32),
                                      width_mult=0.25), seed=1)  # fmt: skip
    x = torch.randn(4, 3, 32, 32)
    folded = fold_bn(net)
    assert _no_bn(folded) and not _no_bn(net)  # the original is left alone
    with torch.no_grad():
        assert float((folded(x) - net(x)).abs().max()) <= 1e-5


def test_folding_a_pruned_compact_model_with_zero_columns_keeps_its_outputs() -> None:
    torch.manual_seed(0)
    net = randomise_bn(ac.build_model("vgg16", num_classes=10, in_channels=3, input_size=(32, 32),
                                      width_mult=0.25), seed=2)  # fmt: skip
    x = torch.randn(2, 3, 32, 32)
    ac.prune(net, x[:1], 0.5, scheme="filter+column")
    small = expand_columns(ac.compact(net.eval(), x[:1]).eval())
    folded = fold_bn(small)
    assert _no_bn(folded)
    with torch.no_grad():
        assert float((folded(x) - net(x)).abs().max()) <= 1e-5
