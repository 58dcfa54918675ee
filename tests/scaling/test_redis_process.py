"""The Redis the budget tests run against: started, empty, without persistence, restartable."""

from __future__ import annotations

import os

import pytest
import redis

from backend_ai.app.redis_process import RedisProcess


def test_the_fixture_gives_a_private_empty_redis_without_persistence(
    redis_server: RedisProcess,
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.dbsize() == 0
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        client.set("k", "v")
    finally:
        client.close()


def test_killed_and_restarted_it_comes_back_empty_on_the_same_url(
    redis_server: RedisProcess,
) -> None:
    url = redis_server.url
    client = redis.Redis.from_url(url, socket_timeout=2.0)
    try:
        client.set("k", "v")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(redis.ConnectionError):
            client.get("k")
        redis_server.restart()
        assert redis_server.url == url
        assert client.get("k") is None
    finally:
        client.close()


def test_stop_removes_its_directory(redis_server: RedisProcess) -> None:
    directory = redis_server.directory
    assert directory is not None
    assert directory.is_dir()
    redis_server.stop()
    redis_server.stop()
    assert not os.path.exists(directory)
    assert not redis_server.running
