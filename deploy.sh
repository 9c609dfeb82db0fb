#!/usr/bin/env bash
# Deploy polymarket-api to an existing Azure Function App:
#   ./deploy.sh <function-app-name> [--skip-tests]
# Needs the Azure CLI (logged in) and Azure Functions Core Tools. Builds remotely on Azure.
set -euo pipefail
cd "$(dirname "$0")"

usage() { echo "usage: $0 <function-app-name> [--skip-tests]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
APP_NAME="$1"; shift
SKIP_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --skip-tests) SKIP_TESTS=1 ;;
    *) usage ;;
  esac
done

die() { echo "deploy: $*" >&2; exit 1; }
command -v az >/dev/null || die "the Azure CLI (az) is not installed"
command -v func >/dev/null || die "Azure Functions Core Tools (func) is not installed"
az account show --output none 2>/dev/null || die "not logged in to Azure: run 'az login'"

if [[ "$SKIP_TESTS" -eq 0 ]]; then
  make test || die "tests failed; fix them or pass --skip-tests"
fi

echo "deploy: publishing to $APP_NAME (remote build)"
func azure functionapp publish "$APP_NAME" --python --build remote

HOST="$(az functionapp show --name "$APP_NAME" --query defaultHostName --output tsv)" \
  || die "could not read the host name of $APP_NAME"
URL="https://$HOST"
echo "deploy: waiting for $URL/api/health"
for attempt in $(seq 1 30); do
  if curl -fsS --max-time 10 "$URL/api/health" >/dev/null 2>&1; then
    echo "deploy: healthy after $attempt attempt(s)"
    exec ./test_local.sh "$URL"
  fi
  sleep 10
done
die "$URL/api/health did not answer 200 within 5 minutes"
