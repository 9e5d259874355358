"""Conversation memory's decisions (no I/O): new input, search, compression, the store bounds.

In: histories built by hand. Asserted: a resent conversation is not counted twice while a
repeated question still is new; recent recall stays contiguous within the budget; relevance
ranks by BM25 and always keeps the latest turn; summarize folds only past the budget and down
to half of it, never the latest turn; token estimates count non-ASCII text per character;
conversation keys separate consumers; the in-process store's seqs, folds (compare-and-set),
TTL and least-recently-used bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from agentspec_runtime.adapters.memory_store import InMemoryStore
from agentspec_runtime.engine import memory as mem
from agentspec_runtime.engine.types import Message
from agentspec_runtime.spec.agent import MemorySpec


def turn(seq: int, question: str, answer: str, tokens: int = 10) -> mem.Turn:
    return mem.Turn(
        seq,
        ({"role": "user", "content": question}, {"role": "assistant", "content": answer}),
        tokens,
    )


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def spec(**memory: object) -> MemorySpec:
    return MemorySpec.model_validate(memory)


HISTORY = mem.History(None, (turn(1, "hi", "hello"), turn(2, "leave days?", "25 days")))


@pytest.mark.parametrize(
    ("sent", "new"),
    [
        ([user("and parking?")], [user("and parking?")]),
        # the whole conversation resent, OpenAI style
        (
            [user("hi"), assistant("hello"), user("leave days?"), assistant("25 days"), user("x")],
            [user("x")],
        ),
        # only the tail resent
        ([user("leave days?"), assistant("25 days"), user("x")], [user("x")]),
        # older turns (folded into a summary, no longer stored) resent as well
        (
            [
                user("first"),
                assistant("one"),
                user("hi"),
                assistant("hello"),
                user("leave days?"),
                assistant("25 days"),
                user("x"),
            ],
            [user("x")],
        ),
        # the same question again is new, not a repeat of the stored one
        ([user("leave days?")], [user("leave days?")]),
        # a history that does not end with what is stored is all new
        ([user("hi"), assistant("something else"), user("x")], None),
    ],
)
def test_new_input_drops_what_memory_already_holds(
    sent: list[Message], new: list[Message] | None
) -> None:
    assert mem.new_input(HISTORY, sent) == (sent if new is None else new)


def test_recent_recall_is_the_latest_turns_within_limit_and_budget() -> None:
    history = mem.History(None, tuple(turn(i, f"q{i}", f"a{i}", tokens=100) for i in range(1, 8)))
    recalled = mem.recall(history, question="q", spec=spec(search={"limit": 3}))
    assert [t.seq for t in recalled] == [5, 6, 7]
    budget = spec(compression={"maxTokens": 250}, search={"limit": 5})
    assert [t.seq for t in mem.recall(history, question="q", spec=budget)] == [6, 7]
    unbounded = spec(compression={"strategy": "none", "maxTokens": 128}, search={"limit": 5})
    assert [t.seq for t in mem.recall(history, question="q", spec=unbounded)] == [3, 4, 5, 6, 7]


def test_recent_recall_does_not_skip_over_a_turn_too_large() -> None:
    history = mem.History(
        None, (turn(1, "a", "b", 50), turn(2, "big", "big", 500), turn(3, "c", "d", 50))
    )
    recalled = mem.recall(history, question="q", spec=spec(compression={"maxTokens": 200}))
    assert [t.seq for t in recalled] == [3]


def test_the_summary_counts_against_the_budget() -> None:
    summary = mem.Summary("earlier", through=2, tokens=150)
    history = mem.History(summary, tuple(turn(i, "q", "a", 100) for i in range(3, 6)))
    recalled = mem.recall(history, question="q", spec=spec(compression={"maxTokens": 300}))
    assert [t.seq for t in recalled] == [5]


def test_relevance_ranks_turns_by_their_words_and_keeps_the_latest() -> None:
    history = mem.History(
        None,
        (
            turn(1, "Where do I park my bike?", "Bike parking is in the basement, level -1."),
            turn(2, "How many leave days do I get?", "25 leave days a year."),
            turn(3, "What is the canteen menu?", "Soup and bread."),
            turn(4, "Who approves travel expenses?", "Your manager approves travel expenses."),
            turn(5, "Thanks!", "You are welcome."),
        ),
    )
    relevance = spec(search={"strategy": "relevance", "limit": 2})
    recalled = mem.recall(history, question="and the bike parking hours?", spec=relevance)
    assert [t.seq for t in recalled] == [1, 5]
    three = spec(search={"strategy": "relevance", "limit": 3})
    recalled = mem.recall(history, question="travel expenses and leave days", spec=three)
    assert [t.seq for t in recalled] == [2, 4, 5]
    # nothing in common: only the latest turn
    assert [t.seq for t in mem.recall(history, question="zebra", spec=three)] == [5]


def test_summarize_folds_past_the_budget_down_to_half_never_the_latest_turn() -> None:
    summarize = spec(compression={"strategy": "summarize", "maxTokens": 1000})
    small = mem.History(None, tuple(turn(i, "q", "a", 200) for i in range(1, 6)))  # 1000
    assert mem.to_fold(small, spec=summarize) == []
    big = mem.History(None, tuple(turn(i, "q", "a", 200) for i in range(1, 7)))  # 1200
    assert [t.seq for t in mem.to_fold(big, spec=summarize)] == [1, 2, 3, 4]
    huge = mem.History(None, (turn(1, "q", "a", 200), turn(2, "q", "a", 5000)))
    assert [t.seq for t in mem.to_fold(huge, spec=summarize)] == [1]
    assert mem.to_fold(big, spec=spec(compression={"maxTokens": 1000})) == []  # truncate


def test_summary_request_carries_the_previous_summary_and_the_folded_turns() -> None:
    messages = mem.summary_request(
        mem.Summary("User is Ada.", 1, 5), [turn(2, "leave days?", "25 days")]
    )
    assert messages[0] == {"role": "system", "content": mem.SUMMARY_INSTRUCTIONS}
    assert messages[1]["content"] == (
        "Earlier summary: User is Ada.\nuser: leave days?\nassistant: 25 days"
    )
    prompt = mem.with_summary("You are HR.", mem.Summary("User is Ada.", 1, 5))
    assert prompt == f"You are HR.\n\n{mem.SUMMARY_PREFIX}\nUser is Ada."


def test_token_estimate_counts_ascii_by_four_and_other_text_per_character() -> None:
    assert mem.estimate_tokens([user("a" * 40)]) == 4 + 10
    assert mem.estimate_tokens([user("请问我有多少天年假")]) == 4 + 9
    parts: Message = {"role": "user", "content": [{"type": "text", "text": "abcd"}]}
    assert mem.estimate_tokens([parts]) == 5


def test_remembered_keeps_user_and_assistant_text_only() -> None:
    sent: Sequence[Message] = [
        user("q"),
        {"role": "tool", "tool_call_id": "1", "content": "result"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        user(""),
    ]
    assert mem.remembered(sent, "answer") == [user("q"), assistant("answer")]


def test_conversation_keys_separate_agents_consumers_and_contexts() -> None:
    def key(**kw: str | None) -> str:
        args = {"namespace": "ns", "agent": "hr", "consumer": None, "context_id": "c1", **kw}
        return mem.conversation_key(**args)  # type: ignore[arg-type]

    keys = {
        key(),
        key(consumer="team-a"),
        key(consumer="team-b"),
        key(agent="finance"),
        key(namespace="other"),
        key(context_id="c2"),
        key(consumer="a", context_id="b"),
        key(consumer='a", "b', context_id=""),
    }
    assert len(keys) == 8
    assert key(consumer="") == key(consumer=None)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_in_process_store_appends_folds_and_expires() -> None:
    clock = Clock()
    store = InMemoryStore(clock=clock)
    for i in range(3):
        await store.append("k", [user(f"q{i}"), assistant(f"a{i}")], tokens=7, ttl=60)
    history = await store.load("k")
    assert [t.seq for t in history.turns] == [1, 2, 3]
    assert history.turns[0].messages == (user("q0"), assistant("a0"))

    summary = mem.Summary("s", through=2, tokens=3)
    assert await store.fold("k", summary, after=0, ttl=60)
    assert not await store.fold("k", mem.Summary("late", 2, 3), after=0, ttl=60)  # superseded
    history = await store.load("k")
    assert history.summary == summary
    assert [t.seq for t in history.turns] == [3]
    await store.append("k", [user("q3"), assistant("a3")], tokens=7, ttl=60)
    assert [t.seq for t in (await store.load("k")).turns] == [3, 4]  # seqs never reused

    clock.now += 61
    assert await store.load("k") == mem.History(None, ())
    assert len(store) == 0


async def test_in_process_store_forgets_the_least_recently_used_conversation() -> None:
    store = InMemoryStore(max_conversations=2)
    await store.append("a", [user("1")], tokens=1, ttl=60)
    await store.append("b", [user("2")], tokens=1, ttl=60)
    await store.append("a", [user("3")], tokens=1, ttl=60)  # a is now the most recent
    await store.append("c", [user("4")], tokens=1, ttl=60)
    assert (await store.load("b")).turns == ()
    assert len((await store.load("a")).turns) == 2
    assert len((await store.load("c")).turns) == 1


async def test_in_process_store_keeps_at_most_max_turns() -> None:
    store = InMemoryStore()
    for i in range(mem.MAX_TURNS + 5):
        await store.append("k", [user(str(i))], tokens=1, ttl=60)
    turns = (await store.load("k")).turns
    assert len(turns) == mem.MAX_TURNS
    assert turns[0].seq == 6


def test_relevance_finds_chinese_text_by_character_pairs() -> None:
    history = mem.History(
        None,
        (
            turn(1, "我的年假有多少天?", "每年二十五天年假。"),
            turn(2, "差旅费用怎么报销?", "经理审批后报销。"),
            turn(3, "谢谢", "不客气"),
        ),
    )
    relevance = spec(search={"strategy": "relevance", "limit": 2})
    recalled = mem.recall(history, question="年假可以延期吗?", spec=relevance)
    assert [t.seq for t in recalled] == [1, 3]


def test_only_recent_search_without_summaries_loads_just_the_latest_turns() -> None:
    assert mem.turns_needed(spec(search={"limit": 7})) == 7
    assert mem.turns_needed(spec(search={"strategy": "relevance"})) is None
    assert mem.turns_needed(spec(compression={"strategy": "summarize"})) is None


async def test_in_process_store_loads_the_last_turns_only_when_asked() -> None:
    store = InMemoryStore()
    for i in range(5):
        await store.append("k", [user(str(i))], tokens=1, ttl=60)
    assert [t.seq for t in (await store.load("k", last=2)).turns] == [4, 5]
    assert [t.seq for t in (await store.load("k", last=9)).turns] == [1, 2, 3, 4, 5]
