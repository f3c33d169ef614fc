"""The background worker that answers accepted inbound messages, resuming any left pending.

It claims one message at a time from the store (several replicas may run it: a claim is a
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

from chatms.config import InboundSettings
from chatms.domain.errors import Unavailable
from chatms.service.inbound import InboundService, Retry
from chatms.service.ports import ClaimLost, InboundJob, SendFailed

log = logging.getLogger("chatms.inbound")

# Told why an answer was given up on: "refused" (the provider said no) or "deadline".
UndeliveredObserver = Callable[[str], None]


def _name(job: InboundJob) -> str:
    """How log lines name a job: channel and message id, never its text."""
    return f"{job.channel} message {job.message_id}"


class InboundWorker:
    def __init__(
        self,
        service: InboundService,
        settings: InboundSettings,
        on_undelivered: UndeliveredObserver | None = None,
    ) -> None:
        self.service = service
        self.on_undelivered = on_undelivered
        self.store = service.store
        self.channels = service.bursts  # each channel with its burst rule
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="inbound-worker")

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
        await self.service.close()

    async def _run(self) -> None:
        arrived = self.service.arrived
        while not self._stopping:
            arrived.clear()
            try:
                await self._claim_what_fits()
            except Unavailable as exc:  # the database is away: try again at the next poll
                log.warning("inbound claim failed: %s", exc)
            except Exception:
                # A bug: said in full, and the loop goes on (one bad row must not stop all).
                log.exception("inbound claim failed unexpectedly")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_seconds):
                    await arrived.wait()

    async def _claim_what_fits(self) -> None:
        while len(self._tasks) < self.settings.concurrency and not self._stopping:
            job = await self.store.claim(
                self.channels, str(uuid.uuid4()), self.settings.claim_seconds
            )
            if job is None:
                return
            task = asyncio.create_task(self._handle(job))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.service.arrived.set()  # the sender's next message may be claimable now

    async def _handle(self, job: InboundJob) -> None:
        work = asyncio.create_task(self._process(job))
        beat = asyncio.create_task(self._heartbeat(job, work))
        try:
            await work
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is None or not me.cancelling():
                return  # the heartbeat stopped a job whose claim was lost
            # Shutdown: hand the job back now rather than when its claim lapses.
            await asyncio.shield(self._give_back(job, 0.0, "interrupted by shutdown", False))
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)

    async def _heartbeat(self, job: InboundJob, work: asyncio.Task[None]) -> None:
        """Renew the claim while the job runs; cancel the job if the claim was lost."""
        while True:
            await asyncio.sleep(self.settings.claim_seconds / 3)
            try:
                kept = await self.store.renew(job, self.settings.claim_seconds)
            except Unavailable as exc:
                log.warning("%s: claim renewal failed: %s", _name(job), exc)
                continue
            if not kept:
                log.warning("%s: claim lost; stopping", _name(job))
                work.cancel()
                return

    async def _process(self, job: InboundJob) -> None:
        try:
            await self.service.process(job)
        except Retry as retry:
            log.info("%s: %s", _name(job), retry)
            await self._record(job, str(retry), retry.delay, retry.failure)
        except SendFailed as exc:
            log.error("%s refused by the provider: %s", _name(job), exc)
            await self._record(job, str(exc), None, True)
        except ClaimLost:
            log.warning("%s: claim lost", _name(job))
        except Unavailable as exc:
            log.warning("%s: %s", _name(job), exc)
            await self._record(job, str(exc), self.settings.backoff(job.failures + 1), True)
        except Exception as exc:
            # Last resort for a bug: the whole traceback goes to the log (exceptions here
            # carry no message text) and the failure is recorded on the job, never dropped.
            log.exception("%s failed", _name(job))
            error = f"{type(exc).__name__}: {exc}"[:500]
            await self._record(job, error, self.settings.backoff(job.failures + 1), True)
        else:
            log.info("%s answered in %d part(s)", _name(job), len(job.parts or []))

    async def _record(
        self, job: InboundJob, error: str, retry_in: float | None, failure: bool
    ) -> None:
        """Try again after `retry_in` seconds while the delivery deadline allows; else (or
        when `retry_in` is None) record the message as failed and tell the observer."""
        settings = self.settings
        left = job.seconds_left(settings.delivery_deadline)
        if retry_in is not None and left > 0:
            delay = min(retry_in, settings.retry_max_seconds, left)
            await self._give_back(job, delay, error, failure)
            return
        if retry_in is not None:
            error = f"not delivered within {settings.delivery_deadline:g}s: {error}"
            log.error("%s: delivery deadline passed", _name(job))
        try:
            await self.store.fail(job, error[:500])
        except Unavailable:
            log.warning("%s: its failure was not recorded (database unavailable); its claim"
                        " will lapse and it will be retried", _name(job))
            return
        if self.on_undelivered is not None:
            self.on_undelivered("refused" if retry_in is None else "deadline")

    async def _give_back(self, job: InboundJob, delay: float, error: str, failure: bool) -> None:
        try:
            await self.store.reschedule(job, delay, error, failure)
        except Unavailable:
            log.warning("%s not given back (database unavailable); its claim will lapse"
                        " and it will be retried", _name(job))
