"""The hand-built ChatResponse bytes equal what the generated message class serializes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from chatms.entrypoints.grpc_codec import ChatResponseEncoder
from chatms.protogen.pb import ChatResponse


@given(chat_id=st.text(max_size=40), user_id=st.text(max_size=300),
       content=st.text(max_size=3000), position=st.integers(0, 2**31 - 1))
def test_bytes_match_the_generated_class(
    chat_id: str, user_id: str, content: str, position: int
) -> None:
    """For any field values, including empty ones and multi-byte lengths, the bytes agree."""
    expected = bytes(ChatResponse(chat_id=chat_id, user_id=user_id, content=content,
                                  position=position))
    assert ChatResponseEncoder(chat_id, user_id).encode(content, position) == expected
