"""Multi-turn conversations: each turn sends the conversation so far plus a new user message."""

from __future__ import annotations

import random
from typing import Any

from .calls import CallSpec
from .dialects import DIALECTS
from .prompts import make_prompt


class Conversation:
    """One user's session with one model: its history, in the dialect's own message shape."""

    def __init__(self, session_id: str, turns: int, server_state: bool = False) -> None:
        self.session_id = session_id
        self.turns = turns
        self.turn = 0
        self.history: list[tuple[str, str]] = []  # (user|assistant, text)
        self.server_state = server_state  # go on by the last response's id where the dialect can
        self.last_response_id: str | None = None

    @property
    def done(self) -> bool:
        """Whether every turn has been sent."""
        return self.turn >= self.turns

    def messages(self, endpoint: str) -> list[dict[str, Any]]:
        """The conversation so far as the dialect wants it."""
        return DIALECTS[endpoint].messages(self.history)

    def next_turn(self, spec: CallSpec, rng: random.Random) -> CallSpec:
        """Turn `spec` (a fresh call of the mix) into the next turn of this conversation."""
        self.turn += 1
        self.history.append(("user", spec.prompt or make_prompt(rng, max(1, spec.prompt_words))))
        dialect = DIALECTS[spec.endpoint]
        if self.server_state and self.last_response_id and getattr(dialect, "CONTINUES_BY_ID", False):
            spec.previous_response_id = self.last_response_id
            spec.messages = dialect.messages(self.history[-1:])  # only the new message: the rest is server-side
        else:
            spec.messages = self.messages(spec.endpoint)
        spec.session_id = self.session_id
        spec.turn = self.turn
        return spec

    def answer(self, text: str | None, response_id: str | None = None) -> None:
        """Add the assistant's answer (or a placeholder when the turn failed) to the history."""
        self.history.append(("assistant", text or "(no answer)"))
        self.last_response_id = response_id or None
