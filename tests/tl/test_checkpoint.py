"""Training checkpoints: atomic writes, exact resume (also after SIGKILL), refusal of others."""

from __future__ import annotations

import functools
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import scanpy as sc
import torch
from conftest import make_adata as data_factory

import spacon as sp
from spacon import Key
from spacon._core._checkpoint import FILE_NAME

#: minibatch options: the sampler's numpy stream and dropout's torch stream both matter
OPTIONS = {
    "hidden_dims": [16, 8, 4],
    "full_batch": False,
    "batch_size": 32,
    "num_neighbors": [5, 3],
    "lr": 1e-3,
    "dropout": 0.2,
    "random_state": 3,
    "progress": False,
}


make_adata = functools.partial(data_factory, "graphs")


@pytest.fixture(scope="module")
def base():
    return make_adata()


def assert_same_weights(a, b):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_checkpoint_written_atomically_with_full_state(base, tmp_path):
    adata = base.copy()
    model = sp.tl.train(adata, n_epochs=5, checkpoint_dir=tmp_path, checkpoint_every=2, **OPTIONS)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE_NAME]  # no temporary left
    state = torch.load(tmp_path / FILE_NAME, weights_only=True)
    assert state["epoch"] == 5  # the last epoch is always saved
    np.testing.assert_array_equal(state["history"], model.history)
    assert {"model", "optimizer", "rng", "fingerprint"} <= set(state)
    assert set(state["rng"][0]) == {"numpy", "torch", "cuda"}
    assert state["rng"][0]["numpy"]["bit_generator"] == "PCG64"
    for key, value in model.module.state_dict().items():
        assert torch.equal(state["model"][key], value), key


def test_resume_extends_a_finished_run_exactly(base, tmp_path):
    full = sp.tl.train(base.copy(), n_epochs=6, **OPTIONS)
    sp.tl.train(base.copy(), n_epochs=3, checkpoint_dir=tmp_path, **OPTIONS)
    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    sc.settings.verbosity, sc.settings.logfile = "info", io.StringIO()
    try:
        adata = base.copy()
        resumed = sp.tl.train(adata, n_epochs=6, checkpoint_dir=tmp_path, **OPTIONS)
        log = sc.settings.logfile.getvalue()
    finally:
        sc.settings.verbosity, sc.settings.logfile = verbosity, logfile
    assert "resuming from the checkpoint" in log and "(3 of 6 epochs done)" in log
    assert_same_weights(full, resumed)
    np.testing.assert_array_equal(full.history, resumed.history)
    assert adata.uns[Key.uns.train]["n_epochs_run"] == 6


def test_finished_checkpoint_returns_the_same_model(base, tmp_path):
    first = sp.tl.train(base.copy(), n_epochs=4, checkpoint_dir=tmp_path, **OPTIONS)
    again = sp.tl.train(base.copy(), n_epochs=4, checkpoint_dir=tmp_path, **OPTIONS)
    assert_same_weights(first, again)
    np.testing.assert_array_equal(first.history, again.history)


def test_incompatible_checkpoint_is_refused(base, tmp_path):
    sp.tl.train(base.copy(), n_epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    adata = base.copy()
    with pytest.raises(ValueError, match=r"different run \(lr: 0\.001 there, 0\.002 now.*fresh"):
        sp.tl.train(adata, n_epochs=2, checkpoint_dir=tmp_path, **{**OPTIONS, "lr": 2e-3})
    assert Key.uns.train not in adata.uns
    other = make_adata(n=100)
    with pytest.raises(ValueError, match=r"n_obs: 120 there, 100 now.*`checkpoint_dir`"):
        sp.tl.train(other, n_epochs=2, checkpoint_dir=tmp_path, **OPTIONS)
    with pytest.raises(ValueError, match="random_state: 3 there, 4 now"):
        sp.tl.train(base.copy(), checkpoint_dir=tmp_path, **{**OPTIONS, "random_state": 4})


def test_unreadable_checkpoint_and_bad_options(base, tmp_path):
    (tmp_path / FILE_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read.*fresh `checkpoint_dir`"):
        sp.tl.train(base.copy(), n_epochs=1, checkpoint_dir=tmp_path, **OPTIONS)
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    with pytest.raises(ValueError, match="not a folder"):
        sp.tl.train(base.copy(), n_epochs=1, checkpoint_dir=afile, **OPTIONS)
    with pytest.raises(ValueError, match="checkpoint_every"):
        sp.tl.train(base.copy(), n_epochs=1, checkpoint_dir=tmp_path / "c", checkpoint_every=0)


_KILLED_RUN = """
import sys, time
import anndata as ad
import spacon as sp
from spacon._core import _trainer

step = _trainer._step
def slow_step(*args, **kwargs):  # slow enough to be killed mid-training
    time.sleep(0.05)
    return step(*args, **kwargs)
_trainer._step = slow_step
options = {options!r}
sp.tl.train(ad.read_h5ad(sys.argv[1]), n_epochs={n_epochs}, checkpoint_dir=sys.argv[2],
            checkpoint_every=2, **options)
"""


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(base, tmp_path):
    n_epochs = 40  # >= 8 s of sleeping: it is still running when the checkpoint appears
    data = tmp_path / "data.h5ad"
    base.write_h5ad(data)
    folder = tmp_path / "ckpt"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED_RUN.format(options=OPTIONS, n_epochs=n_epochs)))
    # same thread count as this process: float reductions must happen in the same order
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(data), str(folder)], env=env, stderr=err
        )
    try:
        deadline = time.monotonic() + 120
        while not (folder / FILE_NAME).exists():
            assert proc.poll() is None, f"training ended before a checkpoint: {log.read_text()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = torch.load(folder / FILE_NAME, weights_only=True)["epoch"]
    assert 2 <= done < n_epochs  # it really was killed mid-training

    resumed = sp.tl.train(base.copy(), n_epochs=n_epochs, checkpoint_dir=folder, **OPTIONS)
    full = sp.tl.train(base.copy(), n_epochs=n_epochs, **OPTIONS)
    assert_same_weights(full, resumed)
    np.testing.assert_array_equal(full.history, resumed.history)
    assert not [p for p in folder.iterdir() if p.name != FILE_NAME]
