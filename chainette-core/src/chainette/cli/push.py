"""`chainette push`: publish a finished run to the Hugging Face Hub as a dataset (or, with --dry-run, to a folder)."""

from __future__ import annotations

import typer


def push_command(
    output: str = typer.Argument(..., metavar="OUT", help="A completed run's output directory (the -o OUT of `chainette run`)."),
    repo: str = typer.Argument(..., help="The dataset repository: org/name or hf:org/name (created if it does not exist)."),
    private: bool = typer.Option(
        False, "--private", help="Create the repository private. An existing public repository is refused, not changed."
    ),
    dry_run: str | None = typer.Option(
        None, "--dry-run", metavar="DIR", help="Write the card and the files to DIR (new or empty) instead: no upload, no token."
    ),
    include_errors: bool = typer.Option(
        False, "--include-errors", help="Publish errors.jsonl too, as the config `errors` (the failed rows, with their raw answers)."
    ),
    message: str | None = typer.Option(None, "--message", "-m", help="The commit message (default: names the chain and the row count)."),
    chain: str | None = typer.Option(
        None,
        "--chain",
        help="The chain that made the run (path/to/file.py:attr, package.module:attr or chain.yaml): the card then shows its prompts and output schemas.",
    ),
) -> None:
    """Publish the run in OUT as the dataset REPO on the Hugging Face Hub, in one commit.

    One config per step and apply with outputs, `flattened` as the default, and a dataset card (README.md) with the
    chain's graph, engines, models and figures; never `.chainette/` nor a secret. The token is huggingface_hub's own:
    HF_TOKEN, or `hf auth login`. HF_ENDPOINT points it at another Hub.
    """
    from chainette.hub import ERRORS_CONFIG, push

    loaded = None
    if chain is not None:
        from chainette.cli.loading import load_chain

        loaded = load_chain(chain)
    done = push(output, repo, private=private, dry_run=dry_run, include_errors=include_errors, message=message, chain=loaded)
    configs = ", ".join(done.configs)
    if done.folder is not None:
        typer.echo(f"Dry run: wrote the card and {len(done.paths) - 1} files to {done.folder} (configs: {configs}). Nothing was uploaded.")
    else:
        typer.echo(f"Published {len(done.paths)} files to {done.url} in one commit (configs: {configs}).")
        typer.echo(f"Commit: {done.commit_url}")
        if done.deleted:
            typer.echo(f"Deleted {len(done.deleted)} files an earlier push left in the folders this run owns.")
    if include_errors and ERRORS_CONFIG not in done.configs:
        typer.echo("No errors config: errors.jsonl holds no failed row.", err=True)
    if loaded is None:
        typer.echo("The card shows no prompts or output schemas: pass --chain CHAIN (the chain that made the run) to add them.", err=True)
