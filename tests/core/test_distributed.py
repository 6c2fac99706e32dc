"""Data-parallel training on torch.distributed (gloo, CPU): sharding, DDP + synced BatchNorm,
``torchrun -m spacon train``, failures."""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sps
import torch
import torch.nn.functional as F
from sklearn.metrics import adjusted_rand_score

import spacon as sp
from spacon import Key
from spacon._core._distributed import epoch_batches, launch_env, row_ranges
from spacon._core._graph import CSR, GraphTensors, add_self_loops
from spacon._core._module import SpaconNet
from spacon.cli import main

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
#: options of `spacon train` in the end-to-end tests (small model, few epochs)
TRAIN_ARGS = [
    "--decay", "0.006", "--threshold", "0.8", "--top-k", "0.1", "--epochs", "5", "--lr", "1e-3",
    "--batch-size", "64", "--num-neighbors", "10", "5", "--hidden-dims", "64", "32", "16",
    "--device", "cpu", "--quiet",
]  # fmt: skip


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
    env.pop("WORLD_SIZE", None)
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ---------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("n", [7, 100, 101])
@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_epoch_shards_are_disjoint_and_cover_all_nodes(n, world, batch_size):
    orders = []
    for epoch in range(3):
        per_rank = [epoch_batches(n, batch_size, epoch, 5, r, world) for r in range(world)]
        assert len({len(b) for b in per_rank}) == 1  # same number of steps on every rank
        assert all(len(batch) > 0 for b in per_rank for batch in b)
        assert all(len(batch) <= batch_size + 1 for b in per_rank for batch in b)
        seen = np.concatenate([np.concatenate(b) for b in per_rank])
        assert len(seen) == n and np.array_equal(np.sort(seen), np.arange(n))
        sizes = [sum(map(len, b)) for b in per_rank]
        assert max(sizes) - min(sizes) <= 1
        orders.append(seen)
        again = epoch_batches(n, batch_size, epoch, 5, world - 1, world)
        assert all(np.array_equal(a, b) for a, b in zip(again, per_rank[-1]))
    assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


def test_row_ranges_split_contiguously():
    assert row_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert row_ranges(2, 2) == [(0, 1), (1, 2)]


def test_launch_env_reads_torchrun_then_slurm(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS",
                "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)
    assert launch_env() is None
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert launch_env() == (3, 8, 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert launch_env() == (1, 2, 1)


def test_distributed_needs_a_launcher_and_minibatches(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    adata = sp.datasets.flatmap(n_spots=200, n_genes=60)
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata)
    sp.pp.connectivity(adata, fc, threshold=0.8, top_k=0.1)
    before = set(adata.uns)
    with pytest.raises(ValueError, match="minibatches.*full_batch=False"):
        sp.tl.train(adata, distributed=True, full_batch=True)
    with pytest.raises(ValueError, match="same `random_state` on every rank"):
        sp.tl.train(adata, distributed=True, random_state=None)
    with pytest.raises(ValueError, match="torchrun --nproc_per_node=N"):
        sp.tl.train(adata, distributed=True, n_epochs=1)
    assert set(adata.uns) == before
    assert not torch.distributed.is_initialized()


# ------------------------------------------------------------------------- under torchrun

_RANKS_SCRIPT = """
import json, os, sys
import numpy as np, scipy.sparse as sps, torch, torch.distributed as dist
import torch.nn.functional as F
import spacon as sp
from spacon._core import _distributed, _sampler
from spacon._core._distributed import synced_batchnorm
from spacon._core._graph import CSR, GraphTensors, add_self_loops
from spacon._core._module import SpaconNet

out = sys.argv[1]
# 1. the seeds every rank really trains on, epoch by epoch
seen = []
sample = _sampler.NeighborSampler.sample
def recording(self, seeds):
    seen.append(np.asarray(seeds).tolist())
    return sample(self, seeds)
_sampler.NeighborSampler.sample = recording
# 2. the graphs are memory-mapped from files that are gone once mapped
shared = []
share = _distributed.DistContext.share_arrays
def checking(self, arrays):
    out = share(self, arrays)
    self.barrier()  # rank 0 unlinks the files once every rank has mapped them
    files = [v.filename for v in out.values() if isinstance(v, np.memmap)]
    shared.append([len(files), sum(v is not None for v in arrays.values()),
                   any(os.path.exists(f) for f in files)])
    return out
_distributed.DistContext.share_arrays = checking
adata = sp.datasets.flatmap(n_spots=201, n_genes=60)
fc = adata.obsp.pop("functional_connectivity")
sp.pp.spatial_graph(adata)
sp.pp.connectivity(adata, fc, threshold=0.8, top_k=0.1)
model = sp.tl.train(adata, distributed=True, n_epochs=3, batch_size=32, num_neighbors=[5, 3],
                    hidden_dims=[8, 4, 2], progress=False)
rank = dist.get_rank()
weights = torch.cat([v.flatten().double() for v in model.module.state_dict().values()])

# 3. one DDP step with synced BatchNorm on rank-specific batches (dropout off)
BATCH_SOURCE
torch.manual_seed(0)
net = SpaconNet([8, 6, 4], dropout=0.0)
x, g = rank_batch(rank)
gt = GraphTensors.from_csr(add_self_loops(g), weights=False)
with synced_batchnorm(net):
    ddp = torch.nn.parallel.DistributedDataParallel(net)
    xt = torch.from_numpy(x)
    F.mse_loss(ddp(xt, gt, gt)[2], xt).backward()
if rank == 0:
    torch.save({"grads": {k: p.grad for k, p in net.named_parameters()},
                "buffers": dict(net.named_buffers()), "n_batches": len(seen) // 3},
               out + "/step.pt")
with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump({"seeds": seen, "shared": shared, "weights_sum": float(weights.sum()),
               "weights_norm": float(weights.norm()), "loss": model.history.tolist()}, f)
"""


def rank_batch(r):
    """Features and a random graph of unequal size for rank ``r`` (sizes 30, 37)."""
    rng = np.random.default_rng(r)
    n = 30 + 7 * r
    g = sps.random(n, n, density=0.2, random_state=r, format="csr", dtype=np.float32)
    g.setdiag(0)
    g.eliminate_zeros()
    return rng.normal(size=(n, 8)).astype(np.float32), CSR.from_scipy(g)


@pytest.mark.slow
def test_ranks_train_on_disjoint_shards_with_exact_ddp_gradients(tmp_path):
    script = tmp_path / "ranks.py"
    source = _RANKS_SCRIPT.replace("BATCH_SOURCE", inspect.getsource(rank_batch))
    script.write_text(textwrap.dedent(source))
    proc = subprocess.run(
        [*TORCHRUN, str(script), str(tmp_path)],
        env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    step = torch.load(tmp_path / "step.pt", weights_only=True)
    n_batches = step["n_batches"]
    assert n_batches == -(-(201 // 2) // 32)  # 4 steps per epoch on both ranks
    for rank in ranks:
        assert len(rank["seeds"]) == 3 * n_batches
    orders = []
    for epoch in range(3):
        shards = [
            np.concatenate(r["seeds"][epoch * n_batches : (epoch + 1) * n_batches]) for r in ranks
        ]
        assert not set(shards[0]) & set(shards[1])  # disjoint
        union = np.concatenate(shards)
        assert np.array_equal(np.sort(union), np.arange(201))  # all nodes, once
        orders.append(union)
    assert not np.array_equal(orders[0], orders[1])
    for rank in ranks:  # both graphs: 3 (weighted connectome) and 3 arrays, all mapped
        assert rank["shared"] == [[3, 3, False], [3, 3, False]]
    # DDP keeps one model: every rank ends with the same weights and loss history
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]
    assert ranks[0]["weights_norm"] == ranks[1]["weights_norm"]
    assert ranks[0]["loss"] == ranks[1]["loss"]

    # the DDP step equals one process training on both batches at once (a disjoint union,
    # loss = mean of the two ranks' losses), BatchNorm statistics included
    parts = [rank_batch(0), rank_batch(1)]
    x = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    union = CSR.from_scipy(sps.block_diag([p[1].to_scipy() for p in parts], format="csr"))
    gt = GraphTensors.from_csr(add_self_loops(union), weights=False)
    torch.manual_seed(0)
    net = SpaconNet([8, 6, 4], dropout=0.0)
    x_hat = net(x, gt, gt)[2]
    n0 = len(parts[0][0])
    (0.5 * (F.mse_loss(x_hat[:n0], x[:n0]) + F.mse_loss(x_hat[n0:], x[n0:]))).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(p.grad, step["grads"][name], rtol=1e-4, atol=1e-6)
    for name, b in net.named_buffers():
        torch.testing.assert_close(b, step["buffers"][name], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    adata = sp.datasets.flatmap(n_spots=800, n_genes=200, random_state=0)
    fc = adata.obsp.pop("functional_connectivity")
    adata.write_h5ad(folder / "flat.h5ad")
    np.save(folder / "fc.npy", fc)
    return folder / "flat.h5ad", folder / "fc.npy"


def _network_ari(adata) -> float:
    sp.tl.cluster(adata, alpha=1.0, n_clusters=adata.obs["network"].nunique(), key_added="dom")
    return adjusted_rand_score(adata.obs["network"], adata.obs["dom"])


@pytest.mark.slow
def test_torchrun_cli_matches_single_process(demo_files, tmp_path):
    data, fc = demo_files
    out = tmp_path / "out"
    proc = subprocess.run(
        [*TORCHRUN, "-m", "spacon", "train", str(data), "--connectivity", str(fc),
         "--out", str(out), *TRAIN_ARGS],
        env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote:") == 1  # rank 0 alone reports and writes
    assert sorted(p.name for p in out.iterdir()) == ["flat_spacon.h5ad", "model"]
    result = ad.read_h5ad(out / "flat_spacon.h5ad")
    record = result.uns[Key.uns.train]
    loss = np.asarray(record["loss"])
    assert len(loss) == 5 and loss[-1] < loss[0]
    assert record["params"]["world_size"] == 2 and not record["params"]["full_batch"]

    # the model saved by rank 0 reproduces the embeddings in a plain single process
    model = sp.tl.SpaconModel.load(out / "model", result)
    again = result.copy()
    sp.tl.embed(again, model=model, progress=False)
    np.testing.assert_allclose(
        again.obsm[Key.obsm.connectome_embedding],
        result.obsm[Key.obsm.connectome_embedding],
        rtol=1e-4, atol=1e-5,
    )  # fmt: skip
    ari_distributed = _network_ari(again)

    # a single-process run of the same training
    single = ad.read_h5ad(data)
    fc_matrix = np.load(fc)
    sp.pp.spatial_graph(single)
    sp.pp.connectivity(single, fc_matrix, decay=0.006, threshold=0.8, top_k=0.1)
    model_1 = sp.tl.train(
        single, full_batch=False, n_epochs=5, lr=1e-3, batch_size=64, num_neighbors=[10, 5],
        hidden_dims=[64, 32, 16], device="cpu", progress=False,
    )  # fmt: skip
    sp.tl.embed(single, model=model_1, progress=False)
    ari_single = _network_ari(single)
    assert ari_distributed >= 0.9 and ari_single >= 0.9, (ari_distributed, ari_single)
    assert adjusted_rand_score(single.obs["dom"], again.obs["dom"]) >= 0.9


_DYING_RANK = """
import os, signal, sys
from spacon._core import _trainer
from spacon.cli import main

step, calls = _trainer._step, [0]
def dying_step(*args, **kwargs):
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # a hard crash: no exception, no cleanup
    return step(*args, **kwargs)
_trainer._step = dying_step
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_dead_rank_fails_the_job_without_output(demo_files, tmp_path):
    data, fc = demo_files
    script = tmp_path / "dying.py"
    script.write_text(textwrap.dedent(_DYING_RANK))
    out = tmp_path / "out"
    proc = subprocess.run(
        [*TORCHRUN, str(script), "train", str(data), "--connectivity", str(fc),
         "--out", str(out), *TRAIN_ARGS],
        env=_env(), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode != 0
    err = proc.stderr
    assert "spacon: error: rank 0" in err and "no output was written" in err, err[-3000:]
    assert "Signals.SIGKILL" in err or "SIGKILL" in err  # torchrun names the dead rank
    assert not out.exists() or not any(out.rglob("*"))  # nothing, not even a temporary


def test_cli_train_single_process(demo_files, tmp_path, capsys):
    data, fc = demo_files
    small = tmp_path / "small.h5ad"
    adata = ad.read_h5ad(data)[:300].copy()
    adata.write_h5ad(small)
    fc_small = tmp_path / "fc.npy"
    np.save(fc_small, np.load(fc)[:300, :300])
    out = tmp_path / "out"
    args = ["train", str(small), "--connectivity", str(fc_small), "--out", str(out),
            "--threshold", "0.8", "--top-k", "0.1", "--epochs", "2",
            "--hidden-dims", "16", "8", "4", "--quiet",
            "--checkpoint-dir", str(tmp_path / "ckpt")]  # fmt: skip
    assert main(args) == 0
    assert "wrote:" in capsys.readouterr().out
    result = ad.read_h5ad(out / "small_spacon.h5ad")
    assert result.obsm[Key.obsm.spatial_embedding].shape == (300, 4)
    assert result.uns[Key.uns.train]["params"]["world_size"] == 1
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()
    model = sp.tl.SpaconModel.load(out / "model", result)
    assert model.hidden_dims == [200, 16, 8, 4]
    assert main([*args, "--seed", "1"]) == 2
    assert "different run" in capsys.readouterr().err
    shutil.rmtree(out)


def test_distributed_option_is_validated():
    adata = sp.datasets.flatmap(n_spots=200, n_genes=60)
    with pytest.raises(TypeError, match="`distributed` must be True or False"):
        sp.tl.train(adata, distributed="yes")
    with pytest.raises(TypeError, match="`distributed` must be True or False"):
        sp.tl.embed(adata, distributed=1)
