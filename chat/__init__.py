"""Conversations, chat sessions, persistence and the terminal chat (built on `generation`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm.lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Conversation": "chat.conversation",
    "ConversationFileError": "chat.conversation",
    "Message": "chat.conversation",
    "ChatSession": "chat.session",
    "EmptyMessageError": "chat.session",
    "MessageTooLongError": "chat.session",
    "load_chat_model": "chat.session",
})

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ imports on first use
    from chat.conversation import Conversation, ConversationFileError, Message  # noqa: F401
    from chat.session import ChatSession, EmptyMessageError, MessageTooLongError, load_chat_model  # noqa: F401
