"""Worker processes: one CPython process uses one core, so `workers = N` runs N shared-nothing
agents under a supervisor.

Each worker is a whole agent (its own tailers, pipeline, sink clients and checkpoints under
`<data_dir>/worker-<i>`) that reads only the files `agent.filesource.discovery.owner` gives it: a stable hash
of a file's device and inode, so a file stays with its worker through renames and a restarted
worker finds its own checkpoints. The memory limit and the disk buffer are divided among the
workers.

The modules, by concern:

- `cpus`: how many workers `workers = 0` means (CPU affinity and cgroup CPU quota).
- `worker`: a worker's settings and its process entry point, `worker_main`.
- `exposition`: the workers' Prometheus expositions, the only way their numbers reach the
  supervisor: merged into one `/metrics` page, counters of dead workers carried, and read back
  into the run summary.
- `supervisor`: `Supervisor` (starts, watches, restarts and stops the workers) and
  `run_supervisor`, what `tailship run`/`tail` call with more than one worker.

Nothing is imported here: `agent.cli` imports `cpus` for every run, and the rest only when it
starts workers.
"""
