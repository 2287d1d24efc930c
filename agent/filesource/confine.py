"""Which files the agent may read: only regular files whose real path lies under an allowed
root, never under /proc, /sys or /dev.

A DaemonSet runs as root beside every tenant's pods, and a tenant controls what its log
directory holds: a symlink there to a root-only file elsewhere on the node would ship that file
under the tenant's namespace, and one to `/proc/self/environ` (size 0, so every read looks like
a truncation) would ship the agent's own environment, credentials included, again and again.
So a path found by a scan is judged by where it really leads (`os.path.realpath`, every link
resolved), against `source.allowed_roots`.

Default roots (`default_roots`): the fixed directory of each include pattern (the part before
its first wildcard), and, where that directory is a kubelet `containers` directory, the two
places its links lead: its sibling `pods` directory and `/var/lib/docker/containers`.
"""

from __future__ import annotations

import os
import re
import stat

SYSTEM_ROOTS = ("/proc", "/sys", "/dev")  # never read, whatever the roots say
DOCKER_CONTAINERS = "/var/lib/docker/containers"

# reasons a path is refused (the `reason` label of tailship_files_refused_total)
OUTSIDE_ROOTS = "outside_roots"
SYSTEM_PATH = "system_path"
NOT_REGULAR = "not_regular"
REASONS = (OUTSIDE_ROOTS, SYSTEM_PATH, NOT_REGULAR)


def base_dir(pattern: str) -> str:
    """The directory of a glob pattern's fixed part: `/var/log/containers` for
    `/var/log/containers/*.log`, `/logs` for `/logs/**/*.log`."""
    return os.path.dirname(re.split(r"[*?\[]", pattern, maxsplit=1)[0]) or "."


def default_roots(include: list[str]) -> list[str]:
    """The roots used when `source.allowed_roots` is empty (see the module's docstring)."""
    roots: list[str] = []
    for pattern in include:
        base = os.path.abspath(base_dir(pattern))
        roots.append(base)
        if os.path.basename(base) == "containers":
            roots += [os.path.join(os.path.dirname(base), "pods"), DOCKER_CONTAINERS]
    return list(dict.fromkeys(roots))


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


class Confinement:
    """Judges real paths against the allowed roots (resolved once: a root that is itself a
    symlink, `/var/log -> /data/log` say, is allowed where it leads)."""

    def __init__(self, roots: list[str]) -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self._real = list(dict.fromkeys([*self.roots, *(os.path.realpath(r) for r in self.roots)]))

    def refused(self, real: str, st: os.stat_result) -> str | None:
        """Why the file at real path `real` (with stat `st`, links followed) may not be read,
        or None if it may."""
        if any(_under(real, r) for r in SYSTEM_ROOTS):
            return SYSTEM_PATH
        if not stat.S_ISREG(st.st_mode):
            return NOT_REGULAR
        if not any(_under(real, r) for r in self._real):
            return OUTSIDE_ROOTS
        return None

    def inside(self, path: str) -> bool:
        """Whether the directory at `path` really lies under a root (not a system directory):
        a `**` walk follows a directory symlink only then."""
        real = os.path.realpath(path)
        return (not any(_under(real, r) for r in SYSTEM_ROOTS)
                and any(_under(real, r) for r in self._real))
