"""The upload of a push to the Hugging Face Hub: it creates the dataset repository if missing (refusing to publish
into an existing public one when asked for a private one), then adds every file and deletes what an earlier push
left, in one commit. huggingface_hub is imported only here, inside the functions, and finds the token itself; any
failure it raises becomes one ChainetteError paragraph with every secret masked."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from chainette import __version__
from chainette.errors import ChainetteError
from chainette.hub.constants import CARD
from chainette.hub.layout import Dataset, Pushed, Run, stale_paths
from chainette.secrets import redact

INSTALL = "pip install 'chainette-core[hub]'"


def upload(dataset: Dataset, run: Run, *, private: bool, message: str, secrets: frozenset[str]) -> Pushed:
    """Create the dataset repository if missing, then commit every file of `dataset` in one commit; the files an
    earlier push left in the folders this one writes, and no longer in the run, are deleted in the same commit."""
    _require_hub()
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, get_token

    api = HfApi()
    token = get_token()
    if not token:
        raise ChainetteError(
            "No Hugging Face token found: set HF_TOKEN to a token with write access "
            "(https://huggingface.co/settings/tokens) or run `hf auth login`, then push again."
        )
    secrets = secrets | {token}
    with _hub_errors(dataset.repo_id, api.endpoint, secrets):
        url = api.create_repo(dataset.repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        if private and not api.dataset_info(dataset.repo_id).private:
            raise ChainetteError(
                f"{dataset.repo_id} already exists and is public; --private (private=True) does not change an existing "
                "repository's visibility, so nothing was uploaded. Make it private in its settings on the Hub, or push without --private."
            )
        stale = stale_paths(api.list_repo_files(dataset.repo_id, repo_type="dataset"), dataset, run)
        operations: list[CommitOperationAdd | CommitOperationDelete] = [
            CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=dataset.card.encode()),
            *(CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source)) for path, source in sorted(dataset.files.items())),
            *(CommitOperationDelete(path_in_repo=path) for path in stale),
        ]
        commit = api.create_commit(
            dataset.repo_id,
            operations,
            commit_message=message,
            commit_description=f"Published with chainette {__version__}: configs {', '.join(c.name for c in dataset.configs)}.",
            repo_type="dataset",
        )
    configs = tuple(c.name for c in dataset.configs)
    return Pushed(dataset.repo_id, tuple(dataset.paths()), configs, url=str(url), commit_url=commit.commit_url, deleted=tuple(stale))


@contextmanager
def _hub_errors(repo_id: str, endpoint: str, secrets: frozenset[str]) -> Iterator[None]:
    """Turns a failure inside huggingface_hub into one ChainetteError paragraph, every secret masked (the
    original stays chained, for --debug)."""
    try:
        yield
    except ChainetteError:
        raise
    except Exception as exc:
        raise ChainetteError(redact(_hub_failure(exc, repo_id, endpoint), secrets)) from exc


def _hub_failure(exc: Exception, repo_id: str, endpoint: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    if not isinstance(exc, HfHubHTTPError):
        return (
            f"Publishing {repo_id} to {endpoint} failed ({type(exc).__name__}: {_one_line(str(exc))}). "
            "Check the network (and HF_ENDPOINT, if you set it), then push again."
        )
    status = exc.response.status_code
    if status == 401:
        return (
            f"The Hub at {endpoint} refused the token (HTTP 401): set HF_TOKEN to a valid token with write access "
            "(https://huggingface.co/settings/tokens), or run `hf auth login`, then push again."
        )
    if status == 403:
        return (
            f"The token may not write to {repo_id} (HTTP 403): use a token with write access to that user or "
            "organisation (a fine-grained token needs write permission on it), then push again."
        )
    if status == 404:
        return f"{repo_id} was not found on {endpoint} (HTTP 404): check that its user or organisation exists and that your token may write there."
    return f"The Hub answered HTTP {status} while publishing {repo_id}: {_one_line(exc.server_message or str(exc))}"


def _require_hub() -> None:
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise ChainetteError(
            f"Pushing to the Hugging Face Hub needs huggingface_hub, which is not installed: {INSTALL}. "
            "A dry run (--dry-run DIR, dry_run=DIR) needs nothing more."
        ) from None


def _one_line(text: str) -> str:
    return " ".join(text.split())
