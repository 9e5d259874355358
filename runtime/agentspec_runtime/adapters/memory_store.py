"""Conversation memory in this process (local mode, or an agent with one replica).

Bounded: at most ``max_conversations`` conversations (the least recently used goes first) of
at most ``MAX_TURNS`` turns each, and a conversation unused for its ``ttl`` is forgotten. All
operations are synchronous under the hood (no await inside), so concurrent requests of one
event loop see each other's writes in order without locks.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from agentspec_runtime.engine.memory import MAX_TURNS, History, Summary, Turn
from agentspec_runtime.engine.types import Message

MAX_CONVERSATIONS = 10_000


@dataclass
class _Conversation:
    turns: deque[Turn] = field(default_factory=lambda: deque(maxlen=MAX_TURNS))
    summary: Summary | None = None
    seq: int = 0
    expires: float = 0.0


class InMemoryStore:
    def __init__(
        self,
        *,
        max_conversations: int = MAX_CONVERSATIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._conversations: OrderedDict[str, _Conversation] = OrderedDict()
        self._max = max_conversations
        self._clock = clock

    @property
    def location(self) -> str:
        return "in-process"

    def __len__(self) -> int:
        return len(self._conversations)

    def _get(self, key: str) -> _Conversation | None:
        conversation = self._conversations.get(key)
        if conversation is not None and conversation.expires <= self._clock():
            del self._conversations[key]
            return None
        return conversation

    def _touch(self, key: str, conversation: _Conversation, ttl: int) -> None:
        conversation.expires = self._clock() + ttl
        self._conversations[key] = conversation
        self._conversations.move_to_end(key)
        while len(self._conversations) > self._max:
            self._conversations.popitem(last=False)

    async def load(self, key: str, *, last: int | None = None) -> History:
        conversation = self._get(key)
        if conversation is None:
            return History(None, ())
        turns = conversation.turns
        skip = max(0, len(turns) - last) if last is not None else 0
        return History(conversation.summary, tuple(itertools.islice(turns, skip, None)))

    async def append(self, key: str, messages: Sequence[Message], *, tokens: int, ttl: int) -> None:
        conversation = self._get(key) or _Conversation()
        conversation.seq += 1
        conversation.turns.append(Turn(conversation.seq, tuple(messages), tokens))
        self._touch(key, conversation, ttl)

    async def fold(self, key: str, summary: Summary, *, after: int, ttl: int) -> bool:
        conversation = self._get(key)
        if conversation is None:
            return False
        current = conversation.summary.through if conversation.summary else 0
        if current != after:
            return False
        while conversation.turns and conversation.turns[0].seq <= summary.through:
            conversation.turns.popleft()
        conversation.summary = summary
        self._touch(key, conversation, ttl)
        return True

    async def aclose(self) -> None:
        self._conversations.clear()
