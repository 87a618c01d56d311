"""Batch mode on the openai backend, against the loopback server's Files and Batches endpoints: answers aligned and
validated as online, partial errors, expiry, a failed batch, a failed upload, repairs as a follow-up batch, the
discount, the cache, and the refusals."""

from __future__ import annotations

import json

import pytest

from chainette import Chain, EngineError, Step, register_engine
from chainette.errors import ConfigError
from chainette.pricing import Price
from chainette.testing import FakeServer

from ..batch_chain import Label, Text, chain, echo, fast, labels, rows  # noqa: F401 (fast: an autouse fixture)

KEY = "sk-batch-test"


@pytest.fixture
def server():
    with FakeServer(respond=echo, api_key=KEY) as running:
        yield running


def engine(server, **options) -> None:
    options = {"batch": True, "batch_poll_seconds": 0.01, **options}
    register_engine("llm", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY, **options)


def test_a_chain_answered_through_batches_keeps_every_row_aligned(server, tmp_path):
    engine(server)
    result = chain().run(rows(30), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(30)}
    assert server.chat_requests() == [], "no online request"
    assert len(server.batches.created) == 2, "one batch per step"
    first_file = server.batches.files[server.batches.batches[server.batches.created[0]]["input_file_id"]].decode().splitlines()
    line = json.loads(first_file[0])
    assert line["custom_id"] == "q-0-0" and line["url"] == "/v1/chat/completions" and line["method"] == "POST"
    assert line["body"]["model"] == "fake-model" and line["body"]["response_format"]["type"] == "json_schema"
    figures = result.stats["steps"]["label"]
    assert figures["ok"] == 30 and figures["requests"] == 30 and figures["input_tokens"] == 30 * 11


def test_batches_on_the_responses_api(server, tmp_path):
    """An engine on the Responses API sends its lines to /v1/responses, and reads the Responses answers back."""
    engine(server, api="responses", profile="openai")
    result = chain().run(rows(6), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(6)}
    batch = server.batches.batches[server.batches.created[0]]
    line = json.loads(server.batches.files[batch["input_file_id"]].decode().splitlines()[0])
    assert batch["endpoint"] == line["url"] == "/v1/responses"
    assert line["body"]["text"]["format"]["strict"] is True and line["body"]["store"] is False


def test_the_batch_discount_halves_the_price(server, tmp_path):
    from chainette.engines import engine_price

    register_engine("online", backend="openai", model="gpt-4o-mini", api_key=KEY)
    register_engine("offline", backend="openai", model="gpt-4o-mini", api_key=KEY, batch=True)
    from chainette.engines import get_engine

    online, offline = engine_price(get_engine("online")), engine_price(get_engine("offline"))
    assert online is not None and offline == Price(online.input / 2, online.output / 2, cache_read=online.cache_read / 2)


def test_lines_that_fail_transiently_or_expire_are_asked_again_and_row_errors_are_recorded(server, tmp_path):
    engine(server)
    seen: dict[str, int] = {}

    def status(custom_id: str) -> int | None:
        seen[custom_id] = seen.get(custom_id, 0) + 1
        if custom_id == "q-0-3":
            return 400
        return 500 if custom_id.endswith(("-5", "-7")) and seen[custom_id] == 1 else None

    server.batches.line_status = status
    result = chain().run(rows(10), output_dir=tmp_path / "out")
    assert set(labels(result, "label")) == {str(i) for i in range(10)} - {"3"}
    [error] = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["row_id"] == "3" and error["error_type"] == "http_400" and error["step_id"] == "label"
    assert len(server.batches.created) == 3, "label, its follow-up for rows 5 and 7, then again"

    server.batches.line_status = lambda custom_id: None
    server.batches.outcome = "expired"
    expired = chain().run(rows(10), output_dir=tmp_path / "expired", cache=False)
    assert labels(expired) == {str(i): f"row{i}" for i in range(10)}, "half answered each round, the rest asked again"


def test_a_failed_batch_fails_its_rows_with_the_providers_reason(server, tmp_path):
    engine(server)
    server.batches.outcome = "failed"
    result = chain().run(rows(4), output_dir=tmp_path / "out")
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert {e["error_type"] for e in errors} == {"batch_failed"} and len(errors) == 4
    assert "injected validation failure" in errors[0]["message"]
    assert result.stats["steps"]["label"]["failed"] == 4


def test_a_failed_upload_is_retried(server, tmp_path):
    engine(server)
    server.batches.failed_uploads = 2
    result = chain().run(rows(5), output_dir=tmp_path / "out")
    assert len(labels(result)) == 5 and result.stats["steps"]["label"]["retries"] == 2


def test_a_create_whose_answer_was_lost_is_found_not_made_twice(server, tmp_path):
    """The server made the batch but its answer was a 504: the retry finds that batch instead of running the file twice."""
    engine(server)
    server.batches.lost_creates = 1
    result = chain().run(rows(8), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(8)}
    assert len(server.batches.created) == 2, "one batch per step, none made twice"
    figures = result.stats["steps"]["label"]
    assert figures["requests"] == 8 and figures["retries"] == 1


def test_a_run_stopped_after_a_lost_create_takes_that_batch_on_resume(server, tmp_path):
    """A run that gave up after a create whose answer was lost (as a kill before the journal got its id would leave it)
    is resumed onto the batch the server made, not a second one; a file uploaded afresh is created at once."""
    engine(server, max_retries=0)
    server.batches.lost_creates = 1
    with pytest.raises(EngineError):
        chain().run(rows(5), output_dir=tmp_path / "out")
    assert len(server.batches.created) == 1
    engine(server)
    result = chain().run(rows(5), output_dir=tmp_path / "out")
    assert labels(result) == {str(i): f"row{i}" for i in range(5)}
    assert len(server.batches.created) == 2, "the first step's batch taken up again, the second step's made once"
    assert server.batches.listed == 1, "only the resumed file was looked for"


def test_an_invalid_answer_is_repaired_in_a_follow_up_batch(tmp_path):
    def answer(body: dict) -> str:
        repairing = len(body["messages"]) > 2
        return echo(body) if repairing else "not json at all"

    with FakeServer(respond=answer, api_key=KEY) as server:
        engine(server)
        one = Chain(name="b", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")])
        result = one.run(rows(6), output_dir=tmp_path / "out")
        assert labels(result, "label") == {str(i): f"row{i}" for i in range(6)}
        assert len(server.batches.created) == 2
        repair = json.loads(
            server.batches.files[server.batches.batches[server.batches.created[1]]["input_file_id"]].decode().splitlines()[0]
        )
        assert repair["custom_id"].startswith("r-0-") and "not json at all" in json.dumps(repair["body"]["messages"])
        assert result.stats["steps"]["label"]["repairs"] == 6


def test_batch_answers_are_cached_and_a_rerun_submits_nothing(server, tmp_path):
    engine(server)
    chain().run(rows(8), output_dir=tmp_path / "one")
    created = len(server.batches.created)
    again = chain().run(rows(8), output_dir=tmp_path / "two")
    assert len(server.batches.created) == created and again.stats["steps"]["label"]["cached"] == 8


def test_batch_needs_a_backend_that_can(tmp_path):
    register_engine("llm", backend="fake", model="m", batch=True)
    with pytest.raises(ConfigError, match="backend 'fake' cannot run batch jobs"):
        Chain(name="f", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="x")]).run(
            rows(1), output_dir=tmp_path / "o"
        )
    register_engine("llm", backend="fake", model="m")
    with pytest.raises(ConfigError, match="--batch: no step's engine can run batch jobs"):
        Chain(name="f", steps=[Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="x")]).run(
            rows(1), output_dir=tmp_path / "o2", batch=True
        )


def test_batch_forced_for_a_run_on_an_online_engine(server, tmp_path):
    engine(server, batch=False)
    result = chain().run(rows(3), output_dir=tmp_path / "out", batch=True)
    assert len(labels(result)) == 3 and server.chat_requests() == [] and len(server.batches.created) == 2


def test_chainette_batches_lists_a_runs_batches(server, tmp_path, capsys):
    from chainette.cli import main

    engine(server)
    chain().run(rows(3), output_dir=tmp_path / "out")
    assert main(["batches", str(tmp_path / "out"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(entry["step"], entry["batch_id"], entry["state"], entry["collected"]) for entry in listed] == [
        ("again", server.batches.created[1], "completed", True),
        ("label", server.batches.created[0], "completed", True),
    ]
    assert main(["batches", str(tmp_path / "out")]) == 0
    assert server.batches.created[0] in capsys.readouterr().out
    assert main(["batches", str(tmp_path / "missing")]) == 1


def test_several_samples_per_row_each_repaired_in_the_same_follow_up_batch(tmp_path):
    from chainette import SamplingParams

    def answer(body: dict) -> str:
        return echo(body) if len(body["messages"]) > 2 else "not json"

    with FakeServer(respond=answer, api_key=KEY) as server:
        engine(server)
        sampled = Step(
            id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>", sampling=SamplingParams(n=2)
        )
        result = Chain(name="n", steps=[sampled]).run(rows(3), output_dir=tmp_path / "out")
        assert sorted(record["row_id"] for record in result.records("label")) == [f"{i}-{k}" for i in range(3) for k in range(2)]
        assert len(server.batches.created) == 2, "the question, then one batch with every candidate's repair"
        repairs = server.batches.files[server.batches.batches[server.batches.created[1]]["input_file_id"]].decode().splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in repairs) == sorted(f"r-{k}-{i}" for i in range(3) for k in range(2))


def test_a_batched_step_whose_prompts_all_fail_to_render_stops_before_sending_a_batch(server, tmp_path):
    engine(server)
    step = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text.brand}}>>")
    with pytest.raises(EngineError, match="Step 'label' stopped: the prompts of its first 5 rows all failed to render the same way"):
        Chain(name="batched", steps=[step]).run(rows(30), output_dir=tmp_path / "out")
    assert server.batches.created == [] and server.chat_requests() == []
    assert len((tmp_path / "out" / "errors.jsonl").read_text().splitlines()) == 5


def test_a_batch_step_in_a_group_takes_all_its_rows_though_the_group_lets_in_a_window(server, tmp_path, monkeypatch):
    from chainette import Branch
    from chainette.execution import feed, group

    monkeypatch.setattr(feed, "WINDOW", 4)
    monkeypatch.setattr(group, "WINDOW", 4)
    engine(server)
    register_engine("online", backend="openai", model="fake-model", endpoint=f"{server.base_url}/v1", api_key=KEY)
    branches = [
        Branch(
            name="b", steps=[Step(id="batched", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>")]
        ).join("b"),
        Branch(
            name="o", steps=[Step(id="asked", input_model=Text, output_model=Label, engine_name="online", user_prompt="<<{{text}}>>")]
        ).join("o"),
    ]
    after = Step(id="after", output_model=Label, engine_name="online", user_prompt="<<{{b.label}}+{{o.label}}>>")
    result = Chain(name="g", steps=[branches, after]).run(rows(30), output_dir=tmp_path / "out")
    assert labels(result, "after") == {str(i): f"row{i}+row{i}" for i in range(30)}
    assert len(server.batches.created) == 1, "the batch step took its 30 rows in one batch"


def test_answers_that_never_fit_fail_their_rows_alike_online_and_through_batches(tmp_path):
    """Both step stages decide through one row answerer: an answer still invalid after its repair, and a cut-off one
    (never repaired), fail their rows with the same errors and figures either way."""
    from chainette import SamplingParams

    def decided(batch: bool, max_tokens: int | None) -> tuple[list[tuple[str, str, str, str]], int]:
        with FakeServer(respond=lambda body: '{"label": "cu', api_key=KEY) as server:
            engine(server, batch=batch)
            sampling = SamplingParams(max_tokens=max_tokens) if max_tokens else None
            step = Step(id="label", input_model=Text, output_model=Label, engine_name="llm", user_prompt="<<{{text}}>>", sampling=sampling)
            output = tmp_path / f"{batch}-{max_tokens}"
            result = Chain(name="fit", steps=[step]).run(rows(3), output_dir=output)
        errors = [(e["row_id"], e["error_type"], e["message"], e["raw"]) for e in result.errors]
        return sorted(errors), result.stats["steps"]["label"]["repairs"]

    invalid, repairs = decided(batch=True, max_tokens=None)
    assert {(row_id, kind) for row_id, kind, _, _ in invalid} == {(str(i), "validation") for i in range(3)}
    assert "after one repair request" in invalid[0][2] and invalid[0][3] == '{"label": "cu' and repairs == 3
    cut_off, repairs = decided(batch=True, max_tokens=3)
    assert {(row_id, kind) for row_id, kind, _, _ in cut_off} == {(str(i), "truncated") for i in range(3)}
    assert "raise max_tokens" in cut_off[0][2] and repairs == 0
    assert decided(batch=False, max_tokens=None) == (invalid, 3)
    assert decided(batch=False, max_tokens=3) == (cut_off, 0)
