"""``.. spacon-key-table::``: the key names spacon writes, read from :class:`spacon.Key`.

Two tables, built from the code at each build so they cannot go stale: the keys that
``spacon.Key`` names (with the descriptions of its ``#:`` comments), and the keys its
helper methods derive from the default ``key_added`` of each function.
"""

from __future__ import annotations

import inspect

from docutils import nodes
from sphinx.util.docutils import SphinxDirective


def named_keys() -> list[tuple[str, str, str, str]]:
    """``(slot, key, "Key.slot.attr", description)`` of every key name in ``spacon.Key``."""
    from sphinx.pycode import ModuleAnalyzer

    from spacon import Key

    comments = ModuleAnalyzer.for_module(Key.__module__).find_attr_docs()
    rows = []
    for slot, names in vars(Key).items():
        if slot.startswith("_") or not isinstance(names, type):
            continue
        for attr, key in vars(names).items():
            if attr.startswith("_") or not isinstance(key, str):
                continue
            text = " ".join(comments.get((f"Key.{slot}", attr), [])).strip()
            rows.append((slot, key, f"Key.{slot}.{attr}", text))
    return rows


def derived_keys() -> list[tuple[str, str, str, str]]:
    """``(slot, key, "Key.helper(name)", written by)`` for the keys the helpers spell, with
    each function's default name."""
    import spacon as sp
    from spacon import Key

    def default(func, name: str = "key_added") -> str:
        return inspect.signature(func).parameters[name].default

    spatial, connectome = default(sp.pp.spatial_graph), default(sp.pp.connectivity)
    domains = default(sp.tl.cluster)
    knn = Key.neighbors(domains)  # tl.cluster's neighbors_key by default
    return [
        ("obsp", Key.distances(spatial), f"Key.distances({spatial!r})",
         ":func:`spacon.pp.spatial_graph`: edge lengths of the spatial graph"),
        ("uns", Key.neighbors(spatial), f"Key.neighbors({spatial!r})",
         ":func:`spacon.pp.spatial_graph`: its keys and parameters (squidpy's record)"),
        ("uns", Key.neighbors(connectome), f"Key.neighbors({connectome!r})",
         ":func:`spacon.pp.connectivity`: its keys and parameters"),
        ("uns", domains, "Key.obs.domains",
         ":func:`spacon.tl.cluster`: the clustering's parameters"),
        ("obsp", Key.connectivities(knn), f"Key.connectivities({knn!r})",
         ":func:`spacon.tl.cluster` with Leiden or Louvain: kNN graph of ``obsm['X_spacon']``"),
        ("obsp", Key.distances(knn), f"Key.distances({knn!r})",
         ":func:`spacon.tl.cluster` with Leiden or Louvain: its distances"),
        ("uns", knn, f"Key.neighbors({domains!r})",
         ":func:`spacon.tl.cluster` with Leiden or Louvain: the graph's record"),
        ("obs", Key.refined(domains), f"Key.refined({domains!r})",
         ":func:`spacon.tl.refine`: the smoothed domains"),
        ("uns", Key.colors(domains), f"Key.colors({domains!r})",
         "scanpy's plots (colours of the domains); spacon's plots read it"),
    ]  # fmt: skip


def _table(header: str, rows: list[tuple[str, str, str, str]]) -> list[str]:
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 8 30 37 55",
        "",
        "   * - slot",
        "     - key",
        "     - in code",
        f"     - {header}",
    ]
    for slot, key, code, text in rows:
        lines += [f"   * - ``{slot}``", f"     - ``{key!r}``", f"     - ``{code}``", f"     - {text}"]
    return lines + [""]


class KeyTable(SphinxDirective):
    """The key names of ``spacon.Key``, then those its helpers derive, as two tables."""

    def run(self) -> list[nodes.Node]:
        lines = _table("what it holds", named_keys())
        lines += [
            "Keys spelt by the methods below, with each function's default name:",
            "",
            *_table("written by", derived_keys()),
        ]
        return self.parse_text_to_nodes("\n".join(lines))


def setup(app):
    app.add_directive("spacon-key-table", KeyTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
