"""Chain files: a chain declared in YAML (engines, steps, applies, parallel branches, joins) read into a `Chain`.

The keys mirror the Python API (see docs/yaml.md). Every problem is a ConfigError naming the
file and line: unknown keys and wrong types (checked by the schema below), `module:Name`
references that cannot be imported, engine options, and the checks `Chain` itself makes.
"""

from __future__ import annotations

import difflib
import importlib
import os
from pathlib import Path
import sys
from types import ModuleType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chainette.chain import Chain
from chainette.engines import EngineSpec, register_spec
from chainette.errors import ConfigError, raised_at
from chainette.nodes import Apply, Branch, Step, apply
from chainette.sampling import SamplingParams
from chainette.yamlfile import Loc, YamlFile, read_yaml


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepSpec(_Spec):
    """A step: the fields of `chainette.Step`; `engine` is short for `engine_name`."""

    id: str
    name: str | None = None
    input_model: str | None = None
    output_model: str
    engine: str | None = None
    engine_name: str | None = None
    system_prompt: str = ""
    user_prompt: str
    sampling: SamplingParams | None = None
    output_format_instruction: str | None = None
    yield_output: bool = True
    cache: bool | Literal["refresh"] = True


class ApplySpec(_Spec):
    """`{apply: module:function, id, input_model, output_model}`: the arguments of `chainette.apply`."""

    apply: str
    id: str | None = None
    input_model: str | None = None
    output_model: str | None = None


class BranchSpec(_Spec):
    """A branch of a parallel group; `join` names the alias later steps read its output as."""

    branch: str
    join: str | None = None
    steps: list[Any] = Field(min_length=1)


class ParallelSpec(_Spec):
    """A parallel group: branches (or single steps/applies, each a branch of its own)."""

    parallel: list[Any] = Field(min_length=1)


class ChainSpec(_Spec):
    """The whole file."""

    name: str
    python_path: list[str] = Field(default_factory=list)
    engines: list[EngineSpec] = Field(default_factory=list)
    steps: list[Any] = Field(min_length=1)


NODE_KINDS = (
    "a step (id, output_model, engine, user_prompt, ...), an apply ({apply: module:function}) or a parallel group ({parallel: [...]})"
)


def load_chain_file(path: str | os.PathLike[str]) -> Chain:
    """Read the chain file at `path`, register the engines it declares, and return its `Chain`.

    `module:Name` references resolve from the file's folder (put first on sys.path), then from
    the folders listed in `python_path`, then from the rest of sys.path.
    """
    source = read_yaml(path)
    if not isinstance(source.data, dict):
        raise source.error((), "a chain file is a mapping with the keys name, engines (optional) and steps.")
    spec = source.validate(ChainSpec, source.data)
    builder = _Builder(source, _import_roots(source, spec))
    steps = [builder.node(item, ("steps", index)) for index, item in enumerate(spec.steps)]
    try:
        chain = Chain(name=spec.name, steps=steps)
    except ConfigError as exc:
        raise source.at((*builder.locs[exc.node], *exc.loc) if exc.node else exc.loc, str(exc)) from None
    for index, engine in enumerate(spec.engines):
        try:
            register_spec(engine)
        except ConfigError as exc:
            raise source.at(("engines", index, *exc.loc), str(exc)) from None
    return chain


def _import_roots(source: YamlFile, spec: ChainSpec) -> list[Path]:
    """The chain file's folder and its `python_path` folders, put (in that order) at the front of sys.path."""
    folder = source.path.resolve().parent
    roots = [folder]
    for index, entry in enumerate(spec.python_path):
        root = (folder / entry).resolve()
        if not root.is_dir():
            raise source.error(
                ("python_path", index), f"{root} is not a folder; python_path entries are folders relative to the chain file."
            )
        roots.append(root)
    for root in reversed(roots):
        if str(root) in sys.path:
            sys.path.remove(str(root))
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    return roots


class _Builder:
    """Turns the validated entries of `steps:` into Step, Apply and Branch objects, remembering where each is declared."""

    def __init__(self, source: YamlFile, roots: list[Path]):
        self.source = source
        self.roots = roots
        self.locs: dict[Step | Apply | Branch, Loc] = {}

    def node(self, item: Any, loc: Loc, *, in_parallel: bool = False) -> Any:
        if not isinstance(item, dict):
            raise self.source.error(loc, f"expected {NODE_KINDS}, not {item!r}.")
        if "parallel" in item:
            if in_parallel:
                raise self.source.error(loc, "a parallel group cannot sit directly in another one; put it in a branch's steps.")
            return self.parallel(self.source.validate(ParallelSpec, item, loc), loc)
        if "branch" in item:
            if not in_parallel:
                raise self.source.error(loc, "a branch belongs in a parallel group: {parallel: [{branch: a, steps: [...]}, ...]}.")
            return self.branch(self.source.validate(BranchSpec, item, loc), loc)
        if "apply" in item:
            return self.apply(self.source.validate(ApplySpec, item, loc), loc)
        return self.step(self.source.validate(StepSpec, item, loc), loc)

    def parallel(self, spec: ParallelSpec, loc: Loc) -> list[Any]:
        return [self.node(item, (*loc, "parallel", index), in_parallel=True) for index, item in enumerate(spec.parallel)]

    def branch(self, spec: BranchSpec, loc: Loc) -> Branch:
        steps = [self.node(item, (*loc, "steps", index)) for index, item in enumerate(spec.steps)]
        branch = Branch(name=spec.branch, steps=steps)
        if spec.join is not None:
            try:
                branch = branch.join(spec.join)
            except ConfigError as exc:
                raise self.source.at((*loc, "join"), str(exc)) from None
        self.locs[branch] = loc
        return branch

    def step(self, spec: StepSpec, loc: Loc) -> Step:
        if spec.engine is not None and spec.engine_name is not None:
            raise self.source.error((*loc, "engine_name"), "give either engine or engine_name, not both.")
        engine = spec.engine or spec.engine_name
        if engine is None:
            raise self.source.error(
                loc, "missing required key 'engine' (the name of an engine declared under engines: or registered elsewhere)."
            )
        input_model = self.optional_model(spec.input_model, (*loc, "input_model"))
        output_model = self.model(spec.output_model, (*loc, "output_model"))
        try:
            step = Step(
                id=spec.id,
                name=spec.name,
                input_model=input_model,
                output_model=output_model,
                engine_name=engine,
                system_prompt=spec.system_prompt,
                user_prompt=spec.user_prompt,
                sampling=spec.sampling,
                output_format_instruction=spec.output_format_instruction,
                yield_output=spec.yield_output,
                cache=spec.cache,
            )
        except ConfigError as exc:
            raise self.source.at((*loc, "id"), str(exc)) from None
        self.locs[step] = loc
        return step

    def apply(self, spec: ApplySpec, loc: Loc) -> Apply:
        fn = self.reference(spec.apply, (*loc, "apply"), "function")
        if not callable(fn):
            raise self.source.error(
                (*loc, "apply"), f"'{spec.apply}' is not a function (it is {type(fn).__name__}); point at a function taking one item."
            )
        input_model = self.optional_model(spec.input_model, (*loc, "input_model"))
        output_model = self.optional_model(spec.output_model, (*loc, "output_model"))
        try:
            node = apply(fn, id=spec.id, input_model=input_model, output_model=output_model)
        except ConfigError as exc:
            raise self.source.at((*loc, "id" if spec.id else "apply"), f"{exc} Give the apply an id: key.") from None
        self.locs[node] = loc
        return node

    def optional_model(self, reference: str | None, loc: Loc) -> type[BaseModel] | None:
        return None if reference is None else self.model(reference, loc)

    def model(self, reference: str, loc: Loc) -> type[BaseModel]:
        """The pydantic model class `module:Name` names."""
        value = self.reference(reference, loc, "Class")
        if not (isinstance(value, type) and issubclass(value, BaseModel)):
            raise self.source.error(
                loc,
                f"'{reference}' is not a pydantic model class (it is {_kind(value)}); point at a class deriving from pydantic.BaseModel.",
            )
        return value

    def reference(self, reference: str, loc: Loc, example: str) -> Any:
        """The object `module:Name` (or `package.module:Outer.Name`) names."""
        module_name, _, attr = reference.partition(":")
        if not module_name or not attr:
            raise self.source.error(loc, f"expected a reference module:{example} (such as models:{example}), not {reference!r}.")
        value: Any = self.module(module_name, loc)
        parts = attr.split(".")
        for index, part in enumerate(parts):
            if not hasattr(value, part):
                close = difflib.get_close_matches(part, [n for n in dir(value) if not n.startswith("_")], n=1)
                hint = f"; did you mean '{module_name}:{'.'.join([*parts[:index], close[0]])}'?" if close else "."
                owner = f"module '{module_name}' ({value.__file__})" if isinstance(value, ModuleType) else repr(value)
                raise self.source.error(loc, f"{owner} has no attribute '{part}'{hint}")
            value = getattr(value, part)
        return value

    def module(self, name: str, loc: Loc) -> ModuleType:
        self._prefer_local(name)
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name == exc.name or name.startswith(f"{exc.name}.")):
                folders = ", ".join(str(root) for root in self.roots)
                raise self.source.error(
                    loc, f"cannot find the module '{name}'. Module references resolve from {folders}, then sys.path; check the spelling."
                ) from None
            raise self.source.error(loc, f"importing '{name}' failed{raised_at(exc, self.roots)}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:
            raise self.source.error(loc, f"importing '{name}' failed{raised_at(exc, self.roots)}: {type(exc).__name__}: {exc}") from None

    def _prefer_local(self, name: str) -> None:
        """Forget an imported module of the same name from elsewhere when the chain's folders hold one."""
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names or top not in sys.modules:
            return
        root = next((r for r in self.roots if (r / f"{top}.py").is_file() or (r / top / "__init__.py").is_file()), None)
        origin = getattr(sys.modules[top], "__file__", None)
        if root is None or (origin is not None and Path(origin).resolve().is_relative_to(root)):
            return
        for key in [key for key in sys.modules if key == top or key.startswith(f"{top}.")]:
            del sys.modules[key]


def _kind(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}, not a BaseModel"
    return f"a {type(value).__name__}"
