"""Training the shrunk model (filters and channels of masked groups removed, columns still masked) is training
the masked model: same outputs, same gradients and the same SGD steps on every kept weight, and the weights
written back give the masked model's outputs."""

import copy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ac_toolchain.compact import shrink
from ac_toolchain.prune import SCHEMES, prune
from ac_toolchain.train import MaskController
from tests.nets import RandomNet, net_specs, randomise_bn

X = torch.randn(1, 3, 8, 8)


def _pruned(spec: tuple[list[str], list[int], int], rate: float, scheme: str) -> tuple[RandomNet, dict]:
    kinds, widths, seed = spec
    torch.manual_seed(seed)
    net = randomise_bn(RandomNet(kinds, widths[: len(kinds)]), seed)
    return net, prune(net, X, rate, scheme)


def _sgd_steps(model: torch.nn.Module, masks: dict, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    keep = MaskController(masks)
    model.train()
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        keep.before_step(model)
        opt.step()
        keep.after_step(model)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=net_specs(4, 8), rate=st.floats(0.1, 0.9), scheme=st.sampled_from(SCHEMES))
def test_shrunk_outputs_and_sgd_steps_equal_the_masked_models(spec, rate: float, scheme: str) -> None:
    net, masks = _pruned(spec, rate, scheme)
    shrunk = shrink(net, X, masks)
    x = torch.randn(6, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(shrunk.model.eval()(x), net.eval()(x), atol=1e-5)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randn(6, 3, 8, 8, generator=generator), torch.randint(0, 5, (6,), generator=generator))
               for _ in range(2)]  # fmt: skip
    _sgd_steps(net, masks, batches)
    _sgd_steps(shrunk.model, shrunk.cut(masks), batches)
    kept = shrunk.cut(net.state_dict())  # the masked model's kept weights and BN statistics, after its steps
    for name, value in shrunk.model.state_dict().items():
        assert torch.allclose(value.float(), kept[name].float(), atol=1e-5), name


@pytest.mark.parametrize("scheme", ["filter", "filter+column"])
def test_written_back_weights_give_the_masked_models_outputs(scheme: str) -> None:
    net, masks = _pruned((["residual", "down", "concat", "depthwise"], [8, 12, 6, 10], 3), 0.6, scheme)
    reference = copy.deepcopy(net)
    batches = [(torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))) for _ in range(3)]
    _sgd_steps(reference, masks, batches)
    shrunk = shrink(net, X, masks)
    assert shrunk.params() < sum(p.numel() for p in net.parameters())
    _sgd_steps(shrunk.model, shrunk.cut(masks), batches)
    shrunk.expand_into(net)
    x = torch.randn(5, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), reference.eval()(x), atol=1e-5)
    if scheme != "filter":  # a column scheme can leave a producer's filter unmasked but unread: weight decay moves it
        return
    reference_params = dict(reference.named_parameters())  # filter pruning masks every removed weight
    for name, value in net.named_parameters():
        assert torch.allclose(value, reference_params[name], atol=1e-5), name


def test_a_group_read_by_an_unmasked_consumer_stays() -> None:
    net, masks = _pruned((["residual", "down"], [8, 12], 1), 0.5, "filter")
    loose = {k: v for k, v in masks.items() if k != "blocks.0.a.0.weight"}  # a consumer of the stem's group
    assert shrink(net, X, loose).params() > shrink(net, X, masks).params()
