"""Byte layouts of the dataset: URIs, Delta tables, the DuckDB catalog, image decoding."""
