#!/usr/bin/env bash
# Deploy polymarket-api to Azure:  ./deploy.sh <env> [options]
#
# Names come from deploy/<env>.env (see deploy/example.env), never from this script.
# Secrets come from the environment (POSTGRES_ADMIN_PASSWORD, AZURE_OPENAI_API_KEY) and go
# to Key Vault through files, so they never appear on a command line or in this output.
#
#   --create        provision what is missing first (idempotent: safe to run twice)
#   --dry-run       print every command it would run; change nothing
#   --force         deploy even with uncommitted changes
#   --skip-tests    do not run `make test` first
#   --yes           do not ask for confirmation (required for prod without a terminal)
#   --config FILE   read names from FILE instead of deploy/<env>.env
#   --url URL       base URL to verify (default https://<the app's default host name>)
#
# The work tree must be clean (git status) unless --force; an untracked deploy/<env>.env, the
# names file made from the example (git-ignored), does not count.
# Environment: POSTGRES_ADMIN_PASSWORD (needed by --create), AZURE_OPENAI_API_KEY (optional),
# HEALTH_ATTEMPTS / HEALTH_INTERVAL_S (health polling, default 30 x 10 s), PYTHON, and
# PYTEST_ARGS, passed on to `make test` (e.g. PYTEST_ARGS=tests/test_deploy.py runs only that
# file; the test step says what it ran). deploy.sh's own tests use it to keep the suite out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$ROOT"

usage() {
  # The comment block at the top of this file.
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
}
die() { echo "deploy: error: $*" >&2; exit 1; }
say() { echo "deploy: $*"; }

ENV_NAME=""
CREATE=0 DRY_RUN=0 FORCE=0 SKIP_TESTS=0 YES=0 CONFIG="" BASE_URL=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --create) CREATE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --force) FORCE=1 ;;
    --skip-tests) SKIP_TESTS=1 ;;
    --yes) YES=1 ;;
    --config) [[ $# -ge 2 ]] || usage; CONFIG="$2"; shift ;;
    --url) [[ $# -ge 2 ]] || usage; BASE_URL="${2%/}"; shift ;;
    -h|--help) usage ;;
    -*) echo "deploy: unknown option $1" >&2; usage ;;
    *) [[ -z "$ENV_NAME" ]] || usage; ENV_NAME="$1" ;;
  esac
  shift
done
[[ -n "$ENV_NAME" ]] || usage
[[ "$ENV_NAME" =~ ^[a-z0-9-]+$ ]] || die "environment name must be lower-case letters, digits and dashes"

CONFIG="${CONFIG:-deploy/$ENV_NAME.env}"
[[ -f "$CONFIG" ]] || die "no config file $CONFIG (copy deploy/example.env)"
# shellcheck source=deploy/example.env
source "$CONFIG"

require() { [[ -n "${!1:-}" ]] || die "$CONFIG must set $1"; }
for name in AZ_LOCATION AZ_RESOURCE_GROUP FUNCTION_APP_NAME STORAGE_ACCOUNT APP_INSIGHTS_NAME \
            KEY_VAULT_NAME POSTGRES_SERVER POSTGRES_DATABASE POSTGRES_ADMIN_USER; do
  require "$name"
done
POSTGRES_SKU="${POSTGRES_SKU:-Standard_B1ms}"
POSTGRES_TIER="${POSTGRES_TIER:-Burstable}"
POSTGRES_VERSION="${POSTGRES_VERSION:-16}"
CORS_ALLOWED_ORIGINS="${CORS_ALLOWED_ORIGINS:-}"
HEALTH_ATTEMPTS="${HEALTH_ATTEMPTS:-30}"
HEALTH_INTERVAL_S="${HEALTH_INTERVAL_S:-10}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON="$(command -v python3)"

# --- running commands --------------------------------------------------------------------------

# run CMD...: print it, then run it (or only print it under --dry-run).
run() {
  echo "+ $*"
  if [[ "$DRY_RUN" -eq 0 ]]; then
    "$@"
  fi
}

# ensure WHAT -- SHOW_CMD... -- CREATE_CMD...: create only when SHOW_CMD fails (idempotence).
ensure() {
  local what="$1"; shift
  [[ "$1" == "--" ]] || die "ensure: bad call"
  shift
  local show=()
  while [[ "$1" != "--" ]]; do show+=("$1"); shift; done
  shift
  if [[ "$DRY_RUN" -eq 1 ]]; then
    echo "+ ${show[*]} || $*"
    return 0
  fi
  local found
  # Exists = the show/list command succeeds and prints something (a list prints [] or nothing).
  if found="$("${show[@]}" 2>/dev/null)" && [[ -n "$found" && "$found" != "[]" ]]; then
    say "$what exists"
  else
    say "creating $what"
    run "$@"
  fi
}

# A secret goes to Key Vault through a private temporary file, never through argv.
SECRET_FILES=()
cleanup() { [[ ${#SECRET_FILES[@]} -eq 0 ]] || rm -f "${SECRET_FILES[@]}"; }
trap cleanup EXIT

# secret_file VAR VALUE: sets VAR to a new private file holding VALUE (removed at exit).
# Not called in $(...): a subshell could not register the file for removal.
secret_file() {
  local file
  file="$(mktemp)"
  chmod 600 "$file"
  printf '%s' "$2" >"$file"
  SECRET_FILES+=("$file")
  printf -v "$1" '%s' "$file"
}

# --- checks ------------------------------------------------------------------------------------

# What `git status` reports, less untracked names files (deploy/<env>.env): README's first step
# makes one from the example, and .gitignore keeps it out of git.
uncommitted_changes() {
  local line
  # Outside a git work tree there is nothing to compare with (as before: not a refusal).
  { git status --porcelain --untracked-files=all 2>/dev/null || true; } | while IFS= read -r line; do
    if [[ "$line" =~ ^\?\?\ deploy/[a-z0-9-]+\.env$ && "$line" != "?? deploy/example.env" ]]; then
      continue
    fi
    printf '%s\n' "$line"
  done
}

preflight() {
  local tool
  for tool in az func curl git; do
    command -v "$tool" >/dev/null || die "$tool is not installed (see README, Deploying)"
  done
  az account show --output none 2>/dev/null || die "not logged in to Azure: run 'az login'"
  if [[ -n "${AZ_SUBSCRIPTION:-}" ]]; then
    run az account set --subscription "$AZ_SUBSCRIPTION"
  fi
  local dirty
  dirty="$(uncommitted_changes)"
  if [[ "$FORCE" -eq 0 && -n "$dirty" ]]; then
    die "uncommitted changes in the work tree; commit them or pass --force:"$'\n'"$dirty"
  fi
  if [[ "$SKIP_TESTS" -eq 0 ]]; then
    say "running the test suite (make test${PYTEST_ARGS:+ PYTEST_ARGS=$PYTEST_ARGS})"
    make test ${PYTEST_ARGS:+"PYTEST_ARGS=$PYTEST_ARGS"} || die "tests failed; fix them or pass --skip-tests"
  fi
  if [[ "$ENV_NAME" == "prod" && "$YES" -eq 0 ]]; then
    [[ -t 0 ]] || die "refusing to deploy to prod without a terminal to confirm; pass --yes"
    local answer
    read -r -p "Deploy $FUNCTION_APP_NAME to PRODUCTION? Type 'prod' to continue: " answer
    [[ "$answer" == "prod" ]] || die "not confirmed"
  fi
}

# --- provisioning ------------------------------------------------------------------------------

provision() {
  local rg="$AZ_RESOURCE_GROUP" loc="$AZ_LOCATION"
  ensure "resource group $rg" -- az group show --name "$rg" -- \
    az group create --name "$rg" --location "$loc" --output none
  ensure "storage account $STORAGE_ACCOUNT" -- \
    az storage account show --name "$STORAGE_ACCOUNT" --resource-group "$rg" -- \
    az storage account create --name "$STORAGE_ACCOUNT" --resource-group "$rg" --location "$loc" \
      --sku Standard_LRS --allow-blob-public-access false --min-tls-version TLS1_2 --output none
  ensure "Application Insights $APP_INSIGHTS_NAME" -- \
    az monitor app-insights component show --app "$APP_INSIGHTS_NAME" --resource-group "$rg" -- \
    az monitor app-insights component create --app "$APP_INSIGHTS_NAME" --resource-group "$rg" \
      --location "$loc" --application-type web --output none
  ensure "Key Vault $KEY_VAULT_NAME" -- \
    az keyvault show --name "$KEY_VAULT_NAME" --resource-group "$rg" -- \
    az keyvault create --name "$KEY_VAULT_NAME" --resource-group "$rg" --location "$loc" \
      --enable-rbac-authorization true --output none

  local password_file=""
  if [[ "$DRY_RUN" -eq 0 ]]; then
    [[ -n "${POSTGRES_ADMIN_PASSWORD:-}" ]] || die "set POSTGRES_ADMIN_PASSWORD in the environment for --create"
    secret_file password_file "$POSTGRES_ADMIN_PASSWORD"
  else
    password_file="<private temp file>"
  fi
  # "@file" makes the Azure CLI read the value from the file: the password is not in argv.
  ensure "PostgreSQL flexible server $POSTGRES_SERVER" -- \
    az postgres flexible-server show --name "$POSTGRES_SERVER" --resource-group "$rg" -- \
    az postgres flexible-server create --name "$POSTGRES_SERVER" --resource-group "$rg" \
      --location "$loc" --tier "$POSTGRES_TIER" --sku-name "$POSTGRES_SKU" --version "$POSTGRES_VERSION" \
      --admin-user "$POSTGRES_ADMIN_USER" --admin-password "@$password_file" \
      --public-access 0.0.0.0 --yes --output none
  # PgBouncer (port 6432, transaction pooling) is a server parameter; setting it again is a no-op.
  run az postgres flexible-server parameter set --server-name "$POSTGRES_SERVER" --resource-group "$rg" \
    --name pgbouncer.enabled --value true --output none
  ensure "database $POSTGRES_DATABASE" -- \
    az postgres flexible-server db show --server-name "$POSTGRES_SERVER" --resource-group "$rg" \
      --database-name "$POSTGRES_DATABASE" -- \
    az postgres flexible-server db create --server-name "$POSTGRES_SERVER" --resource-group "$rg" \
      --database-name "$POSTGRES_DATABASE" --output none

  ensure "Function App $FUNCTION_APP_NAME" -- \
    az functionapp show --name "$FUNCTION_APP_NAME" --resource-group "$rg" -- \
    az functionapp create --name "$FUNCTION_APP_NAME" --resource-group "$rg" \
      --storage-account "$STORAGE_ACCOUNT" --flexconsumption-location "$loc" \
      --runtime python --runtime-version 3.11 --app-insights "$APP_INSIGHTS_NAME" \
      --assign-identity "[system]" --output none

  # The app's managed identity reads the vault's secrets.
  local principal="<principal id>" vault_id="<vault id>"
  if [[ "$DRY_RUN" -eq 0 ]]; then
    principal="$(az functionapp identity show --name "$FUNCTION_APP_NAME" --resource-group "$rg" \
      --query principalId --output tsv)"
    vault_id="$(az keyvault show --name "$KEY_VAULT_NAME" --resource-group "$rg" --query id --output tsv)"
  fi
  ensure "Key Vault access for the app's identity" -- \
    az role assignment list --assignee "$principal" --scope "$vault_id" \
      --role "Key Vault Secrets User" --query "[0].id" --output tsv --only-show-errors -- \
    az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
      --role "Key Vault Secrets User" --scope "$vault_id" --output none

  run az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name postgres-password \
    --file "$password_file" --encoding utf-8 --output none
  local settings=(
    "POSTGRES_HOST=$POSTGRES_SERVER.postgres.database.azure.com"
    "POSTGRES_PORT=6432"
    "POSTGRES_DATABASE=$POSTGRES_DATABASE"
    "POSTGRES_USER=$POSTGRES_ADMIN_USER"
    "POSTGRES_SSLMODE=require"
    "POSTGRES_PASSWORD=@Microsoft.KeyVault(VaultName=$KEY_VAULT_NAME;SecretName=postgres-password)"
    "MARKETS_REFRESH_SCHEDULE=0 */5 * * * *"
    "PRICE_HISTORY_PRUNE_SCHEDULE=0 17 * * * *"
    "PRICE_HISTORY_COMPACT_SCHEDULE=0 41 * * * *"
    "CORS_ALLOWED_ORIGINS=$CORS_ALLOWED_ORIGINS"
  )
  if [[ -n "${AZURE_OPENAI_API_KEY:-}" || "$DRY_RUN" -eq 1 ]]; then
    local key_file="<private temp file>"
    [[ "$DRY_RUN" -eq 1 ]] || secret_file key_file "${AZURE_OPENAI_API_KEY:-}"
    run az keyvault secret set --vault-name "$KEY_VAULT_NAME" --name azure-openai-api-key \
      --file "$key_file" --encoding utf-8 --output none
    settings+=(
      "AZURE_OPENAI_API_KEY=@Microsoft.KeyVault(VaultName=$KEY_VAULT_NAME;SecretName=azure-openai-api-key)"
      "AZURE_OPENAI_ENDPOINT=${AZURE_OPENAI_ENDPOINT:-}"
      "GPT5_DEPLOYMENT_NAME=${GPT5_DEPLOYMENT_NAME:-gpt-5}"
    )
  fi
  run az functionapp config appsettings set --name "$FUNCTION_APP_NAME" --resource-group "$rg" \
    --settings "${settings[@]}" --output none
  if [[ -n "$CORS_ALLOWED_ORIGINS" ]]; then
    local origin
    IFS=',' read -r -a origins <<<"$CORS_ALLOWED_ORIGINS"
    for origin in "${origins[@]}"; do
      run az functionapp cors add --name "$FUNCTION_APP_NAME" --resource-group "$rg" \
        --allowed-origins "$origin" --output none
    done
  fi
}

# --- deploy and verify -------------------------------------------------------------------------

expected_functions() {
  "$PYTHON" - <<'PY'
import function_app
print("\n".join(sorted(fn.get_function_name() for fn in function_app.app.get_functions())))
PY
}

verify_functions() {
  local expected deployed missing=""
  expected="$(expected_functions)" || die "could not list the functions in function_app.py"
  deployed="$(az functionapp function list --name "$FUNCTION_APP_NAME" --resource-group "$AZ_RESOURCE_GROUP" \
    --query "[].name" --output tsv)" || die "could not list the deployed functions"
  local name
  for name in $expected; do
    # Azure lists them as "<app>/<function>".
    grep -qx "\(.*/\)\{0,1\}$name" <<<"$deployed" || missing+=" $name"
  done
  [[ -z "$missing" ]] || die "deployed app is missing functions:$missing"
  say "all $(wc -w <<<"$expected" | tr -d ' ') functions are deployed"
}

wait_healthy() {
  local url="$1/api/health" attempt
  for ((attempt = 1; attempt <= HEALTH_ATTEMPTS; attempt++)); do
    if curl -fsS --max-time 10 "$url" >/dev/null 2>&1; then
      say "healthy after $attempt attempt(s): $url"
      return 0
    fi
    sleep "$HEALTH_INTERVAL_S"
  done
  die "$url did not answer 200 after $HEALTH_ATTEMPTS attempts"
}

main() {
  say "environment $ENV_NAME: app $FUNCTION_APP_NAME in $AZ_RESOURCE_GROUP ($AZ_LOCATION)$([[ $DRY_RUN -eq 1 ]] && echo ', dry run')"
  if [[ "$DRY_RUN" -eq 1 ]]; then
    echo "+ az account show; git status --porcelain; make test${PYTEST_ARGS:+ PYTEST_ARGS=$PYTEST_ARGS} (unless --skip-tests)"
  else
    preflight
  fi
  [[ "$CREATE" -eq 0 ]] || provision
  run func azure functionapp publish "$FUNCTION_APP_NAME" --python --build remote
  if [[ "$DRY_RUN" -eq 1 ]]; then
    echo "+ az functionapp function list ... (every function in function_app.py must be listed)"
    echo "+ curl ${BASE_URL:-https://<default host name>}/api/health (up to $HEALTH_ATTEMPTS attempts)"
    echo "+ ./test_local.sh ${BASE_URL:-https://<default host name>}"
    say "dry run: nothing was changed"
    return 0
  fi
  verify_functions
  if [[ -z "$BASE_URL" ]]; then
    local host
    host="$(az functionapp show --name "$FUNCTION_APP_NAME" --resource-group "$AZ_RESOURCE_GROUP" \
      --query defaultHostName --output tsv)" || die "could not read the app's host name"
    BASE_URL="https://$host"
  fi
  wait_healthy "$BASE_URL"
  ./test_local.sh "$BASE_URL" || die "smoke test failed against $BASE_URL"
  say "deployed $FUNCTION_APP_NAME ($ENV_NAME) and verified $BASE_URL"
}

main
