"""Secrets by type: every SecretStr in an engine's options (and its key) is masked or redacted wherever chainette shows or writes it."""

from __future__ import annotations

from collections.abc import Iterator
import json
from pathlib import Path
import re
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, Field, SecretStr
import pytest

from chainette import hookimpl, register_engine
from chainette.backends.fake import FakeClient, FakeOptions
from chainette.cli import main
from chainette.engines import check_keys
from chainette.errors import ConfigError, EngineError
from chainette.plugins import get_plugins
from chainette.secrets import MASK, engine_secrets, public_url, redact, redact_data

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
    crash: bool = False


class VaultBackend:
    """Answers like the fake backend; with refuse=True its start fails with a message that quotes the token (careless),
    with crash=True it fails with an unexpected error quoting it in every escaped and encoded form."""

    @hookimpl
    def engine_options(self):
        return VaultOptions

    @hookimpl
    def ensure_running(self, config):
        token = config.options.token.get_secret_value()
        if config.options.refuse:
            raise EngineError(f"the vault refused token {token}", kind="authentication")
        if config.options.crash:
            raise RuntimeError(f"{token!r} {token.encode()!r} {json.dumps(token)} {quote(token, safe='')} {quote_plus(token)}")

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


@pytest.fixture
def served_engine(request, fake_server) -> Iterator[dict]:
    """register_engine() arguments of the parametrised backend's engine, with secrets planted, served where it needs a
    server: vllm by the OpenAI-format FakeServer, anthropic by the Messages API stand-in taking only the planted key."""
    if request.param == "vault":
        yield vault_engine()
    elif request.param == "vllm":
        yield vllm_engine(fake_server.base_url)
    else:
        testing = pytest.importorskip("chainette_anthropic.testing")
        with testing.FakeAnthropic(api_key=KEY) as server:
            yield {"name": "llm", "backend": "anthropic", "model": "fake-model", "endpoint": server.base_url, "api_key": KEY}
            assert server.chat_requests(), "the run reached the stand-in, with the key it takes"


@pytest.mark.parametrize("served_engine", ["vault", "vllm", "anthropic"], indirect=True)
def test_planted_secrets_are_never_written_or_shown(served_engine, tmp_path, capsys, every_byte):
    engines = write_engines(tmp_path, served_engine)
    out = tmp_path / "out"
    chain = f"{EXAMPLE}/chain.py:chain"
    assert main(["run", chain, "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(out), "-e", str(engines)]) == 0
    for output_format in ("tree", "mermaid", "json"):
        assert main(["inspect", chain, "-e", str(engines), "-f", output_format]) == 0
    shown = capsys.readouterr()

    assert b"PLANTED" not in every_byte(out) + shown.out.encode() + shown.err.encode()
    options = json.loads((out / "graph.json").read_text())["engines"]["llm"]["options"]
    if served_engine["backend"] != "anthropic":  # its secret is the key alone, which options do not hold
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


ODD = "tok PLANTED/'\"+é\\x\n"  # a secret every escaping and encoding changes


@pytest.mark.parametrize(
    "shown",
    [
        ODD,
        repr(ODD),
        repr(ODD.encode()),
        json.dumps(ODD),
        json.dumps(ODD, ensure_ascii=False),
        quote(ODD, safe=""),
        quote(ODD),
        re.sub("%[0-9A-F]{2}", lambda escape: escape.group().lower(), quote(ODD)),
        quote_plus(ODD),
        json.dumps(repr(ODD)),
        repr(json.dumps(ODD)),
    ],
)
def test_redact_finds_every_form_of_a_secret(shown):
    redacted = redact(f"error: {shown}!", [ODD])
    assert "PLANTED" not in redacted and MASK in redacted
    assert len(redacted) <= len(f"error: {MASK}!") + 4, f"no part of the secret is left (at most its quotes): {redacted}"


@pytest.mark.parametrize("debug", [[], ["--debug"]])
def test_an_unexpected_error_quoting_a_secret_shows_a_redacted_traceback(tmp_path, capsys, debug):
    engines = write_engines(tmp_path, vault_engine(token=ODD, crash=True))
    code = main(
        [*debug, "run", f"{EXAMPLE}/chain.py:chain", "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "out"), "-e", str(engines)]
    )
    shown = capsys.readouterr()
    assert code == 1
    assert "Traceback" in shown.err and "RuntimeError" in shown.err and MASK in shown.err
    assert "PLANTED" not in shown.out + shown.err
    assert "PLANTED" not in (tmp_path / "out" / "run.json").read_text()


def test_debug_shows_a_redacted_traceback_of_an_error_quoting_a_secret(tmp_path, capsys):
    engines = write_engines(tmp_path, vault_engine(refuse=True))
    code = main(
        [
            "--debug",
            "run",
            f"{EXAMPLE}/chain.py:chain",
            "-i",
            str(EXAMPLE / "inputs.jsonl"),
            "-o",
            str(tmp_path / "out"),
            "-e",
            str(engines),
        ]
    )
    shown = capsys.readouterr()
    assert code == 1
    assert "Traceback" in shown.err and f"the vault refused token {MASK}" in shown.err
    assert "PLANTED" not in shown.out + shown.err


def test_keys_are_stripped_and_a_control_character_inside_is_refused_naming_the_option(monkeypatch):
    assert register_engine(**vault_engine(api_key=f" {KEY}\n")).resolve_api_key() == KEY
    monkeypatch.setenv("VAULT_KEY", f"{KEY}\r\n")
    from_env = register_engine(**vault_engine(api_key=None, api_key_env="VAULT_KEY"))
    assert from_env.resolve_api_key() == KEY
    assert KEY in engine_secrets(from_env) and f"{KEY}\r\n" in engine_secrets(from_env)
    with pytest.raises(ConfigError, match="Engine 'llm': api_key holds a control character") as refused:
        register_engine(**vault_engine(api_key=f"{KEY}\nsk-other"))
    assert "PLANTED" not in str(refused.value)
    monkeypatch.setenv("VAULT_KEY", f"{KEY}\x7fx")
    with pytest.raises(ConfigError, match="Engine 'llm': the environment variable VAULT_KEY holds a control character") as refused:
        from_env.resolve_api_key()
    assert "PLANTED" not in str(refused.value)


def test_a_backend_default_key_variable_is_redacted_and_may_be_unset(monkeypatch):
    openai = pytest.importorskip("chainette_openai")
    config = register_engine("llm", backend="openai", model="m", endpoint="http://127.0.0.1:9/v1")
    monkeypatch.delenv(openai.DEFAULT_KEY_ENV, raising=False)
    assert config.resolve_api_key(default_env=openai.DEFAULT_KEY_ENV) is None, "a local server needs no key"
    check_keys({"llm": config})
    monkeypatch.setenv(openai.DEFAULT_KEY_ENV, f"{KEY}\n")
    assert KEY in engine_secrets(config)
    monkeypatch.setenv(openai.DEFAULT_KEY_ENV, f"{KEY}\nsk-other")
    with pytest.raises(ConfigError, match="Engine 'llm': the environment variable OPENAI_API_KEY holds a control character"):
        check_keys({"llm": config})


def test_public_url_hides_credentials_and_query_values():
    url = f"http://me:{PASSWORD}@h:8000/v1?api-key={TOKEN}&{SPARE}&flag="
    assert public_url(url) == f"http://h:8000/v1?api-key={MASK}&{MASK}&flag={MASK}"
    config = register_engine(**vault_engine(endpoint=[url, f"http://{TOKEN}@h2/v1?k={quote_plus(HEADER + ' x')}"]))
    assert {PASSWORD, TOKEN, SPARE, HEADER + " x"} <= engine_secrets(config)
    assert "me" not in engine_secrets(config), "a user name alone is not masked everywhere"
    assert "PLANTED" not in json.dumps(config.public_dict())


@pytest.mark.parametrize("where", ["engines", "chain", "option"])
def test_a_secret_field_s_validation_error_never_echoes_the_value(tmp_path, capsys, where):
    if where in ("engines", "option"):
        field = "api_key" if where == "engines" else "token"
        engines = write_engines(tmp_path, {**vault_engine(), field: 31415926})
        code = main(["inspect", f"{EXAMPLE}/chain.py:chain", "-e", str(engines)])
    else:
        chain = tmp_path / "chain.yaml"
        chain.write_text(json.dumps({"name": "c", "engines": [{**vault_engine(), "api_key": 31415926}], "steps": []}))
        code = main(["inspect", str(chain)])
    shown = capsys.readouterr()
    assert code == 1
    if where == "option":
        assert "token: Input should be a valid string" in shown.err
    else:
        assert "api_key: Input should be a valid string (the value is not shown: it is secret" in shown.err
    assert "31415926" not in shown.out + shown.err
