"""Fixtures of the integration tests (real servers started by scripts/services)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.services import start


@pytest.fixture(scope="module")
def es() -> Iterator[Any]:
    """A client of the real Elasticsearch node; `tailship_hostport` is its HOST:PORT."""
    from elasticsearch import Elasticsearch

    url = start("elasticsearch")["TAILSHIP_ES_URL"]
    client = Elasticsearch(url, request_timeout=60)
    client.tailship_hostport = url.removeprefix("http://")  # type: ignore[attr-defined]
    yield client
    client.close()
