from openapi_spec_validator import validate

from app.openapi import build_document
from tasks.core.registry import JOB_TYPES


def test_document_is_valid_openapi_31_with_every_job_type():
    document = build_document({jt.name: jt for jt in JOB_TYPES})
    validate(document)
    schema = document["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    names = {
        document["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]["properties"]["type"][
            "const"
        ]
        for ref in schema["oneOf"]
    }
    assert names == {jt.name for jt in JOB_TYPES}
    assert "WebhookPayload" in document["components"]["schemas"]
    responses = document["paths"]["/jobs"]["post"]["responses"]
    assert {"202", "400", "413", "415", "422", "503"} <= set(responses)
