"""`tamer app`: a Gradio page over the same catalog and run registry as the CLI.

Tabs (one module each): `customize` (one photo + a prompt -> images), `dataset` (subjects,
captions, quarantine, near-duplicates, pairs, kNN search, counts), `runs` (the registry, loss
curves, evaluation reports). `reader` is their only way into the catalog (read-only);
`server` assembles the tabs and serves them on loopback. Only `server` and the tabs' `build`
functions import gradio, so the tabs' logic is tested as plain functions.
"""
