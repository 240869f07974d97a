"""`ecg-cds worker`: a Celery worker for classification, write-back and backfill jobs.

Run as many as you like, on any machines that reach the broker and the database; each
process loads the model once. Settings come from the environment / settings file like the
service's (``ECG_CDS_JOBS__MODE=distributed``, ``ECG_CDS_JOBS__BROKER_URL``,
``ECG_CDS_DATABASE_URL``).
"""

from __future__ import annotations

import os

import typer


def worker(
    concurrency: int = typer.Option(
        0, help="Worker processes (0: jobs.worker_concurrency, else the number of cores)."
    ),
    pool: str = typer.Option("prefork", help="Celery pool: prefork (default), solo, threads."),
    loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error."),
    hostname: str = typer.Option("", help="Worker node name (default: ecg-cds@<host>)."),
) -> None:
    from cds_service.jobs.celery_app import make_celery
    from cds_service.jobs.dispatch import bulk_queue
    from cds_service.settings import get_settings

    settings = get_settings()
    if settings.jobs.mode != "distributed":
        typer.echo(
            "jobs.mode is 'embedded': the service runs jobs itself and no worker is needed. "
            "For workers, set ECG_CDS_JOBS__MODE=distributed and ECG_CDS_JOBS__BROKER_URL "
            "(and a shared ECG_CDS_DATABASE_URL) for the service and the workers alike.",
            err=True,
        )
        raise typer.Exit(2)
    app = make_celery(settings)
    processes = concurrency or settings.jobs.worker_concurrency or os.cpu_count() or 1
    argv = [
        "worker",
        f"--loglevel={loglevel}",
        f"--pool={pool}",
        f"--concurrency={processes}",
        # Interactive work first in the list; bulk (folders, backfills) shares the workers.
        f"--queues={settings.jobs.queue},{bulk_queue(settings.jobs.queue)}",
        # Mingle and gossip sync state between workers at start-up and cost a second
        # each; these workers share nothing but the queue and the database.
        "--without-mingle",
        "--without-gossip",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv)
