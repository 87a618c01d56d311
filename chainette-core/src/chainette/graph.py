"""The chain as a graph: normalising `steps`, static checks, and descriptions for graph.json and inspect."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from chainette.errors import ConfigError
from chainette.nodes import INPUT_ID, Apply, Branch, Node, Parallel, Step
from chainette.run.rundir import RUN_DIR_ENTRIES
from chainette.templates import referenced_names, refuse_internal_attributes


def normalize(steps: list[Any]) -> list[Node]:
    """Turn the user's `steps` list into nodes: a nested list becomes a `Parallel` group of branches."""
    result: list[Node] = []
    for item in steps:
        if isinstance(item, (Step, Apply)):
            result.append(item)
        elif isinstance(item, (list, tuple)):
            branches = [b if isinstance(b, Branch) else Branch(name=_node_id(b), steps=[b]) for b in item]
            result.append(Parallel([_normalize_branch(b) for b in branches]))
        elif isinstance(item, Branch):
            raise ConfigError(f"Branch '{item.name}' must be inside a list (a parallel group): steps=[..., [branch_a, branch_b], ...].")
        else:
            raise ConfigError(f"Unsupported item in steps: {item!r}. Use Step, apply(fn), or a list of Branch objects.")
    return result


def _normalize_branch(branch: Branch) -> Branch:
    """A copy of `branch` with normalized steps, remembering the branch declared (errors name that one)."""
    return Branch(branch.name, normalize(branch.steps), branch.alias, declared=branch.declared or branch)


def _node_id(item: Any) -> str:
    if isinstance(item, (Step, Apply)):
        return item.id
    raise ConfigError(f"A parallel group may hold Branch, Step or apply nodes, not {item!r}.")


def input_model(nodes: list[Node]) -> type[BaseModel] | None:
    """The model chain inputs are validated against: the first node's input model, if declared."""
    if not nodes:
        return None
    first = nodes[0]
    if isinstance(first, Parallel):
        return input_model(first.branches[0].steps) if first.branches else None
    return first.input_model


def iter_nodes(nodes: list[Node]) -> Iterator[Step | Apply]:
    """Every Step and Apply, depth first, in execution order."""
    for node in nodes:
        if isinstance(node, Parallel):
            for branch in node.branches:
                yield from iter_nodes(branch.steps)
        else:
            yield node


def engines_used(node: Node) -> set[str]:
    """The engine names a node needs (for a parallel group, those of every branch)."""
    return {n.engine_name for n in iter_nodes([node]) if isinstance(n, Step)}


@dataclass
class Scope:
    """What a node can see: the models of the names in its template context, and its direct input."""

    names: dict[str, type[BaseModel] | None] = field(default_factory=dict)
    direct: type[BaseModel] | None = None

    def copy(self) -> Scope:
        return Scope(dict(self.names), self.direct)


def check(nodes: list[Node]) -> None:
    """Raise ConfigError for duplicate ids, incompatible models, or template variables that cannot exist;
    its `node` is the declared Step, Apply or Branch at fault and `loc` the key of it (`()` for the node itself)."""
    _check_unique(nodes)
    first = input_model(nodes)
    _check_sequence(nodes, Scope({INPUT_ID: first}, first))


def _check_unique(nodes: list[Node]) -> None:
    seen: set[str] = set()

    def claim(name: str, what: str, node: Step | Apply | Branch, loc: tuple[str, ...] = ()) -> None:
        if name in RUN_DIR_ENTRIES:
            raise ConfigError(
                f"The {what} '{name}' has a name the run directory keeps for its own entry (OUT/{name}), which would mix with "
                f"or replace its outputs: rename the {what}.",
                loc,
                node=node,
            )
        if name in seen:
            raise ConfigError(
                f"The id '{name}' is used twice ({what}); step ids, apply ids and join aliases must be unique.", loc, node=node
            )
        seen.add(name)

    for node in iter_nodes(nodes):
        claim(node.id, "step" if isinstance(node, Step) else "apply", node)
    for group in parallels(nodes):
        for branch in group.branches:
            if branch.alias:
                claim(branch.alias, "join alias", branch.declared or branch, ("join",))


def parallels(nodes: list[Node]) -> Iterator[Parallel]:
    """Every parallel group, nested ones included, in a fixed order."""
    for node in nodes:
        if isinstance(node, Parallel):
            yield node
            for branch in node.branches:
                yield from parallels(branch.steps)


def _check_sequence(nodes: list[Node], scope: Scope) -> Scope:
    for node in nodes:
        if isinstance(node, Parallel):
            joined = {}
            for branch in node.branches:
                final = _check_sequence(branch.steps, scope.copy())
                if branch.alias:
                    joined[branch.alias] = final.direct
            scope.names.update(joined)
            continue
        _check_input_model(node, scope.direct)
        if isinstance(node, Step):
            _check_templates(node, scope)
        scope.names[node.id] = scope.direct = _known_output_model(node)
    return scope


def _known_output_model(node: Step | Apply) -> type[BaseModel] | None:
    """The model of the node's outputs, as far as the static check can tell: its `output_model`, else (for an
    apply) the model its function's return annotation names."""
    if node.output_model is not None or isinstance(node, Step):
        return node.output_model
    return _returned_model(node.fn)


def _returned_model(fn: Callable[..., Any]) -> type[BaseModel] | None:
    """The pydantic model each output of `fn` is, by its return annotation: `Model`, or the items of `list[Model]`
    (`Iterable[Model]`, ...), `Model | None` and unions of those; None when it names no single model or cannot be read."""
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # an annotation that cannot be evaluated (a name not in scope, a callable object) is no annotation
        return None
    kinds = _item_types(hint) if hint is not None else set()
    model = kinds.pop() if len(kinds) == 1 else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _item_types(hint: Any) -> set[Any]:
    """The types one output item may have under the annotation `hint`: a union's members, a list's items, never None."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_item_types(arg) for arg in typing.get_args(hint)))
    if origin in (list, Iterable, Iterator, Sequence) and typing.get_args(hint):
        return _item_types(typing.get_args(hint)[0])
    return set() if hint is type(None) else {hint}


def _check_input_model(node: Step | Apply, direct: type[BaseModel] | None) -> None:
    if node.input_model is None or direct is None or node.input_model is direct:
        return
    missing = [name for name, f in node.input_model.model_fields.items() if f.is_required() and name not in direct.model_fields]
    if missing:
        raise ConfigError(
            f"'{node.id}' expects {node.input_model.__name__} as input, but the node before it gives "
            f"{direct.__name__}, which lacks the required field(s) {', '.join(missing)}.",
            ("input_model",),
            node=node,
        )


def _check_templates(step: Step, scope: Scope) -> None:
    """Check both prompts of `step`; a problem is a ConfigError located at the prompt's key of `step`."""
    for key, source in (("system_prompt", step.system_prompt), ("user_prompt", step.user_prompt)):
        try:
            _check_template(f"Step '{step.id}' {key}", source, scope)
        except ConfigError as exc:
            raise ConfigError(str(exc), (key,), node=step) from None


def _check_template(where: str, source: str, scope: Scope) -> None:
    """Raise ConfigError (its message starting with `where`) for a variable of `source` that cannot exist in `scope`,
    a misspelt id, or an internal attribute the sandbox would refuse."""
    refuse_internal_attributes(source, where=where)
    direct_fields = set(scope.direct.model_fields) if scope.direct else None
    available = {"row_id", *scope.names}
    for name, attrs in referenced_names(source, where=where).items():
        if name in available and direct_fields and name in direct_fields and not attrs:
            raise ConfigError(
                f"{where}: '{{{{{name}}}}}' is ambiguous: '{name}' is both a field of the direct input and an earlier id. "
                f"Rename the step, or write '{{{{{_direct_name(scope)}.{name}}}}}'."
            )
        if name in available:
            _check_attributes(where, name, attrs, scope.names.get(name))
        elif direct_fields is not None and name not in direct_fields:
            names = sorted(available | direct_fields)
            raise ConfigError(
                f"{where}: template variable '{name}' cannot exist.{_did_you_mean(name, names, 0.6)} Available names: {', '.join(names)}."
            )
        elif direct_fields is None and attrs and (hint := _did_you_mean(name, sorted(scope.names), 0.8)):
            raise ConfigError(
                f"{where}: '{name}' is not an earlier id.{hint} If '{name}' is a field of the step's direct input, give the "
                "node before the step an output_model (or its function a return annotation) so that the check can see it."
            )


def _did_you_mean(name: str, names: list[str], cutoff: float) -> str:
    """' Did you mean 'x'?' for the name of `names` closest to a misspelt `name` (by difflib's ratio, at least `cutoff`), else ''."""
    close = difflib.get_close_matches(name, names, n=1, cutoff=cutoff)
    return f" Did you mean '{close[0]}'?" if close else ""


def _direct_name(scope: Scope) -> str:
    return next((name for name, model in reversed(scope.names.items()) if model is scope.direct), INPUT_ID)


def _check_attributes(where: str, name: str, attrs: set[str], model: type[BaseModel] | None) -> None:
    if model is None:
        return
    for attr in sorted(attrs - set(model.model_fields)):
        fields = ", ".join(model.model_fields) or "none"
        raise ConfigError(f"{where}: '{name}.{attr}' cannot exist: {model.__name__} has the fields {fields}.")


def outline(nodes: list[Node], prefix: str = "") -> list[dict[str, Any]]:
    """The nodes in display order, each with a label drawn as a tree (what progress views list)."""
    rows: list[dict[str, Any]] = []
    for index, node in enumerate(nodes):
        last = index == len(nodes) - 1
        branch = prefix + ("└─ " if last else "├─ ")
        inner = prefix + ("   " if last else "│  ")
        if isinstance(node, Parallel):
            rows.append(
                {"id": f"parallel:{node.branches[0].name if node.branches else index}", "kind": "parallel", "label": branch + "parallel"}
            )
            for b_index, sub in enumerate(node.branches):
                b_last = b_index == len(node.branches) - 1
                joined = f" → {sub.alias}" if sub.alias else ""
                rows.append(
                    {"id": f"branch:{sub.name}", "kind": "parallel", "label": inner + ("└─ " if b_last else "├─ ") + f"{sub.name}{joined}"}
                )
                rows.extend(outline(sub.steps, inner + ("   " if b_last else "│  ")))
        else:
            kind = "step" if isinstance(node, Step) else "apply"
            rows.append({"id": node.id, "kind": kind, "label": branch + node.id})
    return rows


def describe(nodes: list[Node], engines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The graph as plain data (graph.json): nodes, edges and the engines' public settings."""
    out_nodes: list[dict[str, Any]] = []
    edges: list[list[str]] = []

    def walk(seq: list[Node], previous: list[str], branch: str | None) -> list[str]:
        for node in seq:
            if isinstance(node, Parallel):
                joins = []
                for b in node.branches:
                    ends = walk(b.steps, previous, b.name)
                    if b.alias:
                        out_nodes.append({"id": b.alias, "kind": "join", "branch": b.name})
                        edges.extend([end, b.alias] for end in ends)
                        joins.append(b.alias)
                previous = previous + joins
                continue
            out_nodes.append(_node_data(node, branch))
            edges.extend([p, node.id] for p in previous)
            previous = [node.id]
        return previous

    walk(nodes, [INPUT_ID], None)
    return {"nodes": [{"id": INPUT_ID, "kind": "input"}, *out_nodes], "edges": edges, "engines": engines}


def _node_data(node: Step | Apply, branch: str | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": node.id,
        "kind": "step" if isinstance(node, Step) else "apply",
        "branch": branch,
        "input_model": node.input_model.__name__ if node.input_model else None,
        "output_model": node.output_model.__name__ if node.output_model else None,
    }
    if isinstance(node, Step):
        data["engine"] = node.engine_name
    return data


def fingerprint(nodes: list[Node]) -> str:
    """A hash of what decides a chain's answers (structure, prompts, models' schemas, sampling, apply functions' code),
    not of its engines."""

    def shape(node: Node) -> Any:
        if isinstance(node, Parallel):
            return [[b.name, b.alias, [shape(n) for n in b.steps]] for b in node.branches]
        return node_fingerprint(node)

    return _digest([shape(n) for n in nodes])


def node_fingerprints(nodes: list[Node]) -> dict[str, str]:
    """Each Step's and apply's own fingerprint, by id (a run's manifest keeps them, to name the nodes that changed)."""
    return {node.id: node_fingerprint(node) for node in iter_nodes(nodes)}


def node_fingerprint(node: Step | Apply) -> str:
    """A hash of what decides one node's outputs: its prompts, models' schemas and sampling, or its function's code."""
    from chainette.codeprint import code_fingerprint

    models = [m.model_json_schema() if m else None for m in (node.input_model, node.output_model)]
    if isinstance(node, Apply):
        return _digest(["apply", node.id, code_fingerprint(node.fn), models])
    sampling = node.sampling.model_dump(mode="json") if node.sampling else None
    return _digest(["step", node.id, node.system_prompt, node.user_prompt, node.output_format_instruction, sampling, models])


def _digest(data: Any) -> str:
    import hashlib
    import json

    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
