"""Static checks when a chain is built: ids, model compatibility, template variables; the graph's description."""

from __future__ import annotations

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, ConfigError, Step, apply

from .conftest import Label, Text


class Other(BaseModel):
    other: int


def step(id: str, prompt: str, *, input_model=None, output_model=Label) -> Step:
    return Step(id=id, input_model=input_model, output_model=output_model, engine_name="e", user_prompt=prompt)


def test_valid_chain_builds():
    Chain(name="ok", steps=[step("a", "{{text}} {{row_id}}", input_model=Text), step("b", "{{a.label}} {{label}} {{chain_input.text}}")])


def test_unknown_bare_variable_names_step_and_available_names():
    with pytest.raises(ConfigError) as excinfo:
        Chain(name="c", steps=[step("a", "{{txt}}", input_model=Text)])
    message = str(excinfo.value)
    assert "Step 'a' user_prompt" in message and "'txt' cannot exist" in message
    assert "chain_input, row_id, text" in message


def test_unknown_attribute_of_earlier_step():
    with pytest.raises(ConfigError, match=r"'a\.lable' cannot exist: Label has the fields label, score"):
        Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), step("b", "{{a.lable}}")])


def test_later_step_is_not_visible_earlier():
    with pytest.raises(ConfigError, match="'b' cannot exist"):
        Chain(name="c", steps=[step("a", "{{b.label}}", input_model=Text), step("b", "{{text}}")])


def test_join_alias_visible_but_branch_steps_are_not():
    fr = Branch(name="fr", steps=[step("to_fr", "{{label}}")]).join("fr")
    Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), [fr], step("z", "{{fr.label}} {{label}}")])
    with pytest.raises(ConfigError, match="'to_fr' cannot exist"):
        Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), [fr], step("z", "{{to_fr.label}}")])


def test_template_syntax_error_names_step_and_line():
    with pytest.raises(ConfigError, match=r"Step 'a' user_prompt: template syntax error on line 2"):
        Chain(name="c", steps=[step("a", "ok\n{{ text ", input_model=Text)])


def test_loop_variables_are_not_reported():
    Chain(name="c", steps=[step("a", "{% for w in text.split() %}{{ w }}{% endfor %}", input_model=Text)])


def test_duplicate_ids_are_rejected():
    with pytest.raises(ConfigError, match="'a' is used twice"):
        Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), step("a", "{{label}}")])


def test_invalid_id():
    with pytest.raises(ConfigError, match="not a valid id"):
        step("my-step", "x")


def test_incompatible_input_model():
    with pytest.raises(
        ConfigError, match="'b' expects Other as input, but the node before it gives Label, which lacks the required field\\(s\\) other"
    ):
        Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), step("b", "{{other}}", input_model=Other)])


def test_unknown_direct_model_skips_bare_name_check():
    Chain(name="c", steps=[step("a", "{{anything}}")])
    Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), apply(lambda x: x, id="f"), step("b", "{{whatever}}")])


def test_describe_has_nodes_edges_and_joins():
    from chainette.engines import register_engine

    register_engine("e", backend="fake", model="m", api_key="sk-SECRET")
    fr = Branch(name="fr", steps=[step("to_fr", "{{label}}")]).join("fr")
    de = Branch(name="de", steps=[step("to_de", "{{label}}")])
    chain = Chain(name="c", steps=[step("a", "{{text}}", input_model=Text), [fr, de], step("z", "{{fr.label}}")])
    data = chain.describe()
    assert [n["id"] for n in data["nodes"]] == ["chain_input", "a", "to_fr", "fr", "to_de", "z"]
    assert ["chain_input", "a"] in data["edges"]
    assert ["a", "to_fr"] in data["edges"] and ["to_fr", "fr"] in data["edges"]
    assert ["fr", "z"] in data["edges"] and ["a", "z"] in data["edges"]
    assert "sk-SECRET" not in str(data)


def test_name_that_is_both_a_field_and_an_id_is_ambiguous():
    with pytest.raises(ConfigError, match=r"'\{\{label\}\}' is ambiguous.*'\{\{label.label\}\}'"):
        Chain(name="c", steps=[step("label", "{{text}}", input_model=Text), step("b", "{{label}}")])


def test_errors_name_the_declared_node_and_its_key():
    first = step("a", "{{text}}", input_model=Text)
    inner = Branch(name="inner", steps=[step("deep", "{{label}}")])
    joined = Branch(name="fr", steps=[step("to_fr", "{{label}}"), [inner]]).join("a")
    expects_other = step("b", "{{other}}", input_model=Other)
    unknown_name = step("b", "{{txt}}")
    same_id = apply(lambda x: x, id="a")
    cases = [
        ([first, [joined]], joined, ("join",)),
        ([first, expects_other], expects_other, ("input_model",)),
        ([first, unknown_name], unknown_name, ("user_prompt",)),
        ([first, same_id], same_id, ()),
    ]
    for steps, node, loc in cases:
        with pytest.raises(ConfigError) as excinfo:
            Chain(name="c", steps=steps)
        assert excinfo.value.node is node and excinfo.value.loc == loc
