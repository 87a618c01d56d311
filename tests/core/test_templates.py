"""Prompt templates render in Jinja's immutable sandbox: the classic escape payloads are refused (when the chain is
built where the template shows them, else on each row), nothing they ask for runs, and row values are never rendered."""

from __future__ import annotations

import json
from pathlib import Path
import textwrap

from jinja2 import StrictUndefined
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment
import pytest

from chainette import Chain, ConfigError, EngineError, Step, register_engine
from chainette.chainfile import load_chain_file
from chainette.cli import main
from chainette.templates import compile_template

from .conftest import Label, Text


def touch(marker: Path) -> str:
    """A payload that would create `marker` if a template could reach os.popen."""
    return "{{ cycler.__init__.__globals__.os.popen('touch " + str(marker) + "').read() }}"


def touch_unseen(marker: Path) -> str:
    """The same, with the attribute names built at render time, out of the static check's sight."""
    dunder = "'_' ~ '_globals_' ~ '_'"
    return "{{ (lipsum|attr(" + dunder + ")).os.popen('touch " + str(marker) + "').read() }}"


# Payloads the chain check sees, refused when the chain is built; and payloads only rendering can refuse.
SEEN = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ lipsum.__globals__ }}",
    "{{ ''.format.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ text['__class__'] }}",
]
UNSEEN = {
    "{{ self._TemplateReference__context }}": "'self' is undefined",  # a plain lookup: rows have no `self`
    "{{ self._TemplateReference__context|list }}": "unsafe",
    "{% set x = [].append(1) %}{{ x }}": "unsafe",
    "{{ (lipsum|attr('_' ~ '_globals_' ~ '_')).os }}": "unsafe",
    "{{ '{0.__class__}'.format(text) }}": "unsafe",
    "{{ request }}": "'request' is undefined",
    "{{ config.items() }}": "'config' is undefined",
}


@pytest.mark.parametrize("payload", [*SEEN, *UNSEEN])
def test_every_escape_payload_is_refused_when_rendered(payload, tmp_path):
    marker = tmp_path / "marker"
    for source in (payload, touch(marker), touch_unseen(marker)):
        with pytest.raises((SecurityError, UndefinedError)):
            compile_template(source)({"text": "a row"})
    assert not marker.exists()


def test_the_fast_path_reads_attributes_through_the_sandbox():
    render = compile_template("{{ text.__class__ }} and {{ item.__class__.__mro__ }}")
    with pytest.raises(SecurityError, match="'__class__' of 'str' object is unsafe"):
        render({"text": "a row", "item": {"a": 1}})
    assert compile_template("{{ item.a }} {{ item._id }}")({"item": {"a": 1, "_id": "x"}}) == "1 x"


@pytest.mark.parametrize("path", ["item.a", "item.keys", "item.items", "item.get", "item.nested.b", "item.nested.copy", "item.__class__"])
def test_the_fast_path_reads_dict_keys_as_jinja_does(path):
    """A key that names a dict attribute (`keys`, `get`) gives the attribute, as in Jinja; any other gives the value."""
    source = "{{ " + path + " }}"
    context = {"item": {"a": 1, "keys": "k", "items": 2, "get": 3, "nested": {"b": 4, "copy": 5}, "__class__": 6}}
    jinja = ImmutableSandboxedEnvironment(undefined=StrictUndefined).from_string(source)
    try:
        expected = jinja.render(context)
    except SecurityError:
        with pytest.raises(SecurityError):
            compile_template(source)(context)
        return
    assert compile_template(source)(context) == expected
    with pytest.raises(UndefinedError):
        compile_template("{{ item.missing }}")(context)


@pytest.mark.parametrize("prompt", ["<<{{text}}>>", "{% if text %}<<{{ text }}>>{% endif %}"])
def test_row_values_reach_the_prompt_verbatim(prompt, scripted, tmp_path):
    backend = scripted(lambda request, attempt: json.dumps({"label": "x"}))
    register_engine("s", backend="scripted", model="m")
    values = ["{{ 7*7 }}", "{% raw %}{{ text }}{% endraw %}", "{{ ''.__class__ }}"]
    step = Step(id="label", input_model=Text, output_model=Label, engine_name="s", user_prompt=prompt)
    Chain(name="c", steps=[step]).run([{"text": value} for value in values], output_dir=tmp_path / "o")
    assert sorted(request.messages[-1]["content"] for request in backend.requests) == sorted(f"<<{value}>>" for value in values)


def unchecked_step(prompt: str) -> Step:
    """A step whose input model is unknown, so that the chain check cannot refuse names: only rendering can."""
    return Step(id="label", output_model=Label, engine_name="s", user_prompt=prompt)


@pytest.mark.parametrize("payload", SEEN)
def test_payloads_the_check_sees_refuse_the_chain_when_it_is_built(payload, tmp_path):
    with pytest.raises(ConfigError, match="Step 'label' user_prompt: the template reads the internal attribute '__"):
        Chain(name="c", steps=[unchecked_step(payload)])
    with pytest.raises(ConfigError, match="internal attribute '__globals__'"):
        Chain(name="c", steps=[unchecked_step(touch(tmp_path / "marker"))])
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(("payload", "reason"), [*UNSEEN.items(), (touch_unseen(Path("MARKER")), "unsafe")])
def test_payloads_only_rendering_sees_fail_their_rows_and_stop_the_step(payload, reason, scripted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = scripted(lambda request, attempt: json.dumps({"label": "x"}))
    register_engine("s", backend="scripted", model="m")
    with pytest.raises(EngineError, match="Step 'label' stopped: the prompts of its first 5 rows all failed to render"):
        Chain(name="c", steps=[unchecked_step(payload)]).run([{"text": f"row {i}"} for i in range(20)], output_dir=tmp_path / "o")
    errors = [json.loads(line) for line in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()]
    assert [error["error_type"] for error in errors] == ["template"] * 5
    assert all(error["message"].startswith("cannot render the user_prompt: ") and reason in error["message"] for error in errors)
    assert backend.requests == []
    assert not (tmp_path / "MARKER").exists()


CHAIN_YAML = """\
name: payload
engines:
  - name: llm
    backend: fake
    model: fake-model
steps:
  - id: label
    output_model: models:Label
    engine: llm
    user_prompt: {prompt}
"""

MODELS = """
from pydantic import BaseModel


class Label(BaseModel):
    label: str
"""


def chain_file(tmp_path: Path, prompt: str) -> Path:
    (tmp_path / "models.py").write_text(textwrap.dedent(MODELS))
    (tmp_path / "chain.yaml").write_text(CHAIN_YAML.format(prompt=json.dumps(prompt)))
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    return tmp_path / "chain.yaml"


@pytest.fixture
def _restore_import_state(monkeypatch):
    """Chain files put their folder on sys.path and import `models`: undo both after the test."""
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "models", raising=False)
    yield
    sys.modules.pop("models", None)


@pytest.mark.usefixtures("_restore_import_state")
def test_a_yaml_chain_carrying_a_payload_the_check_sees_is_refused_by_inspect_and_run(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = chain_file(tmp_path, touch(marker))
    with pytest.raises(ConfigError, match=r"chain.yaml:10: Step 'label' user_prompt: the template reads the internal attribute"):
        load_chain_file(path)
    assert main(["inspect", str(path)]) == 1
    assert main(["run", str(path), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "chain.yaml:10: Step 'label' user_prompt: the template reads the internal attribute '__globals__'" in err
    assert "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "o").exists()


@pytest.mark.usefixtures("_restore_import_state")
def test_a_yaml_chain_carrying_a_payload_only_rendering_sees_is_inspected_safely_and_its_run_stops(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = chain_file(tmp_path, touch_unseen(marker))
    assert main(["inspect", str(path)]) == 0
    assert not marker.exists()
    assert main(["run", str(path), "-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "Step 'label' stopped: the prompts of its first 5 rows all failed to render the same way" in err
    assert "access to attribute '__globals__' of 'function' object is unsafe" in err and "Traceback" not in err
    assert not marker.exists()
