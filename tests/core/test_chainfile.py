"""Chain files (YAML): a valid one runs like the same chain written in Python; every mistake names file:line."""

from __future__ import annotations

import importlib
import itertools
import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap

import pytest

from chainette import Branch, Chain, SamplingParams, Step, apply
from chainette.chainfile import load_chain_file
from chainette.cli.loading import load_chain
from chainette.engines import get_engine, registered_engines
from chainette.errors import ConfigError
from chainette.graph import fingerprint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "yaml-chain"

MODELS = """
from pydantic import BaseModel


class Review(BaseModel):
    text: str


class Label(BaseModel):
    label: str
    score: float


class Translation(BaseModel):
    translation: str


class Summary(BaseModel):
    headline: str


THRESHOLD = 0.5


def keep(item: Label) -> Label | list[Label]:
    return item if item.score >= 0.2 else []
"""

CHAIN = """\
name: demo
engines:
  - name: llm
    backend: fake
    model: fake-model
steps:
  - id: label
    input_model: models:Review
    output_model: models:Label
    engine: llm
    sampling:
      temperature: 0.2
      max_tokens: 64
    system_prompt: You label reviews.
    user_prompt: "Review: {{text}}"
  - apply: models:keep
  - parallel:
      - branch: fr
        join: fr
        steps:
          - id: to_fr
            output_model: models:Translation
            engine_name: llm
            user_prompt: "French: {{chain_input.text}} ({{label.label}})"
      - branch: de
        join: de
        steps:
          - id: to_de
            output_model: models:Translation
            engine: llm
            user_prompt: "German: {{chain_input.text}}"
  - id: summary
    output_model: models:Summary
    engine: llm
    user_prompt: "{{fr.translation}} / {{de.translation}} / {{label.label}}"
"""
# Line numbers of CHAIN, used by the error tests below:
#   7: - id: label        13: max_tokens         15: user_prompt (label)   16: - apply
#  17: - parallel         18: - branch: fr       19: join: fr              21: - id: to_fr
#  24: user_prompt (to_fr)                       28: - id: to_de           32: - id: summary
#  35: user_prompt (summary)


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch):
    """Chain files put their folder on sys.path and import `models`: undo both after each test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write(folder: Path, chain: str = CHAIN, models: str = MODELS, name: str = "chain.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(textwrap.dedent(models))
    path = folder / name
    path.write_text(chain)
    return path


def error_for(tmp_path: Path, chain: str, models: str = MODELS) -> str:
    path = write(tmp_path, chain, models)
    with pytest.raises(ConfigError) as caught:
        load_chain_file(path)
    return str(caught.value)


def edit(old: str, new: str, text: str = CHAIN) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def python_chain(models) -> Chain:
    to_fr = Step(
        id="to_fr", output_model=models.Translation, engine_name="llm", user_prompt="French: {{chain_input.text}} ({{label.label}})"
    )
    to_de = Step(id="to_de", output_model=models.Translation, engine_name="llm", user_prompt="German: {{chain_input.text}}")
    return Chain(
        name="demo",
        steps=[
            Step(
                id="label",
                input_model=models.Review,
                output_model=models.Label,
                engine_name="llm",
                sampling=SamplingParams(temperature=0.2, max_tokens=64),
                system_prompt="You label reviews.",
                user_prompt="Review: {{text}}",
            ),
            apply(models.keep),
            [Branch(name="fr", steps=[to_fr]).join("fr"), Branch(name="de", steps=[to_de]).join("de")],
            Step(
                id="summary",
                output_model=models.Summary,
                engine_name="llm",
                user_prompt="{{fr.translation}} / {{de.translation}} / {{label.label}}",
            ),
        ],
    )


def test_yaml_chain_runs_like_the_same_chain_in_python(tmp_path):
    loaded = load_chain_file(write(tmp_path / "chain"))
    models = importlib.import_module("models")
    assert models.__file__ == str(tmp_path / "chain" / "models.py")
    written = python_chain(models)
    assert fingerprint(loaded.nodes) == fingerprint(written.nodes)

    rows = [{"text": f"review number {i}"} for i in range(12)]
    from_yaml = loaded.run(rows, output_dir=tmp_path / "yaml")
    from_python = written.run(rows, output_dir=tmp_path / "python")
    for step in ("label", "keep", "to_fr", "to_de", "summary"):
        assert from_yaml.records(step) == from_python.records(step), step
    assert from_yaml.flattened == from_python.flattened
    assert from_yaml.flattened and all("fr.translation" in row and "summary.headline" in row for row in from_yaml.flattened)
    assert len(from_yaml.flattened) < len(rows)  # the apply filtered some rows out
    assert from_yaml.records("label")[0].keys() == {"row_id", "row_index", "label", "score"}


def test_engines_declared_in_the_file_are_registered_and_the_nodes_are_built(tmp_path):
    chain = load_chain_file(
        write(tmp_path, CHAIN.replace("model: fake-model", "model: fake-model\n    latency: 0.0\n    max_concurrency: 3"))
    )
    engine = get_engine("llm")
    assert (engine.backend, engine.model, engine.options.max_concurrency) == ("fake", "fake-model", 3)
    label = chain.nodes[0]
    assert label.sampling == SamplingParams(temperature=0.2, max_tokens=64)
    assert label.system_prompt == "You label reviews."
    assert chain.nodes[1].id == "keep" and chain.nodes[1].fn.__name__ == "keep"
    assert [(b.name, b.alias) for b in chain.nodes[2].branches] == [("fr", "fr"), ("de", "de")]
    assert chain.nodes[2].branches[0].steps[0].engine_name == "llm"  # engine_name: is accepted too
    assert chain.input_model.__name__ == "Review"


def test_optional_keys_apply_id_models_bare_parallel_items_and_yield_output(tmp_path):
    text = """\
name: options
steps:
  - id: first
    name: First step
    input_model: models:Review
    output_model: models:Label
    engine: elsewhere
    user_prompt: "{{text}}"
    output_format_instruction: ""
    yield_output: false
  - apply: models:keep
    id: filtered
    input_model: models:Label
    output_model: models:Label
  - parallel:
      - id: alone
        output_model: models:Summary
        engine: elsewhere
        user_prompt: "{{label}}"
      - branch: unjoined
        steps:
          - apply: models:keep
            id: again
"""
    chain = load_chain_file(write(tmp_path, text))
    first, filtered, group = chain.nodes
    assert (first.name, first.output_format_instruction, first.yield_output) == ("First step", "", False)
    assert (filtered.id, filtered.input_model.__name__, filtered.output_model.__name__) == ("filtered", "Label", "Label")
    assert [(b.name, b.alias, [n.id for n in b.steps]) for b in group.branches] == [
        ("alone", None, ["alone"]),
        ("unjoined", None, ["again"]),
    ]
    assert registered_engines() == {}  # no engines: key, nothing registered; steps may use engines registered elsewhere


def test_module_references_resolve_from_the_files_folder_then_python_path(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "common_models.py").write_text("from pydantic import BaseModel\n\nclass Out(BaseModel):\n    value: str\n")
    text = CHAIN.replace("name: demo\n", "name: demo\npython_path: [../shared]\n", 1).replace("models:Summary", "common_models:Out")
    chain = load_chain_file(write(tmp_path / "chains", text))
    assert chain.nodes[-1].output_model.__module__ == "common_models"
    assert str(shared) in sys.path and sys.path.index(str(tmp_path / "chains")) < sys.path.index(str(shared))

    missing = CHAIN.replace("name: demo\n", "name: demo\npython_path:\n  - nowhere\n", 1)
    message = error_for(tmp_path / "other", missing)
    assert message.startswith(f"{tmp_path / 'other' / 'chain.yaml'}:3: python_path[0]: ")
    assert "is not a folder" in message


def test_two_chain_files_with_their_own_models_module_each_get_their_own(tmp_path):
    first = load_chain_file(write(tmp_path / "one"))
    other_models = MODELS.replace("headline: str", "headline: str\n    tone: str = 'neutral'")
    second = load_chain_file(write(tmp_path / "two", models=other_models))
    assert "tone" not in first.nodes[-1].output_model.model_fields
    assert "tone" in second.nodes[-1].output_model.model_fields


def test_relative_path_from_another_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "project" / "chains", name="chain.yml")
    monkeypatch.chdir(tmp_path / "project")
    chain = load_chain(os.path.join("chains", "chain.yml"))
    assert chain.name == "demo"
    assert chain.nodes[0].output_model.__module__ == "models"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: demo", "nmae: demo", "chain.yaml:1: nmae: unknown key; did you mean name?"),
        (
            '    user_prompt: "Review',
            '    user_promt: "Review',
            "chain.yaml:15: steps[0].user_promt: unknown key; did you mean user_prompt?",
        ),
        (
            "      max_tokens: 64",
            "      max_token: 64",
            "chain.yaml:13: steps[0].sampling.max_token: unknown key; did you mean max_tokens?",
        ),
        ("        join: fr", "        joins: fr", "chain.yaml:19: steps[2].parallel[0].joins: unknown key; did you mean join?"),
        (
            '            engine: llm\n            user_prompt: "German',
            '            engine: llm\n            temperature: 0\n            user_prompt: "German',
            "chain.yaml:31: steps[2].parallel[1].steps[0].temperature: unknown key; valid keys: cache, engine, engine_name, id,",
        ),
    ],
)
def test_unknown_keys_at_every_depth(tmp_path, old, new, expected):
    assert expected in error_for(tmp_path, edit(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("      max_tokens: 64", "      max_tokens: lots", "chain.yaml:13: steps[0].sampling.max_tokens: Input should be a valid integer"),
        (
            "      max_tokens: 64",
            "      max_tokens: 0",
            "chain.yaml:13: steps[0].sampling.max_tokens: Input should be greater than or equal to 1 (got 0).",
        ),
        ("  - id: label", "  - id: 7", "chain.yaml:7: steps[0].id: Input should be a valid string (got 7)."),
        ("name: demo", "name: [demo]", "chain.yaml:1: name: Input should be a valid string."),
        (
            "    sampling:\n",
            "    yield_output: perhaps\n    sampling:\n",
            "chain.yaml:11: steps[0].yield_output: Input should be a valid boolean",
        ),
        ("        join: fr", "        join: [fr]", "chain.yaml:19: steps[2].parallel[0].join: Input should be a valid string."),
        ("name: demo", "name: demo\npython_path: ../lib", "chain.yaml:2: python_path: Input should be a valid list (got '../lib')."),
        (
            "    model: fake-model",
            "    model: fake-model\n    lazy: sometimes",
            "chain.yaml:6: engines[0].lazy: Input should be a valid boolean",
        ),
    ],
)
def test_wrong_types(tmp_path, old, new, expected):
    assert expected in error_for(tmp_path, edit(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    output_model: models:Label\n", "", "chain.yaml:7: steps[0]: missing required key 'output_model'."),
        ('    user_prompt: "Review: {{text}}"\n', "", "chain.yaml:7: steps[0]: missing required key 'user_prompt'."),
        ("name: demo\n", "", "chain.yaml:1: missing required key 'name'."),
        (
            "        join: de\n        steps:\n",
            "        join: de\n        stesp:\n",
            "chain.yaml:27: steps[2].parallel[1].stesp: unknown key; did you mean steps?",
        ),
        ("    backend: fake\n", "    backnd: fake\n", "chain.yaml:3: engines[0]: missing required key 'backend' (is 'backnd' a typo?)."),
        ("    engine: llm\n    sampling", "    sampling", "chain.yaml:7: steps[0]: missing required key 'engine'"),
        (
            "    engine: llm\n    sampling",
            "    engine: llm\n    engine_name: llm\n    sampling",
            "chain.yaml:11: steps[0].engine_name: give either engine or engine_name, not both.",
        ),
    ],
)
def test_missing_and_conflicting_keys(tmp_path, old, new, expected):
    assert expected in error_for(tmp_path, edit(old, new))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "models:Label",
            "modles:Label",
            "chain.yaml:9: steps[0].output_model: cannot find the module 'modles'. Module references resolve from",
        ),
        ("models:Label", "models:Lable", "has no attribute 'Lable'; did you mean 'models:Label'?"),
        (
            "models:Label",
            "models:keep",
            "chain.yaml:9: steps[0].output_model: 'models:keep' is not a pydantic model class (it is a function)",
        ),
        ("models:Label", "models:THRESHOLD", "'models:THRESHOLD' is not a pydantic model class (it is a float)"),
        (
            "models:Label",
            "models.Label",
            "chain.yaml:9: steps[0].output_model: expected a reference module:Class (such as models:Class), not 'models.Label'.",
        ),
        (
            "input_model: models:Review",
            "input_model: models:Review.text",
            "chain.yaml:8: steps[0].input_model: <class 'models.Review'> has no attribute 'text'",
        ),
    ],
)
def test_bad_model_references(tmp_path, old, new, expected):
    message = error_for(tmp_path, edit(old, new))
    assert expected in message
    assert message.startswith(str(tmp_path / "chain.yaml"))


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ("models:kep", "chain.yaml:16: steps[1].apply: module 'models' "),
        ("models:THRESHOLD", "chain.yaml:16: steps[1].apply: 'models:THRESHOLD' is not a function (it is float)"),
        ("nomodule:keep", "chain.yaml:16: steps[1].apply: cannot find the module 'nomodule'"),
        ("keep", "chain.yaml:16: steps[1].apply: expected a reference module:function (such as models:function), not 'keep'."),
    ],
)
def test_bad_function_references(tmp_path, new, expected):
    message = error_for(tmp_path, edit("apply: models:keep", f"apply: {new}"))
    assert expected in message
    if new == "models:kep":
        assert message.endswith("has no attribute 'kep'; did you mean 'models:keep'?")


def test_a_module_that_fails_on_import_names_its_own_line(tmp_path):
    message = error_for(tmp_path, CHAIN, models=MODELS + "\nraise RuntimeError('boom')\n")
    assert f"chain.yaml:8: steps[0].input_model: importing 'models' failed at {tmp_path / 'models.py'}:" in message
    assert message.endswith("RuntimeError: boom")
    message = error_for(tmp_path / "dep", CHAIN, models="import not_installed_anywhere\n" + MODELS)
    assert "importing 'models' failed at" in message and "No module named 'not_installed_anywhere'" in message
    message = error_for(tmp_path / "syntax", CHAIN, models=MODELS + "\ndef broken(:\n")
    assert f"importing 'models' failed at {tmp_path / 'syntax' / 'models.py'}:" in message and "SyntaxError" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (edit("    engine: llm\n    sampling", "    engine: llm\n  sampling"), "chain.yaml:11: invalid YAML: "),
        (edit("You label reviews.", "You label: reviews."), "chain.yaml:14: invalid YAML: mapping values are not allowed here."),
        ("name: x\n---\nname: y\n", "chain.yaml:2: invalid YAML: "),
        (
            edit("  - id: to_de", "  - id: to_de\n            id: again"),
            "chain.yaml:29: steps[2].parallel[1].steps[0].id: duplicate key (first given on line 28)",
        ),
        ("- just\n- a list\n", "chain.yaml:1: a chain file is a mapping"),
        ("", "chain.yaml:1: a chain file is a mapping"),
        (
            edit("  - apply: models:keep", "  - models:keep"),
            "chain.yaml:16: steps[1]: expected a step (id, output_model, engine, user_prompt, ...), an apply",
        ),
        (
            edit("  - parallel:\n      - branch: fr", "  - branch: fr\n    parallel_:\n      - branch: x"),
            "chain.yaml:17: steps[2]: a branch belongs in a parallel group",
        ),
        ("name: x\nsteps: []\n", "chain.yaml:2: steps: List should have at least 1 item"),
    ],
)
def test_yaml_syntax_and_structure(tmp_path, text, expected):
    assert expected in error_for(tmp_path, text)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('"Review: {{text}}"', '"Review: {{txet}}"', "chain.yaml:15: Step 'label' user_prompt: template variable 'txet' cannot exist."),
        (
            "You label reviews.",
            "You label {{kind}} reviews.",
            "chain.yaml:14: Step 'label' system_prompt: template variable 'kind' cannot exist.",
        ),
        (
            "({{label.label}})",
            "({{label.lable}})",
            "chain.yaml:24: Step 'to_fr' user_prompt: 'label.lable' cannot exist: Label has the fields label, score.",
        ),
        ("{{fr.translation}} /", "{{fr.translatoin}} /", "chain.yaml:35: Step 'summary' user_prompt: 'fr.translatoin' cannot exist"),
        ('"Review: {{text}}"', '"Review: {{text}"', "chain.yaml:15: Step 'label' user_prompt: template syntax error"),
        ("  - id: summary", "  - id: label", "chain.yaml:32: The id 'label' is used twice"),
        ("        join: fr", "        join: keep", "chain.yaml:19: The id 'keep' is used twice (join alias)"),
        ("  - id: label", "  - id: 9label", "chain.yaml:7: Step id '9label' is not a valid id"),
        ("        join: fr", "        join: row_id", "chain.yaml:19: join alias 'row_id' is not a valid id"),
    ],
)
def test_chain_checks_name_the_line_of_the_step(tmp_path, old, new, expected):
    assert expected in error_for(tmp_path, edit(old, new))


def test_incompatible_input_model_names_the_input_model_line(tmp_path):
    message = error_for(tmp_path, edit("  - apply: models:keep\n", "  - apply: models:keep\n    input_model: models:Review\n"))
    assert (
        "chain.yaml:17: 'keep' expects Review as input, but the node before it gives Label, which lacks the required field(s) text."
        in message
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "model: fake-model",
            "model: fake-model\n    latencyy: 1",
            "chain.yaml:6: Engine 'llm': backend 'fake' has no option 'latencyy'. Did you mean 'latency'?",
        ),
        (
            "model: fake-model",
            "model: fake-model\n    timeout: -1",
            "chain.yaml:6: Engine 'llm': invalid option for backend 'fake': timeout:",
        ),
        ("backend: fake", "backend: fakee", "chain.yaml:4: Unknown backend 'fakee'."),
    ],
)
def test_engine_option_typos_name_the_line(tmp_path, old, new, expected):
    assert expected in error_for(tmp_path, edit(old, new))


def chainette(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHAINETTE_LOAD_PLUGINS": "", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "chainette", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_example_runs_from_the_repo_root_and_from_elsewhere(tmp_path):
    relative = ["examples/yaml-chain/chain.yaml", "-i", "examples/yaml-chain/inputs.jsonl"]
    done = chainette("run", *relative, "-o", str(tmp_path / "root"), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    done = chainette(
        "run", str(EXAMPLE / "chain.yaml"), "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "elsewhere"), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    for out in ("root", "elsewhere"):
        run = json.loads((tmp_path / out / "run.json").read_text())
        assert run["status"] == "completed" and run["input"]["rows"] == 6
        assert set(run["steps"]) == {"sentiment", "confident", "to_fr", "to_de", "summary"}
    assert (tmp_path / "root" / "flattened" / "000.jsonl").read_text() == (tmp_path / "elsewhere" / "flattened" / "000.jsonl").read_text()


def test_engines_option_replaces_an_engine_the_file_declares(tmp_path):
    engines = tmp_path / "engines.yaml"
    engines.write_text("engines:\n  - name: llm\n    backend: fake\n    model: other-model\n")
    done = chainette(
        "run", str(EXAMPLE / "chain.yaml"), "-i", str(EXAMPLE / "inputs.jsonl"), "-o", str(tmp_path / "o"), "-e", str(engines), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "o" / "graph.json").read_text())["engines"]["llm"]["model"] == "other-model"


def test_cli_errors_are_one_paragraph_with_file_and_line(tmp_path):
    path = write(tmp_path, edit('    user_prompt: "Review', '    user_promt: "Review'))
    done = chainette("inspect", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{path}:15: steps[0].user_promt: unknown key; did you mean user_prompt?" in done.stderr


def test_a_yaml_step_can_turn_the_response_cache_off_or_refresh_it(tmp_path):
    from chainette import graph

    chain = CHAIN.replace('    user_prompt: "Review: {{text}}"\n', '    user_prompt: "Review: {{text}}"\n    cache: false\n', 1)
    assert chain != CHAIN
    steps = {node.id: node for node in graph.iter_nodes(load_chain_file(write(tmp_path / "off", chain)).nodes) if hasattr(node, "cache")}
    assert steps["label"].cache is False and steps["summary"].cache is True
    refreshed = CHAIN.replace('    user_prompt: "Review: {{text}}"\n', '    user_prompt: "Review: {{text}}"\n    cache: refresh\n', 1)
    steps = {node.id: node for node in graph.iter_nodes(load_chain_file(write(tmp_path / "re", refreshed)).nodes) if hasattr(node, "cache")}
    assert steps["label"].cache == "refresh"


def alias_bomb(levels: int) -> str:
    """A 'billion laughs' chain file: each level is a list of nine aliases to the level before (9**levels values)."""
    names = "abcdefghijk"[: levels + 1]
    lines = ["name: bomb", f"{names[0]}: &{names[0]} [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{name}: &{name} [{', '.join([f'*{before}'] * 9)}]" for before, name in itertools.pairwise(names)]
    return "\n".join([*lines, "steps: []", ""])


@pytest.mark.parametrize("levels", [7, 9])
def test_an_alias_bomb_is_refused_naming_the_line(tmp_path, levels):
    assert "chain.yaml:7: this value expands, through its aliases (*name), to more than 100,000 values" in error_for(
        tmp_path, alias_bomb(levels)
    )


def test_an_alias_inside_its_own_anchor_and_deep_nesting_are_refused(tmp_path):
    assert "chain.yaml:2: this value holds an alias to itself" in error_for(tmp_path, "name: x\nsteps: &s [1, *s]\n")
    assert "chain.yaml:2: the YAML is nested too deep" in error_for(tmp_path, "name: x\nsteps: " + "[" * 5000 + "]" * 5000 + "\n")


def test_an_alias_bomb_in_an_engines_file_is_refused(tmp_path):
    from chainette import load_engines_from_yaml

    path = tmp_path / "engines.yaml"
    path.write_text(alias_bomb(8).replace("steps: []", "engines: []"))
    with pytest.raises(ConfigError, match=r"engines.yaml:7: this value expands"):
        load_engines_from_yaml(path)


def test_anchors_aliases_and_merge_keys_still_work(tmp_path):
    chain = edit("  - id: label\n", "  - &step_defaults\n    id: label\n")
    chain = edit("    sampling:\n", "    sampling: &sampling\n", chain)
    chain = edit(
        "          - id: to_de\n            output_model: models:Translation\n            engine: llm\n",
        "          - <<: *step_defaults\n            id: to_de\n            input_model: null\n            output_model: models:Translation\n"
        "            sampling: *sampling\n",
        chain,
    )
    from chainette import graph

    steps = {node.id: node for node in graph.iter_nodes(load_chain_file(write(tmp_path, chain)).nodes)}
    assert steps["to_de"].engine_name == "llm" and steps["to_de"].system_prompt == "You label reviews."
    assert steps["to_de"].sampling == steps["label"].sampling and steps["to_de"].sampling.max_tokens == 64
