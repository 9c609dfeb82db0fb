#!/usr/bin/env bash
# Smoke test of a running polymarket-api: ./test_local.sh [BASE_URL]  (default http://localhost:7071)
# Prints one line per check; exits non-zero when any check fails.
set -uo pipefail

BASE_URL="${1:-http://localhost:7071}"
BASE_URL="${BASE_URL%/}"
failures=0
checks=0

pass() { checks=$((checks + 1)); printf 'PASS  %s\n' "$1"; }
fail() { checks=$((checks + 1)); failures=$((failures + 1)); printf 'FAIL  %s\n' "$1"; }

# check NAME EXPECTED_STATUS PATH [JSON_KEY...]: status code, JSON body, and top-level keys present.
check() {
  local name="$1" expected="$2" path="$3"
  shift 3
  local body status
  body="$(mktemp)"
  status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 30 "$BASE_URL$path" 2>/dev/null)" || status="000"
  if [[ "$status" != "$expected" ]]; then
    fail "$name: GET $path -> $status (expected $expected)"
  elif ! python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$body" 2>/dev/null; then
    fail "$name: GET $path -> body is not JSON"
  else
    local missing
    missing="$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(k for k in sys.argv[2:] if k not in d))' "$body" "$@")"
    if [[ -n "$missing" ]]; then
      fail "$name: GET $path -> missing keys: $missing"
    else
      pass "$name: GET $path -> $status"
    fi
  fi
  rm -f "$body"
}

check "health" 200 "/api/health" status version time
check "health deep" 200 "/api/health?deep=true" status checks
check "health bad flag" 400 "/api/health?deep=perhaps" error

# Prices: validation answers without calling Polymarket.
check "price bad token" 400 "/api/price/not-a-token" error
check "price 79 digits" 400 "/api/price/$(printf '1%.0s' {1..79})" error
check "price bad interval" 400 "/api/price/1?interval=2h" error
check "book bad depth" 400 "/api/book/1?depth=0" error
check "prices without ids" 400 "/api/prices" error
check "prices invalid ids reported per id" 200 "/api/prices?token_ids=abc,x1" quotes count freshness

# Prices of a real token, taken from the markets list.
token="$(curl -sS --max-time 60 "$BASE_URL/api/markets?limit=1" 2>/dev/null | python3 -c '
import json, sys
try:
    print(json.load(sys.stdin)["markets"][0]["outcomes"][0]["token_id"] or "")
except Exception:
    print("")' 2>/dev/null)"
if [[ -n "$token" ]]; then
  check "price" 200 "/api/price/$token" token quote history freshness
  check "price quote only" 200 "/api/price/$token?history=false&interval=1w" token quote freshness
  check "prices batch" 200 "/api/prices?token_ids=$token,abc" quotes count freshness
  check "book" 200 "/api/book/$token?depth=5" token book freshness
else
  fail "price: no token id from /api/markets?limit=1 to check /api/price, /api/prices and /api/book with"
fi

printf '%d checks, %d failed\n' "$checks" "$failures"
[[ "$failures" -eq 0 ]]
