"""Publishing outbox rows to Celery: one message per row, its id the only argument."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from celery import Celery

from server.core.config import Settings
from server.outbox import topics
from workers.app import create_celery

# A broker that is down must fail a publish quickly: the relay backs off and tries again.
_FAIL_FAST = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
# Redis commands per pipeline round trip (one LPUSH a message).
PIPELINE_SIZE = 500


class CeleryPublisher:
    """`await publisher.publish([(topic, id), ...])`: every row's task sent, or raise."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._connection: Any = None
        # kombu connections are not thread-safe: every publish runs on this one thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-publish")

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryPublisher:
        return cls(create_celery(settings))

    async def publish(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        if messages:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self.send, messages)

    def send(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        try:
            connection = self._connect()
            with (
                self._app.amqp.Producer(connection) as producer,
                producer.batch(max_size=PIPELINE_SIZE),
            ):
                for topic, event_id in messages:
                    route = topics.route(topic)
                    self._app.send_task(
                        route.task_name,
                        args=[str(event_id)],
                        queue=route.queue,
                        producer=producer,
                        retry=False,
                        ignore_result=True,
                    )
        except BaseException:
            self._drop_connection()
            raise

    def _connect(self) -> Any:
        if self._connection is None:
            self._connection = self._app.connection_for_write(transport_options=_FAIL_FAST)
        # No retries here: the relay, not kombu, decides when to try again.
        self._connection.ensure_connection(max_retries=0)
        return self._connection

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # It is broken already; a new one comes with the next publish.
            with suppress(Exception):
                connection.release()

    def close(self) -> None:
        self._executor.submit(self._drop_connection).result()
        self._executor.shutdown(wait=True)
