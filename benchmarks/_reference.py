"""Run the published SpaCon (PyPI ``spacon==0.1.3``) next to this package, in a subprocess.

Both packages are called ``spacon``, so the reference lives in its own ``pip --target``
folder (``benchmarks/out/reference/site``, git-ignored, downloaded on first use; nothing of
it is committed) and runs in a child Python whose ``PYTHONPATH`` puts that folder first.

What the child environment needs, and what stands in for what is missing here:

- ``torch_sparse``: the reference imports ``SparseTensor`` and ``set_diag`` from it, only for
  an ``isinstance`` check on a branch it never takes (it always passes edge-index tensors).
  A two-line shim module (``reference/shim/torch_sparse.py``) provides both names; it lacks
  ``SparseStorage``, so PyG itself still sees torch-sparse as absent.
- a neighbour sampler: PyG's ``NeighborLoader`` raises without pyg-lib or torch-sparse,
  which cannot be installed here. The child replaces ``spacon.utils.NeighborLoader`` (the
  name the reference calls) by :class:`SubstituteNeighborLoader` below, written to match
  what ``NeighborLoader(data, num_neighbors, batch_size, shuffle=False)`` returns for a
  homogeneous graph (defaults ``replace=False``, ``directed=True``, ``disjoint=False``):
  per hop, at most ``k`` *incoming* edges of every node first reached at the previous hop,
  uniformly without replacement (``-1``: all); ``batch.n_id`` = seeds first, then the new
  nodes of each hop; ``batch.edge_index`` = the sampled edges only, in local ids;
  ``batch.x = data.x[n_id]``; ``batch.batch_size`` = number of seeds. It is vectorised
  numpy and runs in the main process (the reference asks for ``num_workers=4``; on a
  2-core budget those workers would compete with training anyway). The time spent in it
  is measured and reported separately.
- Louvain: the reference's own ``clustering`` calls ``sc.tl.louvain`` (needs the
  ``louvain`` package, a binary wheel from PyPI, installed into the same target folder).
  louvain 0.8.2 reads its version through ``pkg_resources``, which recent setuptools no
  longer ship: where it is missing, a shim module answers from ``importlib.metadata``.

The reference gets exactly this package's graphs: a dense 0/1 connection matrix (its
``build_connection_graph``, which adds the self-loops) and a dense spatial matrix with
self-loops (what its training loop slices per batch), both built from the CSR graphs
``spacon`` trains on. PyG passes messages from ``edge_index[0]`` to ``edge_index[1]`` and
``build_connection_graph`` takes ``argwhere(adj)``, so row ``i`` of its matrix *sends*;
the child therefore hands it the transpose of spacon's connectome (whose row ``i`` lists
what cell ``i`` *receives* from), so that every cell aggregates from the same neighbours in
both. The spatial graph is symmetric.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / "out" / "reference"
REF_VERSION = "0.1.3"
LOUVAIN_VERSION = "0.8.2"
_SHIM = '''"""Stand-in for torch_sparse: SpaCon 0.1.3 imports it only for an isinstance check."""


class SparseTensor:  # never instantiated: the reference always passes edge-index tensors
    pass


def set_diag(*args, **kwargs):
    raise NotImplementedError("torch_sparse shim: set_diag is not available")
'''
_PKG_RESOURCES_SHIM = '''"""Stand-in for pkg_resources (gone from recent setuptools): louvain reads its version."""
from importlib.metadata import PackageNotFoundError as DistributionNotFound
from importlib.metadata import version as _version


class _Distribution:
    def __init__(self, name):
        self.version = _version(name)


def get_distribution(name):
    return _Distribution(name)
'''


# ------------------------------------------------------------------------- setup


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    subprocess.run(cmd, check=True)


def setup(cache: Path = CACHE) -> dict[str, Path]:
    """Download and install the reference (and louvain) into ``cache`` once; write the shim."""
    site, shim, wheels = cache / "site", cache / "shim", cache / "wheels"
    if not (site / "spacon" / "model.py").exists():
        wheels.mkdir(parents=True, exist_ok=True)
        _pip("download", "--no-deps", f"spacon=={REF_VERSION}", "-d", str(wheels))
        wheel = next(wheels.glob(f"spacon-{REF_VERSION}-*.whl"))
        _pip("install", "--no-deps", "--target", str(site), str(wheel))
    if not (site / "louvain").exists():
        try:
            _pip(
                "install", "--no-deps", "--only-binary=:all:", "--target", str(site),
                f"louvain=={LOUVAIN_VERSION}",
            )
        except subprocess.CalledProcessError:
            print("note: could not install louvain; the reference's own clustering is skipped")
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "torch_sparse.py").write_text(_SHIM)
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        (shim / "pkg_resources.py").write_text(_PKG_RESOURCES_SHIM)
    return {"site": site, "shim": shim}


def run(
    X: np.ndarray,
    connectome,
    spatial,
    *,
    tag: str,
    n_epochs: int = 10,
    batch_size: int = 64,
    num_neighbors: tuple[int, ...] = (20, 10, 10),
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    hidden: tuple[int, ...] = (256, 128, 32),
    seed: int = 0,
    threads: int = 2,
    own_clustering: tuple[tuple[float, float], ...] = (),
    reuse: bool = False,
    cache: Path = CACHE,
) -> dict:
    """Train and embed with the reference in a child process; return its outputs.

    ``connectome`` and ``spatial`` are scipy sparse graphs in spacon's convention (row ``i``
    = what cell ``i`` aggregates from, no self-loops). ``own_clustering`` lists
    ``(alpha, resolution)`` pairs for the reference's own ``clustering`` (Louvain).
    Returns ``feature_con``, ``feature_spa``, the timings and ``own`` labels. Every run is
    kept under a hash of its inputs and settings; ``reuse=True`` returns a kept run instead
    of training again (its timings are those of the kept run).
    """
    import hashlib

    import scipy.sparse as sp_sparse

    paths = setup(cache)
    work = cache / "runs"
    work.mkdir(parents=True, exist_ok=True)
    con = sp_sparse.csr_matrix(connectome)
    spa = sp_sparse.csr_matrix(spatial)
    X = np.asarray(X.toarray() if sp_sparse.issparse(X) else X, dtype=np.float32)
    digest = hashlib.sha1()
    for array in (X, con.indptr, con.indices, spa.indptr, spa.indices):
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(repr((n_epochs, batch_size, tuple(num_neighbors), lr, weight_decay,
                        tuple(hidden), seed, own_clustering)).encode())
    key = digest.hexdigest()[:12]
    inp, out, log = work / f"{key}_in.npz", work / f"{key}_out.npz", work / f"{tag}_{key}.log"
    if reuse and out.exists():
        return _load(out, log)
    np.savez(
        inp,
        X=X,
        con_indptr=con.indptr, con_indices=con.indices,
        spa_indptr=spa.indptr, spa_indices=spa.indices,
    )
    config = {
        "n_epochs": n_epochs, "batch_size": batch_size, "num_neighbors": list(num_neighbors),
        "lr": lr, "weight_decay": weight_decay, "hidden": list(hidden), "seed": seed,
        "threads": threads, "own_clustering": [list(p) for p in own_clustering],
        "site": str(paths["site"]), "workdir": str(work / f"{tag}_clustering"),
    }
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths["site"]), str(paths["shim"])])
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["TQDM_DISABLE"] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(inp), str(out),
           json.dumps(config)]
    with open(log, "w") as handle:
        proc = subprocess.run(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=work)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"the reference failed (exit {proc.returncode}); log {log}:\n{tail}")
    inp.unlink()
    return _load(out, log)


def _load(out: Path, log: Path) -> dict:
    with np.load(out, allow_pickle=False) as f:
        result = {k: f[k] for k in f.files if k != "meta"}
        result.update(json.loads(str(f["meta"])))
    result["log"] = str(log)
    return result


# ------------------------------------------------------- child: the substitute sampler


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.arange(total, dtype=np.int64) + np.repeat(starts - (ends - lengths), lengths)


class SubstituteNeighborLoader:
    """Stand-in for ``torch_geometric.loader.NeighborLoader`` (see the module docstring)."""

    rng = np.random.default_rng(0)  # reseeded by the child

    def __init__(self, data, num_neighbors, batch_size=1, shuffle=False, input_nodes=None,
                 num_workers=0, **kwargs):
        self.data = data
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        n = int(data.num_nodes)
        src, dst = data.edge_index.numpy()
        order = np.argsort(dst, kind="stable")  # incoming edges grouped by destination
        self._src = src[order].astype(np.int64)
        self._ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(dst, minlength=n), out=self._ptr[1:])
        self._local = np.full(n, -1, dtype=np.int64)
        nodes = np.arange(n) if input_nodes is None else np.asarray(input_nodes)
        self.dataset = nodes
        self.sample_seconds = 0.0
        self.epoch_starts: list[float] = []

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def _draw(self, frontier: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(owner, position) of at most ``k`` incoming edges per frontier node."""
        starts = self._ptr[frontier]
        deg = self._ptr[frontier + 1] - starts
        if k < 0:
            return np.repeat(np.arange(len(frontier)), deg), _ragged_arange(starts, deg)
        big = deg > k
        small = np.flatnonzero(~big)
        owner = [np.repeat(small, deg[small])]
        pos = [_ragged_arange(starts[small], deg[small])]
        rows = np.flatnonzero(big)
        if len(rows):
            # 2k draws with replacement per row; the first k distinct ones in draw order are a
            # uniform k-subset (successive sampling). Rows short of k distinct draws (rare)
            # fall back to random keys over all their edges.
            d = deg[rows]
            draws = (self.rng.random((len(rows), 2 * k)) * d[:, None]).astype(np.int64)
            np.minimum(draws, (d - 1)[:, None], out=draws)
            order = np.argsort(draws, axis=1, kind="stable")
            sorted_ = np.take_along_axis(draws, order, axis=1)
            first_sorted = np.ones_like(sorted_, dtype=bool)
            first_sorted[:, 1:] = sorted_[:, 1:] != sorted_[:, :-1]
            first = np.empty_like(first_sorted)
            np.put_along_axis(first, order, first_sorted, axis=1)
            keep = first & (np.cumsum(first, axis=1) <= k)
            enough = first.sum(axis=1) >= k
            keep &= enough[:, None]
            r, c = np.nonzero(keep)
            owner.append(rows[r])
            pos.append(starts[rows[r]] + draws[r, c])
            short = rows[~enough]
            if len(short):
                p = _ragged_arange(starts[short], deg[short])
                o = np.repeat(short, deg[short])
                keys = self.rng.random(len(p))
                srt = np.lexsort((keys, o))
                o, p = o[srt], p[srt]
                first_idx = np.searchsorted(o, o, side="left")
                take = (np.arange(len(o)) - first_idx) < k
                owner.append(o[take])
                pos.append(p[take])
        return np.concatenate(owner), np.concatenate(pos)

    def _sample(self, seeds: np.ndarray):
        import torch
        from torch_geometric.data import Data

        local = self._local
        local[seeds] = np.arange(len(seeds))
        parts, src_l, dst_l = [seeds], [], []
        n_seen, frontier = len(seeds), seeds
        try:
            for k in self.num_neighbors:
                if len(frontier) == 0:
                    break
                owner, pos = self._draw(frontier, k)
                srcs = self._src[pos]
                unseen = srcs[local[srcs] < 0]
                uniq, first = np.unique(unseen, return_index=True)
                new = uniq[np.argsort(first)]  # order of discovery
                local[new] = np.arange(n_seen, n_seen + len(new))
                n_seen += len(new)
                src_l.append(local[srcs])
                dst_l.append(local[frontier[owner]])
                parts.append(new)
                frontier = new
            n_id = np.concatenate(parts)
        finally:
            local[np.concatenate(parts)] = -1
        edge_index = torch.from_numpy(np.stack([np.concatenate(src_l), np.concatenate(dst_l)]))
        n_id_t = torch.from_numpy(n_id)
        return Data(x=self.data.x[n_id_t], edge_index=edge_index, n_id=n_id_t,
                    batch_size=len(seeds))

    def __iter__(self):
        self.epoch_starts.append(time.perf_counter())
        nodes = np.asarray(self.dataset, dtype=np.int64)
        if self.shuffle:
            nodes = self.rng.permutation(nodes)
        for start in range(0, len(nodes), self.batch_size):
            t = time.perf_counter()
            batch = self._sample(nodes[start : start + self.batch_size])
            self.sample_seconds += time.perf_counter() - t
            yield batch


# --------------------------------------------------------------------------- child


def _child(inp: str, out: str, config_json: str) -> None:
    cfg = json.loads(config_json)
    import torch

    torch.set_num_threads(int(cfg["threads"]))
    import anndata as ad
    import scipy.sparse as sp_sparse
    from torch_geometric.data import Data

    import spacon as reference

    if not str(Path(reference.__file__).resolve()).startswith(str(Path(cfg["site"]).resolve())):
        raise RuntimeError(f"imported {reference.__file__}, not the reference")
    from spacon import model as ref_model
    from spacon import utils as ref_utils

    ref_utils.NeighborLoader = SubstituteNeighborLoader
    SubstituteNeighborLoader.rng = np.random.default_rng(cfg["seed"])
    with np.load(inp) as f:
        X = f["X"]
        n = X.shape[0]
        ones = lambda p, i: sp_sparse.csr_matrix(  # noqa: E731
            (np.ones(len(i), np.float32), i, p), shape=(n, n)
        )
        con = ones(f["con_indptr"], f["con_indices"])
        spa = ones(f["spa_indptr"], f["spa_indices"])
    adata = ad.AnnData(X)
    # row i of the reference's matrix sends to column j: hand it spacon's transpose
    adj = con.T.toarray()
    NT = ref_utils.build_connection_graph(adata, adj, threshold=0.5)
    del adj
    st_adj = (spa + sp_sparse.eye(n, dtype=np.float32)).toarray()
    ST = Data(edge_index=torch.LongTensor(np.argwhere(st_adj).T), x=torch.FloatTensor(X))
    train_loader, eval_con, eval_spa = ref_utils.neighbor_sample(
        NT, ST, batch_size=cfg["batch_size"], train_num_neighbors=cfg["num_neighbors"],
        num_workers=0,
    )
    torch.manual_seed(cfg["seed"])
    net = ref_model.SpaCon(hidden_dims=[X.shape[1], *cfg["hidden"]], fusion_method="concat")
    device = torch.device("cpu")
    start = time.perf_counter()
    ref_utils.model_train(cfg["n_epochs"], cfg["lr"], cfg["weight_decay"], net, train_loader,
                          st_adj, device=device)
    train_s = time.perf_counter() - start
    bounds = [*train_loader.epoch_starts, start + train_s]
    epochs = np.diff(bounds).tolist()
    start = time.perf_counter()
    ref_utils.model_eval(net, adata, NT, ST, eval_con, eval_spa, st_adj, layer_eval=True,
                         device=device)
    embed_s = time.perf_counter() - start
    meta = {
        "train_s": train_s, "embed_s": embed_s, "epoch_s": epochs,
        "train_sampler_s": train_loader.sample_seconds,
        "embed_sampler_s": eval_con.sample_seconds + eval_spa.sample_seconds,
        "n_connectome_edges_with_loops": int(NT.edge_index.shape[1]),
        "n_spatial_edges_with_loops": int(ST.edge_index.shape[1]),
        "own_clustering": [],
    }
    arrays = {"feature_con": adata.obsm["feature_con"], "feature_spa": adata.obsm["feature_spa"]}
    if cfg["own_clustering"]:
        try:
            import louvain  # noqa: F401
        except ImportError as error:
            meta["own_clustering_error"] = f"louvain unavailable: {error}"
        else:
            for i, (alpha, res) in enumerate(cfg["own_clustering"]):
                t = time.perf_counter()
                clustered, _ = ref_utils.clustering(adata, alpha, cfg["workdir"] + "/", res)
                labels = clustered.obs["clusters"].astype(str).to_numpy()
                arrays[f"own_{i}"] = labels.astype("U")
                meta["own_clustering"].append(
                    {"alpha": alpha, "resolution": res, "key": f"own_{i}",
                     "seconds": time.perf_counter() - t}
                )
    np.savez(out, meta=json.dumps(meta), **arrays)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    _child(sys.argv[2], sys.argv[3], sys.argv[4])
