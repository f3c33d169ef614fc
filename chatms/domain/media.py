"""Media that came with a user message: what is kept of it, and what one turn sends. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

VOICE = "voice"
PHOTO = "image"


@dataclass(frozen=True, slots=True)
class Attachment:
    """Stored beside the user message: where its text came from (never the media's bytes)."""

    kind: str  # VOICE (the text is its transcript) or PHOTO (the text is its placeholder)
    content_type: str
    size: int  # bytes
    ref: str  # the provider's media id, e.g. Twilio's ME... sid
    seconds: float | None = None  # a voice note's duration, when the transcriber said

    def as_json(self) -> dict[str, object]:
        data: dict[str, object] = {"kind": self.kind, "content_type": self.content_type,
                                   "size": self.size, "ref": self.ref}
        if self.seconds is not None:
            data["seconds"] = self.seconds
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Attachment:
        seconds = data.get("seconds")
        return cls(str(data["kind"]), str(data["content_type"]), int(str(data["size"])),
                   str(data["ref"]), float(str(seconds)) if seconds is not None else None)


@dataclass(frozen=True, slots=True)
class ImageInput:
    """A photo sent with one turn only: later turns see its placeholder text instead."""

    data_url: str
    tokens: int  # its prompt cost for the chat's model


@dataclass(frozen=True, slots=True)
class UserInput:
    """One turn's user message as read from a channel: text, and what came with it."""

    text: str  # stored, and what later turns see
    question: str  # what this turn asks the model in words (the text, or a default question)
    attachments: tuple[Attachment, ...] = ()
    images: tuple[ImageInput, ...] = ()
