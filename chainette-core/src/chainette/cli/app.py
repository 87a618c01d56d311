"""The typer application: global options, command registration, and error presentation."""

from __future__ import annotations

from collections.abc import Callable
import sys
from typing import Final
import warnings

import typer

from chainette import __version__
from chainette.errors import ChainetteError

state = {"debug": False}


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"chainette {__version__}")
        raise typer.Exit()


def _global_options(
    debug: bool = typer.Option(
        False,
        "--debug",
        help="Show full tracebacks (engine secrets redacted, as everywhere) instead of one-paragraph errors, and the source line "
        "of each warning (anywhere on the line).",
    ),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Typed LLM pipelines: run a chain over input rows, inspect it, manage backends and the response cache."""


BUILT_IN = ("run", "plan", "inspect", "view", "push", "batches", "backends", "cache")
# Help text is Markdown, as in docs/cli.md, where brackets (`chainette-core[parquet]`) stay literal; typer's default,
# rich markup, would take `[parquet]` for a style tag and drop it. Commands and groups plugins add inherit it.
HELP_MARKUP: Final = "markdown"
EPILOG = "Plugins can add commands (chainette-vllm adds warmup, kill and ps): run `chainette COMMAND --help`."


def build_app(with_plugins: bool = True) -> typer.Typer:
    """The `chainette` app: the built-in commands, plus those plugins add through `register_commands`."""
    from chainette.cli import backends, batches, cache, inspect, plan, push, run, view
    from chainette.cli.help import use_plain_help

    app = typer.Typer(
        name="chainette",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
        epilog=EPILOG,
        rich_markup_mode=HELP_MARKUP,
    )
    app.callback()(_global_options)
    app.command("run")(run.run_command)
    app.command("plan")(plan.plan_command)
    app.command("inspect")(inspect.inspect_command)
    app.command("view")(view.view_command)
    app.command("push")(push.push_command)
    app.command("batches")(batches.batches_command)
    app.add_typer(backends.app, name="backends")
    app.add_typer(cache.app, name="cache")
    if with_plugins:
        from chainette.plugins import get_plugins

        get_plugins().add_commands(app)
    use_plain_help(app)
    return app


def _command(args: list[str]) -> str | None:
    return next((arg for arg in args if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `chainette` script; returns the exit status."""
    args = sys.argv[1:] if argv is None else argv
    state["debug"] = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    shown_as = warnings.formatwarning
    warnings.formatwarning = _redacted_warning(shown_as if state["debug"] else _plain_warning)
    try:
        command = _command(args)
        build_app(with_plugins=command is not None and command not in BUILT_IN)(args=args, prog_name="chainette")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except ChainetteError as exc:
        if state["debug"]:
            _print_traceback(exc)
        else:
            _print_error(str(exc))
        return exc.exit_code
    except Exception as exc:
        _print_traceback(exc)
        return 1
    finally:
        warnings.formatwarning = shown_as
    return 0


def _plain_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    """A warning as the CLI shows it: its kind and message, without the source file and line (those with --debug)."""
    return f"{category.__name__}: {message}\n"


def _redacted_warning(shown_as: Callable[..., str]) -> Callable[..., str]:
    """`shown_as` (a `warnings.formatwarning`) with engine secrets redacted from the text it makes."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
        from chainette.engines import registered_secrets
        from chainette.secrets import redact

        return redact(shown_as(message, category, filename, lineno, line), registered_secrets())

    return show


def _print_traceback(exc: BaseException) -> None:
    """Print the traceback of `exc` (its causes included) on stderr, as Python would, with engine secrets redacted:
    an unexpected error, or any error under --debug."""
    import traceback

    from chainette.engines import registered_secrets
    from chainette.secrets import redact

    sys.stderr.write(redact("".join(traceback.format_exception(exc)), registered_secrets()))
    sys.stderr.flush()


def _print_error(message: str) -> None:
    """Print `message` on stderr after a red `Error:`, as it is (brackets are not markup), with engine secrets redacted."""
    from rich.console import Console
    from rich.text import Text

    from chainette.engines import registered_secrets
    from chainette.secrets import redact

    shown = Text.assemble(("Error:", "bold red"), " ", redact(message, registered_secrets()))
    Console(stderr=True, highlight=False, soft_wrap=True).print(shown)
