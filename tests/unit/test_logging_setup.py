import json
import logging

from tasks.core.logging_setup import ContextFilter, HideReturnValues, JsonFormatter


def _record(msg, args):
    return logging.LogRecord("celery.app.trace", logging.INFO, __file__, 1, msg, args, None)


def test_success_lines_do_not_carry_job_results():
    record = _record(
        "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
        {"name": "email.send", "id": "abc", "runtime": 0.1, "return_value": {"secret": "s3cret"}},
    )
    HideReturnValues().filter(record)
    assert "s3cret" not in record.getMessage()
    assert "(not logged)" in record.getMessage()


def test_json_lines_carry_trace_and_no_job_fields_outside_a_job():
    record = _record("hello %s", ("world",))
    ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "hello world" and line["level"] == "INFO"
    assert line["trace_id"] == "-" and "job_id" not in line
