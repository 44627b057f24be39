"""The proxy: one-shot projection, BN recalibration on seeded training batches, top-1 on the validation split."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ac_toolchain.config import SearchConfig, TrainConfig
from ac_toolchain.errors import ConfigError
from ac_toolchain.graph import trace
from ac_toolchain.search.proxy import Proxy, ProxySettings
from ac_toolchain.search.space import Space, spec_of
from tests.nets import RandomNet, randomise_bn

CPU = torch.device("cpu")


def _data(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 8, 8, generator=gen), torch.randint(0, 5, (n,), generator=gen))


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, Space, TensorDataset, TensorDataset]:
    torch.manual_seed(0)
    net = randomise_bn(RandomNet(["residual", "down"], [4, 6]), seed=0)
    space = Space(trace(net, torch.randn(1, 3, 8, 8)), "params")
    return net, space, _data(48, 1), _data(40, 2)


def _proxy(setup, **kw) -> Proxy:
    net, space, train, val = setup
    options = {"bn_batches": 2, "batch_size": 8, "seed": 5, **kw}
    return Proxy(net, space.masks, train, val, CPU, ProxySettings(**options))


def _spec(space: Space, rate: float, scheme: str = "filter+column"):
    n = len(space.units)
    return spec_of(space.units, [rate] * n, [scheme] * n)


def test_deterministic_and_independent_of_what_was_scored_before(setup) -> None:
    _, space, _, _ = setup
    a, b = _spec(space, 0.5), _spec(space, 0.8, "filter")
    first = _proxy(setup)(a)
    second = _proxy(setup)
    second(b)  # another proposal first: the weights and BN statistics are reset for each one
    assert second(a) == first
    assert 0.0 <= first <= 1.0 and (first * 40).is_integer()


def test_cached_by_spec(setup) -> None:
    _, space, _, _ = setup
    proxy = _proxy(setup)
    a = _spec(space, 0.5)
    score = proxy(a)
    assert proxy.evaluated == 1 and proxy.seconds > 0 and proxy.per_minute > 0
    assert proxy(dict(a)) == score and proxy.evaluated == 1  # an equal spec is a cache hit
    proxy(_spec(space, 0.3))
    assert proxy.evaluated == 2 and len(proxy.cache) == 2


def test_empty_validation_split_is_a_config_error(setup) -> None:
    net, space, train, _ = setup
    empty = TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ConfigError, match="validation split.*empty"):
        Proxy(net, space.masks, train, empty, CPU, ProxySettings(2, 8, 0))


def _score_by_hand(
    net: nn.Module, masks: dict[str, torch.Tensor], train: TensorDataset, val: TensorDataset,
    bn_batches: int, batch_size: int, seed: int, val_images: int,
) -> tuple[nn.Module, float]:  # fmt: skip
    """The proxy's score in plain torch: a copy with the masked weights zeroed, every BatchNorm's running
    statistics set to the mean over the first ``bn_batches`` shuffled training batches (a DataLoader whose
    generator is seeded with ``seed``) of its input's per-batch channel mean and unbiased variance, then the
    share of the first ``val_images`` validation images (0: all) whose top-1 is right."""
    ref = copy.deepcopy(net)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name][mask == 0] = 0.0
    bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    inputs: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in bns}
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs[m].append(args[0].detach())) for m in bns]
    gen = torch.Generator().manual_seed(seed)
    ref.train()  # batch statistics normalise, as in the proxy's re-estimation pass
    with torch.no_grad():
        for i, (x, _) in enumerate(DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen)):
            if i == bn_batches:
                break
            ref(x)
    for h in hooks:
        h.remove()
    for m in bns:
        assert len(inputs[m]) == bn_batches
        m.running_mean = torch.stack([x.mean((0, 2, 3)) for x in inputs[m]]).mean(0)
        m.running_var = torch.stack([x.var((0, 2, 3), unbiased=True) for x in inputs[m]]).mean(0)
    ref.eval()
    n = len(val) if val_images <= 0 else min(val_images, len(val))
    x, y = val.tensors[0][:n], val.tensors[1][:n]
    with torch.no_grad():
        correct = int((ref(x).argmax(1) == y).sum())
    return ref, correct / n


@pytest.mark.parametrize(("bn_batches", "val_images"), [(2, 0), (3, 25)])
@pytest.mark.parametrize(("rate", "scheme"), [(0.5, "filter+column"), (0.8, "filter")])
def test_score_is_the_masked_model_with_bn_re_estimated_by_hand(
    setup, bn_batches: int, val_images: int, rate: float, scheme: str
) -> None:
    net, space, train, val = setup
    before = copy.deepcopy(net.state_dict())
    proxy = _proxy(setup, bn_batches=bn_batches, val_images=val_images)
    spec = _spec(space, rate, scheme)
    score = proxy(spec)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the caller's model is never touched
    ref, want = _score_by_hand(net, space.masks(spec), train, val, bn_batches, 8, 5, val_images)
    proxy_bns = [m for m in proxy.net.modules() if isinstance(m, nn.BatchNorm2d)]
    ref_bns = [m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)]
    orig_bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert proxy_bns
    for i, (p, r, o) in enumerate(zip(proxy_bns, ref_bns, orig_bns, strict=True)):
        assert torch.allclose(p.running_mean, r.running_mean, rtol=1e-5, atol=1e-6), f"BN {i} mean"
        assert torch.allclose(p.running_var, r.running_var, rtol=1e-5, atol=1e-6), f"BN {i} var"
        assert not torch.allclose(p.running_mean, o.running_mean)  # the stored statistics were replaced
    pruned = {n: p for n, p in proxy.net.named_parameters()}
    for name, mask in space.masks(spec).items():
        assert pruned[name][mask == 0].abs().sum() == 0, name
    assert score == want


def test_val_images_limits_the_validation_split(setup) -> None:
    _, space, _, _ = setup
    proxy = _proxy(setup, val_images=5)
    assert len(proxy.val.dataset) == 5  # type: ignore[arg-type]
    assert (proxy(_spec(space, 0.4)) * 5).is_integer()


def test_settings_are_the_search_sections_knobs_by_name() -> None:
    search = SearchConfig(bn_batches=3, val_images=50, proxy_steps=7)
    train = TrainConfig(batch_size=16, momentum=0.5, weight_decay=1e-3, lr=0.9)
    settings = ProxySettings.from_config(search, train, lr=0.02, seed=4)
    assert settings == ProxySettings(bn_batches=3, batch_size=16, seed=4, val_images=50, steps=7, lr=0.02,
                                     momentum=0.5, weight_decay=1e-3)  # fmt: skip


def _fine_tune_by_hand(net: nn.Module, masks: dict[str, torch.Tensor], train: TensorDataset, steps: int,
                       lr: float, batch_size: int, seed: int) -> nn.Module:  # fmt: skip
    """The proxy's fine-tune in plain torch: a copy with the masked weights zeroed, then ``steps`` SGD steps
    (momentum 0.9, weight decay 5e-4) in training mode on the first shuffled batches of DataLoaders seeded
    ``seed``, ``seed + 1``, ...; the pruned weights' gradients zeroed before each step, the weights after it."""
    ref = copy.deepcopy(net)
    params = dict(ref.named_parameters())

    def zero(attr: str) -> None:
        with torch.no_grad():
            for name, mask in masks.items():
                getattr(params[name], attr)[mask == 0] = 0.0

    zero("data")
    batches: list[tuple[torch.Tensor, torch.Tensor]] = []
    for e in range(steps):
        batches += list(DataLoader(train, batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed + e)))
    opt = torch.optim.SGD(ref.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    ref.train()
    for x, y in batches[:steps]:
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        zero("grad")
        opt.step()
        zero("data")
    return ref


@pytest.mark.parametrize(("rate", "scheme"), [(0.5, "filter+column"), (0.8, "filter")])
def test_fine_tune_is_masked_sgd_on_seeded_batches_then_bn_and_top1_by_hand(setup, rate: float, scheme: str) -> None:
    net, space, train, val = setup
    spec = _spec(space, rate, scheme)
    masks = space.masks(spec)
    proxy = _proxy(setup, steps=8, lr=0.1)  # 48 images in batches of 8: the steps run into a second pass
    score = proxy(spec)
    tuned = _fine_tune_by_hand(net, masks, train, 8, 0.1, 8, 5)
    ref, want = _score_by_hand(tuned, masks, train, val, 2, 8, 5, 0)
    got, ref_params = dict(proxy.net.named_parameters()), dict(ref.named_parameters())
    orig = dict(net.named_parameters())
    for name, p in got.items():
        assert torch.allclose(p, ref_params[name], rtol=1e-4, atol=1e-5), name
    for name, mask in masks.items():
        assert got[name][mask == 0].abs().max() == 0, name  # exactly zero after the steps
        assert not torch.allclose(got[name][mask == 1], orig[name][mask == 1]), name  # the kept weights moved
    assert score == want


def test_fine_tune_is_deterministic_and_changes_scores(setup) -> None:
    _, space, _, _ = setup
    specs = [_spec(space, r, s) for r in (0.3, 0.5, 0.7) for s in ("filter+column", "filter")]
    first = _proxy(setup, steps=4, lr=0.2)
    scores = [first(spec) for spec in specs]
    second = _proxy(setup, steps=4, lr=0.2)
    assert [second(spec) for spec in reversed(specs)][::-1] == scores  # another order: every spec starts afresh
    untuned = _proxy(setup)
    assert any(untuned(spec) != score for spec, score in zip(specs, scores, strict=True))


def test_fine_tune_seeds_dropout_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                        nn.Linear(8 * 36, 5))  # fmt: skip
    space = Space(trace(net, torch.randn(1, 3, 8, 8)), "params")
    spec = _spec(space, 0.5)
    weights = []
    for global_seed in (1, 2):  # the global RNG differs; the dropout masks of the steps do not
        states = []
        for steps in (0, 3):
            torch.manual_seed(global_seed)
            proxy = Proxy(net, space.masks, _data(48, 1), _data(40, 2), CPU, ProxySettings(2, 8, 5, steps=steps))
            proxy(spec)
            states.append(torch.get_rng_state())
        assert torch.equal(states[0], states[1])  # the steps drew nothing from the global RNG
        weights.append({k: v.clone() for k, v in proxy.net.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_fine_tune_uses_the_given_criterion(setup) -> None:
    net, space, train, val = setup
    calls: list[int] = []

    def criterion(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(x))
        task = nn.functional.cross_entropy(logits, y)
        return task, task

    proxy = Proxy(net, space.masks, train, val, CPU, ProxySettings(2, 8, 5, steps=3), criterion=criterion)
    proxy(_spec(space, 0.5))
    proxy(_spec(space, 0.6))
    assert calls == [8] * 6


@pytest.mark.parametrize("steps", [0, 3])
def test_a_shrunk_proposal_scores_as_the_masked_one(setup, steps: int) -> None:
    net, space, train, val = setup
    specs = [_spec(space, rate, scheme) for rate in (0.3, 0.6, 0.9) for scheme in ("filter", "filter+column")]
    settings = ProxySettings(2, 8, 5, steps=steps)
    masked = Proxy(net, space.masks, train, val, CPU, settings)
    shrunk = Proxy(net, space.masks, train, val, CPU, settings, example=torch.randn(1, 3, 8, 8))
    scores = [masked(s) for s in specs]
    assert [shrunk(s) for s in specs] == scores
    assert len(set(scores)) > 1  # the proposals differ, so equal scores say something
