"""Real servers for the integration tests, started by scripts/services (the same code CI uses).

Locally a test module skips when its server cannot start; under CI=true it fails instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ROOT / "scripts" / "services"


def services(*args: str, env: Mapping[str, str] | None = None, timeout: float = 600) -> str:
    """Run scripts/services; its stdout. A failure skips the test locally and fails it in CI."""
    r = subprocess.run([sys.executable, str(SERVICES), *args], capture_output=True, text=True,
                       timeout=timeout, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        unavailable(f"scripts/services {' '.join(args)} failed: {r.stderr[-3000:]}")
    return r.stdout


def unavailable(msg: str) -> NoReturn:
    """Something a test needs from the machine (a server, a mount) is not there: the test skips
    locally and fails under CI=true, where it must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(msg)
    pytest.skip(msg)


def start(name: str) -> dict[str, str]:
    """Start one service (a no-op if it serves already); the TAILSHIP_* variables `env` prints."""
    services("up", name)
    return dict(re.findall(r"export (\w+)=(\S+)", services("env", name)))


def kube_call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    """One JSON request to the kube-api test server (create, delete, read objects or its request
    journal); its JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def kill(name: str) -> None:
    """kill -9 a running service (no grace, its data as it was): `start(name)` brings it back on
    the same ports."""
    services("kill", name)


def scram_password(user: str, password: str, broker: str = "kafka-strict") -> None:
    """Create `user` on the broker, or change its SCRAM password (scripts/services scram-user)."""
    r = subprocess.run([sys.executable, str(SERVICES), "scram-user", broker, user],
                       input=password + "\n", capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert password not in r.stdout + r.stderr
