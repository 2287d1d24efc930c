"""Imported by the worker processes' fork server only (see `agent.supervisor.worker.preload_modules`):
it ignores SIGTERM and SIGINT, so that a signal sent to the whole process group (systemd's
control-group kill, `kill -TERM -PGID`) does not kill it before the workers have drained; the
supervisor stops it once the workers are gone. Workers restore the default handlers first thing.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
