"""Running chains: output layout, alignment, repair, row errors, retries, engine failures, lifecycle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import re

from pydantic import BaseModel
import pytest

from chainette import Branch, Chain, ChainetteError, EngineError, RetryableError, RowError, Step, apply, register_engine
from chainette.client import Answer
from chainette.errors import ConfigError
import chainette.policy

from .conftest import Label, Text


def echo(request, attempt):
    """Answer with the row's text as label, so alignment can be checked."""
    text = re.search(r"<<(.*?)>>", request.messages[-1]["content"]).group(1)
    return json.dumps({"label": text, "score": 0.5})


def label_step(id="label", prompt="<<{{text}}>>", engine="s", **kw) -> Step:
    return Step(id=id, input_model=kw.pop("input_model", Text), output_model=Label, engine_name=engine, user_prompt=prompt, **kw)


def rows(n):
    return [{"text": f"row{i}"} for i in range(n)]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    monkeypatch.setattr(chainette.policy, "BASE_DELAY", 0.001)


def test_output_layout_and_alignment(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m", max_concurrency=7)
    second = Step(id="again", output_model=Label, engine_name="s", user_prompt="<<{{label.label}}!>>")
    chain = Chain(name="c", steps=[label_step(), second])
    result = chain.run(rows(50), output_dir=tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [".chainette", "again", "errors.jsonl", "flattened", "graph.json", "label", "run.json"]
    assert [r.label for r in result["label"]] == [f"row{i}" for i in range(50)]
    assert [r.label for r in result["again"]] == [f"row{i}!" for i in range(50)]
    records = result.records("again")
    assert all(r["label"] == f"row{r['row_id']}!" for r in records)
    flat = result.flattened
    assert flat[3] == {
        "row_id": "3",
        "row_index": 3,
        "chain_input.text": "row3",
        "label.label": "row3",
        "label.score": 0.5,
        "again.label": "row3!",
        "again.score": 0.5,
    }
    stats = result.stats
    assert stats["status"] == "completed"
    assert stats["steps"]["label"]["ok"] == 50 and stats["steps"]["label"]["input_tokens"] == 150
    assert stats["versions"]["chainette-core"]


def test_requests_in_flight_respect_max_concurrency(tmp_path):
    from chainette.testing import FakeServer  # noqa: F401  (documents the real-HTTP variant in backend tests)

    in_flight = peak = 0

    class Slow:
        from chainette import hookimpl

        @hookimpl
        def make_client(self, config):
            class Client:
                async def complete(self, request):
                    nonlocal in_flight, peak
                    in_flight += 1
                    peak = max(peak, in_flight)
                    await asyncio.sleep(0.01)
                    in_flight -= 1
                    from chainette import Answer

                    return Answer('{"label": "x"}')

                async def aclose(self):
                    pass

            return Client()

    from chainette.plugins import get_plugins

    get_plugins().register("slow", Slow())
    register_engine("s", backend="slow", model="m", max_concurrency=5)
    Chain(name="c", steps=[label_step()]).run(rows(40), output_dir=tmp_path / "o")
    assert peak == 5


def test_invalid_input_rows_go_to_errors_with_line(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"txt": "b"}\n{oops\n{"text": "c"}\n')
    result = Chain(name="c", steps=[label_step()]).run(path, output_dir=tmp_path / "o")
    assert [r["row_id"] for r in result.records("label")] == ["0", "3"]
    errors = {e["row_id"]: e for e in result.errors}
    assert "in.jsonl:3: does not match Text: field 'text': Field required" in errors["1"]["message"]
    assert errors["2"]["error_type"] == "invalid_input" and "in.jsonl:4: not valid JSON" in errors["2"]["message"]
    assert errors["2"]["raw"] == "{oops"
    assert result.stats["input"] == {"rows": 4, "invalid": 2}


def test_json_array_input(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    path = tmp_path / "in.json"
    path.write_text(json.dumps(rows(3)))
    assert [r.label for r in Chain(name="c", steps=[label_step()]).run(path, output_dir=tmp_path / "o")["label"]] == [
        "row0",
        "row1",
        "row2",
    ]


def test_missing_input_file_is_clear(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    with pytest.raises(ChainetteError, match="Cannot read input file .*nope.jsonl"):
        Chain(name="c", steps=[label_step()]).run(tmp_path / "nope.jsonl", output_dir=tmp_path / "o")


def test_invalid_answer_gets_one_repair_request(scripted, tmp_path):
    backend = scripted(lambda request, attempt: '{"lbl": 1}' if attempt == 1 else '```json\n{"label": "fixed"}\n```')
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")
    assert result["label"][0].label == "fixed"
    repair = backend.requests[1].messages
    assert repair[-2] == {"role": "assistant", "content": '{"lbl": 1}'}
    assert "label: Field required" in repair[-1]["content"]


def test_answer_invalid_after_repair_goes_to_errors_with_raw(scripted, tmp_path):
    scripted(lambda request, attempt: f"not json {attempt}")
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(2), output_dir=tmp_path / "o")
    assert result["label"] == []
    assert [(e["error_type"], e["raw"], e["step_id"]) for e in result.errors] == [("validation", "not json 2", "label")] * 2
    assert result.stats["steps"]["label"]["failed"] == 2


def test_row_error_and_retry_exhaustion(scripted, tmp_path):
    def answer(request, attempt):
        if "row0" in request.messages[-1]["content"]:
            return RowError("refused", kind="refusal", raw="I cannot")
        if "row1" in request.messages[-1]["content"]:
            return RetryableError("overloaded", kind="http_503")
        return RetryableError("blip", kind="http_500") if attempt < 3 else echo(request, attempt)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_retries=2)
    result = Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o")
    errors = {e["row_id"]: e for e in result.errors}
    assert errors["0"]["error_type"] == "refusal" and errors["0"]["raw"] == "I cannot"
    assert errors["1"]["error_type"] == "http_503" and "gave up after 3 attempts" in errors["1"]["message"]
    assert [r.label for r in result["label"]] == ["row2"]
    assert sum(r.row_id == "1" for r in backend.requests) == 3


def test_engine_error_stops_the_run_and_stops_engines(scripted, tmp_path):
    backend = scripted(lambda request, attempt: EngineError("engine 's': HTTP 401: bad key", kind="authentication"))
    register_engine("s", backend="scripted", model="m")
    with pytest.raises(EngineError, match="401"):
        Chain(name="c", steps=[label_step()]).run(rows(5), output_dir=tmp_path / "o")
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "failed" and "401" in run["error"]
    assert backend.events == ["start s", "close s", "stop s"]


def test_unreachable_endpoint_after_retries_is_an_engine_error(scripted, tmp_path):
    scripted(lambda request, attempt: RetryableError("cannot connect to http://127.0.0.1:9/v1", kind="connection"))
    register_engine("s", backend="scripted", model="m", max_retries=1)
    with pytest.raises(EngineError, match=r"cannot connect to http://127.0.0.1:9/v1 \(gave up after 2 attempts\)"):
        Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")


def lazy_chain_steps():
    return [
        label_step("s1", engine="a"),
        label_step("s2", engine="a", prompt="<<{{label}}>>", input_model=None),
        [Branch(name="x", steps=[label_step("s3", engine="b", prompt="<<{{label}}>>", input_model=None)])],
        label_step("s4", engine="p", prompt="<<{{label}}>>", input_model=None),
        label_step("s5", engine="a", prompt="<<{{label}}>>", input_model=None),
    ]


def test_lazy_engines_on_the_same_gpu_start_and_stop_around_their_steps(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("a", backend="scripted", model="m:0")
    register_engine("b", backend="scripted", model="m:0")
    register_engine("p", backend="scripted", model="m:1", lazy=False)
    Chain(name="c", steps=lazy_chain_steps()).run(rows(2), output_dir=tmp_path / "o")
    assert backend.events == [
        "start p",
        "start a",
        "close a",
        "stop a",
        "start b",
        "close b",
        "stop b",
        "start a",
        "close a",
        "stop a",
        "close p",
        "stop p",
    ]


def test_engines_taking_no_gpu_all_start_before_the_rows_stream_and_stop_after(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("a", backend="scripted", model="m")
    register_engine("b", backend="scripted", model="m:1")
    register_engine("p", backend="scripted", model="m:0", lazy=False)
    result = Chain(name="c", steps=lazy_chain_steps()).run(rows(2), output_dir=tmp_path / "o")
    assert backend.events == ["start p", "start a", "start b", "close a", "stop a", "close b", "stop b", "close p", "stop p"]
    assert [r.label for r in result["s5"]] == ["row0", "row1"]


def test_apply_filters_fans_out_and_records_failures(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")

    def spread(item: Label):
        if item.label == "row0":
            return []
        if item.label == "row1":
            raise ValueError("bad row")
        return [Label(label=f"{item.label}.{k}") for k in range(2)]

    chain = Chain(name="c", steps=[label_step("first"), apply(spread), label_step("after", prompt="<<{{label}}>>", input_model=None)])
    result = chain.run(rows(3), output_dir=tmp_path / "o")
    assert [(r["row_id"], r["label"]) for r in result.records("after")] == [("2-0", "row2.0"), ("2-1", "row2.1")]
    assert [(e["row_id"], e["error_type"], e["message"]) for e in result.errors] == [("1", "apply_error", "ValueError: bad row")]
    stats = result.stats["steps"]["spread"]
    assert (stats["rows_in"], stats["ok"], stats["failed"], stats["filtered"]) == (3, 1, 1, 1)


def test_values_a_line_cannot_hold_fail_their_row_whether_an_apply_returns_them_or_a_model_answers_them(scripted, tmp_path):
    """NaN (orjson would write null) and integers beyond 64 bits (orjson refuses them) never reach a file: an apply's
    row fails naming the field, and a step's answer holding NaN is unfit, so it is repaired."""
    backend = scripted(lambda request, attempt: '{"label": "x", "score": NaN}' if attempt == 1 else '{"label": "fixed", "score": 0.5}')
    register_engine("s", backend="scripted", model="m")

    class Counted(BaseModel):
        text: str
        share: float = 0.0
        count: int = 0

    def odd(item: Text):
        return {"row0": [Counted(text="a", share=float("nan"))], "row1": [Counted(text="b", count=2**70)]}.get(
            item.text, [Counted(text=item.text)]
        )

    chain = Chain(name="c", steps=[apply(odd, input_model=Text, output_model=Counted), label_step("after", input_model=None)])
    result = chain.run(rows(3), output_dir=tmp_path / "o")
    assert [(e["row_id"], e["error_type"]) for e in result.errors] == [("0", "invalid_output"), ("1", "invalid_output")]
    assert "'odd' returned share = nan, not a finite number" in result.errors[0]["message"]
    assert "'odd' returned count = 1180591620717411303424, an integer beyond 64 bits" in result.errors[1]["message"]
    assert [r.label for r in result["after"]] == ["fixed"] and result.stats["steps"]["after"]["repairs"] == 1
    assert "is nan" in backend.requests[1].messages[-1]["content"], "the repair request says what was wrong"


def test_parallel_branches_join_and_keep_alignment(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    fr = Branch(name="fr", steps=[label_step("to_fr", prompt="<<fr {{text}}>>", input_model=None)]).join("fr")
    de = Branch(name="de", steps=[label_step("to_de", prompt="<<de {{chain_input.text}}>>", input_model=None)]).join("de")
    side = Branch(name="side", steps=[label_step("side", prompt="<<side {{text}}>>", input_model=None)])
    final = label_step("final", prompt="<<{{fr.label}} + {{de.label}} + {{text}}>>", input_model=None)
    result = Chain(name="c", steps=[[fr, de, side], final]).run(rows(20), output_dir=tmp_path / "o")
    assert [r.label for r in result["final"]] == [f"fr row{i} + de row{i} + row{i}" for i in range(20)]
    assert len(result["side"]) == 20
    assert result.flattened[0]["fr.label"] == "fr row0"


def test_failed_row_in_joined_branch_is_not_passed_on(scripted, tmp_path):
    scripted(
        lambda request, attempt: RowError("no", kind="refusal") if "fr row1" in request.messages[-1]["content"] else echo(request, attempt)
    )
    register_engine("s", backend="scripted", model="m")
    fr = Branch(name="fr", steps=[label_step("to_fr", prompt="<<fr {{text}}>>", input_model=None)]).join("fr")
    final = label_step("final", prompt="<<{{fr.label}}>>", input_model=None)
    result = Chain(name="c", steps=[[fr], final]).run(rows(3), output_dir=tmp_path / "o")
    assert [r["row_id"] for r in result.records("final")] == ["0", "2"]
    assert [(e["row_id"], e["step_id"]) for e in result.errors] == [("1", "to_fr")]


def test_fan_out_inside_joined_branch_gives_a_list(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    twice = apply(lambda item: [item, item], id="twice")
    branch = Branch(name="b", steps=[label_step("inner", prompt="<<{{text}}>>", input_model=None), twice]).join("both")
    result = Chain(name="c", steps=[[branch], apply(lambda item: item, id="keep")]).run(rows(1), output_dir=tmp_path / "o")
    assert result.flattened[0]["both"] == [{"label": "row0", "score": 0.5}] * 2


def test_yield_output_false_writes_no_folder(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[label_step(yield_output=False), label_step("b", prompt="<<{{label.label}}>>", input_model=None)])
    result = chain.run(rows(2), output_dir=tmp_path / "o")
    assert not (tmp_path / "o" / "label").exists()
    assert "label.label" not in result.flattened[0] and result.flattened[0]["b.label"] == "row0"


def test_reasoning_is_kept_beside_the_output(tmp_path):
    from chainette import Answer, hookimpl
    from chainette.plugins import get_plugins

    class Thinker:
        @hookimpl
        def make_client(self, config):
            class Client:
                async def complete(self, request):
                    return Answer('{"label": "x"}', reasoning="because")

                async def aclose(self):
                    pass

            return Client()

    get_plugins().register("thinker", Thinker())
    register_engine("s", backend="thinker", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")
    assert result.records("label")[0]["label_reasoning"] == "because"
    assert result.flattened[0]["label_reasoning"] == "because"


def test_output_dir_of_another_run_is_refused_unless_overwrite(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[label_step()])
    chain.run(rows(2), output_dir=tmp_path / "o")
    assert len(chain.run(rows(2), output_dir=tmp_path / "o")["label"]) == 2
    assert len(backend.requests) == 2, "a finished run of the same chain and inputs is not requested again"
    with pytest.raises(ChainetteError, match=r"holds a run of other inputs.*--overwrite \(overwrite=True\)") as refused:
        chain.run(rows(3), output_dir=tmp_path / "o")
    assert refused.value.__context__ is None, "no 'During handling of RuntimeError: no running event loop' in the traceback"
    other = Chain(name="c", steps=[label_step(prompt="<<{{text}}>> again")])
    with pytest.raises(ChainetteError, match="holds a run of a changed chain: 'label' changed since it started"):
        other.run(rows(2), output_dir=tmp_path / "o")
    assert len(chain.run(rows(3), output_dir=tmp_path / "o", overwrite=True)["label"]) == 3
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(ChainetteError, match="not empty and holds no chainette run"):
        chain.run(rows(1), output_dir=tmp_path / "plain")


def test_unregistered_engine_is_reported_before_running(tmp_path):
    with pytest.raises(ConfigError, match="No engine named 's'"):
        Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_run_works_inside_a_running_event_loop(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    chain = Chain(name="c", steps=[label_step()])

    async def notebook_cell():
        sync_result = chain.run(rows(2), output_dir=tmp_path / "sync")
        async_result = await chain.arun(rows(2), output_dir=tmp_path / "async")
        return sync_result, async_result

    sync_result, async_result = asyncio.run(notebook_cell())
    assert len(sync_result["label"]) == len(async_result["label"]) == 2


def test_fake_backend_answers_follow_the_schema(tmp_path):
    class Nested(BaseModel):
        items: list[Label]
        kind: str
        count: int

    register_engine("f", backend="fake", model="m")
    step = Step(id="n", input_model=Text, output_model=Nested, engine_name="f", user_prompt="{{text}}")
    first = Chain(name="c", steps=[step]).run(rows(3), output_dir=tmp_path / "a")
    second = Chain(name="c", steps=[step]).run(rows(3), output_dir=tmp_path / "b")
    assert len(first["n"]) == 3 and first["n"] == second["n"]
    assert first["n"][0] != first["n"][1]


def test_engines_sharing_a_server_stay_up_between_their_steps(tmp_path):
    from chainette.plugins import get_plugins

    events = []

    class Shared:
        from chainette import hookimpl

        @hookimpl
        def server_key(self, config):
            return "one-server" if config.name in ("a", "b") else None

        @hookimpl
        def server_devices(self, config):
            return ["cuda:0"]

        @hookimpl
        def ensure_running(self, config, run_dir):
            events.append(f"start {config.name} in {run_dir.name}")

        @hookimpl
        def stop_engine(self, config):
            events.append(f"stop {config.name}")

        @hookimpl
        def make_client(self, config):
            from chainette import Answer

            class Client:
                async def complete(self, request):
                    return Answer('{"label": "x"}')

                async def aclose(self):
                    pass

            return Client()

    get_plugins().register("shared", Shared())
    for name in "abc":
        register_engine(name, backend="shared", model="m")
    later = {"input_model": None, "prompt": "<<{{chain_input.text}}>>"}
    steps = [label_step("s1", engine="a"), label_step("s2", engine="b", **later), label_step("s3", engine="c", **later)]
    Chain(name="c", steps=steps).run(rows(1), output_dir=tmp_path / "o")
    assert events == ["start a in o", "start b in o", "stop a", "stop b", "start c in o", "stop c"]


def test_sigterm_stops_gracefully_and_the_run_resumes(scripted, tmp_path):
    import os
    import signal

    from chainette.errors import RunInterrupted

    def answer(request, attempt):
        if request.row_id == "5" and not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return echo(request, attempt)

    signalled: list[bool] = []
    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m", max_concurrency=4)
    chain = Chain(name="c", steps=[label_step(), label_step("again", prompt="<<{{label.label}}>>", input_model=None)])
    with pytest.raises(RunInterrupted, match="Stopped by SIGTERM.*Run the same command again") as excinfo:
        chain.run(rows(50), output_dir=tmp_path / "o", cache=False)  # "again" asks what "label" asked: the cache would answer
    assert excinfo.value.exit_code == 143
    assert backend.events == ["start s", "close s", "stop s"]
    run = json.loads((tmp_path / "o" / "run.json").read_text())
    assert run["status"] == "interrupted"
    finished = run["steps"]["label"]["ok"]
    assert 6 <= finished < 50, "rows in flight were finished, no new ones taken"
    first_pass = len(backend.requests)

    result = chain.run(rows(50), output_dir=tmp_path / "o", cache=False)
    assert [r["row_id"] for r in result.records("label")] == [str(i) for i in range(50)]
    assert [r.label for r in result["again"]] == [f"row{i}" for i in range(50)]
    assert len(backend.requests) - first_pass == (50 - finished) + (50 - run["steps"]["again"]["ok"])
    assert result.stats["status"] == "completed" and result.stats["resumed"] is True
    assert result.stats["steps"]["label"]["ok"] == 50


def test_disk_full_stops_the_run_with_a_clear_message(scripted, tmp_path, monkeypatch):
    import errno
    import os

    import chainette.run.appends

    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    real_write_all = chainette.run.appends.write_all

    def write_on_full_disk(fd, data):
        if Path(os.readlink(f"/proc/self/fd/{fd}")).parent.name == "label":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(fd, data)

    monkeypatch.setattr(chainette.run.appends, "write_all", write_on_full_disk)
    with pytest.raises(ChainetteError, match="The disk is full: the run stopped. Free some space, then run the same command again"):
        Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o")


def test_output_directory_that_cannot_be_created(scripted, tmp_path):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    (tmp_path / "file").write_text("")
    with pytest.raises(ChainetteError, match="is not writable"):
        Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "file" / "out")


def test_an_apply_between_two_steps_does_not_restart_their_engine(scripted, tmp_path):
    backend = scripted(echo)
    register_engine("s", backend="scripted", model="m")
    steps = [label_step("a"), apply(lambda item: item, id="keep"), label_step("b", prompt="<<{{chain_input.text}}>>", input_model=None)]
    Chain(name="c", steps=steps).run(rows(2), output_dir=tmp_path / "o")
    assert backend.events == ["start s", "close s", "stop s"]


def test_an_answer_cut_off_at_max_tokens_is_kept_when_valid_and_failed_without_a_repair_when_not(scripted, tmp_path):
    def answer(request, attempt):
        text = re.search(r"<<(.*?)>>", request.messages[-1]["content"]).group(1)
        return Answer('{"label": "whole", "score": 1}' if text == "row0" else '{"label": "cu', cut_off=True)

    backend = scripted(answer)
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(2), output_dir=tmp_path / "o")
    assert [r.label for r in result["label"]] == ["whole"], "a complete answer that ends at the limit is kept"
    [error] = result.errors
    assert (error["row_id"], error["error_type"], error["raw"]) == ("1", "truncated", '{"label": "cu')
    assert "raise max_tokens" in error["message"]
    assert len([r for r in backend.requests if r.row_id == "1"]) == 1, "no repair request: it would be cut off again"


def test_raw_control_characters_inside_strings_are_read_as_they_are(scripted, tmp_path):
    scripted(lambda request, attempt: '{"label": "line one\nline two\tend", "score": 0.5}')
    register_engine("s", backend="scripted", model="m")
    result = Chain(name="c", steps=[label_step()]).run(rows(1), output_dir=tmp_path / "o")
    assert result.errors == []
    assert result["label"][0].label == "line one\nline two\tend"
