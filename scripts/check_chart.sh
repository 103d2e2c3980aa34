#!/usr/bin/env bash
# Offline checks of the Helm chart in deploy/helm/labelfleet: no cluster, no network.
#   1. helm lint --strict with the default values, each deploy/examples/values-*.yaml and a
#      value set that turns on every optional feature (values.schema.json applies to all);
#   2. helm template of those, of long names (a 53-character release name, Helm's longest, and
#      60-character nameOverride/fullnameOverride) and of the alternatives (no TLS, a bucket,
#      external etcd, the HPA);
#   3. every rendered object name (and the Secret/PVC names the chart derives) is a DNS label of
#      at most 63 characters, Services' start with a letter, StatefulSets' are at most 52;
#   4. every rendered object validates with `kubernetes-validate --strict` against a recent
#      Kubernetes (K8S_VERSION, default 1.37.0) and the chart's kubeVersion floor; custom
#      resources (ScaledObject, ServiceMonitor) are not in those schemas and are skipped, by kind;
#   5. the plain manifests in deploy/examples (submit-job.yaml) validate the same way;
#   6. renders that must fail do: KEDA together with the HPA, a value the schema refuses, a
#      release name that cannot start a Service name.
# Exits non-zero, after running everything, when any check failed, and lists what failed.
# Tools: helm and kubernetes-validate from LABELFLEET_VENV (default /root/.cache/labelfleet/venv).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
chart=$root/deploy/helm/labelfleet
venv=${LABELFLEET_VENV:-/root/.cache/labelfleet/venv}
export PATH="$venv/bin:$PATH"
k8s_recent=${K8S_VERSION:-1.37.0}
# Custom resources: kubernetes-validate has no schema for them.
skip_kinds="ScaledObject ServiceMonitor"

for tool in helm kubernetes-validate python3; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (expected in $venv/bin)"; exit 1; }
done
python3 -c 'import yaml' 2>/dev/null || { echo "FAIL: python3 lacks PyYAML (use the venv's)"; exit 1; }

# The oldest Kubernetes the chart supports, from Chart.yaml (kubeVersion: ">=1.27.0-0").
k8s_floor=$(sed -n 's/^kubeVersion: *"*>=\([0-9]*\.[0-9]*\).*/\1.0/p' "$chart/Chart.yaml")
[ -n "$k8s_floor" ] || { echo "FAIL: no kubeVersion floor in $chart/Chart.yaml"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/rendered"
failures=()
fail() {
    echo "FAIL: $*"
    failures+=("$*")
}

# Every optional feature on, and every extension point used.
cat >"$work/all-features.yaml" <<'EOF'
logFormat: text
imagePullSecrets:
  - name: registry-credentials
security:
  networkPolicy:
    enabled: true
    clients:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ci}}
    metricsFrom:
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    operators:
      - podSelector: {matchLabels: {labelfleet.io/operator: "true"}}
etcd:
  bundled:
    replicas: 3
    pdb:
      enabled: true
store:
  credentialsSecret: store-credentials
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: kube-prometheus-stack}
keda:
  enabled: true
  serverAddress: http://prometheus-operated.monitoring.svc:9090
  minReplicaCount: 0
  maxReplicaCount: 8
  triggerMetadata: {authModes: bearer}
  authenticationRef: prometheus-auth
coordinator:
  replicas: 3
  pdb:
    enabled: true
    minAvailable: 2
    unhealthyPodEvictionPolicy: AlwaysAllow
  extraVolumes: &volumes
    - name: models
      persistentVolumeClaim: {claimName: labelfleet-models, readOnly: true}
  extraVolumeMounts: &mounts
    - name: models
      mountPath: /models
      readOnly: true
  initContainers: &init
    - name: wait-for-models
      image: busybox:1.36
      command: ["sh", "-c", "test -d /models/custom-ce"]
      volumeMounts: [{name: models, mountPath: /models, readOnly: true}]
      securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}
  envFrom: &envFrom
    - configMapRef: {name: labelfleet-extra-env}
  priorityClassName: labelfleet-high
worker:
  device: cuda
  dtype: bf16
  gpu: {enabled: true, count: 1}
  warmModels: [minilm, /models/custom-ce]
  startupProbe: {periodSeconds: 15, failureThreshold: 80}
  pdb: {enabled: true, maxUnavailable: 2}
  apiKeySecret: {name: openai-key}
  extraEnv:
    - name: LABELFLEET_MODEL_ROOT
      value: /opt/labelfleet/home/models:/models
  extraVolumes: *volumes
  extraVolumeMounts: *mounts
  initContainers: *init
  envFrom: *envFrom
  priorityClassName: labelfleet-batch
  runtimeClassName: nvidia
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: kubernetes.io/hostname
      whenUnsatisfiable: ScheduleAnyway
      labelSelector: {matchLabels: {app.kubernetes.io/component: worker}}
trainer:
  device: cuda
  gpu: {enabled: true}
  extraVolumes: *volumes
  extraVolumeMounts: *mounts
  initContainers: *init
  envFrom: *envFrom
  priorityClassName: labelfleet-batch
  runtimeClassName: nvidia
EOF

# The other branches: no TLS, a bucket, an external etcd with TLS and a user, the HPA, no
# trainer, no metrics.
cat >"$work/alternatives.yaml" <<'EOF'
security:
  tls: false
  networkPolicy: {enabled: false}
store:
  url: s3://labels/prod
  endpoint: http://minio:9000
  credentialsSecret: minio-credentials
etcd:
  endpoints: ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"]
  tlsSecret: etcd-client
  user: labelfleet
  passwordSecret: etcd-password
trainer:
  enabled: false
metrics:
  enabled: false
autoscaling:
  enabled: true
coordinator:
  replicas: 1
worker:
  warmModels: []
  pdb: {enabled: false}
EOF

# Checks the names in a rendered file and writes the objects kubernetes-validate knows to
# $2; prints "objects validated skipped".
cat >"$work/inspect.py" <<'EOF'
import re, sys, yaml

rendered, out, skip_kinds = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
label = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
dns1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
problems = []

def check(what, name, limit=63):
    if len(name) > limit:
        problems.append(f"{what} {name!r}: {len(name)} characters (at most {limit})")
    elif not label.match(name):
        problems.append(f"{what} {name!r}: not a DNS label")

def derived(node, where):
    """Names the chart derives and refers to: Secrets, PVCs, a StatefulSet's Service."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("secretName", "claimName", "serviceName") and isinstance(value, str):
                check(f"{where} {key}", value)
            derived(value, where)
    elif isinstance(node, list):
        for value in node:
            derived(value, where)

docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
keep, skipped = [], []
for d in docs:
    kind, name = d.get("kind", "?"), (d.get("metadata") or {}).get("name", "")
    check(kind, name)
    if kind == "Service" and not dns1035.match(name):
        problems.append(f"Service {name!r}: not a DNS-1035 label (must start with a letter)")
    if kind == "StatefulSet":
        # its pods carry controller-revision-hash: <name>-<10-character hash>, a label value
        check(kind + " (controller-revision-hash label)", name, 52)
    if kind == "ScaledObject":
        # KEDA names its HPA keda-hpa-<name>
        check("HorizontalPodAutoscaler made by KEDA", "keda-hpa-" + name)
    derived(d, f"{kind}/{name}")
    (skipped if kind in skip_kinds else keep).append(d)

with open(out, "w") as f:
    yaml.safe_dump_all(keep, f, sort_keys=False)
for p in problems:
    print("  name:", p, file=sys.stderr)
kinds = sorted({d["kind"] for d in skipped})
print(len(docs), len(keep), len(skipped), ",".join(kinds) or "-")
sys.exit(1 if problems else 0)
EOF

total_objects=0 total_validated=0 total_skipped=0 renders=0

lint() { # name, helm lint arguments...
    local name=$1
    shift
    if helm lint --strict "$chart" "$@" >"$work/lint.log" 2>&1; then
        echo "ok   lint --strict: $name"
    else
        sed 's/^/  /' "$work/lint.log"
        fail "helm lint --strict: $name"
    fi
}

render() { # name, release, helm template arguments...
    local name=$1 release=$2
    shift 2
    local file=$work/rendered/$name.yaml kept=$work/rendered/$name.known.yaml counts status=ok
    if ! helm template "$release" "$chart" --namespace labeling "$@" >"$file" 2>"$work/err.log"; then
        sed 's/^/  /' "$work/err.log"
        fail "helm template: $name"
        return
    fi
    if ! counts=$(python3 "$work/inspect.py" "$file" "$kept" "$skip_kinds"); then
        fail "object names: $name"
        status=FAIL
    fi
    local objects=0 validated=0 skipped=0 kinds=-
    read -r objects validated skipped kinds <<<"$counts" || true
    local version
    for version in "$k8s_recent" "$k8s_floor"; do
        if ! kubernetes-validate --strict --quiet -k "$version" "$kept" >"$work/val.log" 2>&1 ||
            grep -q . "$work/val.log"; then
            sed 's/^/  /' "$work/val.log"
            fail "kubernetes-validate --strict -k $version: $name"
            status=FAIL
        fi
    done
    renders=$((renders + 1))
    total_objects=$((total_objects + objects))
    total_validated=$((total_validated + validated))
    total_skipped=$((total_skipped + skipped))
    printf '%-4s template: %-26s %2d objects, %2d validated, %d skipped (%s)\n' \
        "$status" "$name" "$objects" "$validated" "$skipped" "$kinds"
}

must_fail() { # name, expected message, release, helm template arguments...
    local name=$1 expected=$2 release=$3
    shift 3
    if helm template "$release" "$chart" "$@" >/dev/null 2>"$work/err.log"; then
        fail "expected a failed render: $name"
    elif ! grep -qF -- "$expected" "$work/err.log"; then
        sed 's/^/  /' "$work/err.log"
        fail "render failed without \"$expected\": $name"
    else
        echo "ok   refused: $name"
    fi
}

echo "chart $chart; Kubernetes schemas $k8s_recent and $k8s_floor; skipped kinds: $skip_kinds"

lint default
for f in "$root"/deploy/examples/values-*.yaml; do
    lint "$(basename "$f")" -f "$f"
done
lint all-features -f "$work/all-features.yaml"

release53=labelfleet-$(printf 'x%.0s' {1..42})  # 53 characters: the longest Helm accepts
long60=$(printf 'n%.0s' {1..60})
render default lf
for f in "$root"/deploy/examples/values-*.yaml; do
    render "$(basename "$f" .yaml)" lf -f "$f"
done
render all-features lf -f "$work/all-features.yaml"
render alternatives lf -f "$work/alternatives.yaml"
render long-release "$release53" -f "$work/all-features.yaml"
render long-release-alternatives "$release53" -f "$work/alternatives.yaml"
render long-nameOverride "$release53" -f "$work/all-features.yaml" --set "nameOverride=$long60"
render long-fullnameOverride lf -f "$work/all-features.yaml" --set "fullnameOverride=$long60"

# The plain manifests among the examples (not values files), e.g. submit-job.yaml.
for f in "$root"/deploy/examples/*.yaml; do
    case $(basename "$f") in values-*) continue ;; esac
    if kubernetes-validate --strict --quiet -k "$k8s_recent" "$f" >"$work/val.log" 2>&1 &&
        ! grep -q . "$work/val.log"; then
        echo "ok   manifest: $(basename "$f")"
    else
        sed 's/^/  /' "$work/val.log"
        fail "kubernetes-validate --strict: $(basename "$f")"
    fi
done

must_fail "keda.enabled with autoscaling.enabled" "enable one of them" \
    lf --set keda.enabled=true --set keda.serverAddress=http://p:9090 --set autoscaling.enabled=true
must_fail "keda.enabled without serverAddress" "keda.serverAddress" lf --set keda.enabled=true
must_fail "schema: worker.device=gpu" "worker.device" lf --set worker.device=gpu
must_fail "schema: a misspelt key" "Additional property replica" lf --set worker.replica=3
must_fail "release name starting with a digit" "DNS-1035" 1lf

echo
echo "$renders renders: $total_objects objects, $total_validated validated against Kubernetes $k8s_recent and $k8s_floor, $total_skipped skipped (custom resources: $skip_kinds)"
if [ ${#failures[@]} -gt 0 ]; then
    echo "${#failures[@]} check(s) FAILED:"
    printf '  - %s\n' "${failures[@]}"
    exit 1
fi
echo "all chart checks passed"
