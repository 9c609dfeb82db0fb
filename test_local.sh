#!/usr/bin/env bash
# Smoke test of a running polymarket-api: ./test_local.sh [BASE_URL]  (default http://localhost:7071)
# Prints one line per check; exits non-zero when any check fails.
# CORS_ORIGIN (default http://localhost:3000, one of the origins `make run` and `make demo` allow
# by default) is the frontend origin the deployment allows; CORS_ORIGIN=none skips the CORS checks.
set -uo pipefail

BASE_URL="${1:-http://localhost:7071}"
BASE_URL="${BASE_URL%/}"
CORS_ORIGIN="${CORS_ORIGIN:-http://localhost:3000}"
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

# json_field FILE EXPR: print a value from a JSON file (empty when absent).
json_field() {
  python3 -c 'import json,sys
try:
    d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {"d": d}) or "")
except Exception:
    print("")' "$1" "$2" 2>/dev/null
}

check "health" 200 "/api/health" status version time
check "health deep" 200 "/api/health?deep=true" status checks
check "health bad flag" 400 "/api/health?deep=perhaps" error

# Markets.
check "markets" 200 "/api/markets?limit=5" markets next_cursor total freshness
check "markets search" 200 "/api/markets?q=will&sort=volume_24h&limit=3" markets total freshness
check "markets bad sort" 400 "/api/markets?sort=popularity" error
check "markets bad limit" 400 "/api/markets?limit=10000" error
check "market malformed id" 400 "/api/markets/0x123" error
check "market unknown id" 404 "/api/markets/0x$(printf '0%.0s' {1..64})" error
listing="$(mktemp)"
curl -sS --max-time 60 -o "$listing" "$BASE_URL/api/markets?limit=1" 2>/dev/null
condition_id="$(json_field "$listing" 'd["markets"][0]["condition_id"]')"
token="$(json_field "$listing" 'd["markets"][0]["outcomes"][0]["token_id"]')"
rm -f "$listing"
if [[ -n "$condition_id" ]]; then
  check "market" 200 "/api/markets/$condition_id" market freshness
  # Sentiment is optional: 200 when Azure OpenAI is configured, else 503 not_configured.
  body="$(mktemp)"
  status="$(curl -sS -o "$body" -w '%{http_code}' --max-time 90 "$BASE_URL/api/markets/$condition_id/sentiment" 2>/dev/null)"
  code="$(json_field "$body" 'd.get("error", {}).get("code")')"
  if [[ "$status" == "200" && -n "$(json_field "$body" 'd["sentiment"]["sentiment"]')" ]]; then
    pass "sentiment: 200 ($(json_field "$body" 'd["sentiment"]["sentiment"]'))"
  elif [[ "$status" == "503" && "$code" == "not_configured" ]]; then
    pass "sentiment: 503 not_configured (Azure OpenAI not set up)"
  else
    fail "sentiment: GET /api/markets/$condition_id/sentiment -> $status ${code:-}"
  fi
  rm -f "$body"
else
  fail "markets: no market in /api/markets?limit=1 to check /api/markets/{id} with"
fi

# Caching and compression: a page over 1 KB comes gzip-compressed with its own ETag, and that tag
# revalidates to a 304.
headers="$(mktemp)"
body="$(mktemp)"
path="/api/markets?limit=50"
status="$(curl -sS -o "$body" -D "$headers" -w '%{http_code}' --max-time 60 -H 'Accept-Encoding: gzip' \
  "$BASE_URL$path" 2>/dev/null)"
encoding="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="content-encoding" {print $2}')"
etag="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="etag" {print $2}')"
vary="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="vary" {print $2}')"
if [[ "$status" == "200" && "$encoding" == "gzip" && "$etag" == *-gzip\" && "${vary,,}" == *accept-encoding* ]] \
    && gzip -dc "$body" 2>/dev/null | python3 -c 'import json,sys; json.load(sys.stdin)' 2>/dev/null; then
  pass "gzip: GET $path -> $status, $(wc -c <"$body" | tr -d ' ') bytes gzip, ETag $etag"
else
  fail "gzip: GET $path -> $status, Content-Encoding '${encoding}', ETag '${etag}', Vary '${vary}'"
fi
if [[ -n "$etag" ]]; then
  status="$(curl -sS -o /dev/null -w '%{http_code}' --max-time 30 -H 'Accept-Encoding: gzip' \
    -H "If-None-Match: $etag" "$BASE_URL$path" 2>/dev/null)"
  if [[ "$status" == "304" ]]; then
    pass "revalidation: If-None-Match $etag -> 304"
  else
    fail "revalidation: If-None-Match $etag -> $status (expected 304)"
  fi
fi
rm -f "$headers" "$body"

# CORS: a preflight from the frontend's origin, the header on a plain GET, and the headers a
# frontend must read (ETag) exposed to it.
if [[ "$CORS_ORIGIN" != "none" ]]; then
  headers="$(mktemp)"
  status="$(curl -sS -o /dev/null -D "$headers" -w '%{http_code}' --max-time 30 -X OPTIONS \
    -H "Origin: $CORS_ORIGIN" -H "Access-Control-Request-Method: GET" "$BASE_URL/api/markets" 2>/dev/null)"
  allowed="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="access-control-allow-origin" {print $2}')"
  if [[ "$status" =~ ^2 && ( "$allowed" == "$CORS_ORIGIN" || "$allowed" == "*" ) ]]; then
    pass "CORS preflight from $CORS_ORIGIN -> $status"
  else
    fail "CORS preflight from $CORS_ORIGIN -> $status, Access-Control-Allow-Origin '${allowed}'"
  fi
  curl -sS -o /dev/null -D "$headers" --max-time 30 -H "Origin: $CORS_ORIGIN" "$BASE_URL/api/health" 2>/dev/null
  allowed="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="access-control-allow-origin" {print $2}')"
  if [[ "$allowed" == "$CORS_ORIGIN" || "$allowed" == "*" ]]; then
    pass "CORS header on GET from $CORS_ORIGIN"
  else
    fail "CORS header on GET from $CORS_ORIGIN: Access-Control-Allow-Origin '${allowed}'"
  fi
  curl -sS -o /dev/null -D "$headers" --max-time 30 -H "Origin: $CORS_ORIGIN" "$BASE_URL/api/markets?limit=1" 2>/dev/null
  exposed="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="access-control-expose-headers" {print $2}')"
  allowed="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="access-control-allow-origin" {print $2}')"
  vary="$(tr -d '\r' <"$headers" | awk -F': ' 'tolower($1)=="vary" {print $2}')"
  if [[ "${exposed,,}" == *etag* && ( "$allowed" == "*" || "${vary,,}" == *origin* ) ]]; then
    pass "CORS exposes ETag to $CORS_ORIGIN (Access-Control-Expose-Headers: $exposed)"
  else
    fail "CORS on GET /api/markets from $CORS_ORIGIN: Expose-Headers '${exposed}', Vary '${vary}'"
  fi
  rm -f "$headers"
fi

# Prices: validation answers without calling Polymarket.
check "price bad token" 400 "/api/price/not-a-token" error
check "price 79 digits" 400 "/api/price/$(printf '1%.0s' {1..79})" error
check "price bad interval" 400 "/api/price/1?interval=2h" error
check "book bad depth" 400 "/api/book/1?depth=0" error
check "prices without ids" 400 "/api/prices" error
check "prices invalid ids reported per id" 200 "/api/prices?token_ids=abc,x1" quotes count freshness

# Prices of a real token, taken from the markets list above.
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
