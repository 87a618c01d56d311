"""The response cache against the loopback server, counting the requests that reach it: unchanged reruns,
an edited prompt, edited and appended rows, switches, sampling, bad files, a full disk, the size cap, secrets."""

from __future__ import annotations

from collections import Counter
import itertools
import json
from pathlib import Path
import sqlite3
import threading

from pydantic import BaseModel, field_validator
import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.testing import FakeServer

from .conftest import first_user_message

pytest.importorskip("chainette_openai")

KEY = "sk-cache-test-0123456789"
GREEDY = SamplingParams(temperature=0)


class Text(BaseModel):
    text: str


class Label(BaseModel):
    label: str


def echo(body: dict) -> str:
    """The label is the prompt itself: each step's answer shows what it was asked."""
    return json.dumps({"label": first_user_message(body)})


@pytest.fixture
def server():
    with FakeServer(respond=echo, api_key=KEY) as running:
        yield running


@pytest.fixture(autouse=True)
def engine(server):
    register_engine("llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY)


def step(id: str, prompt: str, **kw) -> Step:
    return Step(id=id, output_model=Label, engine_name="llm", user_prompt=prompt, sampling=kw.pop("sampling", GREEDY), **kw)


def four_steps(b_prompt: str = "b:{{a.label}}") -> Chain:
    """a reads the row; b reads a; c reads b; d reads a."""
    a = step("a", "a:{{text}}", input_model=Text)
    return Chain(name="four", steps=[a, step("b", b_prompt), step("c", "c:{{b.label}}"), step("d", "d:{{a.label}}")])


def rows(n: int, edited: dict[int, str] | None = None) -> list[dict]:
    return [{"text": (edited or {}).get(i, f"row{i}")} for i in range(n)]


def asked(server: FakeServer) -> Counter[str]:
    """How many requests each step sent, by the first letter of its prompt."""
    return Counter(first_user_message(body).split(":")[0] for body in server.chat_requests())


def flattened(result) -> list[dict]:
    return [{key: value for key, value in row.items()} for row in result.records("flattened")]


def test_an_unchanged_rerun_sends_no_request_in_any_output_directory_or_chain(server, tmp_path):
    first = four_steps().run(rows(20), output_dir=tmp_path / "one")
    assert asked(server) == {"a": 20, "b": 20, "c": 20, "d": 20}
    server.requests.clear()

    again = four_steps().run(rows(20), output_dir=tmp_path / "two")
    assert server.chat_requests() == []
    assert flattened(again) == flattened(first)
    steps = again.stats["steps"]
    assert {name: steps[name]["cached"] for name in "abcd"} == dict.fromkeys("abcd", 20)
    assert steps["a"]["saved_input_tokens"] == 20 * 11 and steps["a"]["saved_output_tokens"] == 20 * 7
    assert steps["a"]["requests"] == 0 and steps["a"]["input_tokens"] == 0

    other = Chain(name="another", steps=[step("x", "a:{{text}}", input_model=Text)]).run(rows(20), output_dir=tmp_path / "three")
    assert server.chat_requests() == [], "another chain asking the same gets the same answers"
    assert [row.label for row in other["x"]] == [row.label for row in first["a"]]


def test_editing_one_prompt_re_requests_that_step_and_the_steps_whose_inputs_changed(server, tmp_path):
    four_steps().run(rows(20), output_dir=tmp_path / "one")
    server.requests.clear()
    result = four_steps(b_prompt="B2:{{a.label}}").run(rows(20), output_dir=tmp_path / "two")
    assert asked(server) == {"B2": 20, "c": 20}, "a and d read nothing that changed"
    assert [row.label for row in result["c"]] == [f"c:B2:a:row{i}" for i in range(20)]


def test_editing_or_appending_rows_re_requests_only_those_rows(server, tmp_path):
    four_steps().run(rows(20), output_dir=tmp_path / "one")
    server.requests.clear()
    result = four_steps().run(rows(25, edited={3: "changed"}), output_dir=tmp_path / "two")
    assert asked(server) == dict.fromkeys("abcd", 6)
    assert sorted(first_user_message(body) for body in server.chat_requests() if first_user_message(body).startswith("a:")) == sorted(
        ["a:changed", *(f"a:row{i}" for i in range(20, 25))]
    )
    assert [row.label for row in result["a"]][3] == "a:changed"


def test_the_switches_no_cache_refresh_engine_and_step(server, tmp_path):
    chain = four_steps()
    chain.run(rows(5), output_dir=tmp_path / "fill")
    server.requests.clear()
    chain.run(rows(5), output_dir=tmp_path / "off", cache=False)
    assert asked(server) == dict.fromkeys("abcd", 5)
    server.requests.clear()
    chain.run(rows(7), output_dir=tmp_path / "refresh", cache="refresh")
    assert asked(server) == dict.fromkeys("abcd", 7), "refresh asks again"
    server.requests.clear()
    chain.run(rows(7), output_dir=tmp_path / "after-refresh")
    assert server.chat_requests() == [], "what refresh asked was stored"

    uncached = Chain(name="four", steps=[step("a", "a:{{text}}", input_model=Text, cache=False), step("b", "b:{{a.label}}")])
    uncached.run(rows(7), output_dir=tmp_path / "step-off")
    assert asked(server) == {"a": 7}
    server.requests.clear()
    register_engine("llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, cache=False)
    four_steps().run(rows(7), output_dir=tmp_path / "engine-off")
    assert asked(server) == dict.fromkeys("abcd", 7)


def test_no_cache_stores_nothing(server, tmp_path, cache_dir):
    four_steps().run(rows(5), output_dir=tmp_path / "off", cache=False)
    assert not (cache_dir / "responses.sqlite").exists()
    four_steps().run(rows(5), output_dir=tmp_path / "on")
    assert len(server.chat_requests()) == 40


def test_replicas_share_answers_and_the_endpoint_is_not_in_the_key(server, tmp_path):
    four_steps().run(rows(5), output_dir=tmp_path / "one")
    with FakeServer(respond=echo, api_key=KEY) as replica:
        register_engine("llm", backend="openai", model="fake-model", endpoint=f"{replica.base_url}/v1", api_key=KEY, max_concurrency=3)
        four_steps().run(rows(5), output_dir=tmp_path / "two")
        assert replica.chat_requests() == []


def test_what_the_server_sees_is_the_key_model_schema_sampling_samples(server, tmp_path):
    four_steps().run(rows(3), output_dir=tmp_path / "one")
    server.requests.clear()
    hotter = Chain(name="t", steps=[step("a", "a:{{text}}", input_model=Text, sampling=SamplingParams(temperature=0, max_tokens=50))])
    hotter.run(rows(3), output_dir=tmp_path / "two")
    assert asked(server) == {"a": 3}, "other sampling fields, other requests"

    class Other(BaseModel):
        label: str
        note: str = ""

    server.requests.clear()
    other_schema = Step(id="a", input_model=Text, output_model=Other, engine_name="llm", user_prompt="a:{{text}}", sampling=GREEDY)
    Chain(name="t", steps=[other_schema]).run(rows(3), output_dir=tmp_path / "three")
    assert asked(server) == {"a": 3}

    server.requests.clear()
    three = Chain(name="t", steps=[step("a", "n:{{text}}", input_model=Text, sampling=SamplingParams(temperature=0, n=3))])
    first = three.run(rows(2), output_dir=tmp_path / "n3")
    assert len(server.chat_requests()) == 2 and server.chat_requests()[0]["n"] == 3
    server.requests.clear()
    again = three.run(rows(2), output_dir=tmp_path / "n3-again")
    assert server.chat_requests() == [] and len(again["a"]) == len(first["a"]) == 6


def test_random_sampling_keeps_each_rows_own_sample(tmp_path):
    """Without a temperature of 0 or a seed, rows whose prompts render alike keep their own samples on a rerun."""
    counter = itertools.count()

    def sample(body: dict) -> str:
        return json.dumps({"label": f"sample{next(counter)}"})

    with FakeServer(respond=sample) as server:
        register_engine("hot", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key="k")
        chain = Chain(name="s", steps=[Step(id="s", input_model=Text, output_model=Label, engine_name="hot", user_prompt="{{text}}")])
        first = [row.label for row in chain.run([{"text": "same"}] * 6, output_dir=tmp_path / "one")["s"]]
        again = [row.label for row in chain.run([{"text": "same"}] * 6, output_dir=tmp_path / "two")["s"]]
        assert len(set(first)) == 6 and again == first
        assert len(server.chat_requests()) == 6


def test_only_valid_answers_are_stored_and_a_stale_answer_is_asked_again(tmp_path):
    def answer(body: dict) -> str:
        prompt = first_user_message(body)
        return "not json" if "bad" in prompt else json.dumps({"label": prompt})

    with FakeServer(respond=answer) as server:
        register_engine("llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key="k")
        chain = Chain(name="v", steps=[step("a", "{{text}}", input_model=Text)])
        inputs = [{"text": "good"}, {"text": "bad"}]
        first = chain.run(inputs, output_dir=tmp_path / "one")
        assert first.stats["steps"]["a"]["failed"] == 1
        server.requests.clear()
        chain.run(inputs, output_dir=tmp_path / "two")
        assert [first_user_message(body) for body in server.chat_requests()] == ["bad", "bad"], "the failure (and its repair) asked again"

        class Shouting(BaseModel):
            label: str

            @field_validator("label")
            @classmethod
            def upper(cls, value: str) -> str:
                if value != value.upper():
                    raise ValueError("must be upper case")
                return value

        server.requests.clear()
        strict = Step(id="a", input_model=Text, output_model=Shouting, engine_name="llm", user_prompt="{{text}}", sampling=GREEDY)
        Chain(name="v", steps=[strict]).run([{"text": "good"}], output_dir=tmp_path / "three")
        assert server.chat_requests(), "the cached answer no longer validates: it is not used"


def test_a_corrupt_or_foreign_cache_file_is_named_and_the_run_goes_on(server, tmp_path, cache_dir):
    import io

    from chainette.ui.plain import PlainLines

    (cache_dir / "responses.sqlite").write_bytes(b"this is not a database, it is a text file" * 100)
    out = io.StringIO()
    result = four_steps().run(rows(3), output_dir=tmp_path / "corrupt", reporter=PlainLines(out, every=0))
    assert result.stats["status"] == "completed"
    assert "responses.sqlite" in out.getvalue() and "goes on without the cache" in out.getvalue()

    (cache_dir / "responses.sqlite").unlink()
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        db.execute("CREATE TABLE mine (x)")
    out = io.StringIO()
    four_steps().run(rows(3), output_dir=tmp_path / "foreign", reporter=PlainLines(out, every=0))
    assert "not chainette's response cache" in out.getvalue()
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        assert [name for (name,) in db.execute("SELECT name FROM sqlite_master")] == ["mine"], "someone else's file is left alone"


@pytest.mark.parametrize("damaged", ["every page past the first", "the key index"])
def test_a_damaged_cache_file_is_named_and_the_run_goes_on_without_it(server, tmp_path, cache_dir, damage, damaged):
    """Damage found on opening the file (every page gone) or only when the first answer is looked up (the key index):
    either way one notice names the file and how to remove it, and every row is answered by the server."""
    import io

    from chainette.ui.plain import PlainLines

    four_steps().run(rows(20), output_dir=tmp_path / "fill")
    damage(cache_dir / "responses.sqlite", "sqlite_autoindex_answers_1" if damaged == "the key index" else None)
    server.requests.clear()
    out = io.StringIO()
    result = four_steps().run(rows(20), output_dir=tmp_path / "damaged", reporter=PlainLines(out, every=0))
    assert result.stats["status"] == "completed" and result.stats["steps"]["d"]["ok"] == 20
    assert asked(server) == dict.fromkeys("abcd", 20), "every answer was asked again"
    notices = [line for line in out.getvalue().splitlines() if "response cache" in line]
    assert len(notices) == 1, notices
    assert f"{cache_dir / 'responses.sqlite'} is damaged (database disk image is malformed)" in notices[0]
    assert "the run goes on without the cache" in notices[0] and f"chainette cache clear --cache-dir {cache_dir}" in notices[0]


def test_a_full_disk_stops_the_storing_not_the_run(server, tmp_path, monkeypatch):
    import io

    from chainette.cache import database
    from chainette.ui.plain import PlainLines

    connect = database._connect

    def small_disk(path: Path) -> sqlite3.Connection:
        db = connect(path)
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        db.execute(f"PRAGMA max_page_count = {pages + 2}")
        return db

    monkeypatch.setattr(database, "_connect", small_disk)
    monkeypatch.setattr(database, "FLUSH_EVERY", 4)
    out = io.StringIO()
    result = four_steps(b_prompt="b:{{a.label}}" + "x" * 3000).run(
        rows(40), output_dir=tmp_path / "full", reporter=PlainLines(out, every=0)
    )
    assert result.stats["status"] == "completed" and result.stats["steps"]["d"]["ok"] == 40
    assert "no longer stored" in out.getvalue() and "full" in out.getvalue()


def test_the_size_cap_evicts_the_least_recently_used(server, tmp_path, monkeypatch, cache_dir):
    monkeypatch.setenv("CHAINETTE_CACHE_MAX_SIZE", "20kB")
    old = Chain(name="old", steps=[step("a", "old:{{text}}" + "x" * 600, input_model=Text)])
    recent = Chain(name="recent", steps=[step("a", "new:{{text}}" + "y" * 400, input_model=Text)])
    old.run(rows(30), output_dir=tmp_path / "old")
    recent.run(rows(30), output_dir=tmp_path / "recent")
    for round in range(3):
        recent.run(rows(30), output_dir=tmp_path / f"again{round}")
        server.requests.clear()
    with sqlite3.connect(cache_dir / "responses.sqlite") as db:
        (stored,) = db.execute("SELECT SUM(size) FROM answers").fetchone()
    assert stored <= 20_000
    server.requests.clear()
    recent.run(rows(30), output_dir=tmp_path / "last")
    assert len(server.chat_requests()) < 10, "the answers used last were kept"


def test_no_secret_and_no_endpoint_reach_the_cache_file(server, tmp_path, cache_dir, every_byte):
    four_steps().run(rows(5), output_dir=tmp_path / "one")
    stored = every_byte(cache_dir)
    assert stored and KEY.encode() not in stored and b"127.0.0.1" not in stored


class Tagged(BaseModel):
    text: str
    tags: dict[str, str]


def test_a_step_looks_up_the_rows_at_hand_together_and_each_row_keeps_its_own_answer(server, tmp_path, monkeypatch):
    """Rows reach the cache in groups (one query each), cached and new rows mixed, with rows whose prompt cannot render
    among them: each row ends once, in the output with its own answer or in errors with its reason."""
    from chainette.cache import ResponseCache

    looked_up: list[int] = []
    get_many = ResponseCache.get_many
    monkeypatch.setattr(ResponseCache, "get_many", lambda self, keys: looked_up.append(len(keys)) or get_many(self, keys))
    chain = Chain(name="tags", steps=[step("a", "a:{{text}}:{{tags.kind}}", input_model=Tagged)])
    chain.run([{"text": f"row{i}", "tags": {"kind": "k"}} for i in range(0, 600, 2)], output_dir=tmp_path / "one")
    server.requests.clear()
    looked_up.clear()

    inputs = [{"text": f"row{i}", "tags": {"kind": "k"} if i % 7 else {}} for i in range(600)]
    result = chain.run(inputs, output_dir=tmp_path / "two")
    unrenderable = {str(i) for i in range(0, 600, 7)}
    asked_now = {first_user_message(body) for body in server.chat_requests()}
    assert asked_now == {f"a:row{i}:k" for i in range(1, 600, 2) if i % 7}, "only the new rows that render are asked"
    labels = {row["row_id"]: row["label"] for row in result.records("a")}
    assert labels == {str(i): f"a:row{i}:k" for i in range(600) if i % 7}, "each row has its own answer, cached or not"
    errors = [json.loads(line) for line in (tmp_path / "two" / "errors.jsonl").read_text().splitlines()]
    assert sorted(error["row_id"] for error in errors) == sorted(unrenderable)
    assert all(error["error_type"] == "template" and "kind" in error["message"] for error in errors)
    assert sum(looked_up) == 600 - len(unrenderable) and len(looked_up) < 60, f"looked up in groups: {looked_up}"
    assert result.stats["steps"]["a"]["cached"] == len({i for i in range(0, 600, 2) if i % 7})
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("chainette-cache")], "the writer's thread ended"


def test_a_step_using_the_cache_keeps_its_engine_s_concurrency_busy(tmp_path):
    """The rows a step takes together for their look-up (up to 256) are shared by all its workers: the engine's slots
    fill with requests while rows are left, as without the cache (not one worker per group of rows)."""
    with FakeServer(respond=echo, api_key=KEY, latency=0.1) as slow:
        register_engine("slow", backend="openai", model="fake-model", endpoint=f"{slow.base_url}/v1", api_key=KEY, max_concurrency=32)
        chain = Chain(name="busy", steps=[Step(id="a", input_model=Text, output_model=Label, engine_name="slow", user_prompt="a:{{text}}")])
        result = chain.run(rows(600), output_dir=tmp_path / "out")
    assert result.stats["steps"]["a"]["ok"] == 600
    assert slow.max_in_flight >= 16, "three groups of rows would keep at most three requests in flight"
