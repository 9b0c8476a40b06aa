"""`tamer app`: the web page (Gradio) over this root's catalog and run registry.
(Not named app.py: a submodule `app` would shadow this package's Typer `app`.)"""

from __future__ import annotations

import signal
from typing import Annotated, Optional

import typer

from tamer.cli.common import console, err, state


def app(
    host: Annotated[str, typer.Option(
        help="Interface to listen on; anything but loopback exposes the page (no login).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 7860,
    index_url: Annotated[Optional[str], typer.Option(
        help="clip-retrieval back to search through; else the index file is read.")
    ] = "http://127.0.0.1:1234",
) -> None:
    """Serve the web app: customize from one photo, browse the dataset, inspect runs."""
    config = state.config()
    from tamer.app.reader import AppContext
    from tamer.app.server import launch
    from tasks.ray_runtime import is_loopback

    if not is_loopback(host):
        err.print(f"warning: {host} exposes the app beyond this machine; it has no login",
                  style="yellow")
    ctx = AppContext(config, index_url=index_url)
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop cleans up like Ctrl+C
    console.print(f"tamer app on http://{host}:{port} (root {ctx.store.location.uri}); "
                  "Ctrl+C stops it")
    try:
        launch(ctx, host=host, port=port, block=True)
    finally:
        ctx.close()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
