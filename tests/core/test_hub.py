"""Publishing a run to the Hub: the dataset layout and card (dry run), secrets, and one commit to a loopback stand-in Hub."""

from __future__ import annotations

from fnmatch import fnmatch
import json
import os
from pathlib import Path
import re
import shutil
import socket
import subprocess
import sys

import pytest
import yaml

from chainette import Chain, ChainetteError, RowError, Step, apply, register_engine
from chainette.cli import main
from chainette.hub import Pushed, parse_repo, push

from .conftest import Label, Text
from .hub_standin import Repo, StandInHub

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "reviews"
API_KEY = "sk-planted-apikey-0123456789"
ENV_TOKEN = "tok-planted-env-9876543210"
HUB_TOKEN = "hf_plantedhubtoken0000"
SECRETS = (API_KEY, ENV_TOKEN, HUB_TOKEN)
SYSTEM_PROMPT = f"Label the text; never write {API_KEY}."


def echo(request, attempt):
    """The text between << >> as the label; row 'row3' is refused (an errors.jsonl line)."""
    text = re.search(r"<<(.*?)>>", request.messages[-1]["content"]).group(1)
    return RowError("refused", kind="refusal", raw="no") if text == "row3" else json.dumps({"label": text, "score": 0.5})


def not_row1(item: Label) -> Label | list[Label]:
    return [] if item.label == "row1" else item


def labels_chain(system_prompt: str = SYSTEM_PROMPT) -> Chain:
    """label (key as a SecretStr) → hidden (no outputs) → not_row1 (filter) → again (key from the environment)."""
    return Chain(
        name="labels",
        steps=[
            Step(
                id="label",
                input_model=Text,
                output_model=Label,
                engine_name="keyed",
                system_prompt=system_prompt,
                user_prompt="<<{{text}}>>",
            ),
            Step(id="hidden", output_model=Label, engine_name="keyed", user_prompt="<<{{label.label}}>>", yield_output=False),
            apply(not_row1),
            Step(id="again", output_model=Label, engine_name="envkeyed", user_prompt="<<{{label.label}}!>>"),
        ],
    )


@pytest.fixture
def tokens(monkeypatch):
    """A key in the environment (an engine reads it) and the Hub token."""
    monkeypatch.setenv("PLANTED_TOKEN", ENV_TOKEN)
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)


def register_engines() -> None:
    """The chain's engines on the scripted backend: one with a SecretStr key, one reading its key from the environment."""
    register_engine("keyed", backend="scripted", model="m-keyed", api_key=API_KEY)
    register_engine("envkeyed", backend="scripted", model="m-env", api_key_env="PLANTED_TOKEN")


@pytest.fixture
def run_dir(scripted, tokens, tmp_path) -> Path:
    scripted(echo)
    register_engines()
    out = tmp_path / "out"
    labels_chain().run([{"text": f"row{i}"} for i in range(6)], output_dir=out, progress=False)
    return out


def point_hub_at(monkeypatch, url: str) -> None:
    """HF_ENDPOINT as a process started with it set (and HF_HUB_OFFLINE unset) sees it: huggingface_hub reads both
    once, when first imported, which in this process may have been under another test's environment."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def hub(monkeypatch, tokens):
    with StandInHub(HUB_TOKEN) as server:
        point_hub_at(monkeypatch, server.url)
        yield server


def front_matter(card: str) -> dict:
    return yaml.safe_load(re.match(r"---\n(.*?)\n---\n", card, re.S).group(1))


def written(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def assert_no_secret(data: bytes | str, where: str) -> None:
    text = data if isinstance(data, bytes) else data.encode()
    for secret in SECRETS:
        assert secret.encode() not in text, f"{where} holds a secret"


def test_dry_run_layout_configs_match_the_files(run_dir, tmp_path):
    done = push(run_dir, "hf:org/labels", dry_run=tmp_path / "preview")
    files = written(tmp_path / "preview")
    assert files == {
        "README.md",
        "graph.json",
        "run.json",
        "flattened/000.jsonl",
        "label/000.jsonl",
        "not_row1/000.jsonl",
        "again/000.jsonl",
    }
    assert set(done.paths) == files and done.folder == tmp_path / "preview"
    configs = front_matter((tmp_path / "preview" / "README.md").read_text())["configs"]
    assert [c["config_name"] for c in configs] == ["flattened", "label", "not_row1", "again"], "no config for 'hidden' (yield_output=False)"
    assert [c.get("default", False) for c in configs] == [True, False, False, False]
    data = {path for path in files if path.endswith(".jsonl")}
    matched = set()
    for config in configs:
        (entry,) = config["data_files"]
        assert entry["split"] == "train"
        found = {path for path in data if fnmatch(path, entry["path"])}
        assert found == {path for path in data if path.startswith(config["config_name"] + "/")}
        matched |= found
    assert matched == data
    for path in files - {"README.md"}:
        assert (tmp_path / "preview" / path).read_bytes() == (run_dir / path).read_bytes(), path


def test_card_shows_graph_engines_figures_and_version(run_dir, tmp_path):
    push(run_dir, "org/labels", dry_run=tmp_path / "preview")
    card = (tmp_path / "preview" / "README.md").read_text()
    figures = json.loads((run_dir / "run.json").read_text())
    assert card.split("---\n", 2)[2].lstrip().startswith("# labels\n")
    mermaid = re.search(r"```mermaid\n(.*?)```", card, re.S).group(1)
    assert "n_label[" in mermaid and "n_chain_input --> n_label" in mermaid and "n_not_row1 --> n_again" in mermaid
    assert "engine keyed (scripted: m-keyed)" in mermaid
    assert "Engine `envkeyed` (backend `scripted`, model `m-env`)" in card
    label = figures["steps"]["label"]
    assert (
        f"| `label` | step | {label['rows_in']} | {label['ok']} | {label['failed']} | {label['filtered']} | {label['input_tokens']} |"
        in card
    )
    assert label["failed"] == 1, "row3 was refused"
    assert f"| (input) | input | {figures['input']['rows']} |" in card
    assert "Made with chainette 0.1.0 (`chainette run`; backends: local 0), published with chainette 0.1.0" in card
    assert "prompts and output schemas are not shown" in card
    assert 'load_dataset("org/labels", split="train")' in card


def test_card_with_the_chain_shows_prompts_and_schemas_with_secrets_masked(run_dir, tmp_path):
    push(run_dir, "org/labels", dry_run=tmp_path / "preview", chain=labels_chain())
    card = (tmp_path / "preview" / "README.md").read_text()
    assert "```jinja\n<<{{text}}>>\n```" in card
    assert "```jinja\nLabel the text; never write **********.\n```" in card, "the key quoted in a prompt is masked"
    schemas = [json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", card, re.S)]
    assert Label.model_json_schema() in schemas
    assert "Function `not_row1`" in card


def test_another_chain_is_refused(run_dir, tmp_path):
    with pytest.raises(ChainetteError, match="is not the one that made the run.*nodes or edges differ"):
        push(run_dir, "org/labels", dry_run=tmp_path / "a", chain=Chain(name="labels", steps=labels_chain().nodes[:1]))
    with pytest.raises(ChainetteError, match="prompts, models or sampling changed"):
        push(run_dir, "org/labels", dry_run=tmp_path / "b", chain=labels_chain(system_prompt="Another prompt."))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_errors_config_only_when_asked(run_dir, tmp_path):
    without = push(run_dir, "org/labels", dry_run=tmp_path / "without")
    assert "errors" not in without.configs and "errors.jsonl" not in written(tmp_path / "without")
    done = push(run_dir, "org/labels", dry_run=tmp_path / "with", include_errors=True)
    assert done.configs[-1] == "errors"
    config = front_matter((tmp_path / "with" / "README.md").read_text())["configs"][-1]
    assert config == {"config_name": "errors", "data_files": [{"split": "train", "path": "errors.jsonl"}]}
    assert (tmp_path / "with" / "errors.jsonl").read_bytes() == (run_dir / "errors.jsonl").read_bytes()


def test_state_and_logs_are_never_published(run_dir, tmp_path):
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "vllm-x.log").write_text("server log")
    (run_dir / "label" / "notes.txt").write_text("not an output file")
    assert (run_dir / ".chainette" / "manifest.json").exists()
    done = push(run_dir, "org/labels", dry_run=tmp_path / "preview", include_errors=True)
    files = written(tmp_path / "preview")
    assert not any(path.startswith((".chainette", "logs")) or path.endswith(".txt") for path in files)
    assert set(done.paths) == files


def test_parquet_run_publishes_parquet_files_only(scripted, tokens, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    scripted(echo)
    register_engines()
    out = tmp_path / "out"
    labels_chain().run([{"text": f"row{i}"} for i in range(4)], output_dir=out, progress=False, output_format="parquet")
    assert list((out / ".chainette" / "outputs" / "label").glob("*.jsonl")), "the JSONL the Parquet files were made from"
    push(out, "org/labels", dry_run=tmp_path / "preview")
    files = written(tmp_path / "preview")
    assert {"flattened/000.parquet", "label/000.parquet", "again/000.parquet"} <= files
    assert not any(path.startswith(".chainette") or (path.endswith(".jsonl") and "/" in path) for path in files)
    card = (tmp_path / "preview" / "README.md").read_text()
    assert {"split": "train", "path": "label/*.parquet"} in front_matter(card)["configs"][1]["data_files"]
    rows = pq.read_table(tmp_path / "preview" / "label" / "000.parquet").num_rows
    assert f"| `label` | {rows} | `label/*.parquet` |" in card


def test_no_secret_in_any_written_byte_or_output(run_dir, tmp_path, capsys, every_byte):
    code = main(["push", str(run_dir), "org/labels", "--dry-run", str(tmp_path / "preview"), "--include-errors"])
    assert code == 0
    assert_no_secret(every_byte(tmp_path / "preview"), "the dry run's files")
    captured = capsys.readouterr()
    assert_no_secret(captured.out + captured.err, "the command's output")
    assert "Dry run: wrote the card and 7 files" in captured.out


def test_a_file_holding_a_secret_is_refused_without_showing_it(scripted, tokens, tmp_path, monkeypatch):
    scripted(lambda request, attempt: json.dumps({"label": f"my key is {ENV_TOKEN}"}))
    register_engines()
    out = tmp_path / "out"
    labels_chain().run([{"text": "row0"}], output_dir=out, progress=False)
    # As in a fresh `chainette push`: graph.json names the env var.
    monkeypatch.setattr("chainette.hub.layout.registered_secrets", frozenset)
    with pytest.raises(ChainetteError) as raised:
        push(out, "org/labels", dry_run=tmp_path / "preview")
    assert "flattened/000.jsonl holds the value of a secret" in str(raised.value)
    assert_no_secret(str(raised.value), "the error")
    assert not (tmp_path / "preview").exists()


def test_upload_is_one_commit_of_the_dry_run_files(run_dir, tmp_path, hub):
    preview = push(run_dir, "org/labels", dry_run=tmp_path / "preview", include_errors=True, chain=labels_chain())
    done = push(run_dir, "hf:org/labels", private=True, include_errors=True, message="First labels", chain=labels_chain())
    assert len(hub.commits) == 1
    (commit,) = hub.commits
    assert commit.repo_id == "org/labels" and commit.summary == "First labels" and commit.deleted == []
    assert sorted(commit.added) == list(done.paths) == list(preview.paths)
    for path, data in commit.added.items():
        assert data == (tmp_path / "preview" / path).read_bytes(), path
    assert hub.repos["org/labels"].private is True
    assert hub.calls().count("POST /api/datasets/org/labels/commit/main") == 1
    assert done.url == f"{hub.url}/datasets/org/labels" and done.commit_url.startswith(f"{hub.url}/datasets/org/labels/commit/")
    for request in hub.received:
        assert_no_secret(request.body, f"{request.method} {request.path}")


def test_a_new_push_replaces_the_files_an_earlier_one_left(run_dir, hub):
    old = {".gitattributes": b"", "label/001.jsonl": b"{}\n", "errors.jsonl": b"{}\n", "hidden/000.jsonl": b"{}\n", "notes.md": b"mine"}
    hub.repos["org/labels"] = Repo(private=False, files=dict(old))
    done = push(run_dir, "org/labels")
    (commit,) = hub.commits
    assert sorted(commit.deleted) == sorted(done.deleted) == ["errors.jsonl", "hidden/000.jsonl", "label/001.jsonl"]
    assert set(hub.repos["org/labels"].files) == {".gitattributes", "notes.md", *done.paths}


def test_private_is_refused_for_an_existing_public_repository(run_dir, hub):
    hub.repos["org/labels"] = Repo(private=False)
    with pytest.raises(ChainetteError, match="already exists and is public.*nothing was uploaded"):
        push(run_dir, "org/labels", private=True)
    assert hub.commits == []


def test_a_refused_token_is_one_paragraph_without_the_token(run_dir, capsys, monkeypatch):
    with StandInHub("hf_theonlyrighttoken") as server:
        point_hub_at(monkeypatch, server.url)
        assert main(["push", str(run_dir), "org/labels"]) == 1
    err = capsys.readouterr().err
    assert "refused the token (HTTP 401): set HF_TOKEN" in err and "Traceback" not in err
    assert_no_secret(err, "the error")
    assert server.commits == []


def test_a_token_that_may_not_write(run_dir, monkeypatch):
    with StandInHub(HUB_TOKEN, read_only=True) as server:
        point_hub_at(monkeypatch, server.url)
        with pytest.raises(ChainetteError, match=r"may not write to org/labels \(HTTP 403\)"):
            push(run_dir, "org/labels")


def test_an_unreachable_hub(run_dir, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    point_hub_at(monkeypatch, f"http://127.0.0.1:{port}")
    with pytest.raises(ChainetteError, match=f"Publishing org/labels to http://127.0.0.1:{port} failed") as raised:
        push(run_dir, "org/labels")
    assert_no_secret(str(raised.value), "the error")


def test_no_token_stops_before_any_request(run_dir, tmp_path):
    pytest.importorskip("huggingface_hub")
    with StandInHub(HUB_TOKEN) as server:
        env = {**_clean_env(), "HF_ENDPOINT": server.url, "HF_HOME": str(tmp_path / "hf-home")}
        done = subprocess.run(
            [sys.executable, "-m", "chainette", "push", str(run_dir), "org/labels"], capture_output=True, text=True, env=env
        )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "No Hugging Face token found: set HF_TOKEN" in done.stderr
    assert server.received == []


def test_missing_library_names_the_extra_and_dry_run_still_works(run_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ChainetteError, match=re.escape("pip install 'chainette-core[hub]'")):
        push(run_dir, "org/labels")
    assert isinstance(push(run_dir, "org/labels", dry_run=tmp_path / "preview"), Pushed)


@pytest.mark.parametrize("repo", ["labels", "org/na me", "hf:../x", "https://huggingface.co/datasets/org/x", "org/x/y"])
def test_bad_repository_names(repo):
    with pytest.raises(ChainetteError, match="is not a dataset repository: write it org/name or hf:org/name"):
        parse_repo(repo)


def test_repository_names():
    assert parse_repo("hf:my-org/my.data_1") == parse_repo("my-org/my.data_1") == "my-org/my.data_1"


def test_cli_errors_for_what_is_not_a_completed_run(run_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["push", str(tmp_path / "empty"), "org/x", "--dry-run", str(tmp_path / "p")]) == 1
    assert "holds no finished chainette run (graph.json and run.json missing)" in capsys.readouterr().err
    assert main(["push", str(tmp_path / "missing"), "org/x", "--dry-run", str(tmp_path / "p")]) == 1
    assert "is not a directory" in capsys.readouterr().err
    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped)
    figures = json.loads((stopped / "run.json").read_text())
    (stopped / "run.json").write_text(json.dumps({**figures, "status": "interrupted"}))
    assert main(["push", str(stopped), "org/x", "--dry-run", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert "did not complete (status interrupted)" in err and "resume it" in err and "Traceback" not in err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["push", str(run_dir), "org/x", "--dry-run", str(tmp_path / "full")]) == 1
    assert "is not an empty folder" in capsys.readouterr().err
    assert main(["push", str(run_dir), "nope", "--dry-run", str(tmp_path / "p")]) == 1
    assert "'nope' is not a dataset repository" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_cli_push_of_the_example_with_its_chain(tmp_path, capsys):
    out = tmp_path / "runs" / "reviews"
    assert main(["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(out), "-q"]) == 0
    capsys.readouterr()
    args = ["push", str(out), "hf:my-org/reviews", "--dry-run", str(tmp_path / "preview"), "--chain", f"{EXAMPLE}/chain.py:chain"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "configs: flattened, sentiment, confident, to_fr, to_de, summary" in captured.out
    assert "--chain" not in captured.err
    card = (tmp_path / "preview" / "README.md").read_text()
    assert 'subgraph group_0["branch fr"]' in card and 'n_fr{{"join as fr"}}' in card
    assert "You label the sentiment of product reviews." in card and "Sampling: `temperature=0.0`." in card


def test_cli_upload(run_dir, hub, capsys):
    assert main(["push", str(run_dir), "hf:org/labels", "--private", "-m", "From the CLI"]) == 0
    out = capsys.readouterr().out
    assert f"to {hub.url}/datasets/org/labels in one commit" in out and "Commit: " in out
    assert [commit.summary for commit in hub.commits] == ["From the CLI"] and hub.repos["org/labels"].private


def test_push_help_and_import_load_no_hub_library():
    code = (
        "import sys\nimport chainette\nassert 'huggingface_hub' not in sys.modules\n"
        "from chainette.cli import main\nsys.argv = ['chainette', 'push', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\nassert 'huggingface_hub' not in sys.modules, 'push --help'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env())
    assert done.returncode == 0, done.stderr
    assert "--include-errors" in done.stdout and "--dry-run" in done.stdout


def _clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT")}
    return {**env, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
