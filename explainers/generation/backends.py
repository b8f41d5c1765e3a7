"""LLM backends behind one small interface: `chat(messages, n, ...) -> Completion`.

The production path is any OpenAI-compatible chat-completions server (vLLM, Ollama,
llama.cpp's server, OpenAI itself) reached over httpx. Two in-process backends
(llama-cpp-python from a GGUF file, transformers from a folder or hub id) are optional
extras for machines without a server. The explainer only sees `LLMBackend`, so the
verification, caching and cost accounting are the same whichever backend answers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field

from explainers import outbound
from explainers.errors import (
    UpstreamError,
    UpstreamMalformed,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    excerpt,
)
from explainers.outbound import MAX_RETRIES

Message = Mapping[str, str]


class LLMError(UpstreamError, RuntimeError):
    """The LLM could not produce an answer; the message says why (see `explainers.errors`)."""

    what = "llm"


class LLMUnavailable(LLMError, UpstreamUnavailable):
    """The server could not be reached, or kept failing after retries."""


class LLMTimeout(LLMUnavailable, UpstreamTimeout):
    """The server did not answer within the timeout or the call's deadline."""


class LLMBadResponse(LLMError, UpstreamMalformed):
    """The server answered, but not with a chat completion we can read."""


class LLMRejected(LLMBadResponse, UpstreamRejected):
    """The server refused the request with a 4xx other than 429 (retrying cannot help)."""


@dataclass
class Completion:
    """The samples one request produced, with the token counts the server reported."""

    texts: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # "stop", "length", ... per sample, or None when the backend does not say.
    finish_reasons: list[str | None] = field(default_factory=list)
    # HTTP requests / generate calls it took (n samples may need n calls).
    calls: int = 1
    wall_time_s: float = 0.0


@runtime_checkable
class LLMBackend(Protocol):
    """Something that turns chat messages into n sampled answers."""

    kind: str
    model: str

    def chat(
        self,
        messages: Sequence[Message],
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 128,
        seed: int | None = None,
    ) -> Completion: ...


def _as_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]


class OpenAIBackend:
    """OpenAI-compatible `/chat/completions` over httpx.

    `base_url` includes the API prefix (e.g. http://127.0.0.1:8080/v1). Calls go through the
    shared retry path (`explainers.outbound`): connection errors, timeouts, 429 and 5xx are
    retried at most `max_retries` (<= MAX_RETRIES) times with backoff, within `total_timeout_s`
    and the serving request's deadline; other 4xx and policy denials fail at once. Servers that ignore `n` (llama.cpp's) get
    the missing samples as follow-up calls with shifted seeds, and are remembered as such.
    `transport` lets the service plug in an httpx transport that enforces its URL policy.
    """

    kind = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
        total_timeout_s: float | None = None,
        transport: httpx.BaseTransport | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # Bounded: validates max_retries (ValueError above MAX_RETRIES) and caps the whole call.
        self.retry = outbound.RetryPolicy(
            retries=max_retries,
            backoff_s=backoff_s,
            backoff_max_s=8.0,
            total_s=total_timeout_s or timeout_s * (max_retries + 1),
        )
        self.extra_body = dict(extra_body or {})
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            transport=outbound.guarded(transport),
        )
        # None: unknown yet; False: the server returned fewer choices than asked once.
        self.supports_n: bool | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        errors = outbound.Errors(
            timeout=LLMTimeout, unavailable=LLMUnavailable, rejected=LLMRejected, malformed=LLMBadResponse
        )
        r = outbound.send(
            self._client,
            "POST",
            "/chat/completions",
            json=body,
            policy=self.retry,
            name=f"LLM {self.model!r} at {self.base_url}",
            errors=errors,
        )
        try:
            data = outbound.parse_json(r.content)
        except ValueError as e:  # not JSON, or NaN/Infinity/overflowing numbers in it
            raise LLMBadResponse(
                f"LLM server sent non-JSON ({excerpt(str(e), 80)}): {excerpt(r.text)!r}"
            ) from e
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise LLMBadResponse(f"LLM server sent no 'choices': {excerpt(str(data))}")
        return data

    @staticmethod
    def _parse(data: dict[str, Any]) -> tuple[list[str], list[str | None], int, int]:
        texts: list[str] = []
        reasons: list[str | None] = []
        for choice in data["choices"]:
            msg = choice.get("message") if isinstance(choice, dict) else None
            content = msg.get("content") if isinstance(msg, dict) else None
            if content is not None and not isinstance(content, str):
                raise LLMBadResponse(f"choice content is not text: {excerpt(str(choice))}")
            texts.append(content or "")
            reasons.append(choice.get("finish_reason") if isinstance(choice, dict) else None)
        usage = data.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return (
            texts,
            reasons,
            outbound.token_count(usage.get("prompt_tokens")),
            outbound.token_count(usage.get("completion_tokens")),
        )

    def chat(
        self,
        messages: Sequence[Message],
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 128,
        seed: int | None = None,
    ) -> Completion:
        started = time.perf_counter()
        out = Completion(texts=[], calls=0)
        ask_n = n if self.supports_n is not False else 1
        i = 0
        while len(out.texts) < n:
            body: dict[str, Any] = {
                "model": self.model,
                "messages": _as_messages(messages),
                "n": ask_n,
                "temperature": temperature,
                "max_tokens": max_tokens,
                **self.extra_body,
            }
            if seed is not None:
                body["seed"] = seed + i
            texts, reasons, pt, ct = self._parse(self._post(body))
            out.calls += 1
            if not texts:
                raise LLMBadResponse("LLM server returned an empty 'choices' list")
            if ask_n > 1 and len(texts) < ask_n:
                with self._lock:
                    self.supports_n = False
                ask_n = 1
            elif ask_n > 1:
                self.supports_n = True
            take = texts[: n - len(out.texts)]
            out.texts += take
            out.finish_reasons += reasons[: len(take)]
            out.prompt_tokens += pt
            out.completion_tokens += ct
            i += len(texts)
        out.wall_time_s = time.perf_counter() - started
        return out

    def answer_logprobs(
        self, messages: Sequence[Message], top_logprobs: int = 20, seed: int | None = 0
    ) -> tuple[list[tuple[str, float]], Completion]:
        """The top (token, logprob) pairs at the first answer position (one request, max_tokens 1).

        LLMBadResponse when the server sends no logprobs (callers then fall back to sampling).
        """
        from explainers.llm_answers import top_pairs

        started = time.perf_counter()
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _as_messages(messages),
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": top_logprobs,
            **self.extra_body,
        }
        if seed is not None:
            body["seed"] = seed
        data = self._post(body)
        _, reasons, pt, ct = self._parse(data)
        choice = data["choices"][0] if data["choices"] else None
        lp = choice.get("logprobs") if isinstance(choice, dict) else None
        try:
            raw = lp["content"][0]["top_logprobs"]  # type: ignore[index]
        except (KeyError, IndexError, TypeError) as e:
            raise LLMBadResponse(
                f"LLM {self.model!r} sent no top_logprobs at the answer position (the endpoint may not "
                "support logprobs)"
            ) from e
        pairs = top_pairs(raw, f"LLM {self.model!r}", LLMBadResponse)
        if not pairs:
            raise LLMBadResponse(f"LLM {self.model!r} sent empty top_logprobs at the answer position")
        usage = Completion(
            texts=[], prompt_tokens=pt, completion_tokens=ct, finish_reasons=reasons, calls=1,
            wall_time_s=time.perf_counter() - started,
        )  # fmt: skip
        return pairs, usage


class LlamaCppBackend:
    """In-process llama.cpp via llama-cpp-python (optional extra `llamacpp`), from a GGUF path.

    One model instance is not thread-safe, so calls are serialised with a lock; n samples
    are n generate calls with shifted seeds.
    """

    kind = "llamacpp"

    def __init__(
        self, model_path: str, *, n_ctx: int = 2048, n_threads: int | None = None, **kwargs: Any
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise LLMError("the llamacpp backend needs `pip install cace-service[llamacpp]`") from e
        if not os.path.exists(model_path):
            raise LLMError(f"GGUF model not found: {model_path}")
        self.model = os.path.basename(model_path)
        self._llm = Llama(model_path=model_path, n_ctx=n_ctx, n_threads=n_threads, verbose=False, **kwargs)
        self._lock = threading.Lock()

    def chat(
        self,
        messages: Sequence[Message],
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 128,
        seed: int | None = None,
    ) -> Completion:
        started = time.perf_counter()
        out = Completion(texts=[], calls=0)
        for i in range(n):
            with self._lock:
                r = self._llm.create_chat_completion(
                    messages=_as_messages(messages),  # type: ignore[arg-type]
                    temperature=temperature,
                    max_tokens=max_tokens,
                    seed=None if seed is None else seed + i,
                )
            choice = r["choices"][0]  # type: ignore[index]
            out.texts.append(choice["message"].get("content") or "")
            out.finish_reasons.append(choice.get("finish_reason"))
            usage = r.get("usage") or {}  # type: ignore[union-attr]
            out.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            out.completion_tokens += int(usage.get("completion_tokens") or 0)
            out.calls += 1
        out.wall_time_s = time.perf_counter() - started
        return out


class TransformersBackend:
    """In-process transformers causal LM (a local folder, or a hub id when online).

    Uses the tokenizer's chat template and `num_return_sequences=n` in one generate call.
    """

    kind = "transformers"

    def __init__(self, model: str, *, device: str = "cpu", dtype: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self._torch = torch
        self._tok: Any = AutoTokenizer.from_pretrained(model)
        torch_dtype = getattr(torch, dtype) if dtype else None
        self._lm: Any = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch_dtype)
        self._lm = self._lm.to(device).eval()  # type: ignore[arg-type]
        self._device = device
        self._lock = threading.Lock()

    def chat(
        self,
        messages: Sequence[Message],
        n: int = 1,
        temperature: float = 0.7,
        max_tokens: int = 128,
        seed: int | None = None,
    ) -> Completion:
        torch = self._torch
        started = time.perf_counter()
        ids = self._tok.apply_chat_template(
            _as_messages(messages), add_generation_prompt=True, return_tensors="pt"
        ).to(self._device)
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            gen = self._lm.generate(
                ids,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id,
            )
        new = gen[:, ids.shape[1] :]
        texts, reasons, completion = [], [], 0
        for row in new:
            eos = (row == self._tok.eos_token_id).nonzero()
            length = int(eos[0]) if len(eos) else len(row)
            completion += length
            reasons.append("stop" if len(eos) else "length")
            texts.append(self._tok.decode(row[:length], skip_special_tokens=True))
        return Completion(
            texts=texts,
            prompt_tokens=int(ids.shape[1]),
            completion_tokens=completion,
            finish_reasons=list[str | None](reasons),
            calls=1,
            wall_time_s=time.perf_counter() - started,
        )


class BackendSpec(BaseModel):
    """How to reach an LLM: what the service stores per registered LLM name.

    `api_key_env` names an environment variable holding the key, so specs can be stored
    and logged without the secret.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["openai", "llamacpp", "transformers"] = "openai"
    model: str = Field(min_length=1, max_length=500)
    base_url: str | None = Field(None, max_length=2000)
    api_key: str | None = Field(default=None, repr=False, max_length=4096)
    api_key_env: str | None = Field(None, max_length=200)
    timeout_s: float = Field(60.0, gt=0, le=600)
    max_retries: int = Field(
        2, ge=0, le=MAX_RETRIES, strict=True, description=f"Retries per call, at most {MAX_RETRIES}."
    )
    model_path: str | None = Field(None, max_length=4096)
    n_ctx: int = Field(2048, ge=16, le=1_000_000)
    n_threads: int | None = Field(None, ge=1, le=1024)
    device: str = Field("cpu", max_length=32)


def build_backend(
    spec: BackendSpec | Mapping[str, Any], *, transport: httpx.BaseTransport | None = None
) -> LLMBackend:
    """Make the backend a spec describes; raises ValueError for an incomplete spec."""
    if not isinstance(spec, BackendSpec):
        spec = BackendSpec.model_validate(dict(spec))
    if spec.kind == "openai":
        if not spec.base_url:
            raise ValueError("an 'openai' LLM needs a base_url (e.g. http://127.0.0.1:8000/v1)")
        key = spec.api_key or (os.environ.get(spec.api_key_env) if spec.api_key_env else None)
        return OpenAIBackend(
            spec.base_url,
            spec.model,
            key,
            timeout_s=spec.timeout_s,
            max_retries=spec.max_retries,
            transport=transport,
        )
    if spec.kind == "llamacpp":
        path = spec.model_path or spec.model
        return LlamaCppBackend(path, n_ctx=spec.n_ctx, n_threads=spec.n_threads)
    return TransformersBackend(spec.model_path or spec.model, device=spec.device)
