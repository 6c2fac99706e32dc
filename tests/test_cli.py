"""The `spacon` command line: success and failure paths."""

from __future__ import annotations

import argparse
import functools
import io
import re
import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from conftest import make_adata

import spacon as sp
from spacon import Key
from spacon.cli import _cluster_options, _command_parser, _name_flags, build_parser, main


def test_demo_writes_result_and_figures(tmp_path, capsys, monkeypatch):
    titles = []
    draw = sp.pl.domains

    def spy(adata, **kwargs):
        titles.append(kwargs.get("title"))
        return draw(adata, **kwargs)

    monkeypatch.setattr(sp.pl, "domains", spy)
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n-spots", "640", "--epochs", "3", "--quiet"])
    assert code == 0
    assert titles == [f"{Key.obs.domains}, alpha = 1"]  # the figure says which alpha
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


@pytest.fixture
def scanpy_log():
    """Scanpy's log output (the CLI logs through scanpy, which keeps its own stream)."""
    verbosity, previous = sc.settings.verbosity, sc.settings.logfile
    sc.settings.logfile = io.StringIO()
    yield sc.settings.logfile
    sc.settings.verbosity, sc.settings.logfile = verbosity, previous


def test_run_on_signed_fc_without_threshold(user_files, tmp_path, scanpy_log):
    data, fc_path = user_files
    assert (np.load(fc_path) < 0).any()  # a correlation matrix, as users have it
    out = tmp_path / "out"
    code = main([
        "run", str(data), "--connectivity", str(fc_path), "--n-clusters", "4", "--epochs", "2",
        "--out", str(out),
    ])
    assert code == 0
    assert "negative weights of `fc` (cell pairs" in scanpy_log.getvalue()
    result = ad.read_h5ad(out / "cells_spacon.h5ad")
    assert (result.obsp[Key.obsp.connectome_connectivities].data > 0).all()
    assert "threshold" not in result.uns[Key.neighbors("connectome")]["params"]


def test_train_on_signed_fc_without_threshold(user_files, tmp_path, scanpy_log):
    data, fc_path = user_files
    out = tmp_path / "out"
    code = main([
        "train", str(data), "--connectivity", str(fc_path), "--top-k", "20", "--epochs", "2",
        "--hidden-dims", "32", "16", "8", "--device", "cpu", "--out", str(out),
    ])
    assert code == 0
    assert "negative weights of `fc` (cell pairs" in scanpy_log.getvalue()
    result = ad.read_h5ad(out / "cells_spacon.h5ad")
    graph = result.obsp[Key.obsp.connectome_connectivities]
    assert (graph.data > 0).all() and np.diff(graph.indptr).max() == 20
    assert result.uns[Key.neighbors("connectome")]["params"]["top_k"] == 20


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize("text, expected", [("100", 100), ("1", 1), ("0.1", 0.1), (".5", 0.5)])
def test_top_k_integer_is_a_count_decimal_a_fraction(command, text, expected):
    args = build_parser().parse_args([command, "d.h5ad", "--out", "o", "--top-k", text])
    assert args.top_k == expected and type(args.top_k) is type(expected)


@pytest.mark.parametrize("command", ["run", "train"])
@pytest.mark.parametrize(
    "text, match",
    [
        ("1.0", r"--top-k: `--top-k` as a float .*got 1\.0 \(ambiguous.*`--top-k 1`.*<n_obs>"),
        ("2.5", r"--top-k: .*got 2\.5 \(ambiguous.*`--top-k 2`"),
        ("1e3", r"--top-k: .*got 1000\.0 \(ambiguous.*`--top-k 1000`"),
        ("0.0", r"--top-k: .*must lie in \(0, 1\), got 0\.0\."),
        ("0", r"--top-k: must be a positive number of edges per cell"),
        ("-3", r"--top-k: must be a positive number of edges per cell"),
        ("many", r"--top-k: must be an integer number of edges per cell .*got 'many'"),
    ],
)
def test_top_k_refused_with_the_rule(command, text, match, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "d.h5ad", "--out", "o", f"--top-k={text}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"spacon {command}: error: argument --top-k")
    assert re.search(match, err), err



@pytest.mark.parametrize("command", ["demo", "run"])
@pytest.mark.parametrize(
    "text, match",
    [("0", "must be at least 1"), ("-2", "must be at least 1"), ("many", "or 'auto', got 'many'")],
)
def test_n_clusters_refused_with_the_rule(command, text, match, capsys):
    argv = [command, "--out", "o", f"--n-clusters={text}"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv if command == "demo" else [*argv[:1], "d.h5ad", *argv[1:]])
    assert match in capsys.readouterr().err


def test_clustering_options_reach_the_one_liner():
    args = build_parser().parse_args(["run", "d.h5ad", "--out", "o", "--n-clusters", "AUTO",
                                      "--method", "kmeans", "--n-starts", "3"])  # fmt: skip
    options = _cluster_options(args)
    assert options["n_clusters"] == "auto"
    assert options["cluster_kwargs"] == {"method": "kmeans", "n_starts": 3}
    defaults = _cluster_options(build_parser().parse_args(["run", "d.h5ad", "--out", "o"]))
    assert defaults["cluster_kwargs"] == {"method": "auto"} and "n_clusters" not in defaults


def test_automatic_k_for_leiden_says_to_leave_out_the_flag(user_files, tmp_path, capsys):
    data, fc = user_files
    code = main(["run", str(data), "--connectivity", str(fc), "--method", "leiden",
                 "--n-clusters", "auto", "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "leave out `--n-clusters`" in err and "None" not in err, err


def test_run_with_automatic_k_and_mixture_starts(user_files, tmp_path, capsys):
    data, fc = user_files
    out = tmp_path / "o"
    code = main(["run", str(data), "--connectivity", str(fc), "--epochs", "2", "--n-clusters",
                 "auto", "--n-starts", "2", "--out", str(out), "--quiet"])  # fmt: skip
    assert code == 0
    params = ad.read_h5ad(out / "cells_spacon.h5ad").uns[Key.obs.domains]["params"]
    assert params["n_clusters_requested"] == "auto" and params["n_starts"] == 2


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"spacon {sp.__version__}"


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "obsm key of the coordinates (default: spatial)" in text
    assert "(default: 1 with a connectome, 0 without)" in text  # --alpha
    assert "--use-rep" in text and "--hidden-dims" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_errors_name_flags_not_python_arguments(user_files, tmp_path, capsys):
    data, fc = user_files
    out = ["--out", str(tmp_path / "o"), "--epochs", "2"]
    code = main(["run", str(data), "--connectivity", str(fc), "--regions-key", "nope", *out])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "--regions-key" in err and "regions_key" not in err


def test_name_flags_rewrites_argument_names():
    run = _command_parser(build_parser(), "run")
    text = _name_flags("`regions_key='x'` is not a column; pass `use_rep` or n_epochs=3.", run)
    assert text == "`--regions-key 'x'` is not a column; pass `--use-rep` or --epochs 3."


def test_run_saves_the_model_and_takes_training_options(user_files, tmp_path, capsys):
    data, fc = user_files
    out = tmp_path / "o"
    code = main([
        "run", str(data), "--connectivity", str(fc), "--out", str(out), "--epochs", "2",
        "--hidden-dims", "16", "8", "4", "--n-clusters", "3",
    ])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert str(out / "model") in captured.out
    model = sp.tl.SpaconModel.load(out / "model")
    assert model.hidden_dims[-3:] == [16, 8, 4]
    # no --quiet, stderr is not a terminal: no progress-bar redraws in the log
    assert "\r" not in captured.err and "epoch/s" not in captured.err


def test_run_use_rep(user_files, tmp_path, capsys):
    data, fc = user_files
    code = main(["run", str(data), "--connectivity", str(fc), "--out", str(tmp_path / "o"),
                 "--epochs", "2", "--use-rep", "X_missing"])  # fmt: skip
    assert code == 2
    assert "X_missing" in capsys.readouterr().err


def test_one_liner_saves_the_model_only_when_every_step_succeeded(tmp_path, monkeypatch):
    adata = sp.datasets.flatmap(n_spots=300, n_genes=60, random_state=2)
    fc = adata.obsp.pop("functional_connectivity")
    tiny = {"hidden_dims": [16, 8, 4], "n_epochs": 2, "progress": False}
    with monkeypatch.context() as patch:

        from spacon.tl._spacon import refine_domains

        @functools.wraps(refine_domains)  # keeps the signature the early checks read
        def failing_refine(*args, **kwargs):
            raise ValueError("refine failed")

        patch.setattr("spacon.tl._spacon.refine_domains", failing_refine)
        with pytest.raises(ValueError, match="refine failed"):  # the last step, after training
            sp.tl.spacon(adata, fc, n_clusters=3, refine=True, train_kwargs=tiny,
                         model_dir=tmp_path / "bad")  # fmt: skip
    assert not (tmp_path / "bad").exists()
    sp.tl.spacon(adata, fc, n_clusters=3, train_kwargs=tiny, model_dir=tmp_path / "model")
    model = sp.tl.SpaconModel.load(tmp_path / "model")
    assert model.hidden_dims[-3:] == [16, 8, 4]


def test_train_section_key_rebuilds_a_stored_graph_built_without_it(tmp_path):
    adata, _ = make_adata(n=60)
    adata.obs["section"] = "s1"  # one section: several would need an inter-section radius
    sp.pp.spatial_graph(adata, n_neighbors=4)  # in the file, built without sections
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    out = tmp_path / "o"
    argv = ["train", str(data), "--section-key", "section", "--epochs", "1", "--hidden-dims",
            "8", "4", "2", "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    with pytest.warns(UserWarning, match=r"Rebuilding .*`--section-key 'section'` was given "
                      r"and the graph was built without sections"):  # fmt: skip
        assert main(argv) == 0
    params = ad.read_h5ad(out / "cells_spacon.h5ad").uns[Key.neighbors(Key.obsm.spatial)]["params"]
    assert params["section_key"] == "section"


def test_train_reuses_a_stored_graph_built_with_the_same_sections(tmp_path, recwarn):
    adata, _ = make_adata(n=60)
    adata.obs["section"] = np.repeat(["s1", "s2"], 30)
    sp.pp.spatial_graph(adata, n_neighbors=4, section_key="section", inter_section_radius=0)
    graph = adata.obsp[Key.obsp.spatial_connectivities].copy()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "o"
    assert main(["train", str(tmp_path / "cells.h5ad"), "--section-key", "section", "--epochs",
                 "1", "--hidden-dims", "8", "4", "2", "--device", "cpu", "--out", str(out),
                 "--quiet"]) == 0  # fmt: skip
    assert not [w for w in recwarn if "Rebuilding" in str(w.message)]
    result = ad.read_h5ad(out / "cells_spacon.h5ad")
    assert (result.obsp[Key.obsp.spatial_connectivities] != graph).nnz == 0
    argv = ["train", str(tmp_path / "cells.h5ad"), "--section-key", "section",
            "--inter-section-radius", "0", "--epochs", "1", "--hidden-dims", "8", "4", "2",
            "--device", "cpu", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0  # the radius it was built with: reused
    assert not [w for w in recwarn if "Rebuilding" in str(w.message)]
    argv[5] = "1e9"
    with pytest.warns(UserWarning, match=r"--inter-section-radius 1e\+09 was given and the "
                      r"graph was built with 0"):  # fmt: skip
        assert main(argv) == 0


def test_several_sections_take_an_inter_section_radius(tmp_path, capsys):
    adata, _ = make_adata(n=60)
    adata.obs["section"] = np.repeat(["s1", "s2"], 30)
    data = tmp_path / "cells.h5ad"
    adata.write_h5ad(data)
    common = ["--section-key", "section", "--epochs", "1", "--hidden-dims", "8", "4", "2",
              "--device", "cpu", "--quiet"]  # fmt: skip
    assert main(["train", str(data), *common, "--out", str(tmp_path / "a")]) != 0
    assert "pass `--inter-section-radius` (in-plane" in capsys.readouterr().err  # the flag
    out = tmp_path / "o"
    assert main(["train", str(data), *common, "--inter-section-radius", "0", "--out", str(out)]) == 0
    params = ad.read_h5ad(out / "cells_spacon.h5ad").uns[Key.neighbors(Key.obsm.spatial)]["params"]
    assert params["section_key"] == "section" and params["inter_section_radius"] == 0
    out = tmp_path / "r"
    assert main(["run", str(data), *common[:2], "--inter-section-radius", "0", "--n-clusters",
                 "2", "--epochs", "1", "--hidden-dims", "8", "4", "2", "--device", "cpu",
                 "--quiet", "--out", str(out)]) == 0  # fmt: skip
    params = ad.read_h5ad(out / "cells_spacon.h5ad").uns[Key.neighbors(Key.obsm.spatial)]["params"]
    assert params["inter_section_radius"] == 0


def test_name_flags_spells_switches_as_flags():
    run = _command_parser(build_parser(), "run")
    text = _name_flags(
        "`refine=True` needs 11 cells; pass `refine=False` and call `sp.tl.refine(adata)`, "
        "or `refine=False` with refine=True.",
        run,
    )
    assert text == (
        "`--refine` needs 11 cells; leave out `--refine` and call `sp.tl.refine(adata)`, "
        "or no `--refine` with --refine."
    )
    both = argparse.ArgumentParser()
    both.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    assert _name_flags("pass `progress=False`, not progress=True", both) == (
        "pass `--no-progress`, not --progress"
    )


def test_refine_error_names_the_switch(tmp_path, capsys):
    adata, fc = make_adata(n=8)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    np.save(tmp_path / "fc.npy", fc)
    code = main(["run", str(tmp_path / "cells.h5ad"), "--connectivity", str(tmp_path / "fc.npy"),
                 "--refine", "--n-clusters", "2", "--out", str(tmp_path / "o"), "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spacon: error: `--refine` lets the"), err
    assert "leave out `--refine`" in err and "True" not in err and "False" not in err
