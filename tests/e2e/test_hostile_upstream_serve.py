"""A real `chatms serve` against a hostile upstream: it never dies, stays ready within a
second, holds its memory, and ends every turn cleanly with what fits stored."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import httpx
import psutil

from tests.e2e.test_operations import fetch
from tests.fakes.openai import FakeOpenAI, Script
from tests.support import AUTH_TOKEN, ServeProcess, grpcio_stubs, new_user

MB = 1024 * 1024
MARKER = "hostile-question-7c1d"


@dataclass
class Probe:
    """Polls /readyz and samples the process's memory on a thread until stopped."""

    proc: ServeProcess
    latencies: list[float] = field(default_factory=list)
    statuses: set[int] = field(default_factory=set)
    peak_rss: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        assert self.proc.proc is not None
        ps = psutil.Process(self.proc.proc.pid)
        with httpx.Client(timeout=10) as http:
            while True:
                self.peak_rss = max(self.peak_rss, ps.memory_info().rss)
                started = time.monotonic()
                try:
                    self.statuses.add(http.get(self.proc.http_url + "/readyz").status_code)
                except httpx.HTTPError:
                    self.statuses.add(0)
                self.latencies.append(time.monotonic() - started)
                if self.stop.wait(0.05):
                    return


def turn(
    proc: ServeProcess, user: str, text: str, chat_id: str | None = None
) -> tuple[grpc.StatusCode, str, str]:
    """One turn in delta mode; (status, the answer as received, the chat id)."""
    pb2, pb2_grpc = grpcio_stubs()
    request = pb2.ChatRequest(user_id=user, user_message=text, delta=True)
    if chat_id is not None:
        request.chat_id = chat_id
    answer: list[str] = []
    chat = chat_id or ""
    with grpc.insecure_channel(proc.grpc_target) as channel:
        call = pb2_grpc.ChatServiceStub(channel).ChatStream(
            request, metadata=(("authorization", AUTH_TOKEN),), timeout=120)
        try:
            for message in call:
                answer.append(message.content)
                chat = message.chat_id
        except grpc.RpcError as exc:
            return exc.code(), "".join(answer), chat
    return grpc.StatusCode.OK, "".join(answer), chat


def test_hostile_upstream_against_a_real_process(
    serve, fake_openai: FakeOpenAI, database_url: str
) -> None:
    proc = serve(MAX_TOKENS="1024")  # so MAX_ANSWER_CHARS defaults to 32 768
    assert proc.proc is not None
    user = new_user()
    code, _, chat_id = turn(proc, user, "hello")
    assert code == grpc.StatusCode.OK
    start_rss = psutil.Process(proc.proc.pid).memory_info().rss
    probe = Probe(proc)
    prober = threading.Thread(target=probe.run, daemon=True)
    prober.start()
    cases = [
        ("40 MB answer", Script(pieces=["x" * 65536] * 640), grpc.StatusCode.OK, "too_long"),
        ("endless fast stream", Script(endless=True, pieces=["y" * 1000], burst=64),
         grpc.StatusCode.OK, "too_long"),
        ("64 MB line without newline", Script(pieces=["so far "], giant_line=64 * MB),
         grpc.StatusCode.UNAVAILABLE, "upstream_error"),
    ]
    try:
        outcomes = []
        for name, script, want_code, want_completion in cases * 3:
            fake_openai.queue(script)
            code, answer, _ = turn(proc, user, f"{MARKER} {name}", chat_id)
            [row] = fetch(database_url, "SELECT content, completion FROM messages"
                          " WHERE chat_id = $1 AND role = 'assistant' ORDER BY seq DESC LIMIT 1",
                          chat_id)
            outcomes.append((name, code, row["completion"], len(answer), len(row["content"])))
            assert (code, row["completion"]) == (want_code, want_completion), outcomes
            assert row["content"] == answer and len(answer) <= 32_768
        # Four at once, each on a chat of its own: the loop must still answer probes.
        for _, script, want_code, _ in cases:
            fake_openai.queue(*[script] * 4)
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda i: turn(proc, new_user(), f"{MARKER} {i}")[0],
                                      range(4)))
            assert codes == [want_code] * 4
    finally:
        probe.stop.set()
        prober.join(10)
    assert proc.proc.poll() is None, proc.log()[-3000:]  # never died
    assert probe.statuses == {200} and max(probe.latencies) < 1.0, max(probe.latencies)
    growth_mb = (probe.peak_rss - start_rss) / MB
    assert growth_mb < 200, growth_mb
    assert turn(proc, user, "still fine?", chat_id)[0] == grpc.StatusCode.OK
    # The database refuses the answer: asyncpg's error quotes the failing row, which must
    # reach no log line.
    fetch(database_url, "ALTER TABLE messages ADD CONSTRAINT hostile_poison"
          " CHECK (content NOT LIKE '%poison-answer%') NOT VALID")
    try:
        fake_openai.queue(Script(pieces=["poison-answer 0815"]))
        refused = turn(proc, user, f"{MARKER} refused store", chat_id)[0]
    finally:
        fetch(database_url, "ALTER TABLE messages DROP CONSTRAINT hostile_poison")
    assert refused == grpc.StatusCode.UNAVAILABLE
    assert turn(proc, user, "free again?", chat_id)[0] == grpc.StatusCode.OK
    assert proc.terminate() == 0
    log = proc.log()
    assert "database refused a statement" in log  # the refusal was logged, without text
    for text in (MARKER, "poison-answer", "x" * 64, "Traceback"):
        assert text not in log
    print(f"hostile upstream: readyz max {max(probe.latencies) * 1000:.0f} ms over "
          f"{len(probe.latencies)} probes, peak memory growth {growth_mb:.0f} MB")
