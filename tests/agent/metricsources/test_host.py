"""Host metrics read from this machine's real /proc and /sys, checked against what /proc says at
the same moment: counters lie between a read before and a read after the collection, sizes match
statvfs, gauges are within a tolerance."""

from __future__ import annotations

import os

import pytest

from agent.metricsources import host
from agent.metricsources.settings import HostMetricsSettings

pytestmark = pytest.mark.timeout(30)
TICK = os.sysconf("SC_CLK_TCK")


def paths(**kw) -> host.HostPaths:
    return host.HostPaths.of(HostMetricsSettings(**kw))


def values(samples, name):
    return {tuple(sorted(labels.items())): v for n, _, labels, v in samples if n == name}


def proc_cpu() -> dict[tuple[str, str], float]:
    out = {}
    for line in open("/proc/stat").read().splitlines():
        if line.startswith("cpu") and not line.startswith("cpu "):
            name, *vals = line.split()
            for mode, v in zip(host.CPU_MODES, vals, strict=False):
                out[(name[3:], mode)] = int(v) / TICK
    return out


def test_cpu_seconds_lie_between_two_reads_of_proc_stat():
    before = proc_cpu()
    samples, errors = host.collect(paths(), ["cpu"])
    after = proc_cpu()
    assert not errors
    got = {(labels["cpu"], labels["mode"]): v for n, _, labels, v in samples if n == "node_cpu_seconds_total"}
    assert set(got) == set(before) and len(got) == os.cpu_count() * 8
    for key, v in got.items():
        assert before[key] <= v <= after[key], key


def test_memory_matches_meminfo():
    meminfo = {k: v.split() for k, v in (ln.split(":", 1) for ln in open("/proc/meminfo"))}
    samples, _ = host.collect(paths(), ["memory"])
    got = {n: v for n, _, _, v in samples}
    assert got["node_memory_MemTotal_bytes"] == int(meminfo["MemTotal"][0]) * 1024
    avail = int(meminfo["MemAvailable"][0]) * 1024
    assert abs(got["node_memory_MemAvailable_bytes"] - avail) < max(avail * 0.1, 256 << 20)
    assert got["node_memory_HugePages_Total"] == int(meminfo["HugePages_Total"][0])  # no unit: no _bytes
    assert "node_memory_Active_anon_bytes" in got  # Active(anon) as node_exporter names it


def test_load_and_stat():
    samples, errors = host.collect(paths(), ["load", "stat"])
    assert not errors
    got = {n: v for n, _, _, v in samples}
    load1 = float(open("/proc/loadavg").read().split()[0])
    assert abs(got["node_load1"] - load1) < 2.0
    btime = next(int(ln.split()[1]) for ln in open("/proc/stat") if ln.startswith("btime"))
    assert got["node_boot_time_seconds"] == btime
    assert got["node_forks_total"] > 0 and got["node_context_switches_total"] > 0


def net_dev() -> dict[str, list[int]]:
    return {dev.strip(): [int(x) for x in rest.split()]
            for dev, rest in (ln.split(":", 1) for ln in open("/proc/1/net/dev").readlines()[2:])}


def test_network_counters_of_the_hosts_namespace_between_two_reads():
    before = net_dev()
    samples, errors = host.collect(paths(), ["network"])
    after = net_dev()
    assert not errors
    rx = values(samples, "node_network_receive_bytes_total")
    tx = values(samples, "node_network_transmit_packets_total")
    assert {k[0][1] for k in rx} == set(before)
    for dev in before:
        assert before[dev][0] <= rx[(("device", dev),)] <= after[dev][0]
        assert before[dev][9] <= tx[(("device", dev),)] <= after[dev][9]
    if os.path.exists("/sys/class/net/lo/mtu"):
        mtu = int(open("/sys/class/net/lo/mtu").read())
        assert values(samples, "node_network_mtu_bytes")[(("device", "lo"),)] == mtu


def test_filesystem_sizes_match_statvfs():
    mounts = [ln.split() for ln in open("/proc/1/mounts")]
    samples, errors = host.collect(paths(), ["filesystem"])
    assert not errors
    size = values(samples, "node_filesystem_size_bytes")
    assert size, "no filesystem reported"
    for key, v in size.items():
        labels = dict(key)
        st = os.statvfs(labels["mountpoint"])
        assert v == st.f_blocks * st.f_frsize, labels
        assert any(m[1] == labels["mountpoint"] and m[2] == labels["fstype"] for m in mounts)
    assert not any(dict(k)["fstype"] in ("proc", "sysfs", "cgroup", "devpts") for k in size)


def test_a_root_path_prefix_is_where_sizes_are_read(tmp_path):
    """With the host's root mounted elsewhere (/host/root), statvfs goes through that prefix:
    a prefix with nothing under it reports each filesystem as a device error, not a crash."""
    samples, _ = host.collect(paths(root_path=str(tmp_path / "missing")), ["filesystem"])
    errs = values(samples, "node_filesystem_device_error")
    assert errs and set(errs.values()) == {1.0}


def test_disk_counters_between_two_reads_and_partitions_left_out():
    def diskstats():
        return {f[2]: [int(x) for x in f[3:]] for f in (ln.split() for ln in open("/proc/diskstats"))}

    before = diskstats()
    samples, errors = host.collect(paths(), ["disk"])
    after = diskstats()
    assert not errors
    reads = values(samples, "node_disk_reads_completed_total")
    written = values(samples, "node_disk_written_bytes_total")
    assert not any(dict(k)["device"].startswith("loop") for k in reads)
    for key, v in reads.items():
        dev = dict(key)["device"]
        assert before[dev][0] <= v <= after[dev][0]
        assert before[dev][6] * 512 <= written[key] <= after[dev][6] * 512


def test_a_missing_file_fails_its_collector_only(tmp_path):
    samples, errors = host.collect(paths(proc_path=str(tmp_path)), ["memory", "load"])
    assert samples == [] and set(errors) == {"memory", "load"}
    assert "No such file" in errors["memory"]
