"""A kubelet on real files: CRI logs under var/log/pods with var/log/containers symlinks, rotated
the kubelet's way while the agent runs (rename to 0.log.<timestamp>, a new 0.log, the rotation
before that gzip-compressed and deleted), a container restart (1.log, a new symlink), a pod
deleted. Every line arrives once with the right kubernetes metadata, no .gz is read, and no
deleted file stays open."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from pipelines.sinks.file import read_dir
from tests.conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ROTATE_BYTES = 450_000  # ~2.5 s apart at this pace: a few scan intervals, like the kubelet (10 MiB)


@dataclass
class Pod:
    root: Path
    ns: str
    name: str
    container: str = "app"
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    restarts: int = 0
    cid: str = field(default_factory=lambda: uuid.uuid4().hex * 2)
    written: int = 0
    rotations: int = 0

    @property
    def dir(self) -> Path:
        return self.root / "var/log/pods" / f"{self.ns}_{self.name}_{self.uid}" / self.container

    @property
    def log(self) -> Path:
        return self.dir / f"{self.restarts}.log"

    @property
    def link(self) -> Path:
        return self.root / "var/log/containers" / f"{self.name}_{self.ns}_{self.container}-{self.cid}.log"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self.link.parent.mkdir(parents=True, exist_ok=True)
        self.link.symlink_to(os.path.relpath(self.log, self.link.parent))

    def write(self, n: int) -> None:
        with open(self.log, "a") as f:
            for _ in range(n):
                payload = orjson.dumps({"pod": self.name, "cid": self.cid, "seq": self.written,
                                        "msg": "x" * 200}).decode()
                f.write(f"2026-11-24T10:00:00.{self.written % 10**9:09d}Z stdout F {payload}\n")
                self.written += 1
        if self.log.stat().st_size > ROTATE_BYTES:
            self.rotate()

    def rotate(self) -> None:
        """kubelet: compress the previous rotation, rename the live file, start a new one."""
        for old in self.dir.glob(f"{self.restarts}.log.2026*"):
            if not old.name.endswith(".gz"):
                with open(old, "rb") as src, gzip.open(f"{old}.tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst)  # the kubelet's compressLog: .tmp, then .gz
                os.rename(f"{old}.tmp", f"{old}.gz")
                old.unlink()
        self.rotations += 1
        self.log.rename(self.dir / f"{self.restarts}.log.20261124-1000{self.rotations:02d}")
        self.log.touch()

    def restart(self) -> None:
        """The container restarts: a new id, `<n+1>.log`, a new symlink; the old link goes."""
        self.link.unlink()
        self.restarts += 1
        self.cid = uuid.uuid4().hex * 2
        self.start()


def open_deleted(pid: int, under: Path) -> list[str]:
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.append(target)
    return out


def test_kubelet_rotation_restart_and_pod_deletion(tmp_path):
    root = tmp_path / "node"
    pods = [Pod(root, "shop", "cart-7d9f-abcde"), Pod(root, "shop", "web-5c4b-fghij"),
            Pod(root, "payments", "ledger-0")]
    for p in pods:
        p.start()
    out = tmp_path / "out"
    errlog = open(tmp_path / "agent.err", "wb")  # noqa: SIM115 - a file, not an undrained pipe
    agent = subprocess.Popen([sys.executable, "-m", "agent", "tail", str(root / "var/log/containers/*.log"),
                              "--to", f"file:{out}", "--data-dir", str(tmp_path / "data"), "--no-progress"],
                             stderr=errlog)
    records: list[dict] = []

    def shipped() -> list[dict]:
        nonlocal records
        if out.exists():
            records = [orjson.loads(x) for x in read_dir(out)]
        return records

    first_cid = pods[0].cid
    try:
        for p in pods:
            p.write(80)
        # the kubelet's churn starts once the agent reads: rotations compressed and deleted before
        # the agent's start are gone for any reader (a loaded machine starts it late)
        wait_for(lambda: len(shipped()) >= sum(p.written for p in pods), 60, "the first lines shipped")
        for step in range(1, 100):
            for p in pods:
                p.write(80)
            if step == 20:
                pods[0].restart()
            time.sleep(0.12)  # the kubelet's pace: rotations a few scan intervals apart
        total = sum(p.written for p in pods)
        wait_for(lambda: len(shipped()) >= total, 60,
                 f"every line shipped: {total} written, per pod {[(p.name, p.written) for p in pods]}, "
                 f"rotations {[p.rotations for p in pods]}",
                 lambda: f"shipped per pod/cid: {Counter((r['pod'], r['cid'][:6]) for r in records)}")
        # the pod goes away once shipped: its files are deleted while the agent may hold them
        shutil.rmtree(pods[2].dir.parent)
        pods[2].link.unlink()
        wait_for(lambda: not open_deleted(agent.pid, root), 30, "deleted files closed")
    finally:
        agent.terminate()
        agent.wait(timeout=60)
        errlog.close()
    assert agent.returncode == 0, (tmp_path / "agent.err").read_text(errors="replace")[-2000:]
    recs = shipped()
    seen = Counter((r["pod"], r["cid"], r["seq"]) for r in recs)
    assert max(seen.values()) == 1, "a line arrived twice"
    by_pod = Counter(r["pod"] for r in recs)
    assert by_pod == {p.name: p.written for p in pods}
    for r in recs:
        k8s = r["kubernetes"]
        assert k8s["pod"] == r["pod"] and k8s["container_id"] == r["cid"] and k8s["container"] == "app"
        ns = next(p.ns for p in pods if p.name == r["pod"])
        assert k8s["namespace"] == ns
        assert not r["log"]["file"]["path"].endswith(".gz")
    assert all(p.rotations >= 2 for p in pods), [p.rotations for p in pods]
    assert list(root.rglob("*.gz")), "the simulation never compressed a rotation"
    assert {r["cid"] for r in recs if r["pod"] == pods[0].name} == {first_cid, pods[0].cid}
    assert pods[0].cid != first_cid

