"""Conversations, chat sessions, persistence and the terminal chat (built on `generation`)."""

from chat.conversation import Conversation, ConversationFileError, Message
from chat.session import ChatSession, EmptyMessageError, MessageTooLongError, load_chat_model

__all__ = ["ChatSession", "Conversation", "ConversationFileError", "EmptyMessageError", "Message",
           "MessageTooLongError", "load_chat_model"]
