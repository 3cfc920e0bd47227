"""The Flask peer of tests/bench/compare: Flask + prometheus_client under gunicorn, the original
service's stack, serving the chat route and /metrics. run.sh starts
`gunicorn -c gunicorn.conf.py app:app` with COMPARE_SERIES set and, for more than one worker,
PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode, which gunicorn workers need for
/metrics to count every worker's requests).
"""

import os
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

MODES = ("auto", "pentest", "soc", "code", "ciso", "sigma", "yara", "ioc")
MODE_ERROR = "field 'mode' must be one of: " + ", ".join(MODES)
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

BY_ENDPOINT = Counter("hancock_requests_by_endpoint", "Requests by route pattern.", ["endpoint"])
BY_MODE = Counter("hancock_requests_by_mode", "Requests by specialist mode.", ["mode"])
DURATION = Histogram(
    "hancock_request_duration_seconds",
    "Time from a complete request to its response.",
    ["method", "endpoint", "status_code"],
)

SERIES = int(os.environ.get("COMPARE_SERIES", "0"))
if SERIES > 0:
    _series = Counter("bench_series", "Benchmark fixture: one series per id.", ["id"])
    for _id in range(1, SERIES + 1):
        _series.labels(id=str(_id)).inc()

app = Flask(__name__)


@app.before_request
def start_timer():
    g.start = time.perf_counter()


@app.after_request
def record(response):
    endpoint = request.url_rule.rule if request.url_rule else "unmatched"
    BY_ENDPOINT.labels(endpoint=endpoint).inc()
    mode = g.get("mode")
    if mode:
        BY_MODE.labels(mode=mode).inc()
    DURATION.labels(
        method=request.method, endpoint=endpoint, status_code=str(response.status_code)
    ).observe(time.perf_counter() - g.start)
    return response


def error(status, message, request_id):
    response = jsonify(error=message, request_id=request_id)
    response.status_code = status
    response.headers["X-Request-ID"] = request_id
    return response


@app.post("/v1/chat")
def chat():
    request_id = str(uuid.uuid4())
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("message"), str) or not body["message"]:
        return error(400, "field 'message' must be a non-empty string", request_id)
    mode = body.get("mode", "auto")
    if not isinstance(mode, str) or mode not in MODES:
        return error(400, MODE_ERROR, request_id)
    if "mode" in body:
        g.mode = mode
    response = jsonify(response="ok", mode=mode, request_id=request_id)
    response.headers["X-Request-ID"] = request_id
    return response


@app.get("/metrics")
def metrics():
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
    else:
        data = generate_latest()
    return Response(data, mimetype=CONTENT_TYPE_LATEST)
