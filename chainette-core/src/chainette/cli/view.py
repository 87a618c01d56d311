"""`chainette view OUT`: serve a local page over a run directory (on 127.0.0.1) until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
import sys

import typer

from chainette.errors import ChainetteError


def view_command(
    out: Path = typer.Argument(..., help="The run directory: the -o OUT of a `chainette run`, finished or still running."),
    port: int = typer.Option(0, "--port", min=0, max=65535, help="The port on 127.0.0.1 to serve on (default: a free one)."),
    no_browser: bool = typer.Option(False, "--no-browser", help="Print the URL without opening a browser."),
) -> None:
    """Show the run in OUT in a web page: each node's rows beside their chain input, errors with their raw answers,
    filtered rows, figures; search by field or text; follows a run in progress. Nothing leaves this machine.

    The page is served on 127.0.0.1 only; the URL is printed, and opened in a browser when run in a terminal.
    Ctrl-C stops it.
    """
    from chainette.view.api import ViewServer
    from chainette.view.reader import RunView

    view = RunView(out)
    try:
        server = ViewServer(view, port)
    except OSError as exc:
        raise ChainetteError(
            f"Cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}. Choose another --port, or leave it out for a free one."
        ) from None
    typer.echo(f"Viewing {out} at {server.url} (Ctrl-C stops)")
    if not no_browser and sys.stdout.isatty():
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("Stopped.")
    finally:
        server.server_close()
