"""The supervisor's /readyz aggregates its workers' readiness (each worker's `Agent.readiness`,
reported over its pipe every second): ready only when every running worker is, and a 503 names
every worker that is not, with its reasons."""

from __future__ import annotations

from agent.settings import Settings
from agent.supervisor.supervisor import Supervisor


def test_readiness_names_every_worker_that_is_not_ready(tmp_path) -> None:
    sup = Supervisor(Settings(data_dir=str(tmp_path)), 3)
    for w in sup.workers:
        w.ready = (True, "ready")
    assert sup.readiness() == (True, "ready")
    sup.workers[0].ready = (False, "sink kafka failing: 10 records pending, nothing acknowledged for 31.0s")
    sup.workers[2].ready = (False, "data directory /d/worker-2 cannot be written: No space left on device")
    assert sup.readiness() == (False, "worker 0: sink kafka failing: 10 records pending, nothing "
                               "acknowledged for 31.0s; worker 2: data directory /d/worker-2 cannot be "
                               "written: No space left on device")
    sup.workers[0].done = True  # a worker that finished (--once) no longer counts
    assert sup.readiness()[1].startswith("worker 2: ")
