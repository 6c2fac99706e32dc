"""The `spacon` command line: success and failure paths."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

import spacon as sp
from spacon import Key
from spacon.cli import main


def test_demo_writes_result_and_figures(tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-spots", "640", "--epochs", "3", "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ARI" in printed and str(out / "domains.png") in printed
    adata = ad.read_h5ad(out / "flatmap_spacon.h5ad")
    assert adata.obs[Key.obs.domains].nunique() == adata.obs["network"].nunique()
    for name in ("domains.png", "loss.png"):
        assert (out / name).stat().st_size > 0


@pytest.fixture()
def user_files(tmp_path):
    adata = sp.datasets.flatmap(n_spots=640, n_genes=120, random_state=1)
    fc = adata.obsp.pop("functional_connectivity")
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    fc_path = tmp_path / "fc.npy"
    np.save(fc_path, fc)
    return data, fc_path


def test_run_on_user_files(user_files, tmp_path, capsys):
    data, fc_path = user_files
    out = tmp_path / "out"
    code = main([
        "run", str(data), "--connectivity", str(fc_path), "--threshold", "0.8", "--top-k", "0.1",
        "--decay", "0.006", "--n-clusters", "4", "--epochs", "3", "--refine", "--out", str(out),
        "--quiet",
    ])
    assert code == 0
    result = ad.read_h5ad(out / "cells_spacon.h5ad")
    assert result.obs[Key.obs.domains].nunique() == 4
    assert f"{Key.obs.domains}_refined" in result.obs
    assert (out / "domains.png").exists()


def test_run_missing_file_is_one_clear_line(tmp_path, capsys):
    code = main(["run", str(tmp_path / "nope.h5ad"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]


def test_run_wrong_shape_fc(user_files, tmp_path, capsys):
    data, _ = user_files
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((5, 5), dtype=np.float32))
    code = main(["run", str(data), "--connectivity", str(bad), "--out", str(tmp_path / "o"),
                 "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spacon: error:") and "shape" in err[0]
    assert not (tmp_path / "o" / "cells_spacon.h5ad").exists()


def test_console_entry_point_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "spacon", "run", str(tmp_path / "missing.h5ad"), "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "does not exist" in proc.stderr
