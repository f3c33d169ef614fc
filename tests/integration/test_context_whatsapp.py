"""Rolling summaries and titles on the WhatsApp door: the same turn, so the same context."""

from __future__ import annotations

from chatms.domain.context import SUMMARY_HEADING
from tests.fakes.openai import FakeOpenAI
from tests.fakes.twilio import FakeTwilio, inbound_form, new_sender
from tests.integration.test_history import unary
from tests.integration.test_whatsapp import deliver, started, twilio_env
from tests.support import until


async def test_a_long_whatsapp_chat_is_summarised_and_titled(
    start_app, fake_twilio: FakeTwilio, fake_openai: FakeOpenAI
) -> None:
    app = await started(start_app, MODEL_MAX_TOKENS="500", MAX_TOKENS="40",
                        **twilio_env(fake_twilio))
    sender = new_sender()

    async def context_jobs_ended() -> bool | None:
        return None if app.chats.context._tasks else True

    for i in range(1, 11):
        text = f"Tell me about topic-{i} " + "with a few more words of padding " * 4
        assert (await deliver(app, inbound_form(sender, text))).status_code == 200
        await fake_twilio.wait_for(sender, i)
        # The turn was stored before its answer was sent, so the summary or title it called
        # for has been started by now: wait until it has ended (stored, or given up).
        await until(context_jobs_ended, "the summary and title jobs of this turn to end", 20)
    [listed] = (await app.chats.chats(sender)).chats
    assert listed.title == "Tell me about topic-1"
    chat = await app.chats.chat(sender, listed.id)
    assert chat.summary is not None and chat.summary.content.startswith("Summary: topic-1")
    assert len(chat.messages) == 2 * 10 and chat.system_message is not None  # the chat's own
    sent = fake_openai.requests[-1].body["messages"]
    assert sent[1]["role"] == "system" and sent[1]["content"].startswith(SUMMARY_HEADING)
    # The gRPC view (read with grpcio) shows the same summary, apart from the messages.
    got = await unary(app, "GetChat", user_id=sender, chat_id=listed.id)
    assert got.HasField("summary") and got.summary.content == chat.summary.content
    assert got.summary.through_seq == chat.summary.through_seq and got.summary.version >= 1
    assert (got.title, got.model, len(got.messages)) == (listed.title, "gpt-4o-mini", 20)
    assert got.HasField("system_message")  # the chat's own, beside its counted messages
