"""The response cache's parts: keys (what is and is not in them), the switches, the size setting, the file's
place, and the `chainette cache` commands."""

from __future__ import annotations

import asyncio
from contextlib import closing
import hashlib
import json
from pathlib import Path
import random
import sqlite3

import orjson
import pytest

from chainette import Chain, SamplingParams, register_engine
from chainette.cache import cache_path, max_size, step_cache
from chainette.cache.database import CachedAnswer, ResponseCache
from chainette.cache.keys import RequestKeys, deterministic, engine_identity
from chainette.cli import main
from chainette.client import Usage
from chainette.errors import ConfigError

from .test_run import echo, label_step, rows

MESSAGES = [{"role": "user", "content": "hello"}]
ANSWER = CachedAnswer("{}", None, Usage(1, 2))


def keys(config, sampling=None, schema=None) -> RequestKeys:
    return RequestKeys(engine_identity(config), schema or {"type": "object"}, "Label", sampling or {}, per_row=False)


def test_the_key_leaves_out_endpoint_secrets_and_options_that_cannot_change_an_answer():
    base = register_engine("a", backend="fake", model="m", endpoint="http://one:1/v1", api_key="sk-one")
    moved = register_engine("b", backend="fake", model="m", endpoint="http://two:2/v1", api_key="sk-two", max_concurrency=3, timeout=9)
    other_model = register_engine("c", backend="fake", model="n")
    identity = json.dumps(engine_identity(base))
    assert "sk-one" not in identity and "one:1" not in identity
    assert keys(base).key(MESSAGES, 0, "0") == keys(moved).key(MESSAGES, 0, "0")
    assert keys(base).key(MESSAGES, 0, "0") != keys(other_model).key(MESSAGES, 0, "0")


def test_the_key_holds_messages_schema_sampling_and_sample():
    config = register_engine("a", backend="fake", model="m")
    key = keys(config).key(MESSAGES, 0, "0")
    assert key != keys(config).key([{"role": "user", "content": "hello!"}], 0, "0")
    assert key != keys(config, schema={"type": "array"}).key(MESSAGES, 0, "0")
    assert key != keys(config, sampling={"temperature": 0.5}).key(MESSAGES, 0, "0")
    assert key != keys(config).key(MESSAGES, 1, "0")
    assert key == keys(config).key(MESSAGES, 0, "another row"), "deterministic sampling: rows share"
    per_row = RequestKeys(engine_identity(config), {"type": "object"}, "Label", {}, per_row=True)
    assert per_row.key(MESSAGES, 0, "0") != per_row.key(MESSAGES, 0, "1")


def test_a_key_is_the_sha256_of_the_shared_part_and_the_request_whatever_first_message_the_rows_repeat():
    """Keys stay what earlier versions stored: hashing the first message once for the rows that repeat it changes no key."""
    config = register_engine("a", backend="fake", model="m")
    made = RequestKeys(engine_identity(config), {"type": "object"}, "Label", {"n": 1}, per_row=True)
    shared = orjson.dumps([engine_identity(config), {"type": "object"}, "Label", {"n": 1}], option=orjson.OPT_SORT_KEYS)
    leads = [{"role": "system", "content": "Answer in JSON. " * 20}, {"role": "system", "content": 'quote " back\\ é\u2028'}]
    draw = random.Random(7)
    for index in range(300):
        messages = [draw.choice(leads)] if draw.random() < 0.8 else []
        messages += [{"role": "user", "content": f"row {index}: {draw.random()}"} for _ in range(draw.randint(1, 2))]
        whole = orjson.dumps([messages, index % 3, str(index)], option=orjson.OPT_SORT_KEYS)
        assert made.key(messages, index % 3, str(index)) == hashlib.sha256(shared + whole).digest(), messages


def test_backend_options_that_shape_answers_are_in_the_key_and_neutral_ones_are_not():
    pytest.importorskip("chainette_vllm")
    plain = register_engine("a", backend="vllm", model="m", endpoint="http://x/v1")
    thinking = register_engine("b", backend="vllm", model="m", endpoint="http://x/v1", chat_template_kwargs={"enable_thinking": False})
    elsewhere = register_engine(
        "c", backend="vllm", model="m", endpoint="http://x/v1", port=9000, gpu_ids=[1], extra_env={"HF_TOKEN": "hf_x"}
    )
    assert engine_identity(plain) != engine_identity(thinking)
    assert engine_identity(plain) == engine_identity(elsewhere)
    assert "hf_x" not in json.dumps(engine_identity(elsewhere))


@pytest.mark.parametrize(
    ("sampling", "expected"),
    [(None, False), (SamplingParams(temperature=0.7), False), (SamplingParams(temperature=0), True), (SamplingParams(seed=3), True)],
)
def test_sampling_is_deterministic_at_temperature_0_or_with_a_seed(sampling, expected):
    assert deterministic(sampling) is expected


@pytest.mark.parametrize(
    ("run", "engine", "step", "reads"),
    [
        (True, True, True, True),
        ("refresh", True, True, False),
        (True, True, "refresh", False),
        (False, True, True, None),
        (True, False, True, None),
        (True, True, False, None),
    ],
)
def test_the_run_the_engine_and_the_step_decide_together(tmp_path, run, engine, step, reads):
    config = register_engine("s", backend="fake", model="m", cache=engine)
    store = ResponseCache(tmp_path / "c.sqlite", max_bytes=10**6)
    used = step_cache(store, run, config, label_step(cache=step), {"type": "object"}, {})
    assert (used.read if used else None) is reads
    store.close()


def test_a_step_refuses_a_cache_setting_it_does_not_know():
    with pytest.raises(ConfigError, match="cache must be True, False or 'refresh'"):
        label_step(cache="sometimes")


@pytest.mark.parametrize(
    ("text", "size"), [("", 20 * 1000**3), ("500MB", 500 * 1000**2), ("2GiB", 2 * 1024**3), ("1234", 1234), ("1.5 GB", 1_500_000_000)]
)
def test_the_size_cap_reads_units(monkeypatch, text, size):
    monkeypatch.setenv("CHAINETTE_CACHE_MAX_SIZE", text)
    assert max_size() == size


def test_a_size_cap_that_is_not_a_size_says_how_to_write_one(monkeypatch):
    monkeypatch.setenv("CHAINETTE_CACHE_MAX_SIZE", "lots")
    with pytest.raises(ConfigError, match="CHAINETTE_CACHE_MAX_SIZE='lots' is not a size: .* such as 500MB"):
        max_size()


def test_the_file_is_in_the_cache_dir_the_environment_or_the_platforms_folder(monkeypatch, tmp_path, cache_dir):
    assert cache_path() == cache_dir / "responses.sqlite"
    assert cache_path(tmp_path) == tmp_path / "responses.sqlite"
    monkeypatch.delenv("CHAINETTE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_path() == tmp_path / "xdg" / "chainette" / "responses.sqlite"


def test_cache_info_and_clear(scripted, tmp_path, capsys, cache_dir):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    Chain(name="c", steps=[label_step(), label_step("again", prompt="again <<{{label.label}}>>", input_model=None)]).run(
        rows(4), output_dir=tmp_path / "o"
    )
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(cache_dir / "responses.sqlite") and info["entries"] == 8
    assert [(model["backend"], model["model"], model["entries"], model["hits"]) for model in info["models"]] == [("scripted", "m", 8, 0)]
    Chain(name="c", steps=[label_step()]).run(rows(4), output_dir=tmp_path / "o2")
    assert main(["cache", "info"]) == 0
    shown = capsys.readouterr().out
    assert "responses.sqlite: 8 answers" in shown and "scripted" in shown
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["hits"] == 4, "the second run's 4 rows came from the cache"

    assert main(["cache", "clear", "--model", "other"]) == 0
    assert "Removed 0 answers" in capsys.readouterr().out
    assert main(["cache", "clear", "--older-than", "1d"]) == 0
    assert "Removed 0 answers" in capsys.readouterr().out
    assert main(["cache", "clear", "--older-than", "soon"]) == 1
    assert "--older-than 'soon' is not an age" in capsys.readouterr().err
    assert main(["cache", "clear", "--model", "m"]) == 0
    assert "Removed 8 answers" in capsys.readouterr().out
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0


def test_clearing_everything_asks_first_unless_told_yes(scripted, tmp_path, capsys):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    Chain(name="c", steps=[label_step()]).run(rows(3), output_dir=tmp_path / "o")
    from typer.testing import CliRunner

    from chainette.cli.app import build_app

    refused = CliRunner().invoke(build_app(with_plugins=False), ["cache", "clear"], input="n\n")
    assert refused.exit_code == 1 and "Delete every answer" in refused.output
    assert main(["cache", "clear", "--yes"]) == 0
    assert "Removed 3 answers" in capsys.readouterr().out


def test_cache_info_on_a_file_that_is_not_a_cache_is_one_paragraph(tmp_path, capsys, cache_dir):
    (cache_dir / "responses.sqlite").write_text("hello")
    assert main(["cache", "info"]) == 1
    err = capsys.readouterr().err
    assert "The response cache cannot be read" in err and "responses.sqlite" in err and "Traceback" not in err


def test_an_entry_that_cannot_be_read_is_a_miss(tmp_path):
    store = ResponseCache(tmp_path / "c.sqlite", max_bytes=10**6)
    store.put(b"k" * 32, "fake", "m", ANSWER)
    store.put(b"j" * 32, "fake", "m", ANSWER)
    store.close()
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        db.execute("UPDATE answers SET answer = ? WHERE key = ?", (b"not json", b"k" * 32))
    store = ResponseCache(tmp_path / "c.sqlite", max_bytes=10**6)
    assert store.get(b"k" * 32) is None and store.get(b"j" * 32) == ANSWER
    store.close()


def test_answers_are_written_once_their_bytes_reach_a_batch_so_large_answers_stay_few_in_memory(tmp_path, monkeypatch):
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_BYTES", 1000)
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    large = CachedAnswer("x" * 300, None, Usage(1, 2))
    for index in range(10):
        store.put(index.to_bytes(32, "big"), "fake", "m", large)
        assert len(store._answers) <= 3, "at most the answers that reach FLUSH_BYTES wait in memory"
    with closing(sqlite3.connect(path)) as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM answers").fetchone()
    assert stored == 10 - len(store._answers) >= 7
    store.close()


def test_of_two_answers_stored_under_one_key_in_one_batch_the_later_is_kept(tmp_path):
    store = ResponseCache(tmp_path / "c.sqlite", max_bytes=10**6)
    for index, text in enumerate(["first", "second", "third"]):
        store.put(b"z" * 32, "fake", "m", CachedAnswer(text, None, Usage(1, 2)))
        store.put(index.to_bytes(32, "big"), "fake", "m", ANSWER)
    store.close()
    store = ResponseCache(tmp_path / "c.sqlite", max_bytes=10**6)
    found = store.get(b"z" * 32)
    assert found is not None and found.text == "third"
    store.close()


async def test_look_ups_share_a_read_snapshot_that_a_flush_or_the_event_loop_ends_within_a_second(tmp_path, monkeypatch):
    """In a loop, look-ups read one snapshot: an answer another run stored after it began is seen once a flush or the
    loop's timer (FLUSH_SECONDS) ends it, and an idle run does not keep the write-ahead log from being copied back."""
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_SECONDS", 0.01)
    path = tmp_path / "c.sqlite"
    first, second = b"1" * 32, b"2" * 32
    store = ResponseCache(path, max_bytes=10**6)
    other = ResponseCache(path, max_bytes=10**6)
    with closing(sqlite3.connect(path, timeout=0)) as checkpointer:
        for key, end in ((first, store.flush), (second, lambda: None)):
            assert store.get(key) is None
            other.put(key, "fake", "m", ANSWER)
            other.flush()
            assert store.get(key) is None, "the snapshot is the one the look-ups began with"
            assert checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 1, "the snapshot holds the log"
            end()
            await asyncio.sleep(0.1)  # the loop runs the timer ending the snapshot, when the flush has not
            assert checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0, "an idle run holds nothing"
            assert store.get(key) == ANSWER
    other.close()
    store.close()


async def test_in_an_event_loop_stored_answers_reach_the_file_within_a_second_even_when_nothing_follows(tmp_path, monkeypatch):
    """A run that goes quiet (its last rows stored, its next request slow) still writes what it buffered: a kill -9
    then loses at most the last second's answers."""
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_SECONDS", 0.01)
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    store.put(b"k" * 32, "fake", "m", ANSWER)
    await asyncio.sleep(0.1)  # the loop runs the timer the put set
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*) FROM answers").fetchone() == (1,)
    store.close()


def test_a_snapshot_left_by_an_event_loop_that_ended_is_ended_by_the_next_look_up_or_loop(tmp_path, monkeypatch):
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_SECONDS", 0.01)
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    other = ResponseCache(path, max_bytes=10**6)

    async def look_up_after(key: bytes, wait: float) -> CachedAnswer | None:
        await asyncio.sleep(wait)
        return store.get(key)

    def left_behind(key: bytes) -> None:
        """A loop that ends before the flush it set for later, its snapshot still open; then `key` is stored."""
        asyncio.run(look_up_after(b"k" * 32, 0))
        other.put(key, "fake", "m", ANSWER)
        other.flush()

    left_behind(b"1" * 32)
    assert store.get(b"1" * 32) == ANSWER, "outside a loop, the look-up ends it"
    left_behind(b"2" * 32)

    async def look_up_twice(key: bytes) -> tuple[CachedAnswer | None, CachedAnswer | None]:
        return store.get(key), await look_up_after(key, 0.1)

    assert asyncio.run(look_up_twice(b"2" * 32)) == (None, ANSWER), "in another loop, read until that loop flushes"
    other.close()
    store.close()


def test_outside_an_event_loop_each_look_up_reads_the_latest(tmp_path):
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    other = ResponseCache(path, max_bytes=10**6)
    assert store.get(b"k" * 32) is None
    other.put(b"k" * 32, "fake", "m", ANSWER)
    other.close()
    assert store.get(b"k" * 32) == ANSWER
    store.close()


def test_hits_are_written_in_batches_as_answers_are_so_a_cached_rerun_holds_few(tmp_path, monkeypatch):
    """A rerun answered wholly from the cache (hits, no put) keeps at most a batch of hits in memory, and their
    last-used times reach the file as it goes, for the least-recently-used eviction to see."""
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_EVERY", 8)
    path = tmp_path / "c.sqlite"
    keys = [index.to_bytes(32, "big") for index in range(100)]
    filling = ResponseCache(path, max_bytes=10**6)
    for key in keys:
        filling.put(key, "fake", "m", ANSWER)
    filling.close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE answers SET used = 0")

    rerun = ResponseCache(path, max_bytes=10**6)
    for key in keys:
        assert rerun.get(key) == ANSWER
        assert len(rerun._hits) < 8, "the hits not yet written are at most a batch"
    with closing(sqlite3.connect(path)) as db:
        used, hits = db.execute("SELECT COUNT(*), SUM(hits) FROM answers WHERE used > 0").fetchone()
    assert used == hits == 100 - len(rerun._hits) >= 93, "each hit was written with its last-used time"
    rerun.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT COUNT(*), SUM(hits) FROM answers WHERE used > 0").fetchone() == (100, 100)


def test_damage_found_while_storing_turns_the_cache_off_with_a_notice(tmp_path, damage):
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    store.put(b"k" * 32, "fake", "m", ANSWER)
    store.close()
    damage(path, "sqlite_autoindex_answers_1")
    notices: list[str] = []
    store = ResponseCache(path, max_bytes=10**6, notice=notices.append)
    store.put(b"j" * 32, "fake", "m", ANSWER)
    store.flush()
    assert len(notices) == 1 and f"{path} is damaged" in notices[0] and "the run goes on without the cache" in notices[0]
    assert f"`chainette cache clear --cache-dir {tmp_path}` removes the damaged file" in notices[0]
    assert store.get(b"k" * 32) is None and len(notices) == 1, "the cache stays off, without another notice"
    store.close()


def fill_cache(output: Path) -> None:
    """Fill this test's cache with a run of a 20-row chain on the engine "s" into `output`."""
    Chain(name="c", steps=[label_step(prompt="<<{{text}}>>" + "x" * 300)]).run(rows(20), output_dir=output)


@pytest.mark.parametrize("damaged", ["every page past the first", "the key index", "the whole file"])
def test_cache_info_names_a_damaged_file_and_cache_clear_removes_it(scripted, tmp_path, capsys, cache_dir, damage, damaged):
    scripted(echo)
    register_engine("s", backend="scripted", model="m")
    fill_cache(tmp_path / "fill")
    path = cache_dir / "responses.sqlite"
    if damaged == "the whole file":
        path.write_bytes(b"garbage!" * 1000)
    else:
        damage(path, "sqlite_autoindex_answers_1" if damaged == "the key index" else None)
    assert main(["cache", "info"]) == 1
    err = capsys.readouterr().err
    assert f"The response cache cannot be read: {path} is damaged (" in err and "Traceback" not in err
    assert f"`chainette cache clear --cache-dir {cache_dir}` removes it" in err

    assert main(["cache", "clear", "--model", "m"]) == 1
    assert "(without --model or --older-than) removes the whole file" in capsys.readouterr().err
    assert path.exists(), "a partial clear of a damaged file removes nothing"
    assert main(["cache", "clear", "--yes"]) == 0
    assert f"Removed the damaged response cache {path}." in capsys.readouterr().out
    assert list(cache_dir.iterdir()) == [], "the file, its -wal and its -shm are gone"
    fill_cache(tmp_path / "refill")
    assert main(["cache", "info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 20, "the next run makes a new cache"


def test_cache_commands_on_a_folder_without_a_cache_say_so_and_create_nothing(tmp_path, capsys):
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    for folder in (empty, missing):
        assert main(["cache", "info", "--cache-dir", str(folder)]) == 0
        assert f"No response cache at {folder / 'responses.sqlite'}" in capsys.readouterr().out
        assert main(["cache", "info", "--json", "--cache-dir", str(folder)]) == 0
        info = json.loads(capsys.readouterr().out)
        assert (info["exists"], info["entries"], info["bytes"], info["models"]) == (False, 0, 0, [])
        assert main(["cache", "clear", "--cache-dir", str(folder)]) == 0, "nothing to clear: nothing to confirm"
        assert "nothing to clear" in capsys.readouterr().out
    assert list(empty.iterdir()) == [] and not missing.exists()


def test_fake_engines_leave_the_cache_alone_unless_told(tmp_path, cache_dir):
    """The fake backend's answers are free and deterministic: its engines default to cache=False (an engine option,
    as any backend may set it), and a run whose steps all skip the cache does not even create the file."""
    register_engine("f", backend="fake", model="m")
    chain = Chain(name="c", steps=[label_step(engine="f")])
    chain.run(rows(4), output_dir=tmp_path / "one")
    assert chain.run(rows(4), output_dir=tmp_path / "two").stats["steps"]["label"]["cached"] == 0
    assert list(cache_dir.iterdir()) == []
    register_engine("f", backend="fake", model="m", cache=True)
    chain.run(rows(4), output_dir=tmp_path / "three")
    assert chain.run(rows(4), output_dir=tmp_path / "four").stats["steps"]["label"]["cached"] == 4


def test_no_cache_and_refresh_cache_together_are_refused(tmp_path, capsys):
    from .test_cli import EXAMPLE

    args = [
        "run",
        f"{EXAMPLE}/chain.py:chain",
        "-i",
        str(EXAMPLE / "inputs.jsonl"),
        "-o",
        str(tmp_path / "o"),
        "--no-cache",
        "--refresh-cache",
    ]
    assert main(args) == 1
    assert "--no-cache and --refresh-cache contradict each other" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


TEXTS = ['{"label": "\\"quoted\\" \\\\ back"}', "línea\nnueva\t😀", "\x00nul and \u2028 separator", "[]", ""]


async def test_answers_the_writer_s_thread_stores_read_back_whole_in_order_of_the_keys_asked(tmp_path, monkeypatch):
    """In an event loop, batches are written by the writer's thread from one JSON document; each answer (text, reasoning,
    every token count) comes back as it was put, under its own key, and a key never stored is a miss."""
    from chainette.cache import database

    monkeypatch.setattr(database, "FLUSH_EVERY", 2)
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    answers = {index.to_bytes(32, "big"): CachedAnswer(text, text or None, Usage(index, 2, 3, 4)) for index, text in enumerate(TEXTS)}
    for key, answer in answers.items():
        store.put(key, "fake", "m", answer)
        await asyncio.sleep(0)
    store.close()
    store = ResponseCache(path, max_bytes=10**6)
    keys = [b"x" * 32, *reversed(answers), next(iter(answers))]
    assert store.get_many(keys) == [None, *reversed(answers.values()), next(iter(answers.values()))]
    store.close()
    with closing(sqlite3.connect(path)) as db:
        sizes = db.execute("SELECT SUM(size), SUM(length(answer) + length(key)), typeof(answer) FROM answers").fetchone()
    assert sizes[0] == sizes[1] and sizes[2] == "blob", "each entry's size counts its bytes"


def test_hits_are_counted_per_key_however_often_a_key_was_hit_in_a_batch(tmp_path):
    path = tmp_path / "c.sqlite"
    store = ResponseCache(path, max_bytes=10**6)
    for key in (b"a" * 32, b"b" * 32, b"c" * 32):
        store.put(key, "fake", "m", ANSWER)
    store.close()
    store = ResponseCache(path, max_bytes=10**6)
    store.get_many([b"a" * 32, b"b" * 32, b"a" * 32, b"z" * 32])
    store.get(b"a" * 32)
    store.close()
    with closing(sqlite3.connect(path)) as db:
        hits = dict(db.execute("SELECT key, hits FROM answers").fetchall())
    assert hits == {b"a" * 32: 3, b"b" * 32: 1, b"c" * 32: 0}
