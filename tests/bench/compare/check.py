#!/usr/bin/env python3
"""tests/bench/compare/check.py: proves that a peer serves the benchmark's contract before
run.sh measures it, so that a fast wrong answer is never mistaken for a fast server.

  check.py --url http://127.0.0.1:PORT --metrics-url http://127.0.0.1:PORT/metrics [--series N]

POST /v1/chat must answer 200 application/json {"response": str, "mode": "soc", "request_id": str}
with an X-Request-ID header equal to request_id (and mode "auto" when the body has none); 400 with
a JSON body for invalid JSON, a missing, empty or non-string message, and an unknown mode.
GET /metrics must answer 200 text/plain, and after REQUESTS more valid requests its counters by
endpoint ("/v1/chat") and by mode ("soc") and its duration histogram's count must each have grown
by exactly REQUESTS. With --series N the scrape must hold exactly N bench_series_total samples.
Prints one line on success; exits 1 naming the first broken rule otherwise. Standard library only.
"""

import argparse
import http.client
import json
import re
import sys
import urllib.parse

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class CheckFailed(Exception):
    pass


def request(url, method="GET", body=None, headers=None):
    """One request on a fresh connection: (status, headers by lower-case name, body bytes)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, parts.path or "/", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def chat(base, body):
    return request(base + "/v1/chat", "POST", body, {"Content-Type": "application/json"})


def expect_valid(base, body, mode):
    status, headers, data = chat(base, body)
    if status != 200:
        raise CheckFailed(f"POST /v1/chat {body!r} answered {status}, not 200: {data[:200]!r}")
    if not headers.get("content-type", "").startswith("application/json"):
        raise CheckFailed(f"POST /v1/chat: Content-Type {headers.get('content-type')!r}, not application/json")
    try:
        answer = json.loads(data)
    except ValueError as err:
        raise CheckFailed(f"POST /v1/chat: the body is not JSON ({err}): {data[:200]!r}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("response"), str):
        raise CheckFailed(f"POST /v1/chat: no string 'response' in {answer!r}")
    if answer.get("mode") != mode:
        raise CheckFailed(f"POST /v1/chat {body!r}: mode {answer.get('mode')!r}, expected {mode!r}")
    request_id = answer.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise CheckFailed(f"POST /v1/chat: no request_id in {answer!r}")
    if headers.get("x-request-id") != request_id:
        raise CheckFailed(f"POST /v1/chat: X-Request-ID {headers.get('x-request-id')!r} is not the body's {request_id!r}")


def expect_invalid(base, body):
    status, _, data = chat(base, body)
    if status != 400:
        raise CheckFailed(f"POST /v1/chat {body!r} answered {status}, not 400: {data[:200]!r}")
    try:
        json.loads(data)
    except ValueError:
        raise CheckFailed(f"POST /v1/chat {body!r}: the 400 body is not JSON: {data[:200]!r}") from None


def scrape(url):
    """GET /metrics parsed: a list of (name, labels dict, value)."""
    status, headers, data = request(url)
    if status != 200:
        raise CheckFailed(f"GET {url} answered {status}: {data[:200]!r}")
    if not headers.get("content-type", "").startswith("text/plain"):
        raise CheckFailed(f"GET {url}: Content-Type {headers.get('content-type')!r}, not text/plain")
    samples = []
    for line in data.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise CheckFailed(f"GET {url}: not a sample line: {line[:200]!r}")
        try:
            value = float(m.group(4))
        except ValueError:
            raise CheckFailed(f"GET {url}: bad value in {line[:200]!r}") from None
        samples.append((m.group(1), dict(LABEL.findall(m.group(3) or "")), value))
    return samples


def total(samples, names, **labels):
    return sum(v for n, ls, v in samples if n in names and all(ls.get(k) == w for k, w in labels.items()))


def counters(samples):
    return {
        "by endpoint": total(samples, ("hancock_requests_by_endpoint", "hancock_requests_by_endpoint_total"),
                             endpoint="/v1/chat"),
        "by mode": total(samples, ("hancock_requests_by_mode", "hancock_requests_by_mode_total"), mode="soc"),
        "duration count": total(samples, ("hancock_request_duration_seconds_count",),
                                endpoint="/v1/chat", status_code="200"),
    }


def run(args):
    base = args.url.rstrip("/")
    expect_valid(base, b'{"message":"hello","mode":"soc"}', "soc")
    expect_valid(base, b'{"message":"hello"}', "auto")
    for body in (b'{"message":""}', b'{"mode":"soc"}', b'{"message":5}', b'{"message":"hello","mode":"bogus"}',
                 b'not json', b'[1,2]'):
        expect_invalid(base, body)

    before = counters(scrape(args.metrics_url))
    for _ in range(args.requests):
        expect_valid(base, b'{"message":"hello","mode":"soc"}', "soc")
    samples = scrape(args.metrics_url)
    after = counters(samples)
    for name in before:
        grown = after[name] - before[name]
        if grown != args.requests:
            raise CheckFailed(f"GET /metrics: the {name} counter grew by {grown:g} over {args.requests} "
                              f"valid requests (from {before[name]:g} to {after[name]:g})")
    series = sum(1 for n, _, _ in samples if n == "bench_series_total")
    if args.series is not None and series != args.series:
        raise CheckFailed(f"GET /metrics: {series} bench_series_total samples, expected {args.series}")
    return f"ok: /v1/chat answers and validates; counters by endpoint, mode and duration grew by " \
           f"{args.requests}; {len(samples)} samples ({series} bench_series_total)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the peer's base URL, http://127.0.0.1:PORT")
    parser.add_argument("--metrics-url", required=True, help="its /metrics URL")
    parser.add_argument("--series", type=int, help="bench_series_total samples /metrics must hold")
    parser.add_argument("--requests", type=int, default=5, help="valid requests between the two scrapes")
    args = parser.parse_args()
    try:
        print(run(args))
    except CheckFailed as err:
        print(f"check: {err}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as err:
        print(f"check: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
