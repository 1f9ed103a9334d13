#!/usr/bin/env bash
# kind end-to-end test: the real image, the real chart, a real cluster.
#
#   1. create a kind cluster (or reuse one named $CLUSTER),
#   2. build the image (Dockerfile) and `kind load` it,
#   3. deploy moto (AWS), an exporter replaying an incident, and Prometheus (examples/e2e/infra.yaml),
#   4. create the Auto Scaling Group in moto with a Job (examples/e2e/aws.yaml),
#   5. `helm install` charts/vigil (examples/e2e/values.yaml),
#   6. apply an AnomalyDetector and a RemediationPolicy (examples/e2e/resources.yaml),
#   7. wait for a RemediationAction to reach Succeeded and the ASG's desired capacity to go 1 -> 2.
#
# Needs docker (with a running engine), kind, helm and kubectl. Environment:
#   VIGIL_E2E_CLUSTER  cluster name (default vigil-e2e)
#   VIGIL_E2E_IMAGE    image tag to build and load (default vigil:e2e)
#   VIGIL_E2E_TIMEOUT  seconds to wait for the remediation (default 1200)
#   VIGIL_E2E_KEEP=1   keep the cluster afterwards (default: delete it if this script created it)
#   VIGIL_E2E_SKIP_BUILD=1  do not build the image (it must exist locally)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${VIGIL_E2E_CLUSTER:-vigil-e2e}"
IMAGE="${VIGIL_E2E_IMAGE:-vigil:e2e}"
TIMEOUT="${VIGIL_E2E_TIMEOUT:-1200}"
KEEP="${VIGIL_E2E_KEEP:-0}"
NS=vigil-e2e
RELEASE_NS=vigil-system
CONTEXT="kind-${CLUSTER}"
created_cluster=0

say() { printf '\n== e2e: %s\n' "$*" >&2; }
die() { printf 'e2e: FAILED: %s\n' "$*" >&2; exit 1; }
k() { kubectl --context "$CONTEXT" "$@"; }

for tool in docker kind helm kubectl; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not on PATH"
done
docker info >/dev/null 2>&1 || die "docker info failed: no Docker engine"

diagnostics() {
  say "diagnostics"
  k get pods -A -o wide || true
  k -n "$NS" get anomalydetectors,remediationpolicies,remediationactions -o yaml || true
  k -n "$RELEASE_NS" logs deploy/vigil --tail=300 || true
  k -n "$NS" logs job/create-asg --tail=50 || true
  k -n "$NS" logs job/check-asg --tail=50 || true
  k get events -A --sort-by=.lastTimestamp | tail -50 || true
}

cleanup() {
  status=$?
  if [ "$status" -ne 0 ]; then diagnostics; fi
  if [ "$created_cluster" = 1 ] && [ "$KEEP" != 1 ]; then
    say "deleting cluster $CLUSTER"
    kind delete cluster --name "$CLUSTER" || true
  fi
  exit "$status"
}
trap cleanup EXIT

manifest() { sed "s|VIGIL_E2E_IMAGE|${IMAGE}|g" "$1"; }

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "reusing kind cluster $CLUSTER"
else
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --wait 180s
  created_cluster=1
fi

if [ "${VIGIL_E2E_SKIP_BUILD:-0}" != 1 ]; then
  say "building $IMAGE"
  DOCKER_BUILDKIT=1 docker build -t "$IMAGE" \
    --build-arg VERSION="$(python3 -c 'import re;print(re.search(r"__version__ = \"(.+)\"", open("operator/vigil/__init__.py").read())[1])')" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" .
  docker image ls "$IMAGE"
fi
say "loading $IMAGE into kind"
kind load docker-image "$IMAGE" --name "$CLUSTER"

say "infrastructure: moto, exporter, Prometheus"
manifest examples/e2e/infra.yaml | k apply -f -
for deployment in moto exporter prometheus; do
  k -n "$NS" rollout status "deploy/$deployment" --timeout=300s
done

say "Auto Scaling Group in moto"
manifest examples/e2e/aws.yaml | k apply -f -
k -n "$NS" wait --for=condition=complete job/create-asg --timeout=300s

say "helm install charts/vigil"
helm --kube-context "$CONTEXT" upgrade --install vigil charts/vigil \
  --namespace "$RELEASE_NS" --create-namespace \
  -f examples/e2e/values.yaml \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --wait --timeout 300s
k get crd anomalydetectors.vigil.dev remediationpolicies.vigil.dev remediationactions.vigil.dev

say "AnomalyDetector + RemediationPolicy"
k apply -f examples/e2e/resources.yaml

say "waiting up to ${TIMEOUT}s for a Succeeded RemediationAction"
deadline=$(( $(date +%s) + TIMEOUT ))
while :; do
  phases="$(k -n "$NS" get remediationactions -o jsonpath='{range .items[*]}{.status.phase}{" "}{end}' 2>/dev/null || true)"
  detector="$(k -n "$NS" get anomalydetector web-latency \
    -o jsonpath='{.status.conditions[?(@.type=="Anomalous")].reason} score={.status.score}' 2>/dev/null || true)"
  printf '  detector: %s | actions: %s\n' "${detector:-?}" "${phases:-none}" >&2
  case " $phases " in
    *" Succeeded "*) break ;;
    *" Failed "*|*" Rejected "*) die "a RemediationAction ended $phases" ;;
  esac
  [ "$(date +%s)" -lt "$deadline" ] || die "no Succeeded RemediationAction after ${TIMEOUT}s"
  sleep 10
done

say "the ASG's desired capacity went 1 -> 2"
manifest examples/e2e/check-asg.yaml | k apply -f -
k -n "$NS" wait --for=condition=complete job/check-asg --timeout=180s
k -n "$NS" logs job/check-asg | tail -1

say "the operator's metrics count the action"
k -n "$RELEASE_NS" run metrics-probe --rm -i --restart=Never --image="$IMAGE" --image-pull-policy=Never \
  --command -- python -c "import urllib.request; \
body = urllib.request.urlopen('http://vigil.${RELEASE_NS}.svc:8080/metrics').read().decode(); \
assert 'vigil_actions_total{' in body and 'phase=\"Succeeded\"' in body, body; print('vigil_actions_total ok')"

say "PASSED"
