"""The agents `python -m bench` compares, how each is built and how it is started.

    tailship           this checkout, on the interpreter of `--python`
    tailship@REV       tailship as it was at REV (`--tailship-rev`), same interpreter
    go                 bench/go-baseline of this checkout, built with `go build`
    go@REV             bench/go-baseline as it was at REV (`--go-old-rev`, default a1799ed)

An older revision is taken with `git archive REV <paths>` into the cache (~/.cache/tailship-bench,
or $TAILSHIP_BENCH_CACHE), keyed by its full commit id: read-only sources, no worktree registered
in the repository, nothing to prune, and the same tree every run. tailship@REV runs with its
checkout as working directory and first on PYTHONPATH, so its `agent` and `pipelines` packages
are imported, not the installed ones (the interpreter provides the dependencies only).

Go binaries are built into the cache under a name carrying a hash of their sources, so two
checkouts benchmarking at once never overwrite each other's binary. Each binary's flags are read
from its `-h` output: a flag it lacks (`-data`, `-kafka-linger` in the baseline of a1799ed) is
not passed, and the report lists what each agent was given.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GO_DIR = ROOT / "bench" / "go-baseline"
CACHE = Path(os.environ.get("TAILSHIP_BENCH_CACHE", Path.home() / ".cache" / "tailship-bench"))


@dataclass(frozen=True)
class Latency:
    """The latency setting given to both sides: the agent's batch linger (tailship
    `batch.linger_ms`, Go `-linger`) and the Kafka producer's linger (tailship
    `sink.kafka.linger_ms`, Go `-kafka-linger`)."""

    batch_ms: int = 10
    kafka_ms: int = 5


@dataclass
class Agent:
    name: str            # the label in the report: tailship, tailship@3181e97, go, go@a1799ed
    kind: str            # "tailship" or "go"
    path: Path           # tailship: the checkout it runs from; go: the binary
    source: str          # what it was built from, for the report
    python: str = ""     # tailship: the interpreter
    flags: frozenset[str] = frozenset()  # go: the flags the binary accepts
    dropped: set[str] = field(default_factory=set)  # go flags wanted but not accepted (reported)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.kind == "tailship":
            env["PYTHONPATH"] = os.pathsep.join([str(self.path), *filter(None, [env.get("PYTHONPATH")])])
        return env

    def command(self, include: str, to: str, *, once: bool, data: Path, workers: int = 0,
                latency: Latency | None = None) -> list[str]:
        """The command line reading `include` and writing to the sink URL `to` (`--once`: read
        what is there, ship it, exit), keeping its checkpoints under `data`."""
        if self.kind == "tailship":
            if latency is not None:  # `tail` has no flags for the lingers: a configuration file
                return [self.python, "-m", "agent", "run", "-c",
                        str(tailship_config(include, to, data, workers, latency)),
                        *(["--once"] if once else [])]
            return [self.python, "-m", "agent", "tail", include, "--to", to, "--data-dir", str(data),
                    "--workers", str(workers), "--no-progress", *(["--once"] if once else [])]
        cmd = [str(self.path), "-include", include, "-to", to, *(["-once"] if once else [])]
        wanted: list[tuple[str, str]] = [("data", str(data))]
        if latency is not None:
            wanted += [("linger", f"{latency.batch_ms}ms"), ("kafka-linger", f"{latency.kafka_ms}ms")]
        if "data" in self.flags:
            data.mkdir(parents=True, exist_ok=True)
        for flag, value in wanted:
            if flag in self.flags:
                cmd += [f"-{flag}", value]
            else:
                self.dropped.add(flag)
        return cmd


def tailship_config(include: str, to: str, data: Path, workers: int, latency: Latency) -> Path:
    """A TOML configuration equal to `tailship tail INCLUDE --to TO --workers N` plus the
    latency setting; written beside the data directory, its path."""
    from pipelines.sinks.registry import parse_sink_url

    sink = parse_sink_url(to)
    if sink["type"] != "kafka":
        raise SystemExit(f"bench: the latency setting is for Kafka, not {to}")
    k = sink["kafka"]
    text = (f"data_dir = {_toml(str(data))}\nworkers = {workers}\n\n"
            f"[source]\ninclude = [{_toml(include)}]\n\n"
            f"[batch]\nlinger_ms = {latency.batch_ms}\n\n"
            f"[metrics]\nlisten = \"\"\n\n"
            f"[sink]\ntype = \"kafka\"\n\n[sink.kafka]\n"
            f"bootstrap_servers = [{', '.join(_toml(h) for h in k['bootstrap_servers'])}]\n"
            f"topic = {_toml(k['topic'])}\nfallback_topic = {_toml(k['fallback_topic'])}\n"
            f"linger_ms = {latency.kafka_ms}\n")
    path = data.with_name(data.name + ".toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _toml(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def git(*args: str) -> str:
    r = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: git {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def resolve(rev: str) -> str:
    """The full commit id of `rev` (a clear error when the repository has no such commit)."""
    return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")


def checkout_state() -> str:
    """`<short commit>` of this checkout, with `, dirty` when it has uncommitted changes."""
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}{', dirty' if dirty else ''}"


def extract(sha: str, paths: list[str]) -> Path:
    """`paths` of commit `sha` unpacked under the cache (once); the directory."""
    dest = CACHE / f"src-{sha[:12]}-{hashlib.sha1(' '.join(paths).encode()).hexdigest()[:6]}"
    if dest.is_dir():
        return dest
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=CACHE))
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", sha, *paths], stdout=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(tmp)], stdin=archive.stdout, capture_output=True)
    if archive.wait() != 0 or untar.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"bench: git archive {sha[:12]} {' '.join(paths)} failed: {untar.stderr[-500:]!r}")
    try:
        tmp.rename(dest)
    except OSError:  # another run unpacked it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def build_go(src: Path) -> Path:
    """`go build` of the baseline in `src` into the cache; the binary."""
    digest = hashlib.sha1()
    for f in sorted(src.iterdir()):
        if f.is_file():
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    binary = CACHE / f"go-baseline-{digest.hexdigest()[:12]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOFLAGS": "-mod=mod"}
    tmp = binary.with_name(binary.name + f".{os.getpid()}")
    r = subprocess.run(["go", "build", "-o", str(tmp), "."], cwd=src, capture_output=True, text=True,
                       env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"bench: building the Go baseline in {src} failed:\n{r.stderr[-3000:]}")
    tmp.replace(binary)
    return binary


def go_flags(binary: Path) -> frozenset[str]:
    """The flags a Go program accepts, from the usage its flag package prints for `-h`."""
    r = subprocess.run([str(binary), "-h"], capture_output=True, text=True, timeout=30)
    return frozenset(re.findall(r"^\s+-([\w.-]+)", r.stderr + r.stdout, re.M))


def python_version(python: str) -> str:
    """`3.12.8 (/path/python)`; a clear error when the interpreter lacks tailship's dependencies."""
    probe = "import sys, orjson, aiokafka, zstandard, prometheus_client; print(sys.version.split()[0])"
    r = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"bench: --python {python} cannot run tailship (make a venv with "
                         "`PYTHON=python3.13 TAILSHIP_VENV=.venv-3.13 . scripts/venv.sh bench`): "
                         f"{r.stderr[-500:]}")
    return f"{r.stdout.strip()} ({python})"


def go_version() -> str:
    return subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()


def make_agents(python: str, tailship_rev: str | None, go_old_rev: str | None) -> dict[str, Agent]:
    """Every agent of this run, built; keyed by name."""
    agents = {"tailship": Agent("tailship", "tailship", ROOT, f"this checkout ({checkout_state()})",
                                python=python)}
    if tailship_rev:
        sha = resolve(tailship_rev)
        name = f"tailship@{tailship_rev if len(tailship_rev) <= 12 else sha[:7]}"
        agents[name] = Agent(name, "tailship", extract(sha, ["agent", "pipelines"]), f"commit {sha[:12]}",
                             python=python)
    go = build_go(GO_DIR)
    agents["go"] = Agent("go", "go", go, f"bench/go-baseline of this checkout ({checkout_state()})",
                         flags=go_flags(go))
    if go_old_rev:
        sha = resolve(go_old_rev)
        binary = build_go(extract(sha, ["bench/go-baseline"]) / "bench" / "go-baseline")
        name = f"go@{go_old_rev if len(go_old_rev) <= 12 else sha[:7]}"
        agents[name] = Agent(name, "go", binary, f"bench/go-baseline at commit {sha[:12]}",
                             flags=go_flags(binary))
    return agents


def default_python() -> str:
    return sys.executable
