"""The dataset card (README.md) of a push, as text: YAML front matter naming the configs (`flattened` the default),
then the chain's summary, its configs and how to load them, its graph as a Mermaid flowchart, each step's and
apply's engine, model, prompts and output schema (when the chain is given), run.json's figures, and the versions
that made and published it. Pure rendering: it reads nothing from disk and masks nothing (the layout does)."""

from __future__ import annotations

from collections.abc import Mapping
import json
import re
from typing import TYPE_CHECKING, Any

import yaml

from chainette import __version__
from chainette.hub.constants import FLATTENED
from chainette.nodes import INPUT_ID, Apply, Step

if TYPE_CHECKING:
    from chainette.hub.layout import Config, Run

_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
_MERMAID_ESCAPES = {"#": "#35;", '"': "#quot;", "<": "#lt;", ">": "#gt;", "`": "#96;", "\n": " ", "\r": " "}


def render_card(run: Run, repo_id: str, configs: list[Config], nodes: Mapping[str, Step | Apply] | None) -> str:
    """The dataset card: YAML front matter (configs, default `flattened`), then the chain, its graph, each node's
    engine, model, prompts and schema (`nodes`, when known), run.json's figures, and how it was made."""
    name = run.graph.get("chain") or run.figures.get("chain") or "chain"
    sections = [
        _front_matter(name, configs),
        f"# {name}\n\n{_summary(run, name)}",
        _configs_section(repo_id, configs),
        f"## The chain\n\n```mermaid\n{graph_mermaid(run.graph)}```",
        _nodes_section(run.graph, nodes),
        _figures_section(run.figures),
        _made_with(run.figures),
    ]
    return "\n\n".join(sections) + "\n"


def graph_mermaid(recorded: Mapping[str, Any]) -> str:
    """Mermaid flowchart source for a graph as graph.json records it: steps with their engine, applies, joins,
    each branch's nodes in a subgraph, then one line per edge."""
    nodes = recorded["nodes"]
    engines = recorded.get("engines", {})
    first: Mapping[str, Any] = next((node for node in nodes if node["kind"] != "input"), {})
    start = _mermaid_label(f"input: {first.get('input_model') or 'any object'}")
    lines = ["flowchart TD", f'    {_mermaid_id(INPUT_ID)}(["{start}"])']
    branch: str | None = None
    groups = 0
    for node in nodes:
        if node["kind"] == "input":
            continue
        here = node.get("branch") if node["kind"] != "join" else None
        if here != branch:
            if branch is not None:
                lines.append("    end")
            if here is not None:
                lines.append(f'    subgraph group_{groups}["{_mermaid_label(f"branch {here}")}"]')
                groups += 1
            branch = here
        lines.append(("        " if branch else "    ") + _mermaid_node(node, engines))
    if branch is not None:
        lines.append("    end")
    lines.extend(f"    {_mermaid_id(source)} --> {_mermaid_id(target)}" for source, target in recorded["edges"])
    return "\n".join(lines) + "\n"


def _front_matter(name: str, configs: list[Config]) -> str:
    rows = next((c.rows for c in configs if c.name == FLATTENED), configs[0].rows)
    entries: list[dict[str, Any]] = []
    for index, config in enumerate(configs):
        entry: dict[str, Any] = {"config_name": config.name, "data_files": [{"split": "train", "path": config.pattern}]}
        if index == 0:
            entry["default"] = True
        entries.append(entry)
    data = {"pretty_name": name, "tags": ["chainette", "synthetic"], "size_categories": [_size_category(rows)], "configs": entries}
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---"


def _size_category(rows: int) -> str:
    return next((label for limit, label in _SIZE_CATEGORIES if rows < limit), "n>1M")


def _summary(run: Run, name: str) -> str:
    source = run.figures.get("input", {})
    return (
        f"The outputs of the chainette chain `{name}`, run over {source.get('rows', '?')} input rows "
        f"(finished {run.figures.get('finished_at', '?')}). Each step's outputs are a config of their own, joined "
        f"on `row_id`; `{FLATTENED}` (the default) is the chain's final table."
    )


def _configs_section(repo_id: str, configs: list[Config]) -> str:
    rows = [f"| `{c.name}` | {c.rows} | `{c.pattern}` | {c.about} |" for c in configs]
    table = "\n".join(["| config | rows | files | rows are |", "| --- | ---: | --- | --- |", *rows])
    default, *others = configs
    load = [f'rows = load_dataset("{repo_id}", split="train")  # {default.name}']
    load += [f'{c.name} = load_dataset("{repo_id}", "{c.name}", split="train")' for c in others[:1]]
    return f"## Configs\n\n{table}\n\n```python\nfrom datasets import load_dataset\n\n" + "\n".join(load) + "\n```"


def _nodes_section(recorded: Mapping[str, Any], nodes: Mapping[str, Step | Apply] | None) -> str:
    engines = recorded.get("engines", {})
    parts = ["## Steps"]
    if nodes is None:
        parts.append("Published without the chain's source, so the prompts and output schemas are not shown.")
    for node in recorded["nodes"]:
        if node["kind"] in ("step", "apply"):
            parts.append(_node_text(node, engines, (nodes or {}).get(node["id"])))
    return "\n\n".join(parts)


def _node_text(node: Mapping[str, Any], engines: Mapping[str, Any], declared: Step | Apply | None) -> str:
    lines = [f"### `{node['id']}` ({node['kind']})"]
    facts = [f"output model `{node['output_model']}`" if node.get("output_model") else "passes its rows on"]
    if node.get("branch"):
        facts.append(f"branch `{node['branch']}`")
    if node["kind"] == "step":
        engine = engines.get(node["engine"], {})
        facts.insert(0, f"engine `{node['engine']}` (backend `{engine.get('backend', '?')}`, model `{engine.get('model', '?')}`)")
    sentence = "; ".join(facts)
    lines.append(sentence[0].upper() + sentence[1:] + ".")
    if isinstance(declared, Step):
        if declared.sampling is not None:
            sampling = {key: value for key, value in declared.sampling.model_dump(mode="json").items() if value not in (None, {}, [])}
            lines.append("Sampling: " + (", ".join(f"`{key}={value}`" for key, value in sampling.items()) or "the engine's defaults") + ".")
        if declared.system_prompt:
            lines.append("System prompt:\n\n" + _fenced(declared.system_prompt, "jinja"))
        lines.append("User prompt:\n\n" + _fenced(declared.user_prompt, "jinja"))
    elif isinstance(declared, Apply):
        lines.append(f"Function `{getattr(declared.fn, '__qualname__', repr(declared.fn))}`.")
    model = declared.output_model if declared is not None else None
    if model is not None:
        lines.append(f"Output schema (`{model.__name__}`):\n\n" + _fenced(json.dumps(model.model_json_schema(), indent=2), "json"))
    return "\n\n".join(lines)


def _figures_section(figures: Mapping[str, Any]) -> str:
    head = "| node | kind | rows in | ok | failed | filtered | input tokens | output tokens | cost (USD) | seconds |"
    source = figures.get("input", {})
    rows = [
        f"| (input) | input | {source.get('rows', 0)} | {source.get('rows', 0) - source.get('invalid', 0)} | {source.get('invalid', 0)} | | | | | |"
    ]
    for node_id, node in figures.get("steps", {}).items():
        cells = [node.get(key) for key in ("kind", "rows_in", "ok", "failed", "filtered", "input_tokens", "output_tokens")]
        cells += [_cost(node.get("cost_usd")), node.get("seconds")]
        rows.append(f"| `{node_id}` | " + " | ".join("" if cell is None else str(cell) for cell in cells) + " |")
    steps = figures.get("steps", {}).values()
    tokens = [sum(node.get(key) or 0 for node in steps) for key in ("input_tokens", "output_tokens")]
    sessions = len(figures.get("sessions", [])) or 1
    total = (
        f"{figures.get('status')} in {figures.get('seconds')} s over {sessions} session(s) "
        f"({figures.get('started_at')} to {figures.get('finished_at')}); {tokens[0]} input and {tokens[1]} output tokens; "
        f"cost {_cost(figures.get('cost_usd')) or 'not priced'}."
    )
    return "\n".join(["## Figures (run.json)", "", head, "| --- | --- |" + " ---: |" * 8, *rows, "", f"The run: {total}"])


def _made_with(figures: Mapping[str, Any]) -> str:
    versions = dict(figures.get("versions", {}))
    core = versions.pop("chainette-core", __version__)
    backends = ", ".join(f"{name} {version}" for name, version in versions.items())
    used = f"; backends: {backends}" if backends else ""
    return (
        f"## How it was made\n\nMade with chainette {core} (`chainette run`{used}), published with chainette "
        f"{__version__} (`chainette push`). `graph.json` and `run.json` are the run's own records."
    )


def _cost(value: Any) -> str:
    return f"${value:.4f}" if isinstance(value, (int, float)) else ""


def _fenced(text: str, language: str) -> str:
    """`text` in a code fence longer than any run of backticks inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def _mermaid_node(node: Mapping[str, Any], engines: Mapping[str, Any]) -> str:
    node_id = node["id"]
    if node["kind"] == "join":
        return f'{_mermaid_id(node_id)}{{{{"{_mermaid_label(f"join as {node_id}")}"}}}}'
    out = node.get("output_model") or "same rows"
    if node["kind"] == "apply":
        return f'{_mermaid_id(node_id)}[["{_mermaid_lines(f"apply {node_id}", f"→ {out}")}"]]'
    engine = engines.get(node.get("engine") or "", {})
    where = f"engine {node.get('engine')}" + (f" ({engine['backend']}: {engine['model']})" if engine else "")
    return f'{_mermaid_id(node_id)}["{_mermaid_lines(f"step {node_id}", f"→ {out}", where)}"]'


def _mermaid_lines(*parts: str) -> str:
    return "<br/>".join(_mermaid_label(part) for part in parts)


def _mermaid_id(name: str) -> str:
    """A Mermaid node id: prefixed (no id is then a keyword such as `end`), word characters only."""
    return "n_" + re.sub(r"\W", "_", name)


def _mermaid_label(text: str) -> str:
    return "".join(_MERMAID_ESCAPES.get(char, char) for char in text)
