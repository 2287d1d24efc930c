"""Confinement and hostile trees: only regular files under the allowed roots are read, never
/proc, /sys or /dev; refused paths are counted and logged once; symlink loops end; a scan never
stalls the event loop."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from agent.filesource.confine import Confinement, default_roots
from agent.filesource.walk import Listings, expand
from agent.runtime import Agent
from tests.conftest import CollectSink, fast_settings, free_port, running, wait_until

pytestmark = pytest.mark.timeout(60)

TAILSHIP = [sys.executable, "-m", "agent"]


def loop_tree(root: Path) -> list[Path]:
    """`root` with links `a -> .`, `b -> .`, `sub/up -> ..` and two log files; the files."""
    (root / "sub").mkdir(parents=True)
    (root / "a").symlink_to(".")
    (root / "b").symlink_to(".")
    (root / "sub" / "up").symlink_to("..")
    files = [root / "top.log", root / "sub" / "inner.log"]
    for i, f in enumerate(files):
        f.write_text("".join(f"{f.stem} {n}\n" for n in range(10 + i)))
    return files


def test_default_roots_of_a_kubelet_containers_directory():
    """The base directory of each pattern; a `containers` directory adds where its links lead."""
    assert default_roots(["/var/log/containers/*.log", "/srv/app/**/*.log"]) == [
        "/var/log/containers", "/var/log/pods", "/var/lib/docker/containers", "/srv/app"]


def test_a_walk_through_symlink_loops_lists_each_directory_once(tmp_path):
    """`**` over `a -> .`, `b -> .` and `sub/up -> ..` ends, each file found once; a directory
    link leading out of the roots is not followed."""
    root = tmp_path / "logs"
    files = loop_tree(root)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "other.log").write_text("x\n")
    (root / "out").symlink_to(outside)
    listings = Listings()
    found = expand(str(root / "**" / "*.log"), listings, Confinement([str(root)]).inside)
    assert sorted(os.path.realpath(p) for p in found) == sorted(str(f) for f in files)
    assert listings.listed == 2  # logs and logs/sub, once each


def test_an_unchanged_directory_is_not_listed_again(tmp_path, monkeypatch):
    """A listing is reused while the directory's mtime is unchanged (and old enough to trust)."""
    (tmp_path / "a.log").write_text("x\n")
    old = time.time() - 60
    os.utime(tmp_path, (old, old))
    listings = Listings()
    pattern = str(tmp_path / "*.log")
    inside = Confinement([str(tmp_path)]).inside
    assert expand(pattern, listings, inside) == [str(tmp_path / "a.log")]
    listings.next_scan()
    assert expand(pattern, listings, inside) == [str(tmp_path / "a.log")]
    assert listings.listed == 1
    (tmp_path / "b.log").write_text("y\n")  # the directory changed: listed again
    listings.next_scan()
    assert expand(pattern, listings, inside) == [str(tmp_path / "a.log"), str(tmp_path / "b.log")]
    assert listings.listed == 2


def hostile_tree(tmp_path: Path) -> tuple[Path, list[str]]:
    """A kubelet-like tree whose containers directory holds, beside a good link, links to a
    root-only file outside the roots, to /proc/self/environ and to a directory."""
    pods, links = tmp_path / "var/log/pods/ns_app_uid/app", tmp_path / "var/log/containers"
    pods.mkdir(parents=True)
    links.mkdir(parents=True)
    good = [f"good {i}" for i in range(5)]
    (pods / "0.log").write_text("".join(f"{m}\n" for m in good))
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:SECRET-HASH:19000\n")
    secret.chmod(0o600)
    (links / "app_ns_app-1.log").symlink_to(pods / "0.log")
    (links / "evil_ns_app-2.log").symlink_to(secret)
    (links / "env_ns_app-3.log").symlink_to("/proc/self/environ")
    (links / "dir_ns_app-4.log").symlink_to(pods)
    return links, good


async def test_links_out_of_the_roots_are_refused_counted_and_logged_once(tmp_path, caplog):
    links, good = hostile_tree(tmp_path)
    sink = CollectSink()
    caplog.set_level(logging.WARNING, logger="tailship.agent")
    settings = fast_settings(tmp_path, [str(links / "*.log")], inotify=False)  # a scan every 50 ms
    async with running(agent := Agent(settings, sink)):
        await wait_until(lambda: len(sink.records) == len(good), what="the good file")
        scans = agent.source._last_scan
        await wait_until(lambda: agent.source._last_scan > scans + 0.2, what="more scans")
    assert sink.messages() == good
    refused = agent.metrics.files_refused
    assert refused.labels("outside_roots")._value.get() == 1
    assert refused.labels("system_path")._value.get() == 1
    warnings = [r.getMessage() for r in caplog.records if "not read" in r.getMessage()]
    assert len(warnings) == 2, warnings  # once each, whatever the number of scans
    assert any("evil_ns_app-2.log" in w and "outside roots" in w for w in warnings)
    assert any("env_ns_app-3.log" in w and "system path" in w for w in warnings)


@pytest.mark.slow
def test_tail_once_refuses_a_root_only_file_and_proc_environ_and_ends(tmp_path):
    """`tail --once` over the hostile tree ends, ships the good file only, and says what it
    refused; the environment (with a secret in it) is never shipped."""
    links, good = hostile_tree(tmp_path)
    env = {**os.environ, "KAFKA_SASL_PASSWORD": "hunter2-not-shipped"}
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(links / "*.log"), "--to", "stdout",
                        "--workers", "1", "--format", "text"],
                       capture_output=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr.decode()
    assert b"SECRET-HASH" not in r.stdout and b"hunter2" not in r.stdout
    assert len(r.stdout.splitlines()) == len(good)
    err = r.stderr.decode()
    assert "file_refused_outside_roots=1" in err and "file_refused_system_path=1" in err, err
    # the operator may allow more: the secret's directory as a root of its own
    r = subprocess.run([*TAILSHIP, "tail", "--once", str(links / "*.log"), "--to", "stdout",
                        "--workers", "1", "--format", "text", "--allow-root", str(links),
                        "--allow-root", str(links.parent / "pods"), "--allow-root",
                        str(tmp_path / "etc")], capture_output=True, timeout=60)
    assert r.returncode == 0 and b"SECRET-HASH" in r.stdout, r.stderr.decode()


@pytest.mark.slow
def test_a_symlink_loop_tree_is_scanned_while_healthz_answers(tmp_path):
    """`tail DIR` (a `**` pattern) over links `a -> .`, `b -> .`, `sub/up -> ..`: the scan ends
    (every line shipped within a generous deadline) and /healthz answers all along."""
    root = tmp_path / "logs"
    files = loop_tree(root)
    want = sum(len(f.read_text().splitlines()) for f in files)
    port = free_port()
    out = tmp_path / "out"
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([*TAILSHIP, "tail", str(root), "--to", f"file:{out}", "--workers", "1",
                                 "--data-dir", str(tmp_path / "data"), "--metrics-listen",
                                 f"127.0.0.1:{port}", "--no-progress"], stderr=err)
    try:
        deadline = time.monotonic() + 45
        lines = answered = 0
        while lines < want:
            assert proc.poll() is None, (tmp_path / "err").read_text()
            assert time.monotonic() < deadline, f"{lines} of {want} lines after 45 s"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
                    assert resp.status == 200
                    answered += 1
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                    for line in resp.read().decode().splitlines():
                        if line.startswith("tailship_input_lines_total "):
                            lines = int(float(line.split()[1]))
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionRefusedError):
                    raise
                assert not answered, "stopped listening"  # else: not listening yet
            time.sleep(0.2)
        assert answered > 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a loop that never returns to its signal handler
            proc.kill()
            proc.wait()
