"""Multi-turn conversations: each turn sends the conversation so far plus a new user message."""

from __future__ import annotations

import random
from typing import Any

from .calls import CallSpec
from .prompts import make_prompt


class Conversation:
    """One user's session with one model: its history, in the dialect's own message shape."""

    def __init__(self, session_id: str, turns: int) -> None:
        self.session_id = session_id
        self.turns = turns
        self.turn = 0
        self.history: list[tuple[str, str]] = []  # (user|assistant, text)

    @property
    def done(self) -> bool:
        """Whether every turn has been sent."""
        return self.turn >= self.turns

    def messages(self, endpoint: str) -> list[dict[str, Any]]:
        """The conversation so far as the dialect wants it."""
        if endpoint == "gemini":
            return [{"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]}
                    for role, text in self.history]
        return [{"role": role, "content": text} for role, text in self.history]

    def next_turn(self, spec: CallSpec, rng: random.Random) -> CallSpec:
        """Turn `spec` (a fresh call of the mix) into the next turn of this conversation."""
        self.turn += 1
        self.history.append(("user", spec.prompt or make_prompt(rng, max(1, spec.prompt_words))))
        spec.messages = self.messages(spec.endpoint)
        spec.session_id = self.session_id
        spec.turn = self.turn
        return spec

    def answer(self, text: str | None) -> None:
        """Add the assistant's answer (or a placeholder when the turn failed) to the history."""
        self.history.append(("assistant", text or "(no answer)"))
