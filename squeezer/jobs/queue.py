"""The job queue as both sides use it: Celery configured for Squeezer's broker, and `CeleryQueue`, which
sends a job's id. The API builds it without the worker's task or modules (it only sends, by task name);
the worker adds the task (`squeezer/worker/celery_app.py`).

JSON only, late acks and prefetch 1, so a message is acknowledged after the job ran and a worker holds
one job at a time. The embedded default broker is kombu's SQLAlchemy transport on SQLite.
"""

from __future__ import annotations

from celery import Celery

from squeezer.settings import Settings

TASK = "squeezer.run_job"


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def configured_celery(settings: Settings) -> Celery:
    """A Celery app on the settings' broker, with no tasks: enough to send one by name."""
    app = Celery("squeezer", broker=settings.resolved_broker_url())
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_queue_max_priority=9,
        task_default_priority=0,
    )
    if is_redis(settings.resolved_broker_url()):
        # one Redis list per priority, read highest first (Redis has no priority queue of its own)
        app.conf.broker_transport_options = {
            "queue_order_strategy": "priority",
            "priority_steps": list(range(10)),
            "sep": ":",
        }
    return app


class CeleryQueue:
    """The `JobQueue` on Celery: only the job id travels; the row holds everything else.

    A job's priority runs 0 (normal) to 9 (most urgent). AMQP brokers read it that way; Celery's Redis
    transport serves 0 first, so the number is turned around there.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._reversed = is_redis(str(app.conf.broker_url))

    def enqueue(self, job_id: str, priority: int) -> None:
        self.app.send_task(TASK, args=[job_id], priority=9 - priority if self._reversed else priority)

    def ping(self) -> None:
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
