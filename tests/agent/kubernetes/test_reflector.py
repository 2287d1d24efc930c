"""The list + watch loop against recorded API answers: resume from bookmarks, re-list on 410
Gone (handshake or ERROR event), back off on errors, the service-account token re-read when it
rotates."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from agent.kubernetes.api import ApiClient, ApiConfig, TokenFile
from agent.kubernetes.cache import MetadataCache
from agent.kubernetes.podmeta import Filters, allow_list
from agent.kubernetes.reflector import Reflector
from tests.agent.kubernetes import recorded as r
from tests.agent.kubernetes.fakeapi import FakeApi, serve

pytestmark = pytest.mark.timeout(30)


def cache() -> MetadataCache:
    return MetadataCache(Filters(allow_list(["*"]), allow_list([]), allow_list(["*"])), 300)


async def until(cond: Callable[[], bool], what: str, secs: float = 10) -> None:
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async for a in serve(FakeApi()):
        yield a


async def run_reflector(api: FakeApi, c: MetadataCache, events: list[str],
                        config: ApiConfig | None = None) -> tuple[Reflector, asyncio.Task[None]]:
    client = ApiClient(config or ApiConfig(url=api.url), timeout_secs=5)
    await client.__aenter__()
    refl = Reflector(client, "pods", "/api/v1/pods", {"fieldSelector": "spec.nodeName=node-1"},
                     c.pod_store, events.append, retry_initial_secs=0.01, retry_max_secs=0.05)

    async def go() -> None:
        try:
            await refl.run()
        finally:
            await client.__aexit__()

    return refl, asyncio.create_task(go())


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_bookmark_moves_the_version_the_next_watch_resumes_from(api):
    api.lists = [r.pod_list("100", r.pod("a", "90", "uid-a"))]
    api.watches = [[r.bookmark("150")], [r.event("ADDED", r.pod("b", "151", "uid-b")), "hold"]]
    c, events = cache(), []
    _, task = await run_reflector(api, c, events)
    try:
        await until(lambda: "uid-b" in c.pods, "pod b")
    finally:
        await stop(task)
    watches = api.seen("watch")
    assert [w.query.get("resourceVersion") for w in watches] == ["100", "150"]
    assert all(w.query["allowWatchBookmarks"] == "true" for w in watches)
    assert all(w.query["fieldSelector"] == "spec.nodeName=node-1" for w in api.requests)
    assert len(api.seen("list")) == 1          # resumed, not listed again
    assert events.count("kubernetes_bookmark") == 1


async def test_410_gone_as_a_watch_event_lists_again_and_the_list_replaces_the_store(api):
    api.lists = [r.pod_list("100", r.pod("a", "90", "uid-a"), r.pod("b", "95", "uid-b")),
                 r.pod_list("300", r.pod("b", "95", "uid-b"), r.pod("c", "290", "uid-c"))]
    api.watches = [[r.expired("100", "250")]]
    c, events = cache(), []
    refl, task = await run_reflector(api, c, events)
    try:
        await until(lambda: "uid-c" in c.pods and len(api.seen("watch")) == 2, "the re-list and watch")
    finally:
        await stop(task)
    assert [w.query.get("resourceVersion") for w in api.seen("watch")] == ["100", "300"]
    assert len(api.seen("list")) == 2
    assert events.count("kubernetes_relist_gone") == 1
    # a, missing from the new list, is deleted (kept for its grace), b and c live
    assert c.pods["uid-a"].deleted_at is not None
    assert [p.name for p in c.pods_on_node()] == ["b", "c"]
    assert refl.version == "300"


async def test_410_gone_on_the_handshake_lists_again(api):
    api.lists = [r.pod_list("100", r.pod("a", "90", "uid-a")), r.pod_list("400")]
    api.watches = [410]
    c, events = cache(), []
    _, task = await run_reflector(api, c, events)
    try:
        await until(lambda: len(api.seen("watch")) == 2, "the second watch")
    finally:
        await stop(task)
    assert [w.query.get("resourceVersion") for w in api.seen("watch")] == ["100", "400"]
    assert events.count("kubernetes_relist_gone") == 1
    assert c.pods_on_node() == []


async def test_errors_back_off_and_the_cache_serves_meanwhile(api):
    api.lists = [500, 503, r.pod_list("100", r.pod("a", "90", "uid-a")), r.pod_list("100")]
    api.watches = [503, 503]
    c, events = cache(), []
    refl, task = await run_reflector(api, c, events)
    try:
        await until(lambda: refl.watching, "an open watch")
        assert refl.age() == 0
    finally:
        await stop(task)
    assert events.count("kubernetes_api_error") == 4
    assert len(api.seen("list")) == 3 and len(api.seen("watch")) == 3
    assert [p.name for p in c.pods_on_node()] == ["a"]
    assert refl.age() > 0      # no watch open any more: the cache may be behind


async def test_a_rotated_token_is_read_again_before_the_next_request(api, tmp_path):
    token = tmp_path / "token"
    token.write_text("first-token\n")
    api.tokens = {"first-token"}
    api.lists = [r.pod_list("100")]

    def rotate() -> None:
        # the kubelet swaps a projected token atomically (a new file renamed into place)
        new = tmp_path / "token.new"
        new.write_text("second-token\n")
        os.replace(new, token)
        api.tokens = {"second-token"}

    api.watches = [["hold"]]
    c, events = cache(), []
    config = ApiConfig(url=api.url, token_file=TokenFile(str(token)))
    _, task = await run_reflector(api, c, events, config)
    try:
        await until(lambda: len(api.seen("watch")) == 1, "the first watch")
        rotate()
        api.release.set()   # the open watch ends; the next one must carry the new token
        await until(lambda: len(api.seen("watch")) == 2, "the second watch")
    finally:
        await stop(task)
    assert [q.token for q in api.requests] == ["first-token", "first-token", "second-token"]
    assert "kubernetes_api_error" not in events


async def test_a_401_reads_the_token_file_again_and_retries_once(api, tmp_path):
    token = tmp_path / "token"
    token.write_text("old")
    tf = TokenFile(str(token))
    assert tf.get() == "old"
    # rewritten in place with the same size and mtime: the stamp cannot tell, the 401 does
    st = token.stat()
    token.write_text("new")
    os.utime(token, ns=(st.st_atime_ns, st.st_mtime_ns))
    api.tokens = {"new"}
    api.lists = [r.pod_list("7")]
    async with ApiClient(ApiConfig(url=api.url, token_file=tf), timeout_secs=5) as client:
        body = await client.list("/api/v1/pods", {})
    assert body["metadata"]["resourceVersion"] == "7"
    assert [q.token for q in api.requests] == ["old", "new"]
