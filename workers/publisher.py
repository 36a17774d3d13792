"""Publishing outbox events to Celery for the relay: one broker connection, remade after errors.

The relay decides when to try again (it backs off while the broker is down), so a publish
here makes one attempt and fails fast: no kombu retry loop, short socket timeouts. After any
error the connection is dropped and the next publish connects anew (and declares its queue
again), so a Redis that comes back, even as a new empty server, needs no manual step
(tests/test_relay.py). Results are never asked for: the Job row is the record.

`publish_many` sends a relay batch as few messages as it can: the events of one topic go
together, up to EVENTS_PER_MESSAGE ids in a message (every event task takes a list of ids as
well as one), and the messages in one Redis pipeline (kombu's Producer.batch). A message costs
the relay about 130 us of CPU batched (340 us alone) and the worker's consumer about as much
again, and most of a REDCap backlog's rows are settled by a batch sent for another row before
their own message is read: one message per row was most of the relay's and the consumer's
work in a drain. If the pipeline fails, any of its messages may or may not have gone: the relay
records none of them as published and sends them all again, and a task that gets a copy of a
row already done skips it at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

from celery import Celery
from kombu.exceptions import ChannelError
from redis.exceptions import ResponseError

from server.core.config import Settings
from server.outbox import topics
from workers.app import create_celery

# A broker that is down must fail a publish quickly: the relay backs off and tries again.
_FAIL_FAST = {"socket_timeout": 5.0, "socket_connect_timeout": 2.0}
# Redis commands per pipeline round trip (one LPUSH a message).
PIPELINE_SIZE = 500
# Event ids in one message: a worker runs them one after the other, so more messages of fewer
# ids spread a backlog of independent rows (archive) over the pool.
EVENTS_PER_MESSAGE = 50


def grouped(messages: Sequence[tuple[str, uuid.UUID]]) -> list[tuple[str, list[str]]]:
    """(topic, up to EVENTS_PER_MESSAGE event ids) per message, topics in the order they first
    come and each topic's ids in the order given (oldest first, as the relay reads them)."""
    by_topic: dict[str, list[str]] = {}
    for topic, event_id in messages:
        by_topic.setdefault(topic, []).append(str(event_id))
    return [
        (topic, ids[i : i + EVENTS_PER_MESSAGE])
        for topic, ids in by_topic.items()
        for i in range(0, len(ids), EVENTS_PER_MESSAGE)
    ]


class CeleryPublisher:
    """`await publisher(topic, event_id)`: send the topic's task with the event id, or raise."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._connection: Any = None
        # kombu connections are not thread-safe: every publish runs on this one thread.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-publish")

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryPublisher:
        return cls(create_celery(settings))

    async def __call__(self, topic: str, event_id: uuid.UUID) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.send, topic, event_id)

    async def publish_many(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        """Send each (topic, event id), grouped by topic (see above); raises if any may not
        have gone."""
        if messages:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._executor, self.send_many, messages)

    async def queue_depths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each queue (not those a worker has taken): the relay holds back
        what a queue cannot take yet."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._depths, list(queues))

    def _depths(self, queues: list[str]) -> dict[str, int]:
        try:
            channel = self._connect().default_channel
            depths = {}
            for queue in queues:
                try:
                    depths[queue] = int(channel.queue_declare(queue=queue, passive=True)[1])
                except ChannelError:
                    depths[queue] = 0  # Redis keeps no key for an empty list
            return depths
        except BaseException:
            self._drop_connection()
            raise

    async def broker_epoch(self) -> str | None:
        """Which broker server this is: Redis's run_id, new with every start of a server (and
        with it, unless it persists, an empty broker); None where the broker cannot tell."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._epoch)

    def _epoch(self) -> str | None:
        try:
            channel = self._connect().default_channel
            with channel.conn_or_acquire() as client:
                try:
                    return str(client.info("server")["run_id"])
                except ResponseError:
                    return None  # INFO renamed or denied (some managed Redis): cannot tell
        except BaseException:
            self._drop_connection()
            raise

    def send(self, topic: str, event_id: uuid.UUID) -> None:
        self._send([(topic, str(event_id))])

    def send_many(self, messages: Sequence[tuple[str, uuid.UUID]]) -> None:
        self._send(grouped(messages))

    def _send(self, messages: Sequence[tuple[str, str | list[str]]]) -> None:
        try:
            connection = self._connect()
            with (
                self._app.amqp.Producer(connection) as producer,
                producer.batch(max_size=PIPELINE_SIZE),
            ):
                for topic, event_ids in messages:
                    route = topics.route(topic)
                    self._app.send_task(
                        route.task_name,
                        args=[event_ids],
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
