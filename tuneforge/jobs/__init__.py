"""Training jobs: a durable queue in the store, worker threads that claim jobs, and a runner that
drives `python -m tuneforge train` as a subprocess (a crash never takes the server down, and
SIGTERM stops a job at a checkpoint it can resume from)."""
