import numpy as np
import pytest
import torch

from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.frontend.synthetic import random_dag
from policies.features import graph_features
from policies.gnn import PolicyNet, entropy, greedy, log_prob, n_params, sample
from policies.ppo import propose

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return PolicyNet().eval()


@pytest.mark.parametrize("n_chip", [2, 4, 36])
def test_decoder_any_chiplet_count(net, n_chip):
    g = random_dag(30, 1)
    data = graph_features(g, mesh_of(n_chip))
    with torch.no_grad():
        logp = net(data)
    assert logp.shape == (30, n_chip)
    probs = logp.exp()
    assert torch.isfinite(logp).all() and (probs >= 0).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(30), atol=1e-5)
    props = sample(logp, 5, torch.Generator().manual_seed(0))
    assert props.shape == (5, 30) and props.min() >= 0 and props.max() < n_chip
    lp = log_prob(logp, props)
    assert lp.shape == (5,) and (lp <= 0).all()
    assert torch.allclose(log_prob(logp, props[0]), lp[0])
    assert 0 <= entropy(logp) <= 30 * np.log(n_chip) + 1e-4


def test_untrained_greedy_is_the_prior_split(net):
    g = random_dag(40, 2)
    data = graph_features(g, mesh_of(4))
    a = propose(net, data, 4, sample=False)
    assert np.array_equal(a, np.floor(data.prior.numpy() * 4).astype(int))


def test_sampling_is_deterministic_given_generator(net):
    data = graph_features(random_dag(30, 1), mesh_of(4))
    a = propose(net, data, 4, sample=True, generator=torch.Generator().manual_seed(7))
    b = propose(net, data, 4, sample=True, generator=torch.Generator().manual_seed(7))
    assert a.dtype == np.int64 and np.array_equal(a, b)
    with pytest.raises(ValueError):
        propose(net, data, 5, sample=False)


def test_sample_matches_probabilities():
    logp = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    s = sample(logp, 20000, torch.Generator().manual_seed(0))[:, 0]
    freq = torch.bincount(s, minlength=3).float() / 20000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)
    assert greedy(logp).tolist() == [0]


def test_gradients_flow_and_small(net):
    assert n_params(net) < 300_000
    data = graph_features(random_dag(12, 0), mesh_of(3))
    torch.manual_seed(0)
    fresh = PolicyNet()
    loss = -log_prob(fresh(data), torch.zeros(12, dtype=torch.long))
    loss.backward()
    assert fresh.head[-1].weight.grad.abs().sum() > 0    # zero-initialised output layer still learns


def test_heterogeneous_package_decodes(net):
    chips = (Chiplet(),) * 2 + (Chiplet(sram_bytes=1 << 22),) * 2
    hw = Hardware("het", chips, "mesh", 2, 2)
    with torch.no_grad():
        logp = net(graph_features(random_dag(20, 0), hw))
    assert logp.shape == (20, 4) and torch.allclose(logp.exp().sum(1), torch.ones(20), atol=1e-5)
