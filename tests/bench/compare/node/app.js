// The Node.js peer of tests/bench/compare: express + prom-client serving the chat route and
// /metrics. run.sh copies this file and package*.json into build/compare/node, runs `npm ci`
// there and starts `node app.js` with PORT, WORKERS, METRICS_PORT and COMPARE_SERIES set.
//
// WORKERS=1: one process serves both POST /v1/chat and GET /metrics on PORT.
// WORKERS>1: node:cluster forks that many workers sharing PORT; /metrics is served by the
// primary on METRICS_PORT, summing the workers' registries (prom-client's AggregatorRegistry,
// the way its documentation runs a cluster).
'use strict';

const cluster = require('node:cluster');
const crypto = require('node:crypto');
const express = require('express');
const client = require('prom-client');

const PORT = Number(process.env.PORT);
const WORKERS = Number(process.env.WORKERS || 1);
const METRICS_PORT = Number(process.env.METRICS_PORT || 0);
const SERIES = Number(process.env.COMPARE_SERIES || 0);
const HOST = '127.0.0.1';

const MODES = ['auto', 'pentest', 'soc', 'code', 'ciso', 'sigma', 'yara', 'ioc'];
const KNOWN = new Set(MODES);
const MODE_ERROR = `field 'mode' must be one of: ${MODES.join(', ')}`;

// Created in the primary and in every worker, as prom-client's cluster example does: in a worker
// the constructor installs the listener that answers the primary's requests for metrics.
const aggregator = WORKERS > 1 ? new client.AggregatorRegistry() : null;

function serveMetrics(app, registry, render) {
  app.get('/metrics', async (req, res) => {
    try {
      res.set('Content-Type', registry.contentType);
      res.end(await render());
    } catch (err) {
      res.status(500).end(String(err));
    }
  });
}

function startPrimary() {
  let stopping = false;
  for (let i = 0; i < WORKERS; i++) {
    cluster.fork();
  }
  cluster.on('exit', (worker, code, signal) => {
    if (!stopping) {
      console.error(`node: worker ${worker.process.pid} exited (${signal || code})`);
      process.exit(1);
    }
  });
  for (const sig of ['SIGTERM', 'SIGINT']) {
    process.on(sig, () => {
      stopping = true;
      for (const worker of Object.values(cluster.workers)) {
        worker.kill('SIGTERM');
      }
      process.exit(0);
    });
  }
  const app = express();
  serveMetrics(app, aggregator, () => aggregator.clusterMetrics());
  app.listen(METRICS_PORT, HOST, () => {
    console.error(`node: primary ${process.pid}, /metrics on ${HOST}:${METRICS_PORT}`);
  });
}

function startWorker() {
  client.collectDefaultMetrics();
  const byEndpoint = new client.Counter({
    name: 'hancock_requests_by_endpoint',
    help: 'Requests by route pattern.',
    labelNames: ['endpoint'],
  });
  const byMode = new client.Counter({
    name: 'hancock_requests_by_mode',
    help: 'Requests by specialist mode.',
    labelNames: ['mode'],
  });
  const duration = new client.Histogram({
    name: 'hancock_request_duration_seconds',
    help: 'Time from a complete request to its response.',
    labelNames: ['method', 'endpoint', 'status_code'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  });
  if (SERIES > 0) {
    const series = new client.Counter({
      name: 'bench_series_total',
      help: 'Benchmark fixture: one series per id.',
      labelNames: ['id'],
    });
    for (let id = 1; id <= SERIES; id++) {
      series.inc({ id: String(id) });
    }
  }

  const app = express();

  // Counting and timing, as a middleware: every request, once its response is sent.
  app.use((req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const endpoint = req.route ? req.route.path : 'unmatched';
      byEndpoint.inc({ endpoint });
      if (res.locals.mode) {
        byMode.inc({ mode: res.locals.mode });
      }
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      duration.observe({ method: req.method, endpoint, status_code: String(res.statusCode) }, seconds);
    });
    next();
  });
  app.use(express.json());

  app.post('/v1/chat', (req, res) => {
    const requestId = crypto.randomUUID();
    res.set('X-Request-ID', requestId);
    const body = req.body;
    if (body === null || typeof body !== 'object' || typeof body.message !== 'string' || body.message === '') {
      return res.status(400).json({ error: "field 'message' must be a non-empty string", request_id: requestId });
    }
    let mode = body.mode;
    if (mode === undefined) {
      mode = 'auto';
    } else if (!KNOWN.has(mode)) {
      return res.status(400).json({ error: MODE_ERROR, request_id: requestId });
    } else {
      res.locals.mode = mode;
    }
    return res.json({ response: 'ok', mode, request_id: requestId });
  });

  if (WORKERS <= 1) {
    serveMetrics(app, client.register, () => client.register.metrics());
  }

  // A body that is not JSON: 400 in the route's shape, not express's HTML page.
  app.use((err, req, res, next) => {
    if (res.headersSent) {
      return next(err);
    }
    const requestId = crypto.randomUUID();
    res.set('X-Request-ID', requestId);
    return res.status(err.status || 500).json({ error: err.type || 'internal error', request_id: requestId });
  });

  app.listen(PORT, HOST, () => {
    console.error(`node: ${cluster.isWorker ? 'worker' : 'process'} ${process.pid} on ${HOST}:${PORT}`);
  });
}

if (!Number.isInteger(PORT) || PORT <= 0) {
  console.error('node: PORT must be set');
  process.exit(2);
}
if (WORKERS > 1 && cluster.isPrimary) {
  startPrimary();
} else {
  startWorker();
}
