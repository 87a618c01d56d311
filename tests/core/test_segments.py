"""The segment plan: which top-level nodes stream together and which wait for the servers before them to stop."""

from __future__ import annotations

from pydantic import BaseModel

from chainette import Branch, Step, apply, register_engine
from chainette.backends.fake import FakeOptions
from chainette.engines import EngineConfig, EngineOptions
from chainette.execution.segments import (
    claimed_devices,
    conflicts,
    describe_segments,
    explain,
    overlap,
    plan_segments,
    server_keys,
)
from chainette.graph import normalize

GPUS = frozenset({"cuda:*"})
NONE: frozenset[str] = frozenset()


def engine(name: str, *, lazy: bool = True) -> EngineConfig[EngineOptions]:
    return EngineConfig(name=name, backend="fake", model=f"model-{name}", lazy=lazy, options=FakeOptions())


def segments(plan: list[set[str]], devices: dict[str, frozenset[str]], *, persistent: tuple[str, ...] = (), keys=None):
    configs = {name: engine(name, lazy=name not in persistent) for name in devices}
    keys = keys or {name: f"server-{name}" for name in devices}
    return plan_segments(plan, configs, keys, devices)


def test_endpoints_stream():
    assert segments([{"a"}, {"b"}, {"c"}], {"a": NONE, "b": NONE, "c": NONE}) == [[0, 1, 2]]


def test_two_lazy_servers_on_every_gpu_run_one_after_the_other():
    assert segments([{"small"}, {"big"}], {"small": GPUS, "big": GPUS}) == [[0], [1]]


def test_servers_on_different_gpus_stream():
    devices = {"a": frozenset({"cuda:0"}), "b": frozenset({"cuda:1"})}
    assert segments([{"a"}, {"b"}], devices) == [[0, 1]]


def test_a_server_on_one_gpu_waits_for_one_on_every_gpu():
    devices = {"a": GPUS, "b": frozenset({"cuda:1"}), "c": frozenset({"cuda:0", "cuda:2"})}
    assert segments([{"b"}, {"a"}], devices) == [[0], [1]]
    assert segments([{"b"}, {"c"}, {"a"}], devices) == [[0, 1], [2]]


def test_engines_on_one_server_stream():
    keys = {"extract": "shared", "judge": "shared"}
    assert segments([{"extract"}, {"judge"}], {"extract": GPUS, "judge": GPUS}, keys=keys) == [[0, 1]]


def test_a_persistent_engine_never_waits_nor_makes_others_wait():
    devices = {"kept": GPUS, "lazy": GPUS}
    assert segments([{"kept"}, {"lazy"}, {"kept"}], devices, persistent=("kept",)) == [[0, 1, 2]]


def test_an_apply_between_two_conflicting_steps_joins_the_first_segment():
    assert segments([{"a"}, set(), {"b"}, set()], {"a": GPUS, "b": GPUS}) == [[0, 1], [2, 3]]


def test_a_group_holds_every_engine_of_its_branches():
    devices = {"a": frozenset({"cuda:0"}), "b": frozenset({"cuda:1"}), "c": frozenset({"cuda:1"})}
    assert segments([{"a", "b"}, {"c"}], devices) == [[0], [1]]
    assert segments([{"a"}, {"b", "c"}], devices) == [[0, 1]]  # b and c start together, as before streaming


def test_a_segment_holds_what_all_its_nodes_use():
    devices = {"a": frozenset({"cuda:0"}), "b": frozenset({"cuda:1"}), "c": frozenset({"cuda:0"})}
    assert segments([{"a"}, {"b"}, {"c"}], devices) == [[0, 1], [2]]
    assert segments([{"a"}, {"b"}, {"c"}, {"a"}], devices) == [[0, 1], [2], [3]]


def test_no_nodes_make_no_segments():
    assert segments([], {}) == []


def test_every_index_of_a_kind_overlaps_each_of_them_only():
    assert overlap(frozenset({"cuda:*"}), frozenset({"cuda:3"}))
    assert overlap(frozenset({"cuda:3", "cuda:4"}), frozenset({"cuda:4"}))
    assert not overlap(frozenset({"cuda:*"}), frozenset({"npu:0"}))
    assert not overlap(frozenset({"cuda:0"}), frozenset({"cuda:1"}))
    assert not overlap(NONE, GPUS)


def test_explain_says_who_holds_the_gpus():
    devices = {"small": frozenset({"cuda:0"}), "big": frozenset({"cuda:0", "cuda:10", "cuda:2"})}
    configs = {name: engine(name) for name in devices}
    found = conflicts([{"small"}, set(), {"big"}], configs, {"small": "s", "big": "b"}, devices)
    assert explain(found) == [
        "starts the run",
        "streams with the node before",
        "waits for the previous segment: engine 'big' (cuda:0, cuda:2, cuda:10) shares GPUs with engine 'small'",
    ]


class Text(BaseModel):
    text: str


def step(id: str, engine_name: str) -> Step:
    return Step(id=id, input_model=Text, output_model=Text, engine_name=engine_name, user_prompt="{{text}}")


def test_keys_and_devices_come_from_the_backends(gpu_backend):
    configs = {
        "a": register_engine("a", backend="gpus", model="m:0,1"),
        "b": register_engine("b", backend="gpus", model="shared-m:1"),
        "c": register_engine("c", backend="gpus", model="api-model"),
        "d": register_engine("d", backend="gpus", model="shared-m:1", batch=True),
        "e": register_engine("e", backend="fake", model="m"),
    }
    assert server_keys(configs) == {"a": "engine:a", "b": "shared", "c": "engine:c", "d": "engine:d", "e": "engine:e"}
    assert claimed_devices(configs) == {
        "a": frozenset({"cuda:0", "cuda:1"}),
        "b": frozenset({"cuda:1"}),
        "c": NONE,
        "d": frozenset({"cuda:1"}),
        "e": NONE,
    }


def test_describe_lists_each_segments_nodes_and_why_it_waits(gpu_backend):
    configs = {
        "big": register_engine("big", backend="gpus", model="m:0,1"),
        "api": register_engine("api", backend="gpus", model="api-model"),
        "small": register_engine("small", backend="gpus", model="m:1"),
    }

    def keep(item):
        return item

    nodes = normalize(
        [
            step("extract", "big"),
            [Branch(name="fr", steps=[step("to_fr", "api")]).join("fr"), step("check", "api")],
            apply(keep, id="keep"),
            step("judge", "small"),
            step("score", "api"),
        ]
    )
    assert describe_segments(nodes, configs) == [
        {"nodes": ["extract", "to_fr", "fr", "check", "keep"], "waits": None},
        {"nodes": ["judge", "score"], "waits": "engine 'small' (cuda:1) shares GPUs with engine 'big'"},
    ]
