"""Private torch core: attention layers, the dual autoencoder, neighbour sampling, training.

Nothing in here knows about :class:`~anndata.AnnData`; :mod:`spacon.tl` moves data in and out.
"""
