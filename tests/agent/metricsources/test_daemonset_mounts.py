"""The DaemonSet mounts what `[host_metrics]` reads in a pod: the node's /proc, /sys and root,
read-only, at the paths config/agent.toml names."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_host_paths_are_mounted_read_only_from_the_host():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "daemonset.yaml").read_text())}
    spec = docs["DaemonSet"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    for host, inside in (("/proc", "/host/proc"), ("/sys", "/host/sys"), ("/", "/host/root")):
        m = mounts[inside]
        assert m.get("readOnly") is True, inside
        assert volumes[m["name"]]["hostPath"]["path"] == host
        assert f'"{inside}"' in (ROOT / "config" / "agent.toml").read_text()
