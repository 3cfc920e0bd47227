#!/usr/bin/env bash
# Checks the deployment files in deploy/ without a container engine or a cluster.
#   tests/deploy_test.sh compose_valid|k8s_valid|prometheus_config|alertmanager_config|dockerfile_lint
# Each subcommand is one ctest entry (tests/CMakeLists.txt). Exit 0 = pass; a missing tool that
# the check needs fails, except where noted (docker compose is optional; python3-yaml is required).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
deploy=$root/deploy
cd "$root"

fail() { echo "FAIL: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 not found (install: $2; deploy/install-deps.sh --test)"; }

# compose_config <tool...>: the file parses with that Compose implementation, and refuses to
# without a Grafana admin password.
compose_config() {
  local out
  GRAFANA_ADMIN_PASSWORD=compose-check "$@" -f "$deploy/docker-compose.yml" config -q \
    || fail "$*: deploy/docker-compose.yml is not valid"
  if out=$(env -u GRAFANA_ADMIN_PASSWORD "$@" -f "$deploy/docker-compose.yml" config -q 2>&1); then
    fail "$*: the file is valid without GRAFANA_ADMIN_PASSWORD (Grafana would start as admin/admin)"
  fi
  grep -q GRAFANA_ADMIN_PASSWORD <<<"$out" || fail "$*: unexpected error without GRAFANA_ADMIN_PASSWORD: $out"
  echo "compose: $* accepts the file"
}

compose_valid() {
  # The file must suit both Compose v2 and Debian 12's docker-compose 1.29: each one present is
  # run; with neither, only the structure below is checked.
  local tools=0
  if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    compose_config docker compose; tools=$((tools + 1))
  fi
  if command -v docker-compose >/dev/null; then
    compose_config docker-compose; tools=$((tools + 1))
  fi
  [ "$tools" -gt 0 ] || echo "note: neither docker compose nor docker-compose installed: checking structure only"
  need python3 python3
  python3 - "$deploy" "$root" <<'PY'
import os, re, sys, yaml
deploy, root = sys.argv[1], sys.argv[2]
doc = yaml.safe_load(open(os.path.join(deploy, "docker-compose.yml")))
svcs = doc.get("services") or {}
want = {"hancock": "5000", "ollama": "11434", "prometheus": "9090", "grafana": "3000", "alertmanager": "9093"}
errs = []

def defaults(text):
    # A value as Compose interpolates it with nothing set: ${VAR:-default} -> default.
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", str(text))

# docker-compose 1.29 refuses a top-level name (and v2 calls version obsolete).
for key in doc:
    if key not in ("services", "volumes", "networks", "configs", "secrets") and not key.startswith("x-"):
        errs.append(f"top-level '{key}': not valid for both Compose v2 and docker-compose 1.29")
for name, port in want.items():
    s = svcs.get(name)
    if s is None:
        errs.append(f"service {name} missing"); continue
    ports = [str(p) for p in s.get("ports", [])]
    if not any(p.split(":")[-1].split("/")[0] == port for p in ports):
        errs.append(f"service {name}: container port {port} not published (ports={ports})")
for name, s in svcs.items():
    image = defaults(s.get("image", ""))
    tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
    if not tag or tag == "latest":
        errs.append(f"service {name}: image {s.get('image')!r} is not pinned to a version")
    for p in s.get("ports", []):
        p = str(p)
        if not p.startswith("${PUBLISH_ADDRESS:-127.0.0.1}:"):
            errs.append(f"service {name}: port {p} is not published on ${{PUBLISH_ADDRESS:-127.0.0.1}}")
h = svcs.get("hancock", {})
if h.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
    errs.append("hancock: build.dockerfile should be deploy/Dockerfile")
vols = [str(v) for v in h.get("volumes", [])]
if not any(v.split(":")[1] == "/etc/hancock/scripts" for v in vols if v.count(":") >= 1):
    errs.append("hancock: scripts/ not mounted at /etc/hancock/scripts (hot reload)")
env = h.get("environment", {})
env = env if isinstance(env, dict) else {}
# Every URL hancock probes or calls is the stack's own service, never its own localhost.
for key, url in {"OLLAMA_BASE_URL": "http://ollama:11434", "PROMETHEUS_URL": "http://prometheus:9090",
                 "ALERTMANAGER_URL": "http://alertmanager:9093"}.items():
    if env.get(key) != url:
        errs.append(f"hancock: {key} should be {url} (is {env.get(key)!r})")
for key, value in env.items():
    if "localhost" in str(value) or "127.0.0.1" in str(value):
        errs.append(f"hancock: {key}={value} points at the container itself")
pull = svcs.get("ollama-pull")
if pull is None:
    errs.append("service ollama-pull missing (a one-shot pull of the models)")
else:
    penv = pull.get("environment", {})
    command = " ".join(pull.get("command", [])) if isinstance(pull.get("command"), list) else str(pull.get("command"))
    if str(pull.get("restart")) != "no":
        errs.append("ollama-pull: restart should be \"no\" (it runs once)")
    if penv.get("OLLAMA_HOST") != "http://ollama:11434":
        errs.append("ollama-pull: OLLAMA_HOST should be http://ollama:11434")
    for key in ("OLLAMA_MODEL", "OLLAMA_CODER_MODEL"):
        if f'ollama pull "$${key}"' not in command:
            errs.append(f"ollama-pull: does not pull ${key}")
        if penv.get(key) != env.get(key):
            errs.append(f"ollama-pull: {key} differs from hancock's ({penv.get(key)!r} vs {env.get(key)!r})")
g = svcs.get("grafana", {})
genv = g.get("environment", {})
if not str(genv.get("GF_SECURITY_ADMIN_PASSWORD", "")).startswith("${GRAFANA_ADMIN_PASSWORD:?"):
    errs.append("grafana: GF_SECURITY_ADMIN_PASSWORD must come from GRAFANA_ADMIN_PASSWORD, with no default")
# Every relative bind mount must point into the repository; the two generated monitoring files
# may not exist yet (they come from `hancock rules` / `hancock dashboard`).
generated = {"monitoring/alerting_rules.yaml", "monitoring/grafana_dashboard.json"}
for name, s in svcs.items():
    for v in s.get("volumes", []):
        src = str(v).split(":")[0]
        if not src.startswith("."):
            continue
        path = os.path.normpath(os.path.join(deploy, src))
        rel = os.path.relpath(path, root)
        if not os.path.exists(path):
            if rel in generated:
                print(f"note: {rel} not generated yet (hancock rules/dashboard); mount accepted")
            else:
                errs.append(f"{name}: bind mount source {rel} does not exist")
for f in ["grafana/provisioning/datasources/prometheus.yml", "grafana/provisioning/dashboards/hancock.yml"]:
    d = yaml.safe_load(open(os.path.join(deploy, f)))
    if d.get("apiVersion") != 1:
        errs.append(f"{f}: apiVersion 1 expected")
ds = yaml.safe_load(open(os.path.join(deploy, "grafana/provisioning/datasources/prometheus.yml")))
if ds["datasources"][0]["url"] != "http://prometheus:9090":
    errs.append("grafana datasource url should be http://prometheus:9090")
if errs:
    print("\n".join("FAIL: " + e for e in errs)); sys.exit(1)
print(f"compose: {len(svcs)} services OK: {', '.join(sorted(svcs))}")
PY
}

k8s_valid() {
  need python3 python3
  python3 - "$deploy/k8s" "$root" <<'PY'
import glob, os, sys, yaml
k8s, root = sys.argv[1], sys.argv[2]
docs = []
for f in sorted(glob.glob(os.path.join(k8s, "*.yaml"))):
    for d in yaml.safe_load_all(open(f)):
        if d:
            docs.append((os.path.basename(f), d))
errs = []
kinds = {}
for f, d in docs:
    if "kind" not in d or "apiVersion" not in d:
        errs.append(f"{f}: document without kind/apiVersion")
    kinds.setdefault(d.get("kind"), []).append(d)
for k in ["Deployment", "Service", "Kustomization", "PodDisruptionBudget", "HorizontalPodAutoscaler",
          "ServiceMonitor"]:
    if k not in kinds:
        errs.append(f"no {k} manifest")
if errs:
    print("\n".join("FAIL: " + e for e in errs)); sys.exit(1)

dep = kinds["Deployment"][0]
pod = dep["spec"]["template"]["spec"]
if dep["spec"]["selector"]["matchLabels"].items() - dep["spec"]["template"]["metadata"]["labels"].items():
    errs.append("Deployment: selector does not match the pod labels")
c = pod["containers"][0]
if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health/live":
    errs.append("Deployment: livenessProbe must GET /health/live")
if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/health/ready":
    errs.append("Deployment: readinessProbe must GET /health/ready")
# A startupProbe on /health/ready would restart pods whose backend is down at start.
if c.get("startupProbe", {}).get("httpGet", {}).get("path") != "/health/live":
    errs.append("Deployment: startupProbe must GET /health/live (docs/health.md, Kubernetes)")
for e in c.get("env", []):
    if "localhost" in str(e.get("value", "")) or "127.0.0.1" in str(e.get("value", "")):
        errs.append(f"Deployment: {e['name']}={e['value']} points at the pod itself")
if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
    errs.append("Deployment: resources requests and limits expected")
sc = pod.get("securityContext", {})
if not sc.get("runAsNonRoot") or sc.get("runAsUser", 0) == 0:
    errs.append("Deployment: pod securityContext must run as non-root")
image = c.get("image", "")
if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
    errs.append(f"Deployment: image {image!r} is not pinned to a version")
if not any(p.get("containerPort") == 5000 for p in c.get("ports", [])):
    errs.append("Deployment: containerPort 5000 expected")
mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
vol = next((v for v in pod.get("volumes", []) if mounts.get(v["name"]) == "/etc/hancock/scripts"), None)
if vol is None:
    errs.append("Deployment: no volume mounted at /etc/hancock/scripts")
    cms = []
else:
    if "configMap" in vol:
        cms = [vol["configMap"]["name"]]
    else:
        cms = [s["configMap"]["name"] for s in vol.get("projected", {}).get("sources", []) if "configMap" in s]
    if not cms:
        errs.append("Deployment: scripts volume is not backed by a ConfigMap")

svc = kinds["Service"][0]
ann = svc["metadata"].get("annotations", {})
for key, val in {"prometheus.io/scrape": "true", "prometheus.io/port": "5000", "prometheus.io/path": "/metrics"}.items():
    if str(ann.get(key)) != val:
        errs.append(f"Service: annotation {key} should be {val!r} (is {ann.get(key)!r})")
if svc["spec"].get("selector", {}).items() - dep["spec"]["template"]["metadata"]["labels"].items():
    errs.append("Service: selector does not match the pod labels")

pod_labels = dep["spec"]["template"]["metadata"]["labels"]
def selects_pods(selector):
    # A label selector (matchLabels only: these manifests use no matchExpressions) that selects
    # the Deployment's pods: non-empty, and every label it asks for is on them.
    labels = (selector or {}).get("matchLabels") or {}
    return bool(labels) and not (labels.items() - pod_labels.items()) and not (selector or {}).get("matchExpressions")

def cpu(quantity):
    q = str(quantity)
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)

replicas = dep["spec"].get("replicas", 1)
pdb = kinds["PodDisruptionBudget"][0]
if pdb["apiVersion"] != "policy/v1":
    errs.append(f"PodDisruptionBudget: apiVersion policy/v1 expected (is {pdb['apiVersion']})")
if not selects_pods(pdb["spec"].get("selector")):
    errs.append("PodDisruptionBudget: selector does not select the Deployment's pods")
min_available = pdb["spec"].get("minAvailable")
if not isinstance(min_available, int) or "maxUnavailable" in pdb["spec"]:
    errs.append("PodDisruptionBudget: an integer minAvailable (and no maxUnavailable) expected")
elif not 0 < min_available < replicas:
    errs.append(f"PodDisruptionBudget: minAvailable {min_available} must be below the Deployment's "
                f"replicas ({replicas}), or no pod could ever be evicted (node drains block)")

hpa = kinds["HorizontalPodAutoscaler"][0]
if hpa["apiVersion"] != "autoscaling/v2":
    errs.append(f"HorizontalPodAutoscaler: apiVersion autoscaling/v2 expected (is {hpa['apiVersion']})")
ref = hpa["spec"].get("scaleTargetRef", {})
if (ref.get("apiVersion"), ref.get("kind"), ref.get("name")) != (dep["apiVersion"], "Deployment", dep["metadata"]["name"]):
    errs.append(f"HorizontalPodAutoscaler: scaleTargetRef {ref} is not the Deployment")
lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
if not lo <= replicas <= hi:
    errs.append(f"HorizontalPodAutoscaler: the Deployment's replicas ({replicas}) outside [{lo}, {hi}]")
if isinstance(min_available, int) and lo <= min_available:
    errs.append(f"HorizontalPodAutoscaler: minReplicas {lo} must exceed the PDB's minAvailable {min_available}")
resources = c.get("resources", {})
cpu_metrics = [m["resource"]["target"] for m in hpa["spec"].get("metrics", [])
               if m.get("type") == "Resource" and m["resource"].get("name") == "cpu"]
if not cpu_metrics:
    errs.append("HorizontalPodAutoscaler: no cpu Resource metric")
for target in cpu_metrics:
    if target.get("type") == "AverageValue" and cpu(target["averageValue"]) > cpu(resources.get("limits", {}).get("cpu", 0)):
        errs.append(f"HorizontalPodAutoscaler: cpu target {target['averageValue']} above the container's cpu limit")
    if target.get("type") == "Utilization" and "cpu" not in resources.get("requests", {}):
        errs.append("HorizontalPodAutoscaler: a cpu Utilization target needs a cpu request")
for m in hpa["spec"].get("metrics", []):
    if m.get("type") == "Pods" and m["pods"]["target"].get("type") != "AverageValue":
        errs.append("HorizontalPodAutoscaler: a Pods metric takes an AverageValue target")

sm = kinds["ServiceMonitor"][0]
if sm["apiVersion"] != "monitoring.coreos.com/v1":
    errs.append(f"ServiceMonitor: apiVersion monitoring.coreos.com/v1 expected (is {sm['apiVersion']})")
sm_labels = sm["spec"].get("selector", {}).get("matchLabels") or {}
if not sm_labels or sm_labels.items() - svc["metadata"].get("labels", {}).items():
    errs.append("ServiceMonitor: selector does not select the Service (by its labels)")
port_names = {p.get("name") for p in svc["spec"].get("ports", [])}
for ep in sm["spec"].get("endpoints", []):
    if ep.get("port") not in port_names:
        errs.append(f"ServiceMonitor: endpoint port {ep.get('port')!r} is not a port name of the Service {sorted(port_names)}")
    if ep.get("path", "/metrics") != ann.get("prometheus.io/path"):
        errs.append(f"ServiceMonitor: path {ep.get('path')} differs from the Service's prometheus.io/path")
# The rules select job="hancock": the Operator names the job after the Service unless jobLabel says.
rules = os.path.join(root, "monitoring", "alerting_rules.yaml")
if os.path.exists(rules) and 'job=\\"hancock\\"' in open(rules).read():
    if sm["spec"].get("jobLabel") or svc["metadata"]["name"] != "hancock":
        errs.append("ServiceMonitor: the rules select job=\"hancock\", which is the job only for a Service named "
                    "hancock and no jobLabel")

kz = kinds["Kustomization"][0]
for r in kz.get("resources", []):
    if not os.path.exists(os.path.join(k8s, r)):
        errs.append(f"kustomization: resource {r} missing")
# Every manifest here is applied: listed in resources.
for f in sorted({f for f, _ in docs} - {"kustomization.yaml"} - set(kz.get("resources", []))):
    errs.append(f"kustomization: {f} is not in resources")
gen = {g["name"]: g for g in kz.get("configMapGenerator", [])}
for name in cms:
    if name not in gen:
        errs.append(f"ConfigMap {name} used by the Deployment is not generated by kustomization.yaml")
listed = set()
for g in gen.values():
    for entry in g.get("files", []):
        src = entry.split("=", 1)[-1]
        path = os.path.normpath(os.path.join(k8s, src))
        if not os.path.isfile(path):
            errs.append(f"kustomization: {src} does not exist")
        listed.add(os.path.relpath(path, root))
# Keep the ConfigMaps in step with scripts/: every script must be shipped.
for f in glob.glob(os.path.join(root, "scripts", "**", "*.lua"), recursive=True):
    rel = os.path.relpath(f, root)
    if rel not in listed:
        errs.append(f"kustomization: {rel} is not in any configMapGenerator")
if errs:
    print("\n".join("FAIL: " + e for e in errs)); sys.exit(1)
print(f"k8s: {len(docs)} documents OK ({', '.join(sorted(kinds))}); scripts ConfigMaps: {', '.join(cms)}; "
      f"PDB minAvailable {min_available} of {replicas} replicas, HPA {lo}-{hi}")
PY
  # What kustomize renders (labels added, ConfigMaps generated) is what gets applied: it must build,
  # hold every kind, and its selectors must still select (kubectl's built-in kustomize, when present).
  if command -v kubectl >/dev/null; then
    local rendered; rendered=$(mktemp); trap 'rm -f "$rendered"' RETURN
    kubectl kustomize --load-restrictor LoadRestrictionsNone "$deploy/k8s" >"$rendered" \
      || fail "kubectl kustomize deploy/k8s failed"
    python3 - "$rendered" <<'PY'
import sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
want = {"ConfigMap", "Service", "Deployment", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ServiceMonitor"}
errs = [f"rendered: no {k}" for k in sorted(want - set(docs))]
if not errs:
    pods = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind, selector in (("Deployment", docs["Deployment"]["spec"]["selector"]["matchLabels"]),
                           ("Service", docs["Service"]["spec"]["selector"]),
                           ("PodDisruptionBudget", docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])):
        if selector.items() - pods.items():
            errs.append(f"rendered: the {kind}'s selector {selector} does not select the pods {pods}")
    sm = docs["ServiceMonitor"]["spec"]["selector"]["matchLabels"]
    if sm.items() - docs["Service"]["metadata"]["labels"].items():
        errs.append(f"rendered: the ServiceMonitor's selector {sm} does not select the Service")
if errs:
    print("\n".join("FAIL: " + e for e in errs)); sys.exit(1)
print(f"k8s: kubectl kustomize renders {', '.join(sorted(docs))}; selectors select")
PY
  else
    echo "note: kubectl not installed: the kustomize rendering is not checked"
  fi
}

prometheus_config() {
  need promtool prometheus
  promtool check config --syntax-only "$deploy/prometheus.yml"
  local rules=$root/monitoring/alerting_rules.yaml
  if [ ! -f "$rules" ]; then
    echo "SKIP full check: monitoring/alerting_rules.yaml not generated yet (hancock rules)"
    return 0
  fi
  # Full check (rule files too): point rule_files at the repository's copy.
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  sed "s#/etc/prometheus/rules/alerting_rules.yaml#$rules#" "$deploy/prometheus.yml" > "$tmp/prometheus.yml"
  grep -q "$rules" "$tmp/prometheus.yml" || fail "prometheus.yml: rule_files does not name /etc/prometheus/rules/alerting_rules.yaml"
  promtool check config "$tmp/prometheus.yml"
}

alertmanager_config() {
  need amtool prometheus-alertmanager
  amtool check-config "$deploy/alertmanager.yml"
  need python3 python3
  python3 - "$deploy/alertmanager.yml" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
errs = []
recv = {r["name"]: r for r in c["receivers"]}
routes = c["route"].get("routes", [])
def target(sev):
    for r in routes:
        if f'severity="{sev}"' in r.get("matchers", []):
            return recv.get(r["receiver"], {})
    return {}
if "pagerduty_configs" not in target("critical"):
    errs.append("severity=critical should route to a pagerduty receiver")
if "slack_configs" not in target("warning"):
    errs.append("severity=warning should route to a slack receiver")
if not c["route"].get("group_by"):
    errs.append("route.group_by expected")
inh = c.get("inhibit_rules", [])
if not any('severity="critical"' in i.get("source_matchers", []) and 'severity="warning"' in i.get("target_matchers", [])
           and "alertname" in i.get("equal", []) for i in inh):
    errs.append("expected an inhibit rule: critical inhibits warning with equal alertname")
if errs:
    print("\n".join("FAIL: " + e for e in errs)); sys.exit(1)
print("alertmanager: routing and inhibition OK")
PY
}

dockerfile_lint() {
  local f=$deploy/Dockerfile
  [ -f "$f" ] || fail "deploy/Dockerfile missing"
  local froms; froms=$(grep -cE '^FROM ' "$f" || true)
  [ "$froms" -ge 2 ] || fail "Dockerfile: multi-stage build expected (found $froms FROM)"
  grep -qE '^FROM debian:(bookworm|12)' "$f" || fail "Dockerfile: Debian 12 base expected"
  grep -qE '^COPY --from=' "$f" || fail "Dockerfile: runtime stage should COPY --from the build stage"
  local user; user=$(grep -E '^USER ' "$f" | tail -1 | awk '{print $2}')
  [ -n "$user" ] || fail "Dockerfile: no USER (runs as root)"
  case "${user%%:*}" in root|0) fail "Dockerfile: final USER is root";; esac
  # USER must come after the last FROM (i.e. apply to the runtime stage).
  local last_from user_line
  last_from=$(grep -nE '^FROM ' "$f" | tail -1 | cut -d: -f1)
  user_line=$(grep -nE '^USER ' "$f" | tail -1 | cut -d: -f1)
  [ "$user_line" -gt "$last_from" ] || fail "Dockerfile: USER is not in the final stage"
  grep -qE '^HEALTHCHECK .*' "$f" || fail "Dockerfile: HEALTHCHECK missing"
  grep -A2 -E '^HEALTHCHECK' "$f" | grep -q '/health/live' || fail "Dockerfile: HEALTHCHECK should probe /health/live"
  grep -qE '^EXPOSE 5000' "$f" || fail "Dockerfile: EXPOSE 5000 missing"
  grep -qE '^ENTRYPOINT \["hancock", *"serve"' "$f" || fail "Dockerfile: ENTRYPOINT [\"hancock\",\"serve\",...] expected"
  grep -q 'HK_TESTS=OFF' "$f" || fail "Dockerfile: build with -DHK_TESTS=OFF"
  grep -q 'CMAKE_BUILD_TYPE=Release' "$f" || fail "Dockerfile: build with -DCMAKE_BUILD_TYPE=Release"
  # Every COPY source (outside --from) must exist in the build context (the repository root).
  local src
  while read -r src; do
    [ -e "$root/$src" ] || fail "Dockerfile: COPY source $src not in the repository"
  done < <(grep -E '^COPY ' "$f" | grep -v -- '--from' | awk '{for (i = 2; i < NF; i++) print $i}')
  if command -v hadolint >/dev/null; then hadolint "$f"; fi
  echo "Dockerfile: multi-stage ($froms stages), USER $user, HEALTHCHECK, EXPOSE 5000: OK"
}

case "${1:-}" in
  compose_valid|k8s_valid|prometheus_config|alertmanager_config|dockerfile_lint) "$1" ;;
  *) echo "usage: $0 compose_valid|k8s_valid|prometheus_config|alertmanager_config|dockerfile_lint" >&2; exit 2 ;;
esac
