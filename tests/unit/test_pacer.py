"""Outbound pacing: each WhatsApp sender number sends at most its rate, others are not held."""

from __future__ import annotations

import asyncio
import itertools
import time

from chatms.service.inbound import Pacer


async def test_sends_of_one_number_are_spaced_and_others_are_not_held() -> None:
    """Sends from one number are at least 1/rate apart; another number's send goes at once."""
    pacer = Pacer(per_second=20)
    loop = asyncio.get_running_loop()
    done: list[tuple[str, float]] = []

    async def send(key: str) -> None:
        await pacer.wait(key)
        done.append((key, loop.time()))

    await asyncio.gather(*(send("whatsapp:+1") for _ in range(4)), send("whatsapp:+2"))
    times = [at for key, at in done if key == "whatsapp:+1"]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3 and all(gap >= 0.05 - 0.01 for gap in gaps), gaps
    assert [key for key, _ in done].index("whatsapp:+2") <= 1


async def test_a_stalled_loop_does_not_let_sends_bunch_up() -> None:
    """Waiters that wake late (the event loop was busy) still leave 1/rate between sends."""
    pacer = Pacer(per_second=20)
    loop = asyncio.get_running_loop()
    done: list[float] = []

    async def send() -> None:
        await pacer.wait("whatsapp:+1")
        done.append(loop.time())

    sends = [asyncio.create_task(send()) for _ in range(3)]
    await asyncio.sleep(0)  # the first goes at once, the others are now asleep in the pacer
    time.sleep(0.2)  # noqa: ASYNC251 -- the loop stalls, on purpose, past both of their turns
    await asyncio.gather(*sends)
    gaps = [b - a for a, b in itertools.pairwise(done)]
    assert len(gaps) == 2 and all(gap >= 0.05 for gap in gaps), gaps
