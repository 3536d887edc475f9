"""Conversations, chat sessions, persistence and the terminal chat (built on `generation`)."""
