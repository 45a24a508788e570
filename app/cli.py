"""``flask --app wsgi dead list|replay|purge QUEUE``: dead letters from a shell."""

import json

import click
from flask import Flask
from flask.cli import AppGroup

from app.auth import SCOPES, hash_token, new_token
from app.context import celery_app
from tasks.core.deadletters import list_dead, purge_dead, replay_dead

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


def init_app(app: Flask) -> None:
    app.cli.add_command(dead)
    app.cli.add_command(token)
