"""Static checks when a chain is built: ids, model compatibility, template variables; the graph's description."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, ConfigError, Step, apply
from chainette.cli import main

from .conftest import Label, Text


class Other(BaseModel):
    other: int


class Brand(BaseModel):
    brand: str


def extract(item: Text) -> Brand:
    return Brand(brand=item.text)


def extract_many(item: Text) -> list[Brand]:
    return [Brand(brand=word) for word in item.text.split()]


def extract_maybe(item: Text) -> Brand | None:
    return None


def extract_iterable(item: Text) -> Iterable[Brand]:
    return [Brand(brand=item.text)]


def extract_or_drop(item: Text) -> Brand | list[Brand]:
    return []


async def extract_async(item: Text) -> Brand:
    return Brand(brand=item.text)


def extract_dict(item: Text) -> dict[str, Any]:
    return {"brand": item.text}


def extract_either(item: Text) -> Brand | Other:
    return Brand(brand=item.text)


def extract_unresolved(item: Text) -> NotDefinedAnywhere:  # type: ignore[name-defined]  # noqa: F821
    return Brand(brand=item.text)


def extract_plain(item):
    return {"name": item.text}


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


ANNOTATED = [extract, extract_many, extract_maybe, extract_iterable, extract_or_drop, extract_async]


@pytest.mark.parametrize("fn", ANNOTATED)
def test_templates_after_an_apply_are_checked_against_the_model_its_return_annotation_names(fn):
    def chain(prompt: str) -> Chain:
        return Chain(name="c", steps=[apply(fn, id="extract", input_model=Text), step("s", prompt)])

    chain("{{extract.brand}} {{brand}} {{chain_input.text}}")
    with pytest.raises(ConfigError, match=r"Step 's' user_prompt: 'extract.brnd' cannot exist: Brand has the fields brand\."):
        chain("{{extract.brnd}}")
    with pytest.raises(ConfigError, match=r"template variable 'brnd' cannot exist\. Did you mean 'brand'\?"):
        chain("{{brnd}}")
    with pytest.raises(ConfigError, match=r"template variable 'extrct' cannot exist\. Did you mean 'extract'\?"):
        chain("{{extrct.brand}}")


def test_a_joined_branch_ending_in_an_annotated_apply_gives_its_alias_the_model():
    branch = Branch(name="b", steps=[apply(extract)]).join("found")
    first = step("a", "{{text}}", input_model=Text)
    Chain(name="c", steps=[first, [branch], step("z", "{{found.brand}}")])
    with pytest.raises(ConfigError, match=r"'found.brnd' cannot exist: Brand has the fields brand"):
        Chain(name="c", steps=[first, [branch], step("z", "{{found.brnd}}")])


@pytest.mark.parametrize("fn", [extract_dict, extract_either, extract_unresolved, extract_plain, lambda item: item])
def test_an_annotation_naming_no_single_model_leaves_the_output_unchecked(fn):
    Chain(name="c", steps=[apply(fn, id="extract", input_model=Text), step("s", "{{extract.anything}} {{whatever}}")])


def test_a_misspelt_id_is_refused_even_when_the_direct_input_is_unknown():
    with pytest.raises(ConfigError) as excinfo:
        Chain(name="c", steps=[apply(extract_plain, id="extract", input_model=Text), step("s", "{{extrct.brand}}")])
    message = str(excinfo.value)
    assert message.startswith("Step 's' user_prompt: 'extrct' is not an earlier id. Did you mean 'extract'?")
    assert "output_model" in message and "return annotation" in message
    Chain(name="c", steps=[apply(extract_plain, id="extract", input_model=Text), step("s", "{{product.brand}} {{extrct}}")])


def test_inspect_refuses_a_template_typo_after_an_annotated_apply(tmp_path, capsys):
    path = tmp_path / "typo_chain.py"
    path.write_text(
        "from pydantic import BaseModel\nfrom chainette import Chain, Step, apply\n"
        "class Text(BaseModel):\n    text: str\n"
        "class Brand(BaseModel):\n    brand: str\n"
        "def extract(item: Text) -> Brand:\n    return Brand(brand=item.text)\n"
        "chain = Chain(name='c', steps=[apply(extract, input_model=Text), Step(id='s', output_model=Brand, engine_name='e', "
        "user_prompt='{{extract.brnad}}')])\n"
    )
    assert main(["inspect", f"{path}:chain"]) == 1
    assert "Step 's' user_prompt: 'extract.brnad' cannot exist: Brand has the fields brand." in " ".join(capsys.readouterr().err.split())
