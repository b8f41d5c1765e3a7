"""All service configuration, in one place: environment variables with the prefix CACE_.

Defaults are the embedded setup a fresh machine runs with (SQLite job store, artifacts
under ./var, the built-in default domain and its reference classifier).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CACE_", env_file=".env", extra="ignore")

    # Where artifacts (reference classifiers, taggers, spaces) and the SQLite store live.
    data_dir: Path = Path("var")
    # SQLAlchemy URL of the job store; None means SQLite at data_dir/jobs.sqlite.
    database_url: str | None = None
    # Source data of the built-in domains (split files); None means the library's default lookup.
    datasets_dir: Path | None = None
    # Machine-wide caches (embeddings, LLM generations, built wheels). The library reads the
    # same variable, CACE_CACHE_DIR, directly; default ~/.cache/cace.
    cache_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8000

    # The default domain: a built-in name ("cebab"), an operator's domain folder, or "none"
    # (the service then starts in seconds, and requests name their domain).
    default_domain: str = "cebab"
    # The default classifier: a built-in reference classifier name or "none"; unset means the
    # default built-in domain's reference classifier (tfidf-lr for cebab), none otherwise.
    default_classifier: str | None = None
    # Calibrate a named classifier on a domain (its own held-out pairs) the first time it is
    # explained there, as a background job; `method: auto` then uses the calibrated estimator.
    auto_calibrate: bool = True
    # Bounds of one calibration: held-out pairs scored, and classifier texts: each pool text
    # once, then up to K new texts per held-out pair for `splice` (its K shrinks to fit).
    calibration_max_pairs: int = Field(4000, ge=50, le=100000)
    calibration_max_texts: int = Field(100000, ge=100, le=1000000)
    # Explainers built for the default domain and classifier before /readyz turns 200, so a first
    # request costs what the tenth does (comma-separated method names; unknown names are skipped).
    prewarm_methods: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["match", "splice", "auto"]
    )
    # What calibrations may send one classifier, shared by every replica (kept in the job store):
    # texts per window, counting every attempt; a calibration that would pass it fails and waits.
    calibration_budget_texts: int = Field(200000, ge=0)
    calibration_budget_window_s: float = Field(86400.0, gt=0)
    # After a failed (or cancelled) calibration of a (domain, classifier), explanations queue no new
    # one for this long, doubling per further failure up to the max; shared by replicas.
    calibration_backoff_s: float = Field(900.0, ge=0)
    calibration_backoff_max_s: float = Field(86400.0, ge=0)

    # Work limits (each gives a clear 4xx when exceeded).
    max_text_chars: int = 5000
    max_top_k: int = 50
    max_inline_texts: int = 50
    max_effect_texts: int = 10000
    # Texts per report or comparison (each text costs one search per concept and target value).
    max_report_texts: int = 2000
    # Texts per JSONL upload (/v1/effects/upload streams into the store; max_body_bytes still applies).
    max_upload_texts: int = 1_000_000
    max_body_bytes: int = 10 * 1024 * 1024
    # Caps on one domain upload (POST /v1/domains answers 422 naming the cap): distinct texts per
    # origin (pairs are made within an origin, all against all), counterfactual pairs, concepts
    # (also per line) and values per concept. See explainers/domains/limits.py.
    domain_max_group_texts: int = Field(64, ge=2, le=10000)
    domain_max_pairs: int = Field(50_000, ge=1, le=10_000_000)
    domain_max_concepts: int = Field(32, ge=1, le=1000)
    domain_max_values: int = Field(32, ge=2, le=1000)
    request_timeout_s: float = 60.0

    # Jobs.
    job_workers: int = 2
    # Jobs waiting or running at once; beyond it POSTs get 429 with Retry-After.
    job_queue_limit: int = 100
    # Items a worker leases per claim, and how long a lease lasts before another worker may take it over.
    # An effects job runs a claim's items as one batch (one encoder call, one search, one classifier call).
    job_claim_batch: int = 32
    job_lease_s: float = 30.0
    # How often idle workers look for work.
    job_poll_s: float = 0.25
    # Attempts per item before it is marked failed (retryable upstream errors only).
    job_max_attempts: int = 3
    # An effects job whose failed texts exceed this fraction of its texts is `failed`, not `succeeded`
    # (its rows stay readable); below it, the result says how many rows were used and failed.
    effects_max_failed_fraction: float = Field(0.1, ge=0.0, le=1.0)
    # Wall-clock seconds one attempt at a claim's items may take, splitting a failed batch and every
    # outbound retry included; an item thus spends at most job_max_attempts x this failing.
    job_item_timeout_s: float = Field(120.0, gt=0)
    # Run effects batches on a Ray cluster ("auto", "ray://host:10001" or "host:6379"); None: in process.
    # Needs `pip install .[ray]`. Each classifier gets its own pool of actors (bounded concurrency);
    # set job_workers to at least the actors you want busy.
    ray_address: str | None = None
    ray_actors_per_classifier: int = Field(2, ge=1)
    ray_actor_cpus: float = 1.0
    # Actor pools at once (one per registered or built-in classifier, one shared by every inline spec);
    # beyond it the least recently used idle pool is stopped. Actors idle this long are stopped.
    ray_max_pools: int = Field(4, ge=1)
    ray_actor_idle_s: float = Field(300.0, gt=0)
    # Restarts Ray grants an actor that dies; a dead actor leaves its pool (a new one starts on demand).
    ray_actor_max_restarts: int = Field(3, ge=0)
    # How long a batch waits for a free actor (a busy pool, a full cluster) before it is retried later.
    ray_acquire_timeout_s: float = Field(120.0, gt=0)
    # Table-name prefix in the job store: lets several deployments (or test runs) share one database.
    table_prefix: str = "cace_"
    # This replica's name in leases; None means host-pid-random.
    instance_id: str | None = None
    # Bootstrap resamples for the CaCE confidence intervals of reports.
    effects_n_boot: int = 1000
    # Effects requests above max_inline_texts become jobs; `mode` in the request can force either way.

    # Default LLM for the generate route (an OpenAI-compatible server), if any.
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    # Most LLM calls one domain build may make (labels and edits of a corpus without them); a
    # request's llm_build.max_llm_calls can only lower it.
    llm_build_max_calls: int = Field(20000, ge=1)

    # Security: comma-separated hosts/CIDRs that outbound calls may reach despite the policy.
    outbound_allow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Outbound bounds (deploy/README.md, "Outbound calls"): bytes one upstream response may carry
    # (502 past it), and seconds a call waits for one of a classifier endpoint's concurrency slots.
    upstream_max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    upstream_slot_wait_s: float = Field(5.0, ge=0)
    # API keys are off when no key is configured (the embedded default is a local tool).
    auth_enabled: bool = False
    # JSON list of {"name", "sha256", "scopes"} (e.g. a mounted Secret); keys can also live in the store.
    api_keys_file: Path | None = None
    # Per-key token bucket (a key's own rate_per_s overrides it); 0 disables.
    rate_limit_per_s: float = Field(50.0, ge=0)
    rate_limit_burst: int = 100
    # Per-client-address bucket for requests without a key while auth is off; 0 disables (embedded default).
    rate_limit_anonymous_per_s: float = 0.0
    # Share the buckets between replicas through Redis (e.g. redis://redis:6379/0); unset = per replica.
    rate_limit_redis_url: str | None = None
    # Requests running at once before new ones are shed with 503 + Retry-After; 0 disables.
    max_inflight: int = 32
    # Observability: "json" (one object per line, with request ids) or "text" logs.
    log_format: str = "json"
    # KServe explainer slot: the predictor's host[:port]; `:explain` on an unregistered model
    # name then calls http://<host>/v1/models/<name>:predict (it must be allow-listed).
    kserve_predictor_host: str | None = None
    kserve_labels: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Hardening (see deploy/README.md, "Threat model").
    # The only directory in-process models (sklearn/transformers classifiers, llamacpp/transformers
    # LLMs) may be registered from; None: in-process registrations are refused.
    models_dir: Path | None = None
    # Environment variables a *registered* LLM may name as `api_key_env`: NAME, or NAME@host to
    # bind the secret to the one host it may be sent to. Inline specs may never name one.
    llm_secret_envs: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A bootstrap admin key (e.g. from a Secret); turns auth on. Only its SHA-256 is kept in memory.
    admin_key: str | None = Field(None, repr=False)
    # `cace serve` on a non-loopback address with no API key refuses to start unless this is true.
    allow_open: bool = False
    # Proxies (IPs/CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed; empty: none.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator(
        "outbound_allow",
        "kserve_labels",
        "llm_secret_envs",
        "trusted_proxies",
        "prewarm_methods",
        mode="before",
    )
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                import json

                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite').resolve()}"

    @property
    def job_store_url(self) -> str:
        return self.database_url or self.sqlite_url


@lru_cache
def get_settings() -> Settings:
    return Settings()
