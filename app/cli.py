"""Operators' commands: ``flask --app wsgi dead|jobs|schedule|token|workflow ...``.

``jobs list|stats|cancel|replay|purge|replay-one``: see app/jobs_cli.py.

``dead list|replay|purge QUEUE``: dead letters from a shell. ``schedule
list|show|add|pause|resume|run|remove``: schedules, through the same operations as
the HTTP API (tasks/core/schedule_admin.py), printed as JSON; an error is a message
on stderr and exit status 1. ``workflow show|cancel|retry ID``: a workflow, through the
operations of tasks/core/workflows.py, printed as JSON as GET /workflows/<id> shows it.
"""

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask import Flask
from flask.cli import AppGroup

from app.auth import SCOPES, hash_token, new_token
from app.context import celery_app
from app.jobs import job_view
from app.workflow_models import workflow_view
from tasks.core import schedule_admin, workflows
from tasks.core.deadletters import list_dead, purge_dead, replay_dead
from tasks.core.errors import Unavailable
from tasks.core.schedule_admin import PAGE_DEFAULT, PAGE_MAX, ScheduleError
from tasks.core.schedules import InvalidSchedule
from tasks.core.workflows import WorkflowNotCancellable, WorkflowNotFound, WorkflowNotRetryable

T = TypeVar("T")

dead = AppGroup("dead", help="List, replay or purge a queue's dead-lettered jobs.")


@dead.command("list")
@click.argument("queue")
@click.option("--offset", default=0, show_default=True)
@click.option("--limit", default=50, show_default=True)
def list_command(queue: str, offset: int, limit: int) -> None:
    """Print the dead letters of QUEUE as JSON, newest first."""
    click.echo(json.dumps(list_dead(celery_app(), queue, offset, limit), indent=2))


@dead.command("replay")
@click.argument("queue")
@click.option("--id", "ids", multiple=True, help="a job id; repeat for more (default: all)")
def replay_command(queue: str, ids: tuple[str, ...]) -> None:
    """Send dead letters of QUEUE back to it, keeping each job's id and history."""
    report = replay_dead(celery_app(), queue, list(ids) or None)
    click.echo(json.dumps({"replayed": report.replayed, "not_found": report.not_found}))


@dead.command("purge")
@click.argument("queue")
@click.option("--id", "ids", multiple=True, help="a job id; repeat for more (default: all)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def purge_command(queue: str, ids: tuple[str, ...], yes: bool) -> None:
    """Drop dead letters of QUEUE for good."""
    if not yes:
        click.confirm(
            f"Purge {'the listed' if ids else 'all'} dead letters of {queue}?", abort=True
        )
    click.echo(json.dumps({"purged": purge_dead(celery_app(), queue, list(ids) or None)}))


token = AppGroup("token", help="API tokens: make one and print its configuration entry.")


@token.command("create")
@click.option("--name", required=True, help="who uses it, e.g. billing-service")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES))
def create_token(name: str, scopes: tuple[str, ...]) -> None:
    """Print a new token (give it to the client) and its entry for TASKPLANE_API_TOKENS."""
    value = new_token()
    entry = {"name": name, "sha256": hash_token(value), "scopes": sorted(set(scopes))}
    click.echo(f"token: {value}")
    click.echo(f"TASKPLANE_API_TOKENS entry: {json.dumps(entry)}")
    click.echo("Only the hash goes into configuration; the token is shown once.", err=True)


schedule = AppGroup("schedule", help="List, add, pause, resume, run or remove schedules.")


def _admin(action: Callable[[], T]) -> T:
    """Run a schedule operation; its errors become a message and exit status 1."""
    try:
        return action()
    except ScheduleError as exc:
        raise click.ClickException(f"{exc.code}: {exc.message}") from exc
    except InvalidSchedule as exc:
        problems = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in exc.problems)
        raise click.ClickException(f"{exc.code}: {exc.message} ({problems})") from exc
    except Unavailable as exc:
        raise click.ClickException(f"{exc.what} is unavailable; try again later") from exc


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@schedule.command("list")
@click.option("--after", default="", help="list ids after this one (a page's next_after)")
@click.option("--limit", default=PAGE_DEFAULT, show_default=True, type=click.IntRange(1, PAGE_MAX))
def schedule_list(after: str, limit: int) -> None:
    """Print a page of schedules as JSON, in id order."""
    _print(_admin(lambda: schedule_admin.listing(celery_app(), after, limit)))


@schedule.command("show")
@click.argument("schedule_id")
def schedule_show(schedule_id: str) -> None:
    """Print one schedule: definition, next fire, last fires and counts."""
    _print(_admin(lambda: schedule_admin.show(celery_app(), schedule_id)))


@schedule.command("add")
@click.option("--json", "as_json", help="the whole schedule as JSON (as POST /schedules takes)")
@click.option("--id", "schedule_id", help="a slug: a-z, 0-9, '.', '_' and '-'")
@click.option("--type", "job_type", help="a job type (see /job-types)")
@click.option("--payload", help="the job payload as a JSON object")
@click.option("--cron", help="5 fields: minute hour day-of-month month day-of-week")
@click.option("--interval", type=float, help="fire every this many seconds (or give --cron)")
@click.option("--timezone", help="IANA zone the cron fields are read in (default UTC)")
@click.option("--missed", type=click.Choice(["all", "last", "none"]))
@click.option("--overlap", type=click.Choice(["allow", "skip"]))
@click.option("--jitter", type=float, help="run each fire up to this many seconds later")
@click.option("--start-at", help="no fire before this (RFC 3339, with an offset)")
@click.option("--end-at", help="no fire at or after this (RFC 3339, with an offset)")
@click.option("--disabled", is_flag=True, help="create it paused")
def schedule_add(as_json: str | None, **options: Any) -> None:
    """Create a schedule from --json or from the options; print it as JSON."""
    data = _definition(as_json, options)
    _print(_admin(lambda: schedule_admin.create(celery_app(), data)))


OPTION_FIELDS = {
    "schedule_id": "id",
    "job_type": "type",
    "cron": "cron",
    "interval": "interval_s",
    "timezone": "timezone",
    "missed": "missed",
    "overlap": "overlap",
    "jitter": "jitter_s",
    "start_at": "start_at",
    "end_at": "end_at",
}


def _definition(as_json: str | None, options: dict[str, Any]) -> Any:
    """The schedule JSON from --json or the options; --disabled goes with either."""
    given = [name for name, value in options.items() if name != "disabled" and value is not None]
    if as_json is not None:
        if given:
            raise click.UsageError("give --json or the definition's options, not both")
        data = _json_option("--json", as_json)
    else:
        data = {OPTION_FIELDS[name]: options[name] for name in OPTION_FIELDS if name in given}
        if options["payload"] is not None:
            data["payload"] = _json_option("--payload", options["payload"])
    if options["disabled"] and isinstance(data, dict):
        data["enabled"] = False
    return data


def _json_option(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from exc


@schedule.command("pause")
@click.argument("schedule_id")
def schedule_pause(schedule_id: str) -> None:
    """Stop a schedule firing (declared ones too)."""
    _print(_admin(lambda: schedule_admin.pause(celery_app(), schedule_id)))


@schedule.command("resume")
@click.argument("schedule_id")
def schedule_resume(schedule_id: str) -> None:
    """Let a schedule fire again from its next due time, if its payload still fits."""
    _print(_admin(lambda: schedule_admin.resume(celery_app(), schedule_id)))


@schedule.command("run")
@click.argument("schedule_id")
def schedule_run(schedule_id: str) -> None:
    """Fire a schedule now; print the job created."""
    submitted = _admin(lambda: schedule_admin.run(celery_app(), schedule_id))
    _print(job_view(submitted.record))


@schedule.command("remove")
@click.argument("schedule_id")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
def schedule_remove(schedule_id: str, yes: bool) -> None:
    """Delete a schedule made over the API or here (the jobs it fired stay)."""
    if not yes:
        click.confirm(f"Remove schedule {schedule_id}?", abort=True, err=True)
    _admin(lambda: schedule_admin.remove(celery_app(), schedule_id))
    _print({"removed": schedule_id})


workflow = AppGroup("workflow", help="Show, cancel or retry a workflow.")
WORKFLOW_ERRORS = {
    WorkflowNotFound: "workflow_not_found",
    WorkflowNotCancellable: "workflow_not_cancellable",
    WorkflowNotRetryable: "workflow_not_retryable",
}


def _workflow(action: Callable[[Any, str], dict[str, Any]], workflow_id: str) -> None:
    """Run a workflow operation and print the workflow; errors: a message and exit status 1."""
    try:
        view = action(celery_app(), workflow_id)
    except (WorkflowNotFound, WorkflowNotCancellable, WorkflowNotRetryable) as exc:
        raise click.ClickException(f"{WORKFLOW_ERRORS[type(exc)]}: {exc}") from exc
    except Unavailable as exc:
        raise click.ClickException(f"{exc.what} is unavailable; try again later") from exc
    _print(workflow_view(view))


@workflow.command("show")
@click.argument("workflow_id")
def workflow_show(workflow_id: str) -> None:
    """Print a workflow: its state and every step's state, job, attempts and result."""
    _workflow(workflows.describe, workflow_id)


@workflow.command("cancel")
@click.argument("workflow_id")
def workflow_cancel(workflow_id: str) -> None:
    """Cancel a running or failed workflow: nothing new starts, waiting jobs do not run."""
    _workflow(workflows.cancel, workflow_id)


@workflow.command("retry")
@click.argument("workflow_id")
def workflow_retry(workflow_id: str) -> None:
    """Run a failed workflow's failed steps again (from their dead letters) and go on."""
    _workflow(workflows.retry, workflow_id)


def init_app(app: Flask) -> None:
    app.cli.add_command(dead)
    app.cli.add_command(schedule)
    app.cli.add_command(token)
    app.cli.add_command(workflow)
    from app.jobs_cli import jobs

    app.cli.add_command(jobs)
