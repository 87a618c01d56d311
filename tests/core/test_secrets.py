"""Secrets by type: every SecretStr in an engine's options (and its key) is masked or redacted wherever chainette shows or writes it."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
import pytest

from chainette import hookimpl, register_engine
from chainette.backends.fake import FakeClient, FakeOptions
from chainette.cli import main
from chainette.errors import EngineError
from chainette.plugins import get_plugins
from chainette.secrets import MASK, engine_secrets, redact, redact_data

from .test_cli import EXAMPLE

KEY = "sk-PLANTED-key-7f3e9c"
TOKEN = "tok-PLANTED-2b4a61"
HEADER = "hdr-PLANTED-9d0e5c"
SPARE = "spr-PLANTED-c31f08"
PASSWORD = "pwd-PLANTED-e5a7b2"


class Login(BaseModel):
    user: str
    password: SecretStr


class VaultOptions(FakeOptions):
    """A third-party backend's options: a secret in each kind of container, and a plain string that is not one."""

    token: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    spare_tokens: list[SecretStr] = Field(default_factory=list)
    login: Login | None = None
    region: str = "eu"
    refuse: bool = False


class VaultBackend:
    """Answers like the fake backend; with refuse=True its start fails with a message that quotes the token (careless)."""

    @hookimpl
    def engine_options(self):
        return VaultOptions

    @hookimpl
    def ensure_running(self, config):
        if config.options.refuse:
            raise EngineError(f"the vault refused token {config.options.token.get_secret_value()}", kind="authentication")

    @hookimpl
    def make_client(self, config):
        return FakeClient(config)


@pytest.fixture(autouse=True)
def _vault_backend() -> None:
    """The third-party backend `vault`, registered with the plugin manager."""
    get_plugins().register("vault", VaultBackend())


def vault_engine(**extra) -> dict:
    """register_engine() arguments of a vault engine with every secret planted."""
    return {
        "name": "llm",
        "backend": "vault",
        "model": "fake-model",
        "api_key": KEY,
        "token": TOKEN,
        "headers": {"X-Auth": HEADER},
        "spare_tokens": [SPARE],
        "login": {"user": "me", "password": PASSWORD},
        **extra,
    }


def vllm_engine(url: str) -> dict:
    """register_engine() arguments of a vllm engine on the server at `url`, with a planted key and extra_env token."""
    pytest.importorskip("chainette_vllm")
    return {
        "name": "llm",
        "backend": "vllm",
        "model": "fake-model",
        "endpoint": f"{url}/v1",
        "api_key": KEY,
        "extra_env": {"HF_TOKEN": TOKEN},
    }


def write_engines(tmp_path: Path, engine: dict) -> Path:
    path = tmp_path / "engines.yaml"
    path.write_text(json.dumps({"engines": [engine]}))  # JSON is YAML
    return path


def test_every_secret_container_is_found_by_type(monkeypatch):
    planted = {TOKEN, HEADER, SPARE, PASSWORD}
    assert engine_secrets(register_engine(**vault_engine())) == {KEY, *planted}
    monkeypatch.setenv("VAULT_KEY", "from-the-environment")
    from_env = register_engine(**vault_engine(api_key=None, api_key_env="VAULT_KEY"))
    assert engine_secrets(from_env) == {"from-the-environment", *planted}


def test_public_dict_masks_every_secret_option():
    options = register_engine(**vault_engine()).public_dict()["options"]
    assert (options["token"], options["headers"], options["spare_tokens"]) == (MASK, {"X-Auth": MASK}, [MASK])
    assert options["login"] == {"user": "me", "password": MASK}
    assert options["region"] == "eu"


def test_redact_replaces_longest_first_and_leaves_short_values():
    assert redact("sk-12345 then sk-1234 and abc", ["abc", "sk-1234", "sk-12345"]) == f"{MASK} then {MASK} and abc"


def test_redact_data_reaches_every_string_of_nested_data():
    data = {"error": f"refused {TOKEN}", "steps": [{TOKEN: (1, f"x{TOKEN}")}], "seconds": 1.5, "resumed": None}
    assert redact_data(data, {TOKEN}) == {"error": f"refused {MASK}", "steps": [{MASK: [1, f"x{MASK}"]}], "seconds": 1.5, "resumed": None}


@pytest.mark.parametrize("backend", ["vault", "vllm"])
def test_planted_secrets_are_never_written_or_shown(backend, tmp_path, capsys, fake_server, every_byte):
    engines = write_engines(tmp_path, vault_engine() if backend == "vault" else vllm_engine(fake_server.base_url))
    out = tmp_path / "out"
    chain = f"{EXAMPLE}/chain.py:chain"
    assert main(["run", chain, "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(out), "-e", str(engines)]) == 0
    for output_format in ("tree", "mermaid", "json"):
        assert main(["inspect", chain, "-e", str(engines), "-f", output_format]) == 0
    shown = capsys.readouterr()

    assert b"PLANTED" not in every_byte(out) + shown.out.encode() + shown.err.encode()
    options = json.loads((out / "graph.json").read_text())["engines"]["llm"]["options"]
    assert MASK in json.dumps(options), "the secret options are described, masked"
    assert (out / "run.json").is_file() and (out / ".chainette").is_dir()


def test_a_secret_quoted_in_an_error_is_redacted_by_the_cli(tmp_path, capsys):
    engines = write_engines(tmp_path, vault_engine(refuse=True))
    code = main(["run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "out"), "-e", str(engines)])
    shown = capsys.readouterr()
    assert code == 1
    assert f"the vault refused token {MASK}" in shown.err
    assert "PLANTED" not in shown.out + shown.err


def test_events_run_json_and_errors_never_quote_a_secret(scripted, tmp_path):
    from chainette import Chain, RowError, Step

    from .conftest import Label, Text

    key = "sk-planted-in-an-error-0123"
    scripted(lambda request, attempt: RowError(f"server says: bad key {key}", kind="http_400"))
    register_engine("s", backend="scripted", model="m", api_key=key)
    events = []
    step = Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt="{{text}}")
    Chain(name="c", steps=[step]).run([{"text": "a"}], output_dir=tmp_path / "o", reporter=events.append)
    shown = "\n".join(json.dumps(event.to_json()) for event in events)
    assert "server says: bad key" in shown and key not in shown
    assert key not in (tmp_path / "o" / "run.json").read_text()
    errors = (tmp_path / "o" / "errors.jsonl").read_text()
    assert "server says: bad key" in errors and key not in errors
