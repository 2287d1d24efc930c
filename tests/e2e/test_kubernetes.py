"""Pod metadata from a real Kubernetes API server (`scripts/services up kube-api`: fabric8's
kubernetes-server-mock in CRUD mode; skips locally, fails under CI=true when it cannot start).

Namespaces and pods are created through the API, their kubelet log tree is written, and the agent
(in process, file sinks) watches the API: every record carries its pod's labels, owner and node;
a pod deleted mid-run keeps its metadata on its last lines; an excluded pod is not shipped;
a route on kubernetes.labels.team sends each team to its own sink; with the API server stopped
for 30 s nothing is lost or held, and enrichment resumes; 110 pods cost one list and one watch of
pods and of namespaces (counted in the server's request journal)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from agent.config import settings_from_dict
from agent.runtime import Agent
from pipelines.sinks.file import read_dir
from tests.conftest import running, wait_until
from tests.services import kube_call, services, start

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(400)]

TS = "2026-12-04T10:00:00.000000000Z"
OUTAGE_SECS = 30



@pytest.fixture(scope="module")
def kube_url() -> str:
    return start("kube-api")["TAILSHIP_KUBE_API_URL"]


@pytest.fixture
def k(kube_url: str, tmp_path: Path) -> Cluster:
    """A node of its own (a name no other test uses) and its kubelet log tree."""
    return Cluster(kube_url, tmp_path / "log", f"node-{uuid.uuid4().hex[:6]}")


@dataclass
class Pod:
    ns: str
    name: str
    uid: str
    container: str
    path: Path            # the file under pods/ the kubelet writes
    lines: int = 0

    def write(self, n: int, tag: str = "") -> list[int]:
        """Append n CRI lines (JSON payload with a per-pod sequence number); their numbers."""
        first = self.lines
        with open(self.path, "a") as f:
            for i in range(first, first + n):
                f.write(f'{TS} stdout F {{"seq":{i},"pod":"{self.name}","tag":"{tag}"}}\n')
        self.lines += n
        return list(range(first, first + n))


class Cluster:
    """Namespaces and pods through the API, and their kubelet log tree under `root`."""

    def __init__(self, url: str, root: Path, node: str) -> None:
        self.url, self.root, self.node = url, root, node
        (root / "containers").mkdir(parents=True, exist_ok=True)
        (root / "pods").mkdir(exist_ok=True)
        self.specs: dict[str, dict[str, Any]] = {}

    def namespace(self, prefix: str, labels: dict[str, str]) -> str:
        """A namespace of this test (named after its node); its name."""
        name = f"{prefix}-{self.node}"
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}
        self.specs[f"ns/{name}"] = body
        kube_call(f"{self.url}/api/v1/namespaces", "POST", body)
        return name

    def pod(self, ns: str, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None,
            owner: tuple[str, str] | None = None, node: str | None = None, file: bool = True,
            ip: str = "") -> Pod:
        meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels,
                                "annotations": annotations or {}}
        if owner:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                        "uid": str(uuid.uuid4()), "controller": True}]
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"nodeName": node or self.node,
                         "containers": [{"name": "app", "image": f"registry.example/{name}:1.0"}]}}
        if ip:
            body["status"] = {"podIP": ip}
        self.specs[f"pod/{ns}/{name}"] = body
        uid = kube_call(f"{self.url}/api/v1/namespaces/{ns}/pods", "POST", body)["metadata"]["uid"]
        return self.files(ns, name, uid, "app") if file else Pod(ns, name, uid, "app", Path())

    def files(self, ns: str, name: str, uid: str, container: str) -> Pod:
        """The pod's log file and its /var/log/containers link; uid "": a directory that does not
        name the uid (the file is then known by namespace and name alone)."""
        d = self.root / "pods" / (f"{ns}_{name}_{uid}" if uid else f"nouid/{ns}_{name}") / container
        d.mkdir(parents=True)
        (d / "0.log").touch()
        cid = uuid.uuid4().hex * 2
        os.symlink(d / "0.log", self.root / "containers" / f"{name}_{ns}_{container}-{cid}.log")
        return Pod(ns, name, uid, container, d / "0.log")

    def annotate(self, pod: Pod, annotations: dict[str, str]) -> None:
        """Replace the pod's annotations (a PUT of the whole object, as kubectl apply would)."""
        body = self.specs[f"pod/{pod.ns}/{pod.name}"]
        body["metadata"]["annotations"] = annotations
        kube_call(f"{self.url}/api/v1/namespaces/{pod.ns}/pods/{pod.name}", "PUT", body)

    def delete(self, pod: Pod) -> None:
        kube_call(f"{self.url}/api/v1/namespaces/{pod.ns}/pods/{pod.name}", "DELETE")
        self.specs.pop(f"pod/{pod.ns}/{pod.name}", None)

    def restore(self) -> None:
        """Create again what the (restarted, empty) server had: as etcd would have kept it."""
        for body in self.specs.values():
            ns = body["metadata"].get("namespace")
            kube_call(f"{self.url}/api/v1/" + (f"namespaces/{ns}/pods" if ns else "namespaces"), "POST", body)


def settings(tmp: Path, root: Path, url: str, node: str, **kube: Any) -> Any:
    return settings_from_dict({
        "data_dir": str(tmp / "data"), "host_name": "testhost", "shutdown_timeout_secs": 5,
        "checkpoint_interval_secs": 0.05,
        "source": {"include": [f"{root}/containers/*.log"], "scan_interval_secs": 0.1,
                   "poll_interval_ms": 20, "partial_line_timeout_secs": 0.5},
        "batch": {"linger_ms": 20},
        "metrics": {"listen": ""},
        "sinks": {name: {"type": "file", "path": str(tmp / name), "retry_initial_ms": 10,
                         "retry_max_ms": 50} for name in ("team-a", "team-b", "rest")},
        "routing": {"unmatched": "rest", "routes": [
            {"name": "a", "sinks": ["team-a"], "when": [{"field": "kubernetes.labels.team", "equals": "a"}]},
            {"name": "b", "sinks": ["team-b"], "when": [{"field": "kubernetes.labels.team", "equals": "b"}]},
        ]},
        "kubernetes": {"enabled": True, "api_url": url, "node": node, "wait_for_metadata_ms": 5000,
                       "retry_max_secs": 1.0, **kube},
    }, interpolate=False)


def shipped(tmp: Path) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name in ("team-a", "team-b", "rest"):
        d = tmp / name
        out[name] = [orjson.loads(r) for r in read_dir(d)] if d.exists() else []
    return out


def of(recs: list[dict[str, Any]], pod: Pod) -> list[dict[str, Any]]:
    return [r for r in recs if r.get("pod") == pod.name]


async def test_records_carry_labels_owner_node_and_go_to_their_team(k, kube_url, tmp_path):
    node = k.node
    ns_a, ns_b = k.namespace("shop", {"env": "prod"}), k.namespace("data", {"env": "dev"})
    web = k.pod(ns_a, "web-7d4f9c6b8-x2kq9", {"team": "a", "app": "web", "pod-template-hash": "7d4f9c6b8"},
                owner=("ReplicaSet", "web-7d4f9c6b8"))
    db = k.pod(ns_b, "db-0", {"team": "b", "app": "db"}, owner=("StatefulSet", "db"))
    noisy = k.pod(ns_a, "noisy", {"team": "a"}, annotations={"tailship.io/exclude": "true"})
    web.write(200)
    db.write(200)
    noisy.write(200)
    agent = Agent(settings(tmp_path, k.root, kube_url, node))
    async with running(agent):
        await wait_until(lambda: len(shipped(tmp_path)["team-b"]) == 200, 60, "db's first lines")
        assert agent.kube is not None
        k.delete(db)
        await wait_until(lambda: agent.kube.cache.pods[db.uid].deleted_at is not None, 30,
                         "the agent to see db-0 deleted")
        last = db.write(50, tag="after-delete")
        web.write(100)
        await wait_until(lambda: len(shipped(tmp_path)["team-b"]) == 250
                         and len(shipped(tmp_path)["team-a"]) == 300, 60, "the last lines")
        await wait_until(lambda: agent.summary().events.get("kubernetes_excluded", 0) == 200, 30,
                         "the excluded pod's lines passed over")
    out = shipped(tmp_path)
    assert out["rest"] == []
    assert of(out["team-a"], noisy) == [] and of(out["team-b"], noisy) == []
    assert sorted(r["seq"] for r in out["team-a"]) == list(range(300))
    assert sorted(r["seq"] for r in out["team-b"]) == list(range(250))
    for rec in out["team-a"]:
        kk = rec["kubernetes"]
        assert kk["labels"] == {"app": "web", "pod-template-hash": "7d4f9c6b8", "team": "a"}
        assert kk["owner"] == {"kind": "Deployment", "name": "web"}
        assert kk["node"] == node and kk["namespace_labels"] == {"env": "prod"}
        assert kk["container_image"] == "registry.example/web-7d4f9c6b8-x2kq9:1.0"
        assert kk["pod_uid"] == web.uid and "annotations" not in kk
        assert "flags" not in rec["log"]
    for rec in out["team-b"]:
        kk = rec["kubernetes"]
        assert kk["labels"] == {"app": "db", "team": "b"}
        assert kk["owner"] == {"kind": "StatefulSet", "name": "db"}
        assert kk["node"] == node and kk["namespace_labels"] == {"env": "dev"}
    after = [r for r in out["team-b"] if r["tag"] == "after-delete"]
    assert sorted(r["seq"] for r in after) == last          # deleted mid-run: last lines enriched
    print(f"records: team-a {len(out['team-a'])}, team-b {len(out['team-b'])} ({len(after)} after "
          f"the pod's deletion), excluded {200}")


async def test_annotations_changed_mid_run_steer_the_file_from_then_on(k, kube_url, tmp_path):
    ns = k.namespace("steer", {})
    svc = k.pod(ns, "svc-0", {"team": "a"})
    svc.write(50)
    agent = Agent(settings(tmp_path, k.root, kube_url, k.node))

    def steer() -> Any:
        assert agent.kube is not None
        return next(p.steer for p in agent.kube.pods_on_node() if p.name == "svc-0")

    async with running(agent):
        await wait_until(lambda: len(shipped(tmp_path)["team-a"]) == 50, 60, "the first lines")
        k.annotate(svc, {"tailship.io/exclude": "true"})
        await wait_until(lambda: steer().exclude_all, 30, "the agent to see the annotation")
        svc.write(50, tag="excluded")
        await wait_until(lambda: agent.summary().events.get("kubernetes_excluded", 0) == 50, 30,
                         "the excluded lines passed over")
        k.annotate(svc, {"tailship.io/format": "text"})
        await wait_until(lambda: steer().text and not steer().exclude_all, 30, "the new annotation")
        svc.write(50, tag="text")
        await wait_until(lambda: len(shipped(tmp_path)["team-a"]) == 100, 60, "the text lines")
    recs = shipped(tmp_path)["team-a"]
    assert sorted(r["seq"] for r in recs[:50]) == list(range(50)) and all("seq" in r for r in recs[:50])
    texts = recs[50:]
    # not parsed any more: the JSON payload is the message, with seq 100..149
    assert sorted(orjson.loads(r["message"])["seq"] for r in texts) == list(range(100, 150))
    assert not any(r.get("tag") == "excluded" or "excluded" in r.get("message", "") for r in recs)


async def test_api_server_outage_loses_nothing_and_enrichment_resumes(k, kube_url, tmp_path):
    node = k.node
    ns = k.namespace("shop", {"env": "prod"})
    web = k.pod(ns, "web-0", {"team": "a"}, owner=("StatefulSet", "web"))
    web.write(100)
    agent = Agent(settings(tmp_path, k.root, kube_url, node, wait_for_metadata_ms=500))
    async with running(agent):
        await wait_until(lambda: len(shipped(tmp_path)["team-a"]) == 100, 60, "the first lines")
        assert agent.kube is not None
        await asyncio.to_thread(services, "stop", "kube-api")
        t0 = time.monotonic()
        await wait_until(lambda: agent.kube.pods.age() > 0, 30, "the watch to notice the outage")
        # a new pod starts while the API server is away: its file is unknown to the cache
        late = k.files(ns, "late-0", "", "app")
        outage_lines = 0
        while time.monotonic() - t0 < OUTAGE_SECS:
            web.write(20, tag="outage")
            late.write(20, tag="outage")
            outage_lines += 40
            # nothing is held while the API server is away: what is written is shipped
            await wait_until(lambda: len(of(shipped(tmp_path)["team-a"], web)) == web.lines
                             and len(of(shipped(tmp_path)["rest"], late)) == late.lines, 30,
                             "lines written during the outage to be shipped during it")
            await asyncio.sleep(1.0)
        age = agent.kube.pods.age()
        assert age >= OUTAGE_SECS - 5
        # the staleness is exported, and readiness does not depend on the API server
        exported = generate_latest(agent.metrics.registry).decode()
        line = next(x for x in exported.splitlines()
                    if x.startswith('tailship_kubernetes_watch_age_seconds{resource="pods"}'))
        assert float(line.split()[-1]) >= OUTAGE_SECS - 5
        assert agent.readiness() == (True, "ready")
        await asyncio.to_thread(services, "up", "kube-api")
        t1 = time.monotonic()
        # the restarted server is empty: it gets back what etcd would have kept, and the new pod
        k.restore()
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "late-0", "namespace": ns, "labels": {"team": "a"}},
                "spec": {"nodeName": node,
                         "containers": [{"name": "app", "image": "registry.example/late:1"}]}}
        kube_call(f"{kube_url}/api/v1/namespaces/{ns}/pods", "POST", body)
        await wait_until(lambda: agent.kube.pods.watching and any(
            p.name == "late-0" for p in agent.kube.pods_on_node()), 60, "the watch to come back")
        recovered = time.monotonic() - t1
        web.write(10, tag="after")
        late.write(10, tag="after")
        await wait_until(lambda: len(of(shipped(tmp_path)["team-a"], late)) >= 10
                         and len(of(shipped(tmp_path)["team-a"], web)) == web.lines, 60,
                         "enrichment to resume")
    out = shipped(tmp_path)
    web_recs, late_recs = of(out["team-a"], web), of(out["team-a"], late) + of(out["rest"], late)
    assert sorted(r["seq"] for r in web_recs) == list(range(web.lines))      # none lost, none twice
    assert sorted(r["seq"] for r in late_recs) == list(range(late.lines))
    # during the outage: the known pod from the cache, the unknown one flagged
    assert all(r["kubernetes"]["labels"] == {"team": "a"} for r in web_recs)
    during = [r for r in late_recs if r["tag"] == "outage"]
    assert during and all(r["log"]["flags"] == ["no_api_metadata"] and "labels" not in r["kubernetes"]
                          for r in during)
    after = [r for r in late_recs if r["tag"] == "after"]
    assert after and all(r["kubernetes"]["labels"] == {"team": "a"} and "flags" not in r["log"]
                         for r in after)
    print(f"outage {OUTAGE_SECS}s: {outage_lines} lines written during it, all shipped during it; "
          f"watch age at the end {age:.0f}s; watch back {recovered:.1f}s after the restart; "
          f"lines: web {web.lines}, late {late.lines}, delivered once each")


async def test_startup_against_110_pods_lists_and_watches_once_per_resource(k, kube_url, tmp_path):
    node = k.node
    ns = k.namespace("busy", {"env": "prod"})
    pods = [k.pod(ns, f"app-{i}", {"team": "a" if i % 2 else "b", "i": str(i)},
                  owner=("ReplicaSet", f"app-{i}-5c7b9")) for i in range(110)]
    k.pod(ns, "elsewhere", {"team": "a"}, node="other-node", file=False)
    for p in pods:
        p.write(3)
    kube_call(f"{kube_url}/tailship/requests", "DELETE")
    agent = Agent(settings(tmp_path, k.root, kube_url, node))
    async with running(agent):
        await wait_until(lambda: sum(len(v) for v in shipped(tmp_path).values()) == 330, 120,
                         "every pod's lines")
    journal = kube_call(f"{kube_url}/tailship/requests")
    ours = Counter(("watch" if "watch=true" in line else "list", line.split("?")[0]) for line in journal)
    assert ours == {("list", "GET /api/v1/pods"): 1, ("watch", "GET /api/v1/pods"): 1,
                    ("list", "GET /api/v1/namespaces"): 1, ("watch", "GET /api/v1/namespaces"): 1}, journal
    assert all(f"fieldSelector=spec.nodeName%3D{node}" in line for line in journal if "/pods" in line)
    out = shipped(tmp_path)
    assert out["rest"] == []
    for team in ("a", "b"):
        assert {r["kubernetes"]["labels"]["team"] for r in out[f"team-{team}"]} == {team}
    assert all(r["kubernetes"]["owner"]["kind"] == "ReplicaSet" for r in out["team-a"])
    print(f"110 pods, 330 records: requests {dict(ours)}")


def test_tail_kubeconfig_enriches_on_a_laptop(k, kube_url, tmp_path):
    """`tail --kubeconfig` (two worker processes: each watches, preloaded by the fork server)."""
    node = k.node
    ns = k.namespace("lab", {})
    pod = k.pod(ns, "api-0", {"app": "api"}, owner=("StatefulSet", "api"))
    pod.write(5)
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(f"""apiVersion: v1
kind: Config
current-context: test
contexts:
- name: test
  context: {{cluster: test, user: test}}
clusters:
- name: test
  cluster: {{server: "{kube_url}"}}
users:
- name: test
  user: {{token: not-checked-by-the-test-server}}
""")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "agent", "tail", "--once", "--no-progress", "--workers", "2",
                        "--kubeconfig", str(cfg), "--node", node, str(k.root / "containers"),
                        "--to", f"file:{out}"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    recs = [orjson.loads(x) for x in read_dir(out)]
    assert len(recs) == 5
    assert all(x["kubernetes"]["labels"] == {"app": "api"} and x["kubernetes"]["node"] == node
               for x in recs)


async def test_pods_annotated_for_prometheus_are_scraped_with_their_metadata(k, kube_url, tmp_path):
    """A pod annotated prometheus.io/scrape (its exporter a real prometheus_client server) is
    found through the watch and scraped; its series carry the pod's labels and namespace, and a
    route on kubernetes.labels.team sends them to the team's sink like its logs. A pod annotated
    without a port is passed over (counted)."""
    from tests.agent.metricsources.exporter import exporter

    ns = k.namespace("metrics", {"env": "prod"})
    with exporter(3) as url:
        port = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        ann = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port)}
        exp = k.pod(ns, "exporter-0", {"team": "a"}, annotations=ann, ip="127.0.0.1", file=False)
        k.pod(ns, "noport-0", {"team": "b"}, annotations={"prometheus.io/scrape": "true"},
              ip="127.0.0.2", file=False)
        s = settings(tmp_path, k.root, kube_url, k.node)
        s.prometheus_scrape.enabled = True
        s.prometheus_scrape.interval_secs = 1.0
        s.prometheus_scrape.timeout_secs = 1.0
        agent = Agent(s)

        def scraped(team: str) -> list[dict[str, Any]]:
            return [r for r in shipped(tmp_path)[team]
                    if r.get("metric", {}).get("name") == "exporter_work_total"]

        async with running(agent):
            await wait_until(lambda: len(scraped("team-a")) >= 6, 60, "two scrapes of the pod")
            assert agent.summary().events.get("metric_pod_not_scraped") == 1
            k.delete(exp)
            await wait_until(lambda: agent.kube is not None and not any(
                p.name == exp.name for p in agent.kube.pods_on_node()), 30, "the pod deleted")
    out = shipped(tmp_path)
    work = scraped("team-a")
    for rec in work:
        assert rec["kubernetes"]["namespace"] == ns and rec["kubernetes"]["pod"] == exp.name
        assert rec["kubernetes"]["labels"] == {"team": "a"}
        labels = rec["metric"]["labels"]
        assert (labels["job"], labels["instance"], labels["namespace"], labels["pod"]) == \
            ("prometheus_scrape", f"127.0.0.1:{port}", ns, exp.name)
    assert not [r for r in out["team-b"] + out["rest"] if "metric" in r
                and r["metric"]["labels"].get("pod") == "noport-0"]
    print(f"pod scrapes: {len(work)} exporter_work_total records from {exp.name}")

