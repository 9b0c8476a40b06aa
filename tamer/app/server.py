"""Assemble the tabs into one Gradio page and serve it on loopback (by default).

Gradio's analytics are off and share links never made (nothing leaves this machine); the
theme uses system fonts, so the page asks no font server either. Uploads larger than
`ingest.max_bytes` are refused by the server before the tabs see them.
"""

from __future__ import annotations

import os

from tamer.app.reader import AppContext
from tamer.app.runs import reports_dir

TITLE = "tamer"
LOOPBACK = "127.0.0.1"


def blocks(ctx: AppContext):
    """The page: Customize, Dataset and Runs tabs over `ctx`."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    import gradio as gr

    from tamer.app import customize, dataset, runs

    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        gr.Markdown(f"## tamer · `{ctx.store.location.uri}` · profile `{ctx.config.profile}`")
        with gr.Tab("Customize", elem_id="tab-customize"):
            customize.build(ctx, demo)
        with gr.Tab("Dataset", elem_id="tab-dataset"):
            dataset.build(ctx, demo)
        with gr.Tab("Runs", elem_id="tab-runs"):
            runs.build(ctx, demo)
    return demo


def launch(ctx: AppContext, host: str = LOOPBACK, port: int = 7860, block: bool = True):
    """Serve the page on host:port; with block=False return the running app (tests)."""
    import gradio as gr

    demo = blocks(ctx)
    reports = reports_dir(ctx)
    demo.launch(server_name=host, server_port=port, share=False, inbrowser=False,
                prevent_thread_lock=not block, quiet=True, show_error=False, ssr_mode=False,
                max_file_size=ctx.config.ingest.max_bytes, footer_links=[],
                allowed_paths=[str(reports)] if reports else None,
                theme=gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                        font_mono=["ui-monospace", "monospace"]))
    return demo
