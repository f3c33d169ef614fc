"""The background worker that answers accepted WhatsApp messages, resuming any left pending.

It claims one message at a time from PostgreSQL (several replicas may run it: a claim is a
lease, renewed while its holder works and lapsing when the holder dies) and processes up to
`concurrency` messages of different senders at once; a sender's messages go one after the
other, oldest first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable

from chatms.config import WhatsAppSettings
from chatms.service.whatsapp import ClaimLost, Job, Retry, SendFailed, WhatsAppService

log = logging.getLogger("chatms.whatsapp")

# Told why an answer was given up on: "refused" (Twilio said no) or "deadline".
UndeliveredObserver = Callable[[str], None]


class WhatsAppWorker:
    def __init__(
        self,
        service: WhatsAppService,
        settings: WhatsAppSettings,
        on_undelivered: UndeliveredObserver | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.on_undelivered = on_undelivered
        self.claim_seconds = settings.claim_seconds
        self.concurrency = settings.concurrency
        self.poll_seconds = settings.poll_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="whatsapp-worker")

    async def stop(self, grace: float) -> None:
        """Claim nothing more; give jobs in flight `grace` seconds, then cancel them.

        A cancelled job keeps its row: its claim lapses and the next start picks it up.
        """
        self._stopping = True
        self.service.arrived.set()
        if self._loop_task is not None:
            # The claim loop stops at its next turn; a claim stuck on the database does not
            # hold up the shutdown beyond the grace period.
            done, _ = await asyncio.wait({self._loop_task}, timeout=grace)
            if not done:
                self._loop_task.cancel()
                await asyncio.gather(self._loop_task, return_exceptions=True)
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _run(self) -> None:
        arrived = self.service.arrived
        while not self._stopping:
            arrived.clear()
            try:
                while len(self._tasks) < self.concurrency and not self._stopping:
                    job = await self.service.store.claim(str(uuid.uuid4()), self.claim_seconds)
                    if job is None:
                        break
                    task = asyncio.create_task(self._handle(job))
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except Exception as exc:  # the database is away: try again at the next poll
                log.warning("whatsapp claim failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await arrived.wait()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.service.arrived.set()  # the sender's next message may be claimable now

    async def _handle(self, job: Job) -> None:
        work = asyncio.create_task(self._process(job))
        beat = asyncio.create_task(self._heartbeat(job, work))
        try:
            await work
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or not me.cancelling():
                return  # the heartbeat stopped a job whose claim was lost
            # Shutdown: hand the job back now rather than when its claim lapses.
            await asyncio.shield(self._release(job))
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def _release(self, job: Job) -> None:
        try:
            await self.service.store.reschedule(job, 0.0, "interrupted by shutdown", False)
        except Exception as exc:
            log.warning("whatsapp message %s not released (%s); its claim will lapse",
                        job.message_sid, type(exc).__name__)

    async def _heartbeat(self, job: Job, work: asyncio.Task[None]) -> None:
        """Renew the claim while the job runs; cancel the job if the claim was lost."""
        while True:
            await asyncio.sleep(self.claim_seconds / 3)
            try:
                kept = await self.service.store.renew(
                    job.message_sid, job.token, self.claim_seconds
                )
            except Exception as exc:
                log.warning("whatsapp claim renewal failed: %s", type(exc).__name__)
                continue
            if not kept:
                log.warning("whatsapp message %s: claim lost; stopping", job.message_sid)
                work.cancel()
                return

    async def _process(self, job: Job) -> None:
        try:
            await self.service.process(job)
        except Retry as retry:
            log.info("whatsapp message %s: %s", job.message_sid, retry)
            await self._record(job, str(retry), retry.delay, retry.failure)
        except SendFailed as exc:
            log.error("whatsapp message %s refused by Twilio: %s", job.message_sid, exc)
            await self._record(job, str(exc), None, True)
        except ClaimLost:
            log.warning("whatsapp message %s: claim lost", job.message_sid)
        except Exception as exc:
            # A bug or an outage: recorded on the row and retried, never dropped silently.
            log.exception("whatsapp message %s failed", job.message_sid)
            error = f"{type(exc).__name__}: {exc}"[:500]
            await self._record(job, error, self.settings.backoff(job.failures + 1), True)
        else:
            log.info("whatsapp message %s answered in %d part(s)", job.message_sid,
                     len(job.parts or []))

    async def _record(self, job: Job, error: str, retry_in: float | None, failure: bool) -> None:
        """Try again after `retry_in` seconds while the delivery deadline allows; else (or
        when `retry_in` is None) record the message as failed and tell the observer."""
        settings, store = self.settings, self.service.store
        left = job.seconds_left(settings.delivery_deadline)
        try:
            if retry_in is not None and left > 0:
                delay = min(retry_in, settings.retry_max_seconds, left)
                await store.reschedule(job, delay, error, failure)
                return
            if retry_in is not None:
                error = f"not delivered within {settings.delivery_deadline:g}s: {error}"
                log.error("whatsapp message %s: delivery deadline passed", job.message_sid)
            await store.fail(job, error[:500])
        except Exception as again:
            log.warning("whatsapp message %s: recording the failure failed (%s); its claim"
                        " will lapse and it will be retried", job.message_sid,
                        type(again).__name__)
            return
        if self.on_undelivered is not None:
            self.on_undelivered("refused" if retry_in is None else "deadline")
