"""The small interfaces the use cases need; adapters implement them and are handed in.

Every port is importable from here: `from chatms.service.ports import ChatRepository`.
"""

from chatms.domain.model import Message
from chatms.service.ports.chats import (
    ChatDetail,
    ChatPage,
    ChatRepository,
    ChatSummary,
    CompletionClient,
    ContextStore,
    Finished,
    Lease,
    StoredMessage,
    StoredSummary,
    TokenCounter,
    UpstreamEvent,
    WholeAnswer,
    WholeCompletionClient,
)
from chatms.service.ports.inbound import (
    Answer,
    ClaimLost,
    InboundJob,
    InboundMessage,
    InboundStore,
    MessageSender,
    SendFailed,
)

# Re-exported so that callers of the service need not reach into the domain package.
__all__ = [
    "Answer",
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
    "Message",
    "MessageSender",
    "SendFailed",
    "StoredMessage",
    "StoredSummary",
    "TokenCounter",
    "UpstreamEvent",
    "WholeAnswer",
    "WholeCompletionClient",
]
