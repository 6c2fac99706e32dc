"""Internals added for whole-brain scale: fused reconstruction loss, sparse products, search,
and the training loop's partial-epoch timing hook."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp_sparse
import torch
import torch.nn.functional as F

from spacon._core import (
    CSR,
    FeatureMatrix,
    GraphTensors,
    SpaconNet,
    TrainConfig,
    _trainer,
    add_self_loops,
    train_network,
)
from spacon._core._layers import _sparse_dense
from spacon.tl._clusterers import _extrapolate, _interpolate


def _graph(n: int, seed: int) -> GraphTensors:
    m = sp_sparse.random(n, n, density=0.05, random_state=seed, format="csr")
    m.setdiag(0)
    m.eliminate_zeros()
    return GraphTensors.from_csr(add_self_loops(CSR.from_scipy(m)), weights=False)


@pytest.mark.parametrize(
    ("dims", "fused"), [([40, 24, 12, 6], True), ([40, 8], True), ([40, 64, 16, 4], False)]
)
@pytest.mark.parametrize("momentum", [0.1, None])
def test_reconstruction_loss_matches_mse_of_forward(dims, fused, momentum):
    torch.manual_seed(0)
    n = 300
    graph = _graph(n, 1)
    x = torch.rand(n, dims[0])
    net = SpaconNet(dims, dropout=0.0).train()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = momentum
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    other = copy.deepcopy(net)
    assert net.decoder.layers[-1].project_first is not fused
    expected = F.mse_loss(net(x, graph, graph)[2], x)
    expected.backward()
    loss = other(x, graph, graph, loss=True)  # what the training loop calls
    loss.backward()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for (name, p), (_, q) in zip(net.named_parameters(), other.named_parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-6, msg=name)
    for (name, a), (_, b) in zip(net.named_buffers(), other.named_buffers(), strict=True):
        torch.testing.assert_close(b.float(), a.float(), rtol=1e-4, atol=1e-6, msg=name)


def test_reconstruction_loss_in_eval_mode_is_the_plain_mse():
    torch.manual_seed(1)
    graph = _graph(100, 2)
    x = torch.rand(100, 30)
    net = SpaconNet([30, 16, 8, 4]).eval()
    with torch.no_grad():
        expected = F.mse_loss(net(x, graph, graph)[2], x)
        assert net.loss(x, graph, graph) == expected


def test_sparse_dense_product_matches_dense():
    torch.manual_seed(2)
    graph = _graph(80, 3)
    values = torch.rand(graph.nnz)
    h = torch.randn(80, 7)
    dense = graph.matrix(values).to_dense()
    torch.testing.assert_close(_sparse_dense(graph.matrix(values), h), dense @ h)
    torch.testing.assert_close(_sparse_dense(graph.matrix_t(values), h), dense.T @ h)


def test_interpolation_stays_inside_the_bracket():
    # log-log interpolation hits a power law exactly: k = 100 * res**0.5
    res = _interpolate(0.01, 10, 1.0, 100, 31)
    assert res == pytest.approx(0.0961, rel=1e-2)
    # the step is clamped to the middle half of the log bracket
    assert _interpolate(0.01, 10, 1.0, 100, 11) == pytest.approx(0.01 ** (1 - 0.25))
    assert _interpolate(0.01, 10, 1.0, 100, 99) == pytest.approx(0.01 ** (1 - 0.75))
    assert _interpolate(0.5, 7, 2.0, 7, 7) == pytest.approx(1.0)  # flat: bisection


def test_extrapolation_follows_the_log_log_slope():
    # no previous run: a factor 4 towards the target
    assert _extrapolate(None, (1.0, 300), 60) == pytest.approx(0.25)
    assert _extrapolate(None, (1.0, 10), 60) == pytest.approx(4.0)
    # slope 0.5 in log-log: 300 -> 60 needs a factor (1/5)**2 = 1/25
    assert _extrapolate((4.0, 600), (1.0, 300), 60) == pytest.approx(1 / 25)
    # steps are clamped to [1.1, 64]
    assert _extrapolate((4.0, 301), (1.0, 300), 60) == pytest.approx(1 / 64)
    assert _extrapolate((1.1, 67), (1.0, 61), 60) == pytest.approx(1 / 1.1)


def _loop_inputs(n: int = 120, g: int = 12):
    rng = np.random.default_rng(0)
    m = sp_sparse.random(n, n, density=0.08, random_state=1, format="csr")
    m = m + m.T
    m.setdiag(0)
    m.eliminate_zeros()
    graph = CSR.from_scipy(m)
    return FeatureMatrix(rng.random((n, g)).astype(np.float32)), graph


def _config(**kw) -> TrainConfig:
    base = dict(
        n_epochs=2, lr=1e-3, weight_decay=0.0, grad_clip=5.0, full_batch=False, batch_size=16,
        num_neighbors=[4, 2], weighted_sampling=False, use_weights=False, early_stopping=False,
        patience=1, min_delta=0.0, device=torch.device("cpu"),
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_partial_epochs_are_timed_by_the_real_loop():
    """``max_batches`` + ``on_batch``: what benchmarks/scale.py times instead of a copied loop."""
    features, graph = _loop_inputs()
    timings = []
    torch.manual_seed(0)
    result = train_network(
        SpaconNet([12, 8, 4]), features, graph, graph, _config(), np.random.default_rng(0),
        progress=False, on_batch=timings.append, max_batches=3,
    )  # fmt: skip
    assert len(result.loss) == 2
    assert [(t.epoch, t.index) for t in timings] == [(e, i) for e in (0, 1) for i in range(3)]
    assert all(t.n_batches == 8 and t.n_nodes >= 2 and t.sample_s >= 0 < t.step_s for t in timings)
    for epoch in (0, 1):  # an epoch's loss is the node-weighted mean of its batches
        batch = [t for t in timings if t.epoch == epoch]
        mean = sum(t.loss * t.n_nodes for t in batch) / sum(t.n_nodes for t in batch)
        assert result.loss[epoch] == pytest.approx(mean)


@pytest.mark.parametrize("full_batch", [True, False])
def test_every_path_optimises_the_module_loss(full_batch, monkeypatch):
    """Full-batch and minibatch steps both call ``SpaconNet.forward(..., loss=True)``."""
    features, graph = _loop_inputs()
    calls = []
    real = SpaconNet.loss

    def spy(self, *args):
        calls.append(self.training)
        return real(self, *args)

    monkeypatch.setattr(SpaconNet, "loss", spy)
    torch.manual_seed(0)
    train_network(
        SpaconNet([12, 8, 4]), features, graph, graph, _config(full_batch=full_batch, n_epochs=1),
        np.random.default_rng(0), progress=False,
    )  # fmt: skip
    assert calls and all(calls)
    assert not hasattr(_trainer, "F")  # the loop spells no loss of its own
