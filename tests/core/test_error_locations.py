"""One way to read YAML with file:line errors, one validation-error line, one "the user's line": each checked where it is used."""

from __future__ import annotations

from pathlib import Path
import sys
import textwrap

from pydantic import BaseModel, Field, ValidationError
import pytest

from chainette.chainfile import load_chain_file
from chainette.cli.loading import load_chain
from chainette.engines import get_engine, load_engines_from_yaml
from chainette.errors import ConfigError, describe_validation_error, raised_at
from chainette.inputs import RawRow, decode, validate

MODELS = """
from pydantic import BaseModel


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def same(item):
    return item
"""


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch):
    """Chain files put their folder on sys.path and import `models`: undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def chain_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "models.py").write_text(MODELS)
    path = tmp_path / "chain.yaml"
    path.write_text(textwrap.dedent(text))
    with pytest.raises(ConfigError) as caught:
        load_chain_file(path)
    return str(caught.value)


def engines_error(tmp_path: Path, text: str | bytes) -> str:
    path = tmp_path / "engines.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_engines_from_yaml(path)
    return str(caught.value)


@pytest.mark.parametrize("loader", [load_chain_file, load_engines_from_yaml])
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            b"engines:\n  - name: [a\n",
            ":3: invalid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow sequence on line 2)",
        ),
        (b"engines:\n  - name: a\n\tbackend: fake\n", ":3: invalid YAML: found character '\\t' that cannot start any token."),
        (b"engines:\n  - name: a\n    backend: *fake\n", ":3: invalid YAML: found undefined alias 'fake'."),
        (b'engines:\n  - name: "a\x00"\n', ":2: the character #x0000 is not allowed in YAML; remove it."),
        (b"engines:\n  - name: caf\xe9\n", ":2: the file is not UTF-8 text (invalid continuation byte at byte 22); save it as UTF-8."),
    ],
)
def test_unreadable_yaml_names_file_and_line_in_chain_and_engines_files(tmp_path, loader, content, expected):
    path = tmp_path / "file.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        loader(path)
    message = str(caught.value)
    assert message.startswith(f"{path}{expected}")
    assert "<unicode string>" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("models: []\n", "engines.yaml:1: expected a top-level 'engines:' list"),
        ("engines: {name: a}\n", "engines.yaml:1: expected a top-level 'engines:' list"),
        ("engines:\n  - name: a\n    model: m\n", "engines.yaml:2: engines[0]: missing required key 'backend'."),
        (
            "engines:\n  - name: a\n    backend: fake\n    model: m\n    lazy: sometimes\n",
            "engines.yaml:5: engines[0].lazy: Input should be a valid boolean",
        ),
        ("engines:\n  - just a name\n", "engines.yaml:2: engines[0]: Input should be a valid dictionary"),
        ("engines:\n  - name: a\n    backend: nope\n    model: m\n", "engines.yaml:2: Unknown backend 'nope'."),
        (
            "engines:\n  - name: a\n    backend: fake\n    model: m\n    timeout: -1\n",
            "engines.yaml:2: Engine 'a': invalid option for backend 'fake': timeout:",
        ),
    ],
)
def test_engines_file_problems_name_the_line(tmp_path, text, expected):
    assert expected in engines_error(tmp_path, text)


def test_engines_file_registers_every_declared_field(tmp_path):
    (tmp_path / "engines.yaml").write_text(
        "engines:\n  - name: a\n    backend: fake\n    model: m\n    endpoint: [http://x:1, http://y:2]\n"
        "    api_key_env: KEY\n    lazy: false\n    max_concurrency: 2\n"
    )
    load_engines_from_yaml(tmp_path / "engines.yaml")
    engine = get_engine("a")
    assert (engine.urls, engine.api_key_env, engine.lazy, engine.options.max_concurrency) == (["http://x:1", "http://y:2"], "KEY", False, 2)


def test_engine_option_errors_in_a_chain_file_name_the_option_line(tmp_path):
    text = """\
    name: c
    engines:
      - name: llm
        backend: fake
        model: m
        max_concurrency: 0
    steps:
      - apply: models:same
    """
    assert chain_error(tmp_path, text).startswith(
        f"{tmp_path / 'chain.yaml'}:6: Engine 'llm': invalid option for backend 'fake': max_concurrency:"
    )


NESTED = """\
name: nested
steps:
  - id: first
    input_model: models:Text
    output_model: models:Label
    engine: e
    user_prompt: "{{text}}"
  - parallel:
      - id: alone
        output_model: models:Label
        engine: e
        user_prompt: "{{first.label}}"
      - branch: b
        join: joined
        steps:
          - apply: models:same
            id: inner
            output_model: models:Label
          - parallel:
              - branch: deep
                steps:
                  - id: deepest
                    output_model: models:Label
                    engine: e
                    system_prompt: "{{inner.label}}"
                    user_prompt: "{{first.label}}"
  - id: last
    output_model: models:Label
    engine: e
    user_prompt: "{{joined.label}}"
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"{{first.label}}"\n      - branch',
            '"{{first.lable}}"\n      - branch',
            ":12: Step 'alone' user_prompt: 'first.lable' cannot exist",
        ),
        (
            'system_prompt: "{{inner.label}}"',
            'system_prompt: "{{inner.nope}}"',
            ":25: Step 'deepest' system_prompt: 'inner.nope' cannot exist",
        ),
        (
            'user_prompt: "{{first.label}}"\n  - id: last',
            'user_prompt: "{{frist}}"\n  - id: last',
            ":26: Step 'deepest' user_prompt: template variable 'frist'",
        ),
        ("            id: inner\n", "            id: inner\n            input_model: models:Text\n", ":18: 'inner' expects Text as input"),
        ("  - id: last", "  - id: alone", ":27: The id 'alone' is used twice (step)"),
        ("        join: joined", "        join: first", ":14: The id 'first' is used twice (join alias)"),
        ('"{{joined.label}}"', '"{{joined.labels}}"', ":30: Step 'last' user_prompt: 'joined.labels' cannot exist"),
    ],
)
def test_chain_checks_name_the_line_of_the_piece_at_fault_at_any_depth(tmp_path, old, new, expected):
    assert old in NESTED
    message = chain_error(tmp_path, NESTED.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'chain.yaml'}{expected}")


GROUPS = """\
name: groups
steps:
  - id: label
    input_model: models:Text
    output_model: models:Label
    engine: e
    user_prompt: "{{text}}"
  - apply: models:same
    id: again
    output_model: models:Label
  - parallel:
      - branch: a
        join: a_out
        steps:
          - apply: models:same
            id: in_a
      - branch: b
        join: b_out
        steps:
          - apply: models:same
            id: in_b
  - id: summary
    output_model: models:Label
    engine: e
    system_prompt: "{{a_out.label}}"
    user_prompt: "{{b_out.label}}"
"""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"{{b_out.label}}"', '"{{label}}"', ":26: Step 'summary' user_prompt: '{{label}}' is ambiguous"),
        ('"{{a_out.label}}"', '"{{a_out.label"', ":25: Step 'summary' system_prompt: template syntax error"),
        ("id: in_b", "id: again", ":20: The id 'again' is used twice (apply)"),
        ("join: b_out", "join: a_out", ":18: The id 'a_out' is used twice (join alias)"),
        ("  - id: summary", "  - id: a_out", ":13: The id 'a_out' is used twice (join alias)"),
    ],
)
def test_every_chain_check_names_the_line_of_the_key_at_fault(tmp_path, old, new, expected):
    assert old in GROUPS
    message = chain_error(tmp_path, GROUPS.replace(old, new, 1))
    assert message.startswith(f"{tmp_path / 'chain.yaml'}{expected}")


class Inner(BaseModel):
    count: int = Field(ge=0)


class Outer(BaseModel):
    name: str
    inner: Inner


def test_describe_validation_error_is_one_line_per_problem_with_its_location():
    with pytest.raises(ValidationError) as caught:
        Outer.model_validate({"inner": {"count": -1}})
    assert describe_validation_error(caught.value) == "name: Field required; inner.count: Input should be greater than or equal to 0"
    assert describe_validation_error(caught.value, "field '{}'").startswith("field 'name': Field required; field 'inner.count': ")
    with pytest.raises(ValidationError) as caught:
        Inner.model_validate([1])
    assert describe_validation_error(caught.value).startswith("(root): Input should be a valid dictionary")


def test_input_rows_describe_their_validation_errors():
    with pytest.raises(
        ValueError, match=r"^in.jsonl:3: does not match Outer: field 'name': Field required; field 'inner': Field required$"
    ):
        row = RawRow("in.jsonl:3", "{}")
        validate(row, decode(row), Outer)


def test_raised_at_prefers_the_users_own_line_and_a_syntax_errors_own(tmp_path):
    (tmp_path / "user_code.py").write_text("import json\n\ndef load():\n    return json.loads('{')\n")
    sys.path.insert(0, str(tmp_path))
    import user_code

    with pytest.raises(ValueError) as caught:
        user_code.load()
    assert raised_at(caught.value, [tmp_path]) == f" at {tmp_path / 'user_code.py'}:4"
    assert raised_at(caught.value).startswith(" at ") and "json" in raised_at(caught.value)
    syntax = SyntaxError("invalid syntax", ("broken.py", 7, 1, "def (:"))
    assert raised_at(syntax) == " at broken.py:7"
    assert raised_at(RuntimeError("never raised")) == ""


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        ("import json\n\nchain = json.loads('{')\n", 3, "JSONDecodeError"),
        ("x = 1\n\ndef broken(:\n    pass\n", 3, "SyntaxError"),
    ],
)
def test_a_python_chain_that_fails_on_import_names_its_own_line(tmp_path, source, line, error):
    path = tmp_path / "my_chain.py"
    path.write_text(source)
    with pytest.raises(ConfigError) as caught:
        load_chain(f"{path}:chain")
    assert str(caught.value).startswith(f"Loading {path} failed at {path}:{line}: {error}: ")
