"""A prompted LLM as a classifier, behind an OpenAI-compatible API (vLLM, llama.cpp, Ollama, hosted).

The prompt template holds `{text}` and `{labels}` (the declared labels, in order, comma
separated). Three ways to turn the LLM's answer into class probabilities:

* `logprobs` (chat or completions): one request with max_tokens=1 and top_logprobs; each
  label gets the probability of the tokens at the answer position that spell it (" 4" and
  "4" both count for "4"; a token that is a prefix of exactly one label counts for that
  label, so multi-token labels distinguishable by their first token work). A label absent
  from the top-k gets at most the leftover mass (never more than the least likely listed
  token), then the row is renormalised over the labels.
* `sequence` (completions only): each label continuation is scored by its sequence
  log-probability, token by token: the prompt plus the label's text so far is sent again and
  the most likely top-k token that spells the label on is added (steps shared by labels are
  asked once), then a softmax over labels. For multi-token labels that share a first token.
  (Not `echo`: llama-cpp-python 0.3.36 returns echoed prompt logprobs shifted by one position,
  which a test caught; follow-up requests need only top_logprobs, which every server has.)
* `sampling` (for endpoints without logprobs): n answers at the given temperature, each
  mapped onto a label (answers naming no label are counted invalid and left out), and the
  class probabilities are the label frequencies; their standard error sqrt(p(1-p)/n) is
  reported with each explanation. Servers that ignore `n` (llama.cpp's) get follow-up
  calls with shifted seeds.

Transport, retries, timeouts, bounded concurrency, the URL policy and validation come from
`HttpClassifier`; each text is one unit of work (batch_size 1 by default), because the
chat API takes one conversation per request. Calls and tokens go to the open usage meter
(`explainers.classifiers.usage`), so an explanation can bill them to the classifier.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import httpx
import numpy as np

from explainers.classifiers.base import MalformedResponse, check_proba
from explainers.classifiers.http import HttpClassifier, HttpOptions
from explainers.classifiers.usage import current
from explainers.llm_answers import answer_option, first_token_distribution, norm, top_pairs
from explainers.outbound import token_count

Endpoint = Literal["chat", "completions"]
Scoring = Literal["logprobs", "sequence", "sampling"]

DEFAULT_PROMPT = (
    "Classify the text into exactly one of these labels: {labels}.\n"
    "Answer with the label only.\n\nText: {text}\nLabel:"
)
_PLACEHOLDER = re.compile(r"\{(text|labels)\}")


def render(template: str, text: str, labels: Sequence[str]) -> str:
    """Fill {text} and {labels} in one pass, so braces inside the (hostile) text stay literal."""
    values = {"text": text, "labels": ", ".join(labels)}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def _choices(body: Any, source: str) -> list[Any]:
    if not isinstance(body, Mapping):
        raise MalformedResponse(
            f"{source}: expected a JSON object, got {type(body).__name__}: {str(body)[:200]!r}"
        )
    if "error" in body and "choices" not in body:
        raise MalformedResponse(f"{source}: endpoint answered an error object: {str(body['error'])[:200]}")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, Mapping) for c in choices):
        raise MalformedResponse(f"{source}: response has no list of choices: {str(body)[:200]!r}")
    return choices


class OpenAIChatClassifier(HttpClassifier):
    """A prompted LLM behind `/chat/completions` or `/completions`; `url` is the API base (…/v1)."""

    protocol = "openai-chat"

    def __init__(
        self,
        url: str,
        model: str,
        labels: Sequence[str],
        *,
        endpoint: Endpoint = "chat",
        prompt: str = DEFAULT_PROMPT,
        system: str | None = None,
        scoring: Scoring = "logprobs",
        top_logprobs: int = 20,
        n: int = 10,
        temperature: float = 1.0,
        max_tokens: int = 8,
        seed: int | None = 0,
        label_prefix: str = " ",
        max_invalid_fraction: float = 0.5,
        extra_body: Mapping[str, Any] | None = None,
        label_map: Mapping[str, str] | None = None,
        options: HttpOptions | None = None,
        transport: httpx.BaseTransport | None = None,
        name: str | None = None,
    ) -> None:
        if scoring == "sequence" and endpoint != "completions":
            raise ValueError(
                "scoring 'sequence' needs the completions endpoint (protocol openai-completions)"
            )
        if "{text}" not in prompt:
            raise ValueError("prompt must contain the placeholder {text}")
        self.protocol = f"openai-{endpoint}"
        super().__init__(
            url,
            labels,
            options=options or HttpOptions(batch_size=1),
            transport=transport,
            name=name or f"openai-{endpoint}:{model}@{url.rstrip('/')}",
        )
        self.model = model
        self.endpoint = endpoint
        self.prompt = prompt
        self.system = system
        self.scoring = scoring
        self.top_logprobs = top_logprobs
        self.n = n
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.label_prefix = label_prefix
        self.max_invalid_fraction = max_invalid_fraction
        self.extra_body = dict(extra_body or {})
        # Normalised label names and aliases (label_map: answer -> label) -> label index.
        self._names = {norm(lab): i for i, lab in enumerate(self._labels)}
        for alias, lab in (label_map or {}).items():
            if lab not in self._labels:
                raise ValueError(f"label_map maps {alias!r} to {lab!r}, which is not a declared label")
            self._names[norm(alias)] = self._labels.index(lab)
        # None: unknown; False: the server answered fewer choices than asked once (llama.cpp ignores n).
        self.supports_n: bool | None = None

    # -- HttpClassifier -------------------------------------------------------------
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        size = self.options.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        if len(batches) <= 1 or self.options.max_concurrency == 1:
            return super().predict_proba(texts)
        # Worker threads do not inherit context variables: run each batch in a copy of the caller's
        # context so the caller's usage meter sees the tokens.
        contexts = [contextvars.copy_context() for _ in batches]
        parts = list(
            self._executor().map(
                lambda cb: cb[0].run(self._predict_batch, cb[1]), zip(contexts, batches, strict=True)
            )
        )
        return np.concatenate(parts, axis=0)

    def _predict_batch(self, texts: list[str]) -> np.ndarray:
        rows = np.array([self.score_text(t) for t in texts], dtype=np.float64).reshape(
            len(texts), len(self._labels)
        )
        with self._lock:
            self._stats.texts += len(texts)
        return check_proba(rows, len(texts), len(self._labels), source=self.name)

    # -- one text ---------------------------------------------------------------------
    def score_text(self, text: str) -> np.ndarray:
        """Class probabilities for one text, by the configured scoring."""
        prompt = render(self.prompt, text, self._labels)
        if self.scoring == "sequence":
            return self._by_sequence(prompt)
        if self.scoring == "sampling":
            return self._by_sampling(prompt)
        return self._by_first_token(prompt)

    def _body(self, prompt: str, **fields: Any) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {**self.extra_body, "model": self.model, **fields}
        if self.endpoint == "chat":
            messages = [{"role": "user", "content": prompt}]
            if self.system:
                messages.insert(0, {"role": "system", "content": render(self.system, "", self._labels)})
            body["messages"] = messages
            return "/chat/completions", body
        body["prompt"] = prompt
        return "/completions", body

    def _call(self, target: str, body: dict[str, Any]) -> list[Any]:
        answer = self.post(target, body)
        choices = _choices(answer, self.name)
        usage = answer.get("usage") if isinstance(answer.get("usage"), Mapping) else {}
        meter = current()
        if meter is not None:
            meter.add(
                calls=1,
                prompt_tokens=_int(usage.get("prompt_tokens")),
                completion_tokens=_int(usage.get("completion_tokens")),
            )
        return choices

    def _answer_top(self, prompt: str) -> list[tuple[str, float]]:
        """(token, logprob) of the top tokens at the first answer position after `prompt`."""
        k = self.top_logprobs
        extra = {"logprobs": True, "top_logprobs": k} if self.endpoint == "chat" else {"logprobs": k}
        target, body = self._body(
            prompt,
            max_tokens=1,
            temperature=0.0,
            **extra,
            **({"seed": self.seed} if self.seed is not None else {}),
        )
        choice = self._call(target, body)[0]
        lp = choice.get("logprobs")
        if not isinstance(lp, Mapping):
            raise MalformedResponse(
                f"{self.name}: the answer carries no logprobs (the endpoint may not support "
                "them; use scoring 'sampling')"
            )
        try:
            raw = lp["content"][0]["top_logprobs"] if self.endpoint == "chat" else lp["top_logprobs"][0]
        except (KeyError, IndexError, TypeError) as e:
            raise MalformedResponse(
                f"{self.name}: no top_logprobs at the answer position in {str(lp)[:200]!r}"
            ) from e
        pairs = top_pairs(raw, self.name, MalformedResponse)
        if not pairs:
            raise MalformedResponse(f"{self.name}: empty top_logprobs at the answer position")
        return pairs

    def _by_first_token(self, prompt: str) -> np.ndarray:
        return self._first_token_row(self._answer_top(prompt))

    def _first_token_row(self, pairs: list[tuple[str, float]]) -> np.ndarray:
        return first_token_distribution(
            pairs, self._names, self._labels, self.name, MalformedResponse, what="label"
        )

    def _by_sequence(self, prompt: str) -> np.ndarray:
        """Each label's log-probability as a continuation, token by token (constrained follow-up).

        At each step the continuation so far is appended to the prompt and the most likely
        top-k token that spells the label on is taken; steps shared by several labels are asked
        once. A label that leaves the top-k gets the least likely listed logprob for that step
        (an upper bound) and stops there.
        """
        memo: dict[str, list[tuple[str, float]]] = {}
        scores = np.empty(len(self._labels))
        for i, lab in enumerate(self._labels):
            cont, done, total = self.label_prefix + lab, 0, 0.0
            while done < len(cont):
                ctx = prompt + cont[:done]
                if ctx not in memo:
                    memo[ctx] = self._answer_top(ctx)
                rest = cont[done:]
                fits = [(t, lp) for t, lp in memo[ctx] if t and rest.startswith(t)]
                if not fits:
                    total += min(lp for _, lp in memo[ctx])
                    break
                tok, lp = max(fits, key=lambda f: f[1])
                total += lp
                done += len(tok)
            scores[i] = total
        z = np.exp(scores - scores.max())
        return z / z.sum()

    def _by_sampling(self, prompt: str) -> np.ndarray:
        counts = np.zeros(len(self._labels))
        answers: list[str] = []
        i = 0
        while len(answers) < self.n:
            ask = self.n - len(answers) if self.supports_n is not False else 1
            fields: dict[str, Any] = {
                "n": ask,
                "temperature": self.temperature,
                "max_tokens": self.max_tokens,
            }
            if self.seed is not None:
                fields["seed"] = self.seed + i
            target, body = self._body(prompt, **fields)
            got = [self._answer_text(c) for c in self._call(target, body)]
            if ask > 1:
                self.supports_n = len(got) >= ask
            answers += got[: self.n - len(answers)]
            i += max(len(got), 1)
        invalid = []
        for a in answers:
            j = self._answer_label(a)
            if j is None:
                invalid.append(a)
            else:
                counts[j] += 1
        meter = current()
        if meter is not None:
            meter.add(samples=len(answers), invalid_samples=len(invalid))
        if not counts.any() or len(invalid) > self.max_invalid_fraction * len(answers):
            raise MalformedResponse(
                f"{self.name}: {len(invalid)} of {len(answers)} sampled answers name no declared "
                f"label {self._labels} (e.g. {[a[:40] for a in invalid[:3]]})"
            )
        return counts / counts.sum()

    def _answer_text(self, choice: Mapping[str, Any]) -> str:
        if self.endpoint == "chat":
            msg = choice.get("message")
            content = msg.get("content") if isinstance(msg, Mapping) else None
        else:
            content = choice.get("text")
        if not isinstance(content, str):
            raise MalformedResponse(f"{self.name}: a choice has no text answer: {str(choice)[:200]!r}")
        return content

    def _answer_label(self, answer: str) -> int | None:
        return answer_option(answer, self._names)

    def sampling_n(self) -> int | None:
        """n when probabilities are sample frequencies (their standard error is sqrt(p(1-p)/n)), else None."""
        return self.n if self.scoring == "sampling" else None


def _int(x: Any) -> int:
    return token_count(x)
