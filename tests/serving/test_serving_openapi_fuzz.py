"""The service keeps its own OpenAPI contract under property-based fuzzing (schemathesis).

Schemathesis reads ``/openapi.json`` from the ASGI app in-process and, for every operation,
sends schema-valid and schema-violating requests, running all of its built-in checks: no 5xx,
every status code and content type declared, every body matching its declared schema, invalid
data rejected with a 4xx, valid data accepted. Examples are bounded so the whole check takes a
few tens of seconds on two cores, and derandomised so every run sends the same requests.

The limits here make users x k unable to exceed ``max_results`` for schema-valid requests
(16 users x 60 items < 1,000): that product rule cannot be written in JSON Schema, so a
schema-valid request over it would (rightly) get a 422; it is tested directly in
test_serving_http_contract.py.

The schema is loaded when this module is imported (schemathesis's lazy ``from_fixture`` loader
does not work with pytest 9), from a toy artifact in a temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from serving_fixtures import make_toy_run

from simkgcl.serving.app import ServingLimits, create_app
from simkgcl.serving.recommend import RecommendationService


def _load_schema() -> Any:
    folder = Path(tempfile.mkdtemp(prefix="simkgcl-fuzz-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    service = RecommendationService.from_run_dir(make_toy_run(folder / "run").run_dir)
    app = create_app(service, limits=ServingLimits(max_batch_users=16, max_results=1000))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = _load_schema()


@schema.parametrize()
@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_keeps_its_openapi_contract(case: Any) -> None:
    case.call_and_validate()
