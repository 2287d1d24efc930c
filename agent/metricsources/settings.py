"""Options of the metric sources: `[prometheus_scrape]` and `[host_metrics]`.

Checked without I/O by `check` (called from `agent.config`'s cross-field pass): URLs that a scrape
could use, a timeout within the interval, one way of authenticating.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipelines.options import opt

# node_exporter's defaults (collector/filesystem_linux.go, diskstats_linux.go), as regexes
FS_TYPES_EXCLUDE = (r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|"
                    r"hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|"
                    r"selinuxfs|squashfs|sysfs|tracefs)$")
MOUNT_POINTS_EXCLUDE = (r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|"
                        r"var/lib/containers/storage/.+)($|/)")
DISKS_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
COLLECTORS = ("cpu", "stat", "memory", "load", "filesystem", "disk", "network")


@dataclass(slots=True)
class PrometheusScrapeSettings:
    enabled: bool = opt(False, help="scrape the Prometheus endpoints of `urls`")
    urls: list[str] = opt(factory=list, help="http(s) URLs of Prometheus text or OpenMetrics endpoints")
    job: str = opt("prometheus_scrape", help="the `job` label of every scraped series")
    interval_secs: float = opt(15.0, min=1, help="how often each target is scraped")
    timeout_secs: float = opt(10.0, min=0.1, help="a scrape not answered within this is a failure (up 0)")
    honor_labels: bool = opt(False, help="exposed job/instance labels win over the target's "
                                         "(else they are kept as exported_job, exported_instance)")
    max_samples: int = opt(50000, min=1, help="samples kept per scrape of one target; more are cut "
                                              "and counted")
    max_body_bytes: int = opt(16 << 20, min=1024, help="bytes read per scrape of one target "
                                                      "(decompressed); more are cut and counted")
    bearer_token_file: str = opt("", help="file holding a bearer token (read at every scrape)")
    username: str = opt("", help="basic auth user")
    password: str = opt("", help="basic auth password: use ${ENV_VAR}, or password_file")
    password_file: str = opt("", help="file holding the basic auth password")
    tls_ca_file: str = opt("", help="CA bundle (PEM) for https targets; empty: the system's")
    tls_verify: bool = opt(True, help="verify https targets' certificates and host names")

    def check(self, path: str) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for i, url in enumerate(self.urls):
            why = url_problem(url)
            if why:
                problems.append((f"{path}.urls[{i}]", why))
        if self.enabled and not self.urls:
            problems.append((f"{path}.urls", "expected at least one URL to scrape when enabled = true, "
                                             "got []"))
        if self.timeout_secs > self.interval_secs:
            problems.append((f"{path}.timeout_secs", f"expected at most interval_secs "
                                                     f"({self.interval_secs}), got {self.timeout_secs}"))
        if self.bearer_token_file and (self.username or self.password or self.password_file):
            problems.append((f"{path}.bearer_token_file", "expected either a bearer token or basic "
                                                          "auth, got both"))
        if self.password and self.password_file:
            problems.append((f"{path}.password_file", "expected either password or password_file, got both"))
        if (self.password or self.password_file) and not self.username:
            problems.append((f"{path}.username", "expected the basic auth user that goes with the "
                                                 "password, got nothing"))
        if not re.fullmatch(r"[^\x00-\x1f]+", self.job):
            problems.append((f"{path}.job", f"expected a non-empty label value, got {self.job!r}"))
        return problems


def url_problem(url: str) -> str:
    """Why `url` cannot be scraped, or "" (credentials are not shown: they may be in it)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"expected an http(s) URL, got one that does not parse ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"expected an http:// or https:// URL, got scheme {parts.scheme or 'none'!r}"
    if not parts.hostname:
        return "expected an http(s) URL with a host, got none"
    if parts.username or parts.password:
        return "expected no credentials in the URL (use username and password_file)"
    return ""


@dataclass(slots=True)
class HostMetricsSettings:
    enabled: bool = opt(False, help="collect the node's CPU, memory, load, filesystem, disk and network "
                                    "metrics (node_exporter names)")
    interval_secs: float = opt(15.0, min=1, help="how often the host metrics are collected")
    timeout_secs: float = opt(10.0, min=0.1, help="a collection not done within this is abandoned "
                                                  "(a hung network filesystem) and counted")
    proc_path: str = opt("/proc", help="the host's /proc (in the DaemonSet: /host/proc)")
    sys_path: str = opt("/sys", help="the host's /sys (in the DaemonSet: /host/sys)")
    root_path: str = opt("/", help="the host's root filesystem, for filesystem sizes "
                                   "(in the DaemonSet: /host/root)")
    collectors: list[str] = opt(factory=lambda: list(COLLECTORS), help="what to collect: cpu, stat, "
                                "memory, load, filesystem, disk, network")
    filesystem_types_exclude: str = opt(FS_TYPES_EXCLUDE, help="regex of filesystem types left out")
    mount_points_exclude: str = opt(MOUNT_POINTS_EXCLUDE, help="regex of mount points left out")
    disks_exclude: str = opt(DISKS_EXCLUDE, help="regex of block devices left out (partitions, loops)")
    network_devices_exclude: str = opt("", help="regex of network devices left out; empty: none")
    max_series: int = opt(10000, min=1, help="series kept per collection; more are cut and counted")

    def check(self, path: str) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        for i, c in enumerate(self.collectors):
            if c not in COLLECTORS:
                problems.append((f"{path}.collectors[{i}]", f"expected one of {', '.join(COLLECTORS)}, "
                                                            f"got {c!r}"))
        for key in ("filesystem_types_exclude", "mount_points_exclude", "disks_exclude",
                    "network_devices_exclude"):
            try:
                re.compile(getattr(self, key))
            except re.error as exc:
                problems.append((f"{path}.{key}", f"expected a regular expression, got "
                                                  f"{getattr(self, key)!r} ({exc})"))
        if self.timeout_secs > self.interval_secs:
            problems.append((f"{path}.timeout_secs", f"expected at most interval_secs "
                                                     f"({self.interval_secs}), got {self.timeout_secs}"))
        return problems
