"""Settings name the variable that is wrong; snowflake ids are unique and ordered."""

from __future__ import annotations

import pytest

from noetl.config import Settings, describe
from noetl.errors import ConfigError
from noetl.ids import SnowflakeGenerator, timestamp_ms


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOETL_DATABASE_URL", "mysql://x"),
        ("NATS_URL", "http://x"),
        ("SERVER_API_URL", "localhost:8082"),
        ("NOETL_SERVER_PORT", "99999"),
        ("NOETL_WORKER_CONCURRENCY", "0"),
        ("NOETL_NODE_ID", "5000"),
        ("NOETL_LEASE_SECONDS", "soon"),
        ("NOETL_LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_values_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "NOETL_DATABASE_URL": "postgresql://u@h/db",
            "NATS_URL": "nats://a:b@h:4222",
            "SERVER_API_URL": "http://s:8082/",
            "NOETL_WORKER_CONCURRENCY": "3",
        }
    )
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.server_url == "http://s:8082"
    assert settings.worker_concurrency == 3


def test_missing_required_urls_name_the_variable() -> None:
    settings = Settings.from_env({})
    with pytest.raises(ConfigError, match="NOETL_DATABASE_URL"):
        settings.require_database_url()
    with pytest.raises(ConfigError, match="NATS_URL"):
        settings.require_nats_url()


def test_every_setting_is_documented() -> None:
    assert all(doc for _, _, doc in describe())


def test_snowflakes_are_strictly_increasing_and_carry_their_time() -> None:
    new_id = SnowflakeGenerator(7)
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(set(ids))
    assert all(0 < i < 2**63 for i in ids)
    assert abs(timestamp_ms(ids[0]) - timestamp_ms(ids[-1])) < 60_000


def test_node_ids_keep_generators_apart() -> None:
    a, b = SnowflakeGenerator(1), SnowflakeGenerator(2)
    assert {a() for _ in range(1000)}.isdisjoint({b() for _ in range(1000)})


def test_node_id_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="node id"):
        SnowflakeGenerator(1024)


def test_json_for_postgres_replaces_nul_and_lone_surrogates() -> None:
    import json

    from noetl.jsonfast import dumps

    assert json.loads(dumps({"a\x00": ["x\x00", "ok?"]})) == {"a\ufffd": ["x\ufffd", "ok?"]}
    # beyond 64 bits a number is written as its decimal text (the codec rule, noetl.jsonfast)
    assert json.loads(dumps({"s": "\udc80!", "big": 2**70})) == {"s": "\ufffd!", "big": str(2**70)}


def test_json_keys_that_are_not_strings_are_written_as_text() -> None:
    import json

    from noetl.jsonfast import dumps

    assert dumps({1: "a", "b": {2.5: None, True: [1]}}) == b'{"1":"a","b":{"2.5":null,"true":[1]}}'
    assert dumps({1: "x\x00"}) == b'{"1":"x\xef\xbf\xbd"}'  # and NUL still replaced
    assert json.loads(dumps({1: 2**70})) == {"1": str(2**70)}  # and the number rule holds
