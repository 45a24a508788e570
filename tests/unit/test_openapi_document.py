"""The API document as generated from the routes: valid, complete, and saying what is enforced."""

import re
from html.parser import HTMLParser

import pytest
from flask import Blueprint, Flask
from openapi_spec_validator import validate

from app import create_app
from app.auth import REQUIRED_SCOPE, SCOPES
from app.deadletters import MAX_IDS, MAX_OFFSET, PAGE_DEFAULT, PAGE_MAX
from app.errors import ApiError
from app.openapi import build_document, check_routes, routes
from app.operations import Undocumented, declaration
from app.submit import idempotency_from
from tasks.core.registry import JOB_TYPES
from tasks.core.submission import MAX_BATCH, MAX_DELAY_S

PROTECTED = {"401", "403"}


def make_app(**config) -> Flask:
    return create_app({"TASKPLANE_ENV": "testing", **config})


@pytest.fixture(scope="module")
def open_app() -> Flask:
    """As development and testing run by default: no tokens configured, none checked."""
    return make_app()


@pytest.fixture(scope="module")
def document(open_app: Flask) -> dict:
    return build_document(open_app)


@pytest.fixture(scope="module")
def guarded() -> dict:
    """As production runs: tokens are checked."""
    return build_document(make_app(AUTH_REQUIRED=True))


def schema_of(document: dict, ref: str) -> dict:
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def operations(document: dict):
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            yield path, method, op


def body_schema(document: dict, path: str, method: str = "post") -> dict:
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def test_both_documents_are_valid_openapi_31(document, guarded):
    validate(document)
    validate(guarded)


def test_every_ref_points_at_a_component(document):
    text = str(document)
    for ref in set(re.findall(r"#/components/schemas/([^'\"]+)", text)):
        assert ref in document["components"]["schemas"], ref


def test_each_job_type_has_its_submission_told_apart_by_type(document):
    union = body_schema(document, "/jobs")
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == {jt.name for jt in JOB_TYPES}
    assert [{"$ref": ref} for ref in mapping.values()] == union["oneOf"]
    for name, ref in mapping.items():
        assert schema_of(document, ref)["properties"]["type"] == {
            "const": name,
            "description": "a job type name, see /job-types",
        }
    assert "WebhookPayload" in document["components"]["schemas"]


def test_without_tokens_no_operation_declares_security(document, open_app):
    assert open_app.extensions["api_tokens"] == [] and not open_app.config["AUTH_REQUIRED"]
    assert "securitySchemes" not in document["components"]
    assert "security" not in document
    for path, method, op in operations(document):
        assert "security" not in op, (method, path)
        assert not PROTECTED & set(op["responses"]), (method, path)
    assert "checks no tokens" in document["info"]["description"]


def test_with_tokens_checked_each_protected_operation_declares_its_scope(guarded, open_app):
    endpoints = {
        (route.path, route.method.lower()): route.rule.endpoint for route in _routes(open_app)
    }
    protected = 0
    for path, method, op in operations(guarded):
        scope = REQUIRED_SCOPE.get(endpoints[(path, method)])
        if scope is None:
            assert "security" not in op and not PROTECTED & set(op["responses"]), (method, path)
            continue
        protected += 1
        assert scope in SCOPES
        assert op["security"] == [{"bearer": [scope]}]
        assert PROTECTED <= set(op["responses"])
        assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert protected == len(REQUIRED_SCOPE)
    scheme = guarded["components"]["securitySchemes"]["bearer"]
    assert scheme["scheme"] == "bearer" and all(s in scheme["description"] for s in SCOPES)


def test_tokens_in_the_environment_also_turn_security_on(monkeypatch):
    monkeypatch.setenv(
        "TASKPLANE_API_TOKENS",
        '[{"name": "ci", "sha256": "' + "ab" * 32 + '", "scopes": ["admin"]}]',
    )
    document = build_document(make_app())
    assert document["paths"]["/queues"]["get"]["security"] == [{"bearer": ["admin"]}]


def test_429_only_where_a_rate_limit_applies(document):
    assert not any("429" in op["responses"] for _, _, op in operations(document))
    limited = build_document(
        make_app(CELERY_OVERRIDES={"taskplane_rate_limits": {"per_token": "100/second"}})
    )
    validate(limited)
    answers = {(p, m): "429" in op["responses"] for p, m, op in operations(limited)}
    assert answers[("/jobs", "post")] and answers[("/queues", "get")]
    for exempt in ("/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs"):
        assert not answers[(exempt, "get")], exempt
    assert "Retry-After" in limited["paths"]["/jobs"]["post"]["responses"]["429"]["headers"]


def test_batch_size_and_schedule_bounds_come_from_the_submission_core(document):
    jobs = body_schema(document, "/jobs/batch")["properties"]["jobs"]
    assert (jobs["minItems"], jobs["maxItems"]) == (1, MAX_BATCH)
    # Batch items are full submissions now: delay_s, run_at and all.
    assert jobs["items"] == body_schema(document, "/jobs")
    for name in ("Submit_diagnostics_echo", "Submit_webhook_deliver"):
        fields = document["components"]["schemas"][name]["properties"]
        assert fields["delay_s"]["anyOf"][0]["maximum"] == MAX_DELAY_S
        assert fields["run_at"]["x-max-seconds-ahead"] == MAX_DELAY_S
        assert f"{MAX_DELAY_S:,} s" in fields["run_at"]["description"]


def test_delay_s_and_run_at_exclude_each_other_only_when_both_have_values(document):
    not_both = document["components"]["schemas"]["Submit_diagnostics_echo"]["not"]
    assert not_both["required"] == ["delay_s", "run_at"]
    assert not_both["properties"]["delay_s"] == {"not": {"type": "null"}}


def test_dead_letter_limits_come_from_app_deadletters(document):
    listing = document["paths"]["/queues/{queue}/dead"]["get"]["parameters"]
    limits = {p["name"]: p["schema"] for p in listing if p["in"] == "query"}
    assert limits["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": PAGE_MAX,
        "default": PAGE_DEFAULT,
    }
    assert limits["offset"]["maximum"] == MAX_OFFSET
    purge = document["paths"]["/queues/{queue}/dead"]["delete"]["requestBody"]
    assert purge["required"] is False
    ids = schema_of(document, purge["content"]["application/json"]["schema"]["$ref"])
    assert ids["properties"]["ids"]["anyOf"][0]["maxItems"] == MAX_IDS


def test_idempotency_key_pattern_accepts_exactly_what_the_server_accepts(document):
    for path in ("/jobs", "/jobs/batch"):
        (header,) = document["paths"][path]["post"]["parameters"]
        assert header["name"] == "Idempotency-Key" and header["in"] == "header"
        pattern = re.compile(header["schema"]["pattern"])
        for key in [chr(c) for c in range(0x110)] + ["k" * 255, "k" * 256, "", "ab cd", "é"]:
            try:
                idempotency_from(key, {}, "ns", 60)
                accepted = True
            except ApiError:
                accepted = False
            assert bool(pattern.fullmatch(key)) == accepted, repr(key)


def test_body_size_limit_is_the_apps(document, open_app):
    too_large = document["paths"]["/jobs"]["post"]["responses"]["413"]["description"]
    assert f"{open_app.config['MAX_CONTENT_LENGTH']:,} bytes" in too_large
    small = build_document(make_app(MAX_CONTENT_LENGTH=4096))
    assert "4,096 bytes" in small["paths"]["/jobs"]["post"]["responses"]["413"]["description"]


def test_batch_answers_202_new_and_200_for_a_repeated_key(document):
    answers = document["paths"]["/jobs/batch"]["post"]["responses"]
    assert answers["202"]["content"] == answers["200"]["content"]
    assert {"409", "400", "413", "415", "422", "503"} <= set(answers)
    assert "Retry-After" in answers["503"]["headers"]


def test_cancel_is_a_post_and_delete_a_documented_deprecated_alias(document):
    cancel = document["paths"]["/jobs/{job_id}/cancel"]["post"]
    alias = document["paths"]["/jobs/{job_id}"]["delete"]
    assert cancel["operationId"] == "cancelJob" and not cancel.get("deprecated")
    assert alias["deprecated"] is True and "/cancel" in alias["summary"]
    assert cancel["responses"] == alias["responses"]
    assert set(cancel["responses"]) == {"200", "404", "409", "503"}


def _routes(app: Flask):
    return [r for r in routes(app) if not isinstance(r.declared, Undocumented)]


def test_every_route_is_in_the_document_and_nothing_else(document, open_app):
    documented = {(path, method) for path, method, _ in operations(document)}
    assert documented == {(r.path, r.method.lower()) for r in _routes(open_app)}
    skipped = {
        rule.endpoint
        for rule in open_app.url_map.iter_rules()
        if isinstance(declaration(open_app.view_functions[rule.endpoint]), Undocumented)
    }
    assert skipped == {"docs.asset"}


def test_a_route_without_a_declaration_stops_the_app():
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/sneaky", "sneaky", lambda: "hi", methods=["GET", "POST"])
    app = make_app()
    app.register_blueprint(extra)
    with pytest.raises(RuntimeError, match=r"GET /sneaky .*no @operation"):
        check_routes(app)


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_loads_only_files_this_server_serves(open_app):
    client = open_app.test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "http:" not in html and "https:" not in html
    parser = _References()
    parser.feed(html)
    assert len(parser.urls) == 4
    for url in parser.urls:
        assert url.startswith("/docs/"), url
        asset = client.get(url)
        assert asset.status_code == 200 and len(asset.data) > 100, url
    assert '"/openapi.json"' in html and "validatorUrl: null" in html
    assert client.get("/docs/swagger-ui.js").status_code == 404  # only what the page loads
    assert client.get("/docs/../openapi.py").status_code == 404


def test_docs_and_the_document_are_public_where_tokens_are_checked():
    client = make_app(AUTH_REQUIRED=True).test_client()
    assert client.get("/queues").status_code == 401
    for path in ("/openapi.json", "/docs", "/docs/swagger-ui-bundle.js"):
        assert client.get(path).status_code == 200, path
    assert "security" in client.get("/openapi.json").json["paths"]["/queues"]["get"]


def test_operations_are_grouped_by_the_blueprint_that_serves_them(document):
    assert [tag["name"] for tag in document["tags"]][:2] == ["jobs", "batch"]
    assert document["paths"]["/jobs/{job_id}/cancel"]["post"]["tags"] == ["jobs"]
    assert all(tag.get("description") for tag in document["tags"])
