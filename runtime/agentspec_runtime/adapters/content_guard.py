"""The content guard's checks: RE2 deny patterns, an OpenAI-shaped moderation endpoint and a
guard model (``spec.runtime.guard``).

Patterns are compiled with google-re2: matching is linear in the text, so neither a crafted
pattern nor a crafted answer can make the agent spin (Python's ``re`` backtracks: ``(a+)+b``
against 30 ``a``s takes minutes). Each pattern may use at most ``MAX_PATTERN_MEMORY`` bytes
of automaton. Classifiers are called over HTTP (httpx, no redirects, ``TIMEOUT`` seconds);
any failure to get a verdict — refused connection, timeout, non-2xx, an answer that is not
the expected shape — is ``GuardUnavailableError``, whose handling (closed or open) is the
engine's.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

import httpx
import re2

from agentspec_runtime.engine.errors import ConfigError, GuardUnavailableError
from agentspec_runtime.engine.ports import GuardVerdict
from agentspec_runtime.spec.agent import GuardSpec

from .urls import public_url

log = logging.getLogger(__name__)

TIMEOUT = 10.0
MAX_PATTERN_MEMORY = 8 << 20


def _compile(patterns: list[str]) -> list[Any]:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = MAX_PATTERN_MEMORY
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re2.compile(pattern, options))
        except re2.error as e:
            detail = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
            raise ConfigError(
                f"spec.runtime.guard.denyPatterns[{i}]: not a valid RE2 pattern ({detail}); "
                "RE2 has no backreferences or lookaround"
            ) from e
    return compiled


_REFUSES_THE_TEXT = frozenset({400, 413, 422})
"""Statuses that say the text itself could not be judged (too long, malformed): the text is
flagged, whatever failureMode says (else a long enough text would pass an open guard)."""
_CATEGORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_.-]{0,39}$")


class _UnverifiableError(Exception):
    """The classifier answered, but would not judge this text."""


def _label(category: str) -> str:
    """A category as a metric label and in task metadata: a short, plain word, else
    ``other`` (a classifier's answer must not carry text, nor grow the label set freely)."""
    return category if _CATEGORY.match(category) else "other"


def _bearer(key: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"} if key else {}


class _Classifier:
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.last_error: str | None = None
        self.last_error_at: float | None = None

    def failed(self, why: str) -> GuardUnavailableError:
        self.last_error, self.last_error_at = why, time.time()
        log.warning("content guard: %s at %s failed: %s", self.name, public_url(self.url), why)
        return GuardUnavailableError(f"the content guard's {self.name} check did not answer")

    def status(self) -> dict[str, Any]:
        return {
            "url": public_url(self.url),
            "lastError": self.last_error,
            "lastErrorAt": self.last_error_at,
        }


class HttpContentGuard:
    def __init__(
        self, spec: GuardSpec, *, moderation_key: str | None, model_key: str | None
    ) -> None:
        self._patterns = _compile(spec.deny_patterns)
        self._spec = spec
        self._http = httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)
        self._moderation = (
            _Classifier("moderation", spec.moderation_url) if spec.moderation_url else None
        )
        self._moderation_headers = (
            {"authorization": f"Bearer {moderation_key}"} if moderation_key else {}
        )
        self._model = (
            _Classifier("model", spec.model.base_url.rstrip("/") + "/chat/completions")
            if spec.model
            else None
        )
        self._model_headers = _bearer(model_key)

    def matches(self, text: str, pos: int = 0) -> list[tuple[int, int, int]]:
        found = []
        for i, pattern in enumerate(self._patterns):
            found += [
                (m.start(), m.end(), i) for m in pattern.finditer(text, pos) if m.end() > m.start()
            ]
        return found

    @property
    def classifies(self) -> bool:
        return self._moderation is not None or self._model is not None

    async def classify(
        self, text: str, *, stage: str, context: str | None = None
    ) -> GuardVerdict | None:
        checks = []
        if self._moderation is not None:
            checks.append(self._moderate(self._moderation, text))
        if self._model is not None:
            checks.append(self._ask_model(self._model, text, stage, context))
        # every classifier answers before deciding: one that is down must not hide another's
        # flag (with failureMode open that would let the text through)
        outcomes = await asyncio.gather(*checks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, GuardVerdict) and outcome.flagged:
                return outcome
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return None

    async def _post(
        self, classifier: _Classifier, body: dict[str, Any], headers: dict[str, str]
    ) -> Any:
        try:
            response = await self._http.post(classifier.url, json=body, headers=headers)
        except httpx.HTTPError as e:
            raise classifier.failed(type(e).__name__) from e
        if response.status_code in _REFUSES_THE_TEXT:
            raise _UnverifiableError(f"HTTP {response.status_code}")
        if response.status_code != 200:
            raise classifier.failed(f"HTTP {response.status_code}")
        try:
            return response.json()
        except ValueError as e:
            raise classifier.failed("the answer is not JSON") from e

    async def _moderate(self, classifier: _Classifier, text: str) -> GuardVerdict:
        try:
            data = await self._post(classifier, {"input": text}, self._moderation_headers)
        except _UnverifiableError as e:
            log.info("content guard: the moderation endpoint refused to judge a text (%s)", e)
            return GuardVerdict(True, "moderation", "unverifiable")
        try:
            result = data["results"][0]
            flagged = bool(result["flagged"])
            categories = result.get("categories") or {}
        except (KeyError, IndexError, TypeError) as e:
            raise classifier.failed("the answer is not a moderation result") from e
        category = next((_label(str(c)) for c, on in categories.items() if on is True), "flagged")
        return GuardVerdict(flagged, "moderation", category if flagged else None)

    async def _ask_model(
        self, classifier: _Classifier, text: str, stage: str, context: str | None
    ) -> GuardVerdict:
        assert self._spec.model is not None
        # Llama Guard judges the last turn of a conversation: a question alone (input), or
        # an answer with the question it answers (output)
        messages = [{"role": "user", "content": text}]
        if stage == "output":
            messages = [
                {"role": "user", "content": context or ""},
                {"role": "assistant", "content": text},
            ]
        body = {
            "model": self._spec.model.model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": 20,
        }
        try:
            data = await self._post(classifier, body, self._model_headers)
        except _UnverifiableError as e:
            log.info("content guard: the guard model refused to judge a text (%s)", e)
            return GuardVerdict(True, "model", "unverifiable")
        try:
            answer = str(data["choices"][0]["message"]["content"] or "").strip()
        except (KeyError, IndexError, TypeError) as e:
            raise classifier.failed("the answer is not a chat completion") from e
        words = answer.split()
        if words and words[0].lower() == "safe":
            return GuardVerdict(False, "model")
        if words and words[0].lower() == "unsafe":
            return GuardVerdict(True, "model", _label(words[1]) if len(words) > 1 else "unsafe")
        # a verdict the text talked the model out of giving: not judged, so not passed
        log.info("content guard: the guard model answered neither safe nor unsafe")
        return GuardVerdict(True, "model", "unverifiable")

    def status(self) -> dict[str, Any]:
        return {
            "denyPatterns": len(self._patterns),
            "action": self._spec.action,
            "stages": list(self._spec.stages),
            "failureMode": self._spec.failure_mode,
            "moderation": None if self._moderation is None else self._moderation.status(),
            "model": None if self._model is None else self._model.status(),
        }

    async def aclose(self) -> None:
        await self._http.aclose()


async def build_content_guard(
    spec: GuardSpec, moderation_key: str | None, model_key: str | None
) -> HttpContentGuard:
    return HttpContentGuard(spec, moderation_key=moderation_key, model_key=model_key)
