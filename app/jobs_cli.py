"""``flask --app wsgi jobs list|stats|cancel|replay|purge``: the search and bulk actions
from a shell, with the same filters and bounds as ``GET /jobs`` and ``POST /jobs/<action>``
(tasks/core/job_search.py, tasks/core/bulk_actions.py). Output is JSON; an error is a
message on stderr and exit status 1.
"""

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from flask.cli import AppGroup

from app.context import celery_app
from app.jobs import job_view
from tasks.core import bulk_actions, job_search
from tasks.core.errors import Unavailable
from tasks.core.job_search import MAX_LIMIT, STATES, InvalidCursor
from tasks.core.submission import InvalidJob

T = TypeVar("T")
jobs = AppGroup("jobs", help="Search jobs; cancel, replay or purge many at once.")


def _filter_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The search's filters, as options (the same names as GET /jobs's parameters)."""
    options = (
        click.option("--state", type=click.Choice(STATES)),
        click.option("--type", "job_type", help="a job type, e.g. email.send"),
        click.option("--queue"),
        click.option("--tag", "tags", multiple=True, help="key:value; repeat for more (all match)"),
        click.option("--created-after", help="RFC 3339 with offset; created at or after"),
        click.option("--created-before", help="RFC 3339 with offset; created before"),
    )
    for option in reversed(options):
        command = option(command)
    return command


def _filter(
    state: str | None,
    job_type: str | None,
    queue: str | None,
    tags: tuple[str, ...],
    created_after: str | None,
    created_before: str | None,
) -> job_search.JobFilter:
    values: dict[str, Any] = {
        "state": state,
        "type": job_type,
        "queue": queue,
        "tag": list(tags),
        "created_after": created_after,
        "created_before": created_before,
    }
    return _run(lambda: job_search.parse_filter({k: v for k, v in values.items() if v}))


def _run(action: Callable[[], T]) -> T:
    try:
        return action()
    except InvalidJob as exc:
        problems = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in exc.problems)
        raise click.ClickException(f"{exc.code}: {exc.message} ({problems})") from exc
    except InvalidCursor as exc:
        raise click.ClickException("invalid_cursor: not a cursor this server gave out") from exc
    except (bulk_actions.JobNotFound, bulk_actions.NotReplayable) as exc:
        raise click.ClickException(str(exc)) from exc
    except Unavailable as exc:
        raise click.ClickException(f"{exc.what} is unavailable; try again later") from exc


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@jobs.command("list")
@_filter_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, MAX_LIMIT))
@click.option("--cursor", help="a page's next_cursor")
def list_jobs(limit: int, cursor: str | None, **filters: Any) -> None:
    """Print a page of matching jobs, newest first, and the next page's cursor."""
    job_filter = _filter(**filters)
    page = _run(lambda: job_search.search(celery_app(), job_filter, limit=limit, cursor=cursor))
    _print({"jobs": [job_view(r) for r in page.jobs], "next_cursor": page.next_cursor})


@jobs.command("stats")
def stats() -> None:
    """Print how many jobs are in each state, per job type."""
    _print(_run(lambda: job_search.stats(celery_app())))


def _bulk(action: str, ids: tuple[str, ...], dry_run: bool, filters: dict[str, Any]) -> None:
    selected = any(v for v in filters.values())
    if ids and selected:
        raise click.UsageError("give --id or filters, not both")
    if (
        not ids
        and not selected
        and not click.confirm(
            f"No filter: {action} every job it applies to (at most {bulk_actions.MAX_BULK})?"
        )
    ):
        raise click.Abort()
    job_filter = None if ids else _filter(**filters)
    report = _run(
        lambda: bulk_actions.run(
            celery_app(),
            action,
            ids=list(ids) if ids else None,
            job_filter=job_filter,
            dry_run=dry_run,
        )
    )
    _print(report.as_dict())


def _bulk_command(action: str, help_text: str) -> None:
    @jobs.command(action, help=help_text)
    @_filter_options
    @click.option("--id", "ids", multiple=True, help="a job id; repeat for more (no filters)")
    @click.option("--dry-run", is_flag=True, help="only count what would be touched")
    def command(ids: tuple[str, ...], dry_run: bool, **filters: Any) -> None:
        _bulk(action, ids, dry_run, filters)


_bulk_command(
    "cancel",
    f"Cancel waiting jobs (queued, scheduled, retrying): at most {bulk_actions.MAX_BULK} a run.",
)
_bulk_command(
    "replay",
    f"Replay failed, dead-lettered jobs through the submission core: at most "
    f"{bulk_actions.MAX_BULK} a run.",
)
_bulk_command(
    "purge",
    f"Delete finished jobs and their index entries (and dead letters): at most "
    f"{bulk_actions.MAX_BULK} a run.",
)


@jobs.command("replay-one")
@click.argument("job_id")
@click.option("--payload", help="a corrected payload as a JSON object")
def replay_one(job_id: str, payload: str | None) -> None:
    """Replay one failed job, optionally with a corrected payload; print it."""
    try:
        parsed = json.loads(payload) if payload is not None else None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--payload") from exc
    record = _run(lambda: bulk_actions.replay_job(celery_app(), job_id, parsed))
    _print(job_view(record))
