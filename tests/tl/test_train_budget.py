"""The training budget of ``sp.tl.train``: ``n_steps`` (exact step count, overrides epochs) and
``max_time`` (stop after the step that exceeds it), recorded, validated, resumable, passed by
``sp.tl.spacon``, the CLI and the distributed path."""

from __future__ import annotations

import functools
import io
import json
import os
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import torch
from conftest import make_adata as data_factory

import spacon as sp
from spacon import Key
from spacon._core import _trainer
from spacon._core._checkpoint import FILE_NAME
from spacon.cli import build_parser, main

#: 120 cells in batches of 32: 4 minibatch steps per epoch
OPTIONS = {
    "hidden_dims": [16, 8, 4],
    "full_batch": False,
    "batch_size": 32,
    "num_neighbors": [5, 3],
    "lr": 1e-3,
    "random_state": 3,
    "progress": False,
}
PER_EPOCH = 4

make_adata = functools.partial(data_factory, "graphs")


@pytest.fixture(scope="module")
def base():
    return make_adata()


@pytest.fixture
def steps(monkeypatch):
    """The optimisation steps really made (calls of the loop's one step function)."""
    made = []
    step = _trainer._step

    def counting(*args, **kwargs):
        made.append(1)
        return step(*args, **kwargs)

    monkeypatch.setattr(_trainer, "_step", counting)
    return made


@pytest.fixture
def log():
    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    sc.settings.verbosity, sc.settings.logfile = "info", io.StringIO()
    try:
        yield sc.settings.logfile
    finally:
        sc.settings.verbosity, sc.settings.logfile = verbosity, logfile


def assert_same_weights(a, b):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("n_steps", [1, 4, 6, 9])
def test_n_steps_is_the_exact_number_of_minibatch_steps(base, steps, n_steps):
    adata = base.copy()
    sp.tl.train(adata, n_steps=n_steps, embed=False, **OPTIONS)
    record = adata.uns[Key.uns.train]
    assert len(steps) == n_steps == record["n_steps_run"]
    n_epochs = -(-n_steps // PER_EPOCH)  # the last epoch is cut after the n_steps-th step
    assert record["n_epochs_run"] == len(record["loss"]) == n_epochs
    assert record["params"]["n_steps"] == n_steps and record["params"]["n_epochs"] == n_epochs
    assert record["params"]["max_time"] == 0.0 and not record["max_time_reached"]


def test_n_steps_overrides_n_epochs_and_counts_full_batch_steps(base, steps, log):
    adata = base.copy()
    sp.tl.train(adata, n_steps=5, n_epochs=2, hidden_dims=[16, 8, 4], progress=False)
    record = adata.uns[Key.uns.train]
    assert record["params"]["full_batch"]  # 120 cells: one step per epoch
    assert len(steps) == 5 == record["n_steps_run"] == record["n_epochs_run"]
    assert "`n_steps=5` overrides `n_epochs=2`" in log.getvalue()
    assert "5 epochs = 5 steps" in log.getvalue()


def test_n_steps_is_reproducible_and_equals_whole_epochs(base):
    by_steps = sp.tl.train(base.copy(), n_steps=2 * PER_EPOCH, **OPTIONS)
    by_epochs = sp.tl.train(base.copy(), n_epochs=2, **OPTIONS)
    assert_same_weights(by_steps, by_epochs)
    np.testing.assert_array_equal(by_steps.history, by_epochs.history)


@pytest.mark.parametrize("full_batch", [False, True])
def test_tiny_max_time_stops_after_one_step(base, steps, log, full_batch):
    adata = base.copy()
    sp.tl.train(adata, max_time=1e-9, n_epochs=3, **{**OPTIONS, "full_batch": full_batch})
    record = adata.uns[Key.uns.train]
    assert len(steps) == 1 == record["n_steps_run"]
    assert record["max_time_reached"] and not record["stopped_early"]
    assert record["n_epochs_run"] == 1 and np.isfinite(record["loss"]).all()
    assert record["params"]["max_time"] == 1e-9
    assert 0 < record["train_time_s"] < 60
    epochs = "1 epoch" if full_batch else f"{1 / PER_EPOCH:g} epochs"
    assert (
        f"stopped early: the time budget max_time=1e-09 s was used up after 1 step ({epochs}"
        in log.getvalue()
    )
    # the embedding still covers every cell
    assert adata.obsm[Key.obsm.spatial_embedding].shape == (adata.n_obs, 4)


def test_generous_max_time_changes_nothing(base, steps):
    adata = base.copy()
    plain = sp.tl.train(base.copy(), n_epochs=2, **OPTIONS)
    steps.clear()
    timed = sp.tl.train(adata, n_epochs=2, max_time=3600.0, **OPTIONS)
    assert len(steps) == 2 * PER_EPOCH and not adata.uns[Key.uns.train]["max_time_reached"]
    assert_same_weights(plain, timed)


def test_max_time_passes_after_some_steps(base, steps, monkeypatch):
    """The clock is read after every step: stop after the step during which it passed."""
    clock = iter(range(1, 10**6))
    monkeypatch.setattr(_trainer._Budget, "elapsed", lambda self: float(next(clock)))
    adata = base.copy()
    sp.tl.train(adata, max_time=5.0, n_epochs=10, embed=False, **OPTIONS)
    # each step takes "1 s": the clock reaches 5 s during step 5
    assert len(steps) == 5 == adata.uns[Key.uns.train]["n_steps_run"]
    assert adata.uns[Key.uns.train]["n_epochs_run"] == 2  # 4 + 1 steps


def test_record_is_written_and_read_back(base, tmp_path):
    adata = base.copy()
    sp.tl.train(adata, n_steps=3, max_time=600.0, **OPTIONS)
    adata.write_h5ad(tmp_path / "a.h5ad")
    record = ad.read_h5ad(tmp_path / "a.h5ad").uns[Key.uns.train]
    assert record["n_steps_run"] == 3 and record["params"]["n_steps"] == 3
    assert record["params"]["max_time"] == 600.0 and not record["max_time_reached"]
    assert record["train_time_s"] > 0


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"n_steps": 0}, ValueError, r"`n_steps` must be an integer >= 1, got 0"),
        ({"n_steps": -3}, ValueError, r"`n_steps` must be an integer >= 1"),
        ({"n_steps": 2.5}, TypeError, r"`n_steps` must be an integer >= 1, got 2\.5"),
        ({"n_steps": True}, TypeError, r"`n_steps` must be an integer"),
        ({"n_steps": "10"}, TypeError, r"`n_steps` must be an integer"),
        ({"max_time": 0}, ValueError, r"`max_time` must be > 0\.0, got 0"),
        ({"max_time": -1.0}, ValueError, r"`max_time` must be > 0\.0"),
        ({"max_time": float("inf")}, ValueError, r"`max_time` must be a finite number"),
        ({"max_time": float("nan")}, ValueError, r"`max_time` must be a finite number"),
        ({"max_time": "60"}, TypeError, r"`max_time` must be a finite number, got '60'"),
        ({"max_time": False}, TypeError, r"`max_time` must be a finite number"),
    ],
)
def test_budget_options_are_validated(base, steps, options, error, match):
    adata = base.copy()
    with pytest.raises(error, match=match):
        sp.tl.train(adata, **OPTIONS, **options)
    assert not steps and Key.uns.train not in adata.uns


# ------------------------------------------------------------------------ checkpoints


def test_resume_counts_the_steps_done(base, tmp_path, steps):
    first = sp.tl.train(base.copy(), n_steps=3, checkpoint_dir=tmp_path, **OPTIONS)
    state = torch.load(tmp_path / FILE_NAME, weights_only=True)
    assert state["steps"] == 3 and state["epoch"] == 1 and state["elapsed"] > 0
    # the same budget: nothing left to do, the same model
    steps.clear()
    adata = base.copy()
    again = sp.tl.train(adata, n_steps=3, checkpoint_dir=tmp_path, **OPTIONS)
    assert not steps and adata.uns[Key.uns.train]["n_steps_run"] == 3
    assert_same_weights(first, again)
    # a larger budget continues at the next epoch: 5 more steps (one whole epoch + 1)
    adata = base.copy()
    sp.tl.train(adata, n_steps=8, checkpoint_dir=tmp_path, **OPTIONS)
    record = adata.uns[Key.uns.train]
    assert len(steps) == 5 and record["n_steps_run"] == 8
    assert record["n_epochs_run"] == len(record["loss"]) == 3
    assert torch.load(tmp_path / FILE_NAME, weights_only=True)["steps"] == 8


def test_resume_at_an_epoch_boundary_is_exact(base, tmp_path):
    full = sp.tl.train(base.copy(), n_steps=3 * PER_EPOCH, **OPTIONS)
    sp.tl.train(base.copy(), n_steps=PER_EPOCH, checkpoint_dir=tmp_path, **OPTIONS)
    resumed = sp.tl.train(base.copy(), n_steps=3 * PER_EPOCH, checkpoint_dir=tmp_path, **OPTIONS)
    assert_same_weights(full, resumed)
    np.testing.assert_array_equal(full.history, resumed.history)


def test_resume_counts_the_time_spent(base, tmp_path, steps):
    sp.tl.train(base.copy(), max_time=1e-9, checkpoint_dir=tmp_path, **OPTIONS)
    assert len(steps) == 1
    # the time budget is used up: resuming with it makes no step
    adata = base.copy()
    sp.tl.train(adata, max_time=1e-9, checkpoint_dir=tmp_path, **OPTIONS)
    record = adata.uns[Key.uns.train]
    assert len(steps) == 1 and record["n_steps_run"] == 1 and record["max_time_reached"]
    # without a time limit it goes on to the end of n_epochs (the cut epoch counts as begun)
    adata = base.copy()
    sp.tl.train(adata, n_epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    record = adata.uns[Key.uns.train]
    assert len(steps) == 1 + PER_EPOCH and record["n_steps_run"] == 1 + PER_EPOCH
    assert record["n_epochs_run"] == 2 and not record["max_time_reached"]
    assert record["train_time_s"] >= torch.load(tmp_path / FILE_NAME, weights_only=True)[
        "elapsed"
    ] - 1e-6


def test_checkpoint_without_step_count_resumes_whole_epochs(base, tmp_path):
    sp.tl.train(base.copy(), n_epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    state = torch.load(tmp_path / FILE_NAME, weights_only=True)
    del state["steps"], state["elapsed"]  # as written before the budget options
    torch.save(state, tmp_path / FILE_NAME)
    adata = base.copy()
    sp.tl.train(adata, n_steps=3 * PER_EPOCH, checkpoint_dir=tmp_path, **OPTIONS)
    record = adata.uns[Key.uns.train]
    assert record["n_steps_run"] == 3 * PER_EPOCH and record["n_epochs_run"] == 3


# ------------------------------------------------------------- sp.tl.spacon and the CLI


def test_spacon_passes_the_budget_and_names_misspelt_keys(steps):
    adata, fc = data_factory("expression", n=60)
    sp.tl.spacon(adata, fc, train_kwargs={"hidden_dims": [16, 8, 4], "n_steps": 2,
                                          "progress": False}, n_clusters=2)  # fmt: skip
    assert len(steps) == 2 and adata.uns[Key.uns.train]["params"]["n_steps"] == 2
    for wrong, right in (("n_step", "n_steps"), ("max_tim", "max_time")):
        with pytest.raises(TypeError, match=rf"'{wrong}' \(did you mean '{right}'\?\)"):
            sp.tl.spacon(adata, fc, train_kwargs={wrong: 1})


def test_cli_flags_reach_train(tmp_path, capsys):
    from spacon.cli import _cluster_options

    parser = build_parser()
    for command in ("run", "demo"):
        args = parser.parse_args([command, *(["x.h5ad"] if command == "run" else []),
                                  "--out", "o", "--n-steps", "7", "--max-time", "2.5"])  # fmt: skip
        assert _cluster_options(args)["train_kwargs"] == {
            "device": "auto", "n_steps": 7, "max_time": 2.5
        }
    args = parser.parse_args(["run", "x.h5ad", "--out", "o"])
    assert "n_steps" not in _cluster_options(args)["train_kwargs"]

    adata = sp.datasets.flatmap(n_spots=200, n_genes=60)
    fc = adata.obsp.pop("functional_connectivity")
    adata.write_h5ad(tmp_path / "flat.h5ad")
    np.save(tmp_path / "fc.npy", fc)
    common = ["train", str(tmp_path / "flat.h5ad"), "--connectivity", str(tmp_path / "fc.npy"),
              "--threshold", "0.8", "--top-k", "0.1", "--hidden-dims", "8", "4", "2",
              "--device", "cpu", "--quiet", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main([*common, "--n-steps", "3", "--max-time", "600"]) == 0
    record = ad.read_h5ad(tmp_path / "out" / "flat_spacon.h5ad").uns[Key.uns.train]
    assert record["n_steps_run"] == 3 and record["params"]["max_time"] == 600.0
    capsys.readouterr()
    assert main([*common, "--max-time", "0"]) == 2
    assert "`--max-time` must be > 0.0" in capsys.readouterr().err
    assert main([*common, "--n-steps", "0"]) == 2
    assert "`--n-steps` must be an integer >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- distributed

_RANKS = """
import json, sys
import torch.distributed as dist
import spacon as sp
from spacon._core import _trainer

adata = sp.datasets.flatmap(n_spots=201, n_genes=60)
fc = adata.obsp.pop("functional_connectivity")
sp.pp.spatial_graph(adata)
sp.pp.connectivity(adata, fc, threshold=0.8, top_k=0.1)
opts = dict(distributed=True, batch_size=32, num_neighbors=[5, 3], hidden_dims=[8, 4, 2],
            progress=False, embed=False)
rank = int(__import__("os").environ["RANK"])
# rank 0's clock passes max_time during its third step, rank 1's never: rank 0 decides
_trainer._Budget.elapsed = (
    (lambda self: 1e6 if self.steps >= 3 else 0.0) if rank == 0 else (lambda self: 0.0)
)
timed = sp.tl.train(adata, n_epochs=3, max_time=100.0, **opts)
timed_record = dict(adata.uns["spacon_train"])
counted = sp.tl.train(adata, n_steps=6, **opts)
with open(f"{sys.argv[1]}/rank{rank}.json", "w") as f:
    json.dump({"timed": [timed_record["n_steps_run"], bool(timed_record["max_time_reached"]),
                         timed.history.tolist()],
               "counted": [adata.uns["spacon_train"]["n_steps_run"], counted.history.tolist(),
                           float(sum(v.double().sum() for v in counted.module.state_dict().values()))]},
              f)
"""


@pytest.mark.slow
def test_distributed_ranks_stop_at_the_same_step(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(_RANKS))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RANK"))}
    env.pop("WORLD_SIZE", None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", str(script),
         str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:  # 201 cells, 2 ranks, batches of 32: 4 steps per epoch and rank
        assert rank["timed"][:2] == [3, True] and len(rank["timed"][2]) == 1
        assert rank["counted"][0] == 6 and len(rank["counted"][1]) == 2
    assert ranks[0]["timed"] == ranks[1]["timed"]
    assert ranks[0]["counted"] == ranks[1]["counted"]  # one model, one loss history
