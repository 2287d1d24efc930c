"""What Kubernetes API enrichment costs per record: bytes added and CPU per line.

    python -m bench.kubernetes [--lines N] [--rounds N]

The same CRI lines (~1 KB app JSON) go through the chain three ways, alternated (A B C C B A
...), medians of --rounds: file-name metadata only (what tailship ships without the API), the
pod metadata a typical Deployment's pod gets with the default allow-lists (every label, no
annotations; owner, node, image, namespace labels), and the same with log metrics observing
every record (the record keeps its `kubernetes` object as a dict for them). Prints bytes a
record gains and CPU microseconds per line for each, and the difference.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import orjson

from agent.kubernetes.podmeta import Filters, allow_list, pod_info
from pipelines.chain import ChainSpec, FileProcessor
from pipelines.enrich import FileView, kubernetes_from_paths

LINK = ("/var/log/containers/shop-api-7d4f9c6b8-x2kq9_shop_api-"
        "4f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f.log")
REAL = "/var/log/pods/shop_shop-api-7d4f9c6b8-x2kq9_1f7c2b9e-0a6d-4c1e-9b3f-5e8d7a6c4b2f/api/0.log"

# a pod as a Deployment created by Helm leaves it: the labels users route and search by
POD: dict[str, Any] = {
    "metadata": {"name": "shop-api-7d4f9c6b8-x2kq9", "namespace": "shop",
                 "uid": "1f7c2b9e-0a6d-4c1e-9b3f-5e8d7a6c4b2f",
                 "labels": {"app.kubernetes.io/name": "shop-api", "app.kubernetes.io/instance": "shop",
                            "app.kubernetes.io/version": "1.24.3", "app.kubernetes.io/part-of": "shop",
                            "team": "payments", "pod-template-hash": "7d4f9c6b8"},
                 "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-12-01T09:00:00Z",
                                 "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
                 "ownerReferences": [{"kind": "ReplicaSet", "name": "shop-api-7d4f9c6b8",
                                      "controller": True}]},
    "spec": {"nodeName": "ip-10-0-12-34.eu-west-1.compute.internal",
             "containers": [{"name": "api", "image": "registry.example.com/shop/api:1.24.3"}]},
}
NAMESPACE_LABELS = {"kubernetes.io/metadata.name": "shop", "env": "prod"}


class Static:
    generation = 1

    def __init__(self, view: FileView) -> None:
        self._view = view

    def view(self) -> FileView:
        return self._view

    async def ready(self) -> None:
        pass


def enriched_meta() -> dict[str, Any]:
    pod = pod_info(POD, Filters(allow_list(["*"]), allow_list([]), allow_list(["*"])))
    assert pod is not None
    k8s = {**kubernetes_from_paths(LINK, REAL), **pod.fields, "container_image": pod.images["api"],
           "namespace_labels": NAMESPACE_LABELS}
    return {"kubernetes": k8s}


def lines(n: int) -> list[bytes]:
    """CRI lines of ~1 KB app JSON (a message of 600 letters, a trace context, a few fields)."""
    ts = "2026-12-04T10:00:00.123456789Z"
    out = []
    for i in range(n):
        payload = orjson.dumps({"level": "info", "seq": i, "trace_id": f"{i:032x}", "span_id": f"{i:016x}",
                                "service": "shop-api", "msg": "abcdefghijklmnopqrstuvwxyz"[i % 26] * 600})
        out.append(f"{ts} stdout F ".encode() + payload)
    return out


def run(kind: str, data: list[bytes]) -> tuple[float, int]:
    """CPU seconds and encoded bytes of one pass over `data`."""
    base = {"kubernetes": kubernetes_from_paths(LINK, REAL)}
    observe = (lambda rec, tid: rec["kubernetes"]) if kind == "api+observe" else None
    spec = ChainSpec(format="cri", host_name="node-1", observe=observe)
    live = None if kind == "file" else Static(FileView(enriched_meta(), None))
    p = FileProcessor(spec, "k", LINK, base, lambda name, n: None, live=live)
    t0 = time.process_time()
    nbytes = 0
    for i in range(0, len(data), 2000):
        nbytes += p.process(data[i:i + 2000], 0, 0.0).nbytes
    return time.process_time() - t0, nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    data = lines(a.lines)
    kinds = ["file", "api", "api+observe"]
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    size: dict[str, int] = {}
    for r in range(a.rounds):
        for k in kinds if r % 2 == 0 else reversed(kinds):
            secs, nbytes = run(k, data)
            cpu[k].append(secs)
            size[k] = nbytes
    us = {k: statistics.median(v) / a.lines * 1e6 for k, v in cpu.items()}
    for k in kinds:
        print(f"{k:12s} {us[k]:6.2f} us/line  {size[k] / a.lines:7.1f} bytes/record")
    extra = (size["api"] - size["file"]) / a.lines
    print(f"API enrichment (default allow-lists): +{extra:.0f} bytes a record, "
          f"{us['api'] - us['file']:+.2f} us/line; with log metrics observing: "
          f"{us['api+observe'] - us['file']:+.2f} us/line ({a.lines} lines, median of {a.rounds})")


if __name__ == "__main__":
    main()
