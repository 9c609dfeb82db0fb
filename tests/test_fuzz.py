"""Schemathesis fuzzing of the whole API against its OpenAPI document.

The app is served over HTTP by the local host on a real PostgreSQL, with the Polymarket and Azure
OpenAI stand-ins (no faults) and the catalogue loaded. The document is the one the app serves at
``/api/openapi.json``. Every operation gets positive cases (valid by the document, with real ids
mixed in so they reach stored markets, live books and the model, not only 404s) and negative
cases (invalid by the document). Each response must be no server error (no 5xx at all: nothing
is failing), have a documented status, content type and headers, and a body valid against the
documented schema.

Bounded and deterministic: ``EXAMPLES`` cases per operation and mode, a derandomized Hypothesis,
no example database and no shrinking (a failure is reported as first found).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.api.openapi import API_PREFIX
from tests.conftest import Upstream
from tests.test_openapi import Api, serving

# FUZZ_EXAMPLES=500 for a deeper local run; CI keeps the default (about 10 s).
_SCALE = int(os.environ.get("FUZZ_EXAMPLES", "50"))
EXAMPLES = {GenerationMode.POSITIVE: _SCALE, GenerationMode.NEGATIVE: max(1, _SCALE // 2)}
# A request line longer than an HTTP server takes is refused by the server (the local host's,
# like Azure's front end, answers 414) before the app sees it: not the app's answer to judge.
# It happens for long non-ASCII token_ids lists, percent-encoded to tens of kilobytes.
HOST_URL_LIMIT = 8192
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def api(database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    with serving(upstream_env, monkeypatch) as served:
        yield served


def _known_ids(api: Api) -> dict[str, list[str]]:
    """Real ids to mix into the generated path parameters: open markets, and a closed one."""
    markets = api.upstream.open_markets()
    closed = markets[-1]
    api.upstream.close_market(closed["condition_id"])
    condition_ids = [m["condition_id"] for m in markets[:3]] + [closed["condition_id"]]
    return {
        "condition_id": condition_ids,
        "token_id": [t for m in markets[:3] for t in m["token_ids"]] + [closed["token_ids"][0]],
        "market": [*condition_ids, markets[0]["slug"], str(markets[1]["gamma_id"])],
        "event": [markets[0]["event_id"], markets[1]["event_slug"]],
        "q": [markets[0]["slug"], condition_ids[1], markets[2]["token_ids"][0],
              f"https://polymarket.com/event/{markets[1]['event_slug']}"],
    }


def _strategy(operation: Any, mode: GenerationMode, known: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    names = [p.name for p in operation.path_parameters]
    strategies = [operation.as_strategy(generation_mode=mode)]
    if mode == GenerationMode.POSITIVE:
        for name in names:
            strategies += [operation.as_strategy(generation_mode=mode, path_parameters={name: value})
                           for value in known.get(name, [])]
        if operation.path.endswith("/resolve"):  # its one parameter: real references, not only random text
            strategies += [operation.as_strategy(generation_mode=mode, query={"q": value}) for value in known["q"]]
    return st.one_of(strategies)


def _fuzz(api: Api, operation: Any, mode: GenerationMode, strategy: st.SearchStrategy[Any],
          session: requests.Session, statuses: Counter[int]) -> None:
    @settings(max_examples=EXAMPLES[mode], derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=api.url, session=session, timeout=60)
        statuses[response.status_code] += 1
        if response.status_code == 414 and len(response.request.url or "") > HOST_URL_LIMIT:
            return
        case.validate_response(response, checks=CHECKS)

    run()


def test_fuzz_every_operation_against_the_document(api: Api) -> None:
    # The document as served (from_url would leave out the document's own operation).
    served = api.client.get(f"{api.url}{API_PREFIX}/openapi.json")
    assert served.status_code == 200
    schema = schemathesis.openapi.from_dict(served.json())
    known = _known_ids(api)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        f"{method.upper()} {path}" for path, item in served.json()["paths"].items() for method in item}
    failures: list[str] = []
    summary: dict[str, Counter[int]] = {}
    with requests.Session() as session:
        for operation in operations:
            statuses: Counter[int] = Counter()
            summary[operation.label] = statuses
            for mode in EXAMPLES:
                if mode == GenerationMode.NEGATIVE and not [
                        p for p in operation.iter_parameters() if p.location != "header"]:
                    continue  # nothing to make invalid (If-None-Match takes any string)
                try:
                    _fuzz(api, operation, mode, _strategy(operation, mode, known), session, statuses)
                except Exception as error:  # every operation is fuzzed; all failures reported
                    failures.append(f"{operation.label} ({mode.value}): {error}")
    report = "\n".join(f"{label}: {dict(sorted(counts.items()))}" for label, counts in summary.items())
    print(f"fuzzed ({EXAMPLES[GenerationMode.POSITIVE]} positive, {EXAMPLES[GenerationMode.NEGATIVE]} negative "
          f"examples per operation at most), statuses seen:\n{report}")
    assert not failures, "\n\n".join(failures) + "\n\nstatuses seen:\n" + report
    for label, counts in summary.items():
        # Real ids are mixed in, so every operation reaches its success path, not only 400/404s.
        assert counts[200] > 0, f"{label} never answered 200; the fuzzing only reached errors:\n{report}"
    assert not api.upstream.standin.faults()
