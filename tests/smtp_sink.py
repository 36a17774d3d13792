"""A real SMTP server for tests and benchmarks: aiosmtpd on 127.0.0.1, a free port, its own
thread. It keeps every message it accepted (parsed), and can refuse the next replies with a
chosen code or hold transactions at RCPT (before any content is sent) until released, to
play a slow or failing relay.

    with SmtpSink() as sink:
        settings = settings.model_copy(update={"SMTP_HOST": sink.host, "SMTP_PORT": sink.port})
        ...
        sink.wait_for(1)
        assert sink.messages[0]["To"] == "a@example.org"
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class _FreePortController(Controller):
    """Binds port 0 and learns the port the kernel chose: no race with another test's bind."""

    def _create_server(self) -> Any:
        async def create() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return create()


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(  # noqa: N802 (aiosmtpd's hook names)
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # Held before the message is sent at all: a client that dies here never handed it
        # over, as with any SMTP server (a hold after DATA would be a message a real server
        # may already have taken). Hanging up cancels this coroutine (aiosmtpd cancels the
        # connection's handler).
        await self._sink._wait_if_held()
        refusal = self._sink._take_refusal()
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(  # noqa: N802
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        refusal = self._sink._take_refusal()
        if refusal is not None:
            return refusal
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self._sink._accept(parsed)
        return "250 OK"


class SmtpSink:
    host: str
    port: int
    messages: list[EmailMessage]

    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.messages = []
        self._lock = threading.Condition()
        self._refusals: list[str] = []
        self._hold = False
        self._held = 0
        self._released: asyncio.Event | None = None
        self._controller: _FreePortController | None = None

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        assert self._controller is None, "already started"
        controller = _FreePortController(
            # A fixed greeting name: aiosmtpd would otherwise ask DNS for this host's FQDN.
            _Handler(self),
            hostname=self.host,
            port=0,
            server_hostname="smtp-sink.test",
        )
        controller.start()
        self._controller = controller
        self.port = controller.port

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()  # cancels held transactions: they were never accepted

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # Behaviour ------------------------------------------------------------------------------

    def refuse_next(self, n: int, code: int = 451, text: str = "4.3.0 Try again later") -> None:
        """The next n RCPT (or DATA) replies are `code text`."""
        with self._lock:
            self._refusals.extend([f"{code} {text}"] * n)

    def hold(self) -> None:
        """From now on, each new transaction waits at RCPT (content not yet sent) for release()."""
        with self._lock:
            self._hold = True

    def release(self) -> None:
        with self._lock:
            self._hold = False
            # Transactions held from now on (after another hold()) wait on a new event.
            released, self._released = self._released, None
        if released is not None and self._controller is not None:
            self._controller.loop.call_soon_threadsafe(released.set)

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Until at least `count` messages were accepted; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(self.messages)} of {count} messages arrived in {timeout}s"
                    )
                self._lock.wait(remaining)

    def wait_held(self, count: int, timeout: float = 30.0) -> None:
        """Until exactly `count` transactions are held at RCPT; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._held != count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{self._held} of {count} held in {timeout}s")
                self._lock.wait(remaining)

    def held_count(self) -> int:
        """Transactions currently waiting at RCPT because of hold()."""
        with self._lock:
            return self._held

    # Called on the server's loop ---------------------------------------------------------------

    def _take_refusal(self) -> str | None:
        with self._lock:
            return self._refusals.pop(0) if self._refusals else None

    async def _wait_if_held(self) -> None:
        with self._lock:
            if not self._hold:
                return
            if self._released is None:
                self._released = asyncio.Event()
            released = self._released
            self._held += 1
            self._lock.notify_all()
        try:
            await released.wait()
        finally:
            with self._lock:
                self._held -= 1
                self._lock.notify_all()

    def _accept(self, message: EmailMessage) -> None:
        with self._lock:
            self.messages.append(message)
            self._lock.notify_all()
