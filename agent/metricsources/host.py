"""The node's own metrics from /proc and /sys, named and labelled as node_exporter names them (so
existing dashboards and queries work): `node_cpu_seconds_total{cpu,mode}`,
`node_memory_MemAvailable_bytes`, `node_load1`, `node_filesystem_avail_bytes{device,fstype,
mountpoint}`, `node_disk_read_bytes_total{device}`, `node_network_receive_bytes_total{device}`, ...

In a pod, `proc` is the host's /proc mounted at /host/proc, `sys` the host's /sys, `root` the
host's root filesystem. Network counters come from `<proc>/1/net/dev` and mounts from
`<proc>/1/mounts`: the host's init process sees the host's network and mount namespaces, where
the pod's own `/proc/net` would show the pod's.

`collect` is plain blocking file reading: the source runs it in a thread with a timeout, since a
`statvfs` of a hung network filesystem can block for minutes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from agent.metricsources.settings import HostMetricsSettings
from pipelines.metricrecords import COUNTER, GAUGE

Sample = tuple[str, str, dict[str, str], float]  # name, type, labels, value

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size
DISK_FIELDS = (  # /proc/diskstats columns after major, minor, name: (metric, type, scale)
    ("node_disk_reads_completed_total", COUNTER, 1), ("node_disk_reads_merged_total", COUNTER, 1),
    ("node_disk_read_bytes_total", COUNTER, SECTOR_BYTES),
    ("node_disk_read_time_seconds_total", COUNTER, 0.001),
    ("node_disk_writes_completed_total", COUNTER, 1), ("node_disk_writes_merged_total", COUNTER, 1),
    ("node_disk_written_bytes_total", COUNTER, SECTOR_BYTES),
    ("node_disk_write_time_seconds_total", COUNTER, 0.001), ("node_disk_io_now", GAUGE, 1),
    ("node_disk_io_time_seconds_total", COUNTER, 0.001),
    ("node_disk_io_time_weighted_seconds_total", COUNTER, 0.001),
    ("node_disk_discards_completed_total", COUNTER, 1), ("node_disk_discards_merged_total", COUNTER, 1),
    ("node_disk_discarded_sectors_total", COUNTER, 1),
    ("node_disk_discard_time_seconds_total", COUNTER, 0.001),
    ("node_disk_flush_requests_total", COUNTER, 1),
    ("node_disk_flush_requests_time_seconds_total", COUNTER, 0.001),
)
NET_RECEIVE = ("bytes", "packets", "errs", "drop", "fifo", "frame", "compressed", "multicast")
NET_TRANSMIT = ("bytes", "packets", "errs", "drop", "fifo", "colls", "carrier", "compressed")
STAT_COUNTERS = {"ctxt": "node_context_switches_total", "processes": "node_forks_total"}
STAT_GAUGES = {"procs_running": "node_procs_running", "procs_blocked": "node_procs_blocked",
               "btime": "node_boot_time_seconds"}


@dataclass(frozen=True, slots=True)
class HostPaths:
    proc: str
    sys: str
    root: str
    fs_types_exclude: re.Pattern[str]
    mount_points_exclude: re.Pattern[str]
    disks_exclude: re.Pattern[str]
    net_exclude: re.Pattern[str] | None

    @classmethod
    def of(cls, s: HostMetricsSettings) -> HostPaths:
        return cls(s.proc_path, s.sys_path, s.root_path, re.compile(s.filesystem_types_exclude),
                   re.compile(s.mount_points_exclude), re.compile(s.disks_exclude),
                   re.compile(s.network_devices_exclude) if s.network_devices_exclude else None)


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def cpu(p: HostPaths) -> list[Sample]:
    tick = os.sysconf("SC_CLK_TCK")
    out: list[Sample] = []
    for line in _read(f"{p.proc}/stat").splitlines():
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        name, *values = line.split()
        n = name[3:]
        for mode, v in zip(CPU_MODES, values, strict=False):
            out.append(("node_cpu_seconds_total", COUNTER, {"cpu": n, "mode": mode}, int(v) / tick))
        for mode, v in zip(("user", "nice"), values[8:10], strict=False):
            out.append(("node_cpu_guest_seconds_total", COUNTER, {"cpu": n, "mode": mode}, int(v) / tick))
    return out


def stat(p: HostPaths) -> list[Sample]:
    out: list[Sample] = []
    for line in _read(f"{p.proc}/stat").splitlines():
        key, _, rest = line.partition(" ")
        if key in STAT_COUNTERS:
            out.append((STAT_COUNTERS[key], COUNTER, {}, float(rest)))
        elif key in STAT_GAUGES:
            out.append((STAT_GAUGES[key], GAUGE, {}, float(rest)))
        elif key == "intr":
            out.append(("node_intr_total", COUNTER, {}, float(rest.split()[0])))
    return out


def memory(p: HostPaths) -> list[Sample]:
    out: list[Sample] = []
    for line in _read(f"{p.proc}/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts:
            continue
        key = key.replace("(", "_").replace(")", "")
        if len(parts) > 1 and parts[1] == "kB":
            out.append((f"node_memory_{key}_bytes", GAUGE, {}, float(parts[0]) * 1024))
        else:
            out.append((f"node_memory_{key}", GAUGE, {}, float(parts[0])))
    return out


def load(p: HostPaths) -> list[Sample]:
    one, five, fifteen = _read(f"{p.proc}/loadavg").split()[:3]
    return [("node_load1", GAUGE, {}, float(one)), ("node_load5", GAUGE, {}, float(five)),
            ("node_load15", GAUGE, {}, float(fifteen))]


def _unescape(field: str) -> str:
    """Mount table fields escape space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def filesystem(p: HostPaths) -> list[Sample]:
    out: list[Sample] = []
    seen: set[tuple[str, str]] = set()
    for line in _read(f"{p.proc}/1/mounts").splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = _unescape(fields[0]), _unescape(fields[1]), fields[2], fields[3]
        if p.fs_types_exclude.search(fstype) or p.mount_points_exclude.search(mountpoint):
            continue
        if (device, mountpoint) in seen:
            continue
        seen.add((device, mountpoint))
        labels = {"device": device, "fstype": fstype, "mountpoint": mountpoint}
        try:
            st = os.statvfs(os.path.join(p.root, mountpoint.lstrip("/")))
        except OSError:
            out.append(("node_filesystem_device_error", GAUGE, labels, 1.0))
            continue
        bs = st.f_frsize or st.f_bsize
        readonly = 1.0 if "ro" in options.split(",") else 0.0
        out += [("node_filesystem_device_error", GAUGE, labels, 0.0),
                ("node_filesystem_size_bytes", GAUGE, labels, float(st.f_blocks * bs)),
                ("node_filesystem_free_bytes", GAUGE, labels, float(st.f_bfree * bs)),
                ("node_filesystem_avail_bytes", GAUGE, labels, float(st.f_bavail * bs)),
                ("node_filesystem_files", GAUGE, labels, float(st.f_files)),
                ("node_filesystem_files_free", GAUGE, labels, float(st.f_ffree)),
                ("node_filesystem_readonly", GAUGE, labels, readonly)]
    return out


def disk(p: HostPaths) -> list[Sample]:
    out: list[Sample] = []
    for line in _read(f"{p.proc}/diskstats").splitlines():
        fields = line.split()
        if len(fields) < 14 or p.disks_exclude.search(fields[2]):
            continue
        labels = {"device": fields[2]}
        for (name, type_, scale), v in zip(DISK_FIELDS, fields[3:], strict=False):
            out.append((name, type_, labels, int(v) * scale))
    return out


def network(p: HostPaths) -> list[Sample]:
    out: list[Sample] = []
    for line in _read(f"{p.proc}/1/net/dev").splitlines()[2:]:
        dev, _, rest = line.partition(":")
        dev = dev.strip()
        values = rest.split()
        if not dev or len(values) < 16 or (p.net_exclude is not None and p.net_exclude.search(dev)):
            continue
        labels = {"device": dev}
        for what, v in zip(NET_RECEIVE, values[:8], strict=True):
            out.append((f"node_network_receive_{what}_total", COUNTER, labels, float(v)))
        for what, v in zip(NET_TRANSMIT, values[8:16], strict=True):
            out.append((f"node_network_transmit_{what}_total", COUNTER, labels, float(v)))
        out += _netclass(p, dev, labels)
    return out


def _netclass(p: HostPaths, dev: str, labels: dict[str, str]) -> list[Sample]:
    """What /sys/class/net says of a device (absent where /sys is not the host's)."""
    base = f"{p.sys}/class/net/{dev}"
    out: list[Sample] = []
    try:
        out.append(("node_network_up", GAUGE, labels, 1.0 if _read(f"{base}/operstate").strip() == "up"
                    else 0.0))
        out.append(("node_network_mtu_bytes", GAUGE, labels, float(_read(f"{base}/mtu"))))
    except (OSError, ValueError):
        pass
    return out


COLLECT: dict[str, Callable[[HostPaths], list[Sample]]] = {
    "cpu": cpu, "stat": stat, "memory": memory, "load": load, "filesystem": filesystem, "disk": disk,
    "network": network,
}


def collect(p: HostPaths, collectors: list[str]) -> tuple[list[Sample], dict[str, str]]:
    """Samples of every collector; a collector that fails (a file missing on this kernel) gives
    none and its error, by name, so the others still report."""
    samples: list[Sample] = []
    errors: dict[str, str] = {}
    for name in collectors:
        try:
            samples += COLLECT[name](p)
        except (OSError, ValueError, IndexError) as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
    return samples, errors
