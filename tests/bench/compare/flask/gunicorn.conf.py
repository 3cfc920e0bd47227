"""gunicorn settings of tests/bench/compare's Flask peer. run.sh passes the address and the worker
count on the command line; the rest is here."""

worker_class = "gthread"
threads = 4
keepalive = 75
graceful_timeout = 3
accesslog = None
loglevel = "warning"


def child_exit(server, worker):
    """Multiprocess mode: a dead worker's gauges go (prometheus_client's documented hook)."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
