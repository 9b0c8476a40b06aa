"""Byte layouts of the dataset: URIs, shard tables, manifests, the DuckDB catalog, image decoding."""
