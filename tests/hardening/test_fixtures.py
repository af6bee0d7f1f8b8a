"""Service start-up in the fixtures survives a busy machine (issue 8 §7)."""

from __future__ import annotations

import threading
import uuid
from urllib.parse import urlparse, urlunparse

import psycopg

from tests.conftest import Services, _create_database


def test_creating_a_test_database_waits_out_a_busy_template(services: Services) -> None:
    """Another session on template1 makes CREATE DATABASE fail at once ("being accessed by
    other users"), as concurrent test runs and tools do; the fixture retries until it can."""
    template = urlunparse(urlparse(services.admin_url)._replace(path="/template1"))
    blocker = psycopg.connect(template, autocommit=True)
    refused = threading.Event()
    name = f"noetl_test_busy_{uuid.uuid4().hex[:8]}"

    def release_after_a_refusal() -> None:
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            try:
                conn.execute(f'CREATE DATABASE "{name}_probe"')
            except psycopg.errors.ObjectInUse:
                refused.set()
            else:
                conn.execute(f'DROP DATABASE "{name}_probe"')
        blocker.close()

    releaser = threading.Timer(0.5, release_after_a_refusal)
    releaser.start()
    try:
        _create_database(services.admin_url, name)
    finally:
        releaser.join()
        if not blocker.closed:
            blocker.close()
        with psycopg.connect(services.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
    assert refused.is_set()  # the busy template really refused a CREATE DATABASE
