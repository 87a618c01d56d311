"""`chainette inspect --format tree|mermaid|json`, for Python and YAML chains."""

from __future__ import annotations

import json
from pathlib import Path
import re
import sys

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, Step, apply, register_engine
from chainette.cli import main
from chainette.cli.mermaid import chain_mermaid

ROOT = Path(__file__).resolve().parents[2]
YAML_CHAIN = ROOT / "examples" / "yaml-chain" / "chain.yaml"
PYTHON_CHAIN = ROOT / "examples" / "reviews" / "chain.py"

NODE = re.compile(r'^\s*(n_\w+)(\(\["[^"]*"\]\)|\[\["[^"]*"\]\]|\["[^"]*"\]|\{\{"[^"]*"\}\})$')
EDGE = re.compile(r"^\s*(n_\w+) (?:-->|-\. waits \.->) (n_\w+)$")
SUBGRAPH = re.compile(r'^\s*subgraph (\w+)\["[^"]*"\]$')


@pytest.fixture(autouse=True)
def _restore_import_state(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        del sys.modules[name]


def inspect(capsys, *args: str) -> tuple[int, str]:
    code = main(["inspect", *args])
    return code, capsys.readouterr().out


def parse_mermaid(text: str) -> tuple[dict[str, str], list[tuple[str, str]], int]:
    """Declared nodes (id → shape), edges, and subgraph count; fails on any line that is not valid here."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    depth = subgraphs = 0
    for line in lines[1:]:
        if line.strip().startswith("%%"):
            continue
        if match := NODE.match(line):
            assert match.group(1) not in nodes, line
            nodes[match.group(1)] = match.group(2)
        elif match := EDGE.match(line):
            edges.append((match.group(1), match.group(2)))
        elif SUBGRAPH.match(line):
            depth, subgraphs = depth + 1, subgraphs + 1
        elif line.strip() == "end":
            depth -= 1
            assert depth >= 0
        else:
            pytest.fail(f"unexpected mermaid line: {line!r}")
    assert depth == 0
    return nodes, edges, subgraphs


@pytest.mark.parametrize("chain", [str(YAML_CHAIN), f"{PYTHON_CHAIN}:chain"])
def test_mermaid_has_one_line_per_node_and_edge(capsys, chain):
    code, text = inspect(capsys, chain, "--format", "mermaid")
    assert code == 0
    nodes, edges, subgraphs = parse_mermaid(text)
    code, described = inspect(capsys, chain, "--format", "json")
    graph = json.loads(described)
    assert set(nodes) == {f"n_{node['id']}" for node in graph["nodes"]}
    assert edges == [(f"n_{a}", f"n_{b}") for a, b in graph["edges"]]
    assert set(edges) >= {("n_chain_input", "n_sentiment"), ("n_to_fr", "n_fr"), ("n_fr", "n_summary"), ("n_de", "n_summary")}
    assert subgraphs == 2
    assert nodes["n_confident"].startswith("[[")  # an apply
    assert nodes["n_fr"].startswith("{{")  # a join
    assert 'n_sentiment["step sentiment<br/>→ Sentiment<br/>engine llm (fake: fake-model)"]' in text
    assert 'n_chain_input(["input: Review"])' in text


def test_json_is_what_describe_returns(capsys):
    code, text = inspect(capsys, str(YAML_CHAIN), "--format", "json")
    assert code == 0
    data = json.loads(text)
    assert data["chain"] == "reviews"
    assert {"id": "fr", "kind": "join", "branch": "fr"} in data["nodes"]
    assert ["confident", "to_fr"] in data["edges"]
    assert data["engines"]["llm"]["backend"] == "fake"
    from chainette.chainfile import load_chain_file

    assert data == json.loads(json.dumps(load_chain_file(YAML_CHAIN).describe()))


def test_tree_is_the_default(capsys):
    code, text = inspect(capsys, str(YAML_CHAIN))
    assert code == 0
    assert "branch fr → join as fr" in text
    assert "apply confident → same rows" in text
    assert inspect(capsys, str(YAML_CHAIN), "--format", "tree")[1] == text


class Item(BaseModel):
    text: str


def test_mermaid_ids_and_labels_are_sanitised():
    register_engine("e", backend="fake", model='m "quoted" <b>')

    def step(id: str) -> Step:
        return Step(id=id, input_model=Item, output_model=Item, engine_name="e", user_prompt="{{text}}")

    def keep(item):
        return item

    inner = Branch(name="inner", steps=[step("graph")]).join("style")
    outer = Branch(name='a "b" <c> #1 end', steps=[step("subgraph"), [inner, step("click")]]).join("class")
    chain = Chain(name='odd "name"\nhere', steps=[step("end"), [outer, step("default")], apply(keep, id="flowchart")])
    text = chain_mermaid(chain)
    nodes, edges, subgraphs = parse_mermaid(text)
    assert {"n_end", "n_subgraph", "n_graph", "n_style", "n_click", "n_class", "n_default", "n_flowchart"} <= set(nodes)
    assert subgraphs == 4  # outer, inner, and the single-step branches click and default
    assert 'subgraph group_0["branch a #quot;b#quot; #lt;c#gt; #35;1 end"]' in text
    assert "(fake: m #quot;quoted#quot; #lt;b#gt;)" in text
    assert ("n_graph", "n_style") in edges and ("n_class", "n_flowchart") in edges
    assert len([line for line in text.splitlines() if "-->" in line]) == len(edges)


def test_unregistered_engine_is_an_error_for_every_format(tmp_path, capsys):
    path = tmp_path / "chain.yaml"
    path.write_text(YAML_CHAIN.read_text().replace("engine: llm", "engine: other").replace("models:", "yaml_models:"))
    (tmp_path / "yaml_models.py").write_text((YAML_CHAIN.parent / "models.py").read_text())
    for output_format in ("mermaid", "json"):
        assert main(["inspect", str(path), "--format", output_format]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        assert "No engine named 'other' is registered" in captured.err


def test_unknown_format_is_a_usage_error(capsys):
    assert main(["inspect", str(YAML_CHAIN), "--format", "dot"]) == 2


GPU_CHAIN = """
from pydantic import BaseModel

from chainette import Branch, Chain, Step, apply, register_engine

register_engine("big", backend="gpus", model="big:0,1")
register_engine("api", backend="gpus", model="api-model")
register_engine("small", backend="gpus", model="small:1")


class Text(BaseModel):
    text: str


def step(id, engine):
    return Step(id=id, input_model=Text, output_model=Text, engine_name=engine, user_prompt="{{text}}")


def keep(item):
    return item


chain = Chain(
    name="gpus",
    steps=[
        step("extract", "big"),
        [Branch(name="fr", steps=[step("to_fr", "api")]).join("fr"), step("check", "api")],
        apply(keep, id="keep"),
        step("judge", "small"),
        step("score", "api"),
    ],
)
"""
NOTE = re.compile(r"(?:(?:step|apply) (\w+)|(?<=── )(parallel))[^·\n]*· (.*)")
WAITS = "waits for the previous segment: engine 'small' (cuda:1) shares GPUs with engine 'big'"


@pytest.fixture
def gpu_chain(tmp_path, gpu_backend) -> str:
    """A chain whose step 'judge' needs a GPU that the server of its first step holds."""
    (tmp_path / "gpu_chain.py").write_text(GPU_CHAIN)
    return f"{tmp_path / 'gpu_chain.py'}:chain"


def test_tree_says_which_nodes_stream_and_which_wait(capsys, monkeypatch, gpu_chain):
    monkeypatch.setenv("COLUMNS", "200")
    code, text = inspect(capsys, gpu_chain)
    assert code == 0
    notes = {name or group: note for name, group, note in NOTE.findall(text)}
    assert notes == {
        "extract": "starts the run",
        "parallel": "streams with the node before",
        "keep": "streams with the node before",
        "judge": WAITS,
        "score": "streams with the node before",
    }


def test_json_lists_the_segments(capsys, gpu_chain):
    code, text = inspect(capsys, gpu_chain, "--format", "json")
    assert code == 0
    assert json.loads(text)["segments"] == [
        {"nodes": ["extract", "to_fr", "fr", "check", "keep"], "waits": None},
        {"nodes": ["judge", "score"], "waits": WAITS.removeprefix("waits for the previous segment: ")},
    ]


def test_mermaid_dots_the_edges_into_a_node_that_waits(capsys, gpu_chain):
    code, text = inspect(capsys, gpu_chain, "--format", "mermaid")
    assert code == 0
    _, edges, _ = parse_mermaid(text)
    assert ("n_keep", "n_judge") in edges and ("n_judge", "n_score") in edges
    assert [line.strip() for line in text.splitlines() if "waits" in line] == [
        f"%% n_judge: {WAITS}",
        "n_keep -. waits .-> n_judge",
    ]


def test_every_node_of_a_chain_on_one_engine_streams(capsys):
    code, text = inspect(capsys, str(YAML_CHAIN), "--format", "json")
    assert code == 0
    graph = json.loads(text)
    assert graph["segments"] == [{"nodes": [node["id"] for node in graph["nodes"][1:]], "waits": None}]
    assert "waits" not in inspect(capsys, str(YAML_CHAIN), "--format", "mermaid")[1]
