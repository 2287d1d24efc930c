"""The Kubernetes API server of scripts/services (fabric8 kubernetes-server-mock, CRUD mode):
it stores what is created, lists and watches it (over WebSocket), answers the spec.nodeName
field selector a node agent uses, and journals requests. Skips locally, fails under CI=true,
when it cannot start."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from typing import Any

import aiohttp
import pytest

from tests.services import SERVICES, kube_call, start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(300)]



def pod(ns: str, name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "img:1"}]}}


@pytest.fixture(scope="module")
def kube_url() -> str:
    return start("kube-api")["TAILSHIP_KUBE_API_URL"]


def test_lists_pods_by_node_and_journals_requests(kube_url):
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    kube_call(f"{kube_url}/api/v1/namespaces", "POST",
         {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"team": "a"}}})
    for name, node in (("a1", "node-a"), ("a2", "node-a"), ("b1", "node-b")):
        kube_call(f"{kube_url}/api/v1/namespaces/{ns}/pods", "POST", pod(ns, name, node))
    kube_call(f"{kube_url}/tailship/requests", "DELETE")
    got = kube_call(f"{kube_url}/api/v1/namespaces/{ns}/pods?fieldSelector=spec.nodeName%3Dnode-a")
    assert sorted(p["metadata"]["name"] for p in got["items"]) == ["a1", "a2"]
    assert got["metadata"]["resourceVersion"]
    everything = kube_call(f"{kube_url}/api/v1/namespaces/{ns}/pods")
    assert len(everything["items"]) == 3
    journal = kube_call(f"{kube_url}/tailship/requests")
    assert journal == [f"GET /api/v1/namespaces/{ns}/pods?fieldSelector=spec.nodeName%3Dnode-a",
                       f"GET /api/v1/namespaces/{ns}/pods"]


async def test_watch_over_websocket_sees_only_its_node(kube_url):
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(kube_call, f"{kube_url}/api/v1/namespaces", "POST",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    url = f"{kube_url}/api/v1/namespaces/{ns}/pods?watch=true&fieldSelector=spec.nodeName%3Dnode-w"

    async def scenario() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
            for name, node in (("other", "node-x"), ("mine", "node-w")):
                await asyncio.to_thread(kube_call, f"{kube_url}/api/v1/namespaces/{ns}/pods", "POST",
                                        pod(ns, name, node))
            await asyncio.to_thread(kube_call, f"{kube_url}/api/v1/namespaces/{ns}/pods/mine", "DELETE")
            while len(seen) < 2:
                msg = await ws.receive()
                assert msg.type == aiohttp.WSMsgType.TEXT, msg
                event = json.loads(msg.data)
                seen.append((event["type"], event["object"]["metadata"]["name"]))
        return seen

    assert await asyncio.wait_for(scenario(), 60) == [("ADDED", "mine"), ("DELETED", "mine")]


def test_stop_then_status_says_stopped(kube_url, tmp_path):
    """A second state dir's server: start, serve, stop (pid gone), as the other services do."""
    env = {**os.environ, "TAILSHIP_SERVICES_STATE": str(tmp_path), "TAILSHIP_KUBE_API_PORT": "0"}
    env.pop("TAILSHIP_SERVICES_RUN", None)
    r = subprocess.run([sys.executable, str(SERVICES), "up", "kube-api"], capture_output=True,
                       text=True, env=env, timeout=200)
    try:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().startswith("http://127.0.0.1:")
        assert kube_call(f"{r.stdout.strip()}/api/v1/namespaces")["items"] == []   # its own, empty store
    finally:
        down = subprocess.run([sys.executable, str(SERVICES), "down", "kube-api"], capture_output=True,
                              text=True, env=env, timeout=200)
    assert down.returncode == 0, down.stderr
    st = subprocess.run([sys.executable, str(SERVICES), "status", "kube-api"], capture_output=True,
                        text=True, env=env, timeout=60)
    assert "kube-api: stopped" in st.stdout
