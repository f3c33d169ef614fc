"""The small interfaces the use cases need; adapters implement them and are handed in.

Every port is importable from here: `from chatms.service.ports import ChatRepository`.
"""

from chatms.domain.model import Message
from chatms.service.ports.chats import (
    AnswerState,
    ChatDetail,
    ChatPage,
    ChatRepository,
    ChatSummary,
    CompletionClient,
    ContextStore,
    Finished,
    Lease,
    Progress,
    Signal,
    StoredMessage,
    StoredSummary,
    TokenCounter,
    TurnSignals,
    UpstreamEvent,
    WholeAnswer,
    WholeCompletionClient,
)
from chatms.service.ports.inbound import (
    Answer,
    BurstRule,
    ClaimLost,
    InboundJob,
    InboundMessage,
    InboundStore,
    MessageSender,
    Received,
    SendFailed,
)
from chatms.service.ports.limits import UsageStore
from chatms.service.ports.media import Media, MediaFetcher, Transcriber, Transcript

# Re-exported so that callers of the service need not reach into the domain package.
__all__ = [
    "Answer",
    "AnswerState",
    "BurstRule",
    "ChatDetail",
    "ChatPage",
    "ChatRepository",
    "ChatSummary",
    "ClaimLost",
    "CompletionClient",
    "ContextStore",
    "Finished",
    "InboundJob",
    "InboundMessage",
    "InboundStore",
    "Lease",
    "Media",
    "MediaFetcher",
    "Message",
    "MessageSender",
    "Progress",
    "Received",
    "SendFailed",
    "Signal",
    "StoredMessage",
    "StoredSummary",
    "TokenCounter",
    "Transcriber",
    "Transcript",
    "TurnSignals",
    "UpstreamEvent",
    "UsageStore",
    "WholeAnswer",
    "WholeCompletionClient",
]
