"""All service configuration, in one place: environment variables with the prefix CACE_.

Defaults are the embedded setup a fresh machine runs with (SQLite job store, artifacts
under ./var, the built-in default domain and its reference classifier).

The settings are grouped (`settings.jobs.workers`, `settings.limits.max_top_k`, ...) while the
environment keeps its flat names (`CACE_JOB_WORKERS`, `CACE_MAX_TOP_K`): operators' manifests and
`.env` files stay as they are. Each group declares how its fields are named in the environment
(`_Group.env_name`); `Settings(...)` reads the environment (and `.env`) through one flat model
generated from the groups, so every value is validated once, by the same field, and an invalid
one fails the start with `SettingsError` naming the variable. Keyword arguments take the flat
names too (`Settings(job_workers=4)`), as the environment does.
"""

from __future__ import annotations

import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "CACE_"
# A comma-separated list in the environment ("a,b" or a JSON list).
CommaList = Annotated[list[str], NoDecode]


class SettingsError(ValueError):
    """Invalid settings: one line per variable, naming it (`CACE_JOB_WORKERS: ...`)."""


def _comma_list(v: object) -> object:
    if isinstance(v, str):
        v = v.strip()
        if v.startswith("["):
            return json.loads(v)
        return [p.strip() for p in v.split(",") if p.strip()]
    return v


class _Group(BaseModel):
    """A group of settings; its fields are read from `CACE_<env_prefix><field>` unless renamed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # How the group's fields are named in the environment (without CACE_): the prefix, and the
    # fields whose name there is another (kept from before the settings were grouped).
    env_prefix: ClassVar[str] = ""
    env_renamed: ClassVar[dict[str, str]] = {}

    @classmethod
    def env_name(cls, field: str) -> str:
        return cls.env_renamed.get(field, cls.env_prefix + field)


class Limits(_Group):
    """Work limits (each gives a clear 4xx when exceeded)."""

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
    # Requests running at once before new ones are shed with 503 + Retry-After; 0 disables.
    max_inflight: int = 32


class Jobs(_Group):
    """The durable job queue and its workers."""

    env_prefix = "job_"
    env_renamed = {
        "effects_max_failed_fraction": "effects_max_failed_fraction",
        "effects_n_boot": "effects_n_boot",
    }

    workers: int = 2
    # Jobs waiting or running at once; beyond it POSTs get 429 with Retry-After.
    queue_limit: int = 100
    # Items a worker leases per claim, and how long a lease lasts before another worker may take it over.
    # An effects job runs a claim's items as one batch (one encoder call, one search, one classifier call).
    claim_batch: int = 32
    lease_s: float = 30.0
    # How often idle workers look for work.
    poll_s: float = 0.25
    # Attempts per item before it is marked failed (retryable upstream errors only).
    max_attempts: int = 3
    # Wall-clock seconds one attempt at a claim's items may take, splitting a failed batch and every
    # outbound retry included; an item thus spends at most max_attempts x this failing.
    item_timeout_s: float = Field(120.0, gt=0)
    # An effects job whose failed texts exceed this fraction of its texts is `failed`, not `succeeded`
    # (its rows stay readable); below it, the result says how many rows were used and failed.
    effects_max_failed_fraction: float = Field(0.1, ge=0.0, le=1.0)
    # Bootstrap resamples for the CaCE confidence intervals of reports.
    effects_n_boot: int = 1000


class Ray(_Group):
    """Effects batches on a Ray cluster (`pip install .[ray]`)."""

    env_prefix = "ray_"

    # "auto", "ray://host:10001" or "host:6379"; None: in process. Each classifier gets its own
    # pool of actors (bounded concurrency); set jobs.workers to at least the actors you want busy.
    address: str | None = None
    actors_per_classifier: int = Field(2, ge=1)
    actor_cpus: float = 1.0
    # Actor pools at once (one per registered or built-in classifier, one shared by every inline spec);
    # beyond it the least recently used idle pool is stopped. Actors idle this long are stopped.
    max_pools: int = Field(4, ge=1)
    actor_idle_s: float = Field(300.0, gt=0)
    # Restarts Ray grants an actor that dies; a dead actor leaves its pool (a new one starts on demand).
    actor_max_restarts: int = Field(3, ge=0)
    # How long a batch waits for a free actor (a busy pool, a full cluster) before it is retried later.
    acquire_timeout_s: float = Field(120.0, gt=0)


class Calibration(_Group):
    """Calibrations of the `auto` estimator, and what they may cost."""

    env_prefix = "calibration_"
    env_renamed = {"auto": "auto_calibrate"}

    # Calibrate a named classifier on a domain (its own held-out pairs) the first time it is
    # explained there, as a background job; `method: auto` then uses the calibrated estimator.
    auto: bool = True
    # Bounds of one calibration: held-out pairs scored, and classifier texts: each pool text
    # once, then up to K new texts per held-out pair for `splice` (its K shrinks to fit).
    max_pairs: int = Field(4000, ge=50, le=100000)
    max_texts: int = Field(100000, ge=100, le=1000000)
    # What calibrations may send one classifier, shared by every replica (kept in the job store):
    # texts per window, counting every attempt; a calibration that would pass it fails and waits.
    budget_texts: int = Field(200000, ge=0)
    budget_window_s: float = Field(86400.0, gt=0)
    # After a failed (or cancelled) calibration of a (domain, classifier), explanations queue no new
    # one for this long, doubling per further failure up to the max; shared by replicas.
    backoff_s: float = Field(900.0, ge=0)
    backoff_max_s: float = Field(86400.0, ge=0)


class LLM(_Group):
    """The default LLM (an OpenAI-compatible server) and what LLMs may use."""

    env_prefix = "llm_"

    # Default LLM for the generate route, if any.
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = Field(None, repr=False)
    # Most LLM calls one domain build may make (labels and edits of a corpus without them); a
    # request's llm_build.max_llm_calls can only lower it.
    build_max_calls: int = Field(20000, ge=1)
    # Environment variables a *registered* LLM may name as `api_key_env`: NAME, or NAME@host to
    # bind the secret to the one host it may be sent to. Inline specs may never name one.
    secret_envs: CommaList = Field(default_factory=list)


class Upstream(_Group):
    """Outbound calls (deploy/README.md, "Outbound calls")."""

    env_prefix = "upstream_"
    env_renamed = {"allow": "outbound_allow"}

    # Hosts/CIDRs that outbound calls may reach despite the policy.
    allow: CommaList = Field(default_factory=list)
    # Bytes one upstream response may carry (502 past it), and seconds a call waits for one of a
    # classifier endpoint's concurrency slots.
    max_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    slot_wait_s: float = Field(5.0, ge=0)


class KServe(_Group):
    """KServe explainer slot: `:explain` on an unregistered model name then calls
    http://<predictor_host>/v1/models/<name>:predict (it must be allow-listed)."""

    env_prefix = "kserve_"

    predictor_host: str | None = None
    labels: CommaList = Field(default_factory=list)


class Auth(_Group):
    """API keys and exposure (see deploy/README.md, "Threat model")."""

    env_renamed = {"enabled": "auth_enabled"}

    # API keys are off when no key is configured (the embedded default is a local tool).
    enabled: bool = False
    # JSON list of {"name", "sha256", "scopes"} (e.g. a mounted Secret); keys can also live in the store.
    api_keys_file: Path | None = None
    # A bootstrap admin key (e.g. from a Secret); turns auth on. Only its SHA-256 is kept in memory.
    admin_key: str | None = Field(None, repr=False)
    # `cace serve` on a non-loopback address with no API key refuses to start unless this is true.
    allow_open: bool = False
    # Proxies (IPs/CIDRs) whose X-Forwarded-For / X-Forwarded-Proto are believed; empty: none.
    trusted_proxies: CommaList = Field(default_factory=list)


class RateLimit(_Group):
    """Token buckets per API key, and per client address without one."""

    env_prefix = "rate_limit_"

    # Per-key token bucket (a key's own rate_per_s overrides it); 0 disables.
    per_s: float = Field(50.0, ge=0)
    burst: int = 100
    # Per-client-address bucket for requests without a key while auth is off; 0 disables (embedded default).
    anonymous_per_s: float = 0.0
    # Share the buckets between replicas through Redis (e.g. redis://redis:6379/0); unset = per replica.
    redis_url: str | None = None


class Settings(BaseModel):
    """The one settings object: where things live and the defaults, then one group per concern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Where artifacts (reference classifiers, taggers, spaces) and the SQLite store live.
    data_dir: Path = Path("var")
    # SQLAlchemy URL of the job store; None means SQLite at data_dir/jobs.sqlite.
    database_url: str | None = None
    # Source data of the built-in domains (split files); None means the library's default lookup.
    datasets_dir: Path | None = None
    # Machine-wide caches (embeddings, LLM generations, built wheels). The library reads the
    # same variable, CACE_CACHE_DIR, directly; default ~/.cache/cace.
    cache_dir: Path | None = None
    # The only directory in-process models (sklearn/transformers classifiers, llamacpp/transformers
    # LLMs) may be registered from; None: in-process registrations are refused.
    models_dir: Path | None = None

    host: str = "127.0.0.1"
    port: int = 8000

    # The default domain: a built-in name ("cebab"), an operator's domain folder, or "none"
    # (the service then starts in seconds, and requests name their domain).
    default_domain: str = "cebab"
    # The default classifier: a built-in reference classifier name or "none"; unset means the
    # default built-in domain's reference classifier (tfidf-lr for cebab), none otherwise.
    default_classifier: str | None = None
    # Explainers built for the default domain and classifier before /readyz turns 200, so a first
    # request costs what the tenth does (comma-separated method names; unknown names are skipped).
    prewarm_methods: CommaList = Field(default_factory=lambda: ["match", "splice", "auto"])

    # Table-name prefix in the job store: lets several deployments (or test runs) share one database.
    table_prefix: str = "cace_"
    # This replica's name in leases; None means host-pid-random.
    instance_id: str | None = None
    # Observability: "json" (one object per line, with request ids) or "text" logs.
    log_format: Literal["json", "text"] = "json"

    limits: Limits = Field(default_factory=Limits)
    jobs: Jobs = Field(default_factory=Jobs)
    ray: Ray = Field(default_factory=Ray)
    calibration: Calibration = Field(default_factory=Calibration)
    llm: LLM = Field(default_factory=LLM)
    upstream: Upstream = Field(default_factory=Upstream)
    kserve: KServe = Field(default_factory=KServe)
    auth: Auth = Field(default_factory=Auth)
    rate_limit: RateLimit = Field(default_factory=RateLimit)

    def __init__(self, _env_file: str | Path | None = ".env", **values: Any) -> None:
        """Read the environment (and `_env_file`); `values` (flat names, as the environment's) win."""
        super().__init__(**_grouped(_read_env(_env_file, values)))

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'jobs.sqlite').resolve()}"

    @property
    def job_store_url(self) -> str:
        return self.database_url or self.sqlite_url


GROUPS: dict[str, type[_Group]] = {
    name: info.annotation
    for name, info in Settings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, _Group)
}


@cache
def env_names() -> dict[str, tuple[str | None, str]]:
    """Every setting's flat name (CACE_ removed, lower case) -> (its group or None, its field)."""
    out: dict[str, tuple[str | None, str]] = {
        name: (None, name) for name in Settings.model_fields if name not in GROUPS
    }
    for group, model in GROUPS.items():
        for name in model.model_fields:
            flat = model.env_name(name)
            assert flat not in out, f"two settings read {ENV_PREFIX}{flat.upper()}"
            out[flat] = (group, name)
    return out


def env_var(group: str | None, field: str) -> str:
    """The environment variable of a setting: env_var("jobs", "workers") == "CACE_JOB_WORKERS"."""
    flat = GROUPS[group].env_name(field) if group else field
    return ENV_PREFIX + flat.upper()


class _EnvBase(BaseSettings):
    # Other CACE_* variables are the library's (explainers/env.py) or the tests': not refused here.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _lists(cls, v: object, info: Any) -> object:
        field = cls.model_fields[info.field_name]
        return _comma_list(v) if NoDecode in field.metadata else v


@cache
def _env_model() -> type[BaseSettings]:
    """One flat model of every setting under its environment name, made from the grouped fields."""
    fields: dict[str, Any] = {}
    for flat, (group, name) in env_names().items():
        info: FieldInfo = (GROUPS[group] if group else Settings).model_fields[name]
        fields[flat] = (info.annotation, info)
    return create_model("SettingsEnv", __base__=_EnvBase, **fields)


def _read_env(env_file: str | Path | None, values: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(values) - set(env_names()))
    if unknown:  # a typo in code must not pass for a default
        raise SettingsError(f"not settings: {unknown}")
    try:
        read = _env_model()(_env_file=env_file, **values)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            flat = str(err["loc"][0]) if err["loc"] else "?"
            group, name = env_names().get(flat, (None, flat))
            info = (GROUPS[group] if group else Settings).model_fields.get(name)
            # A secret (repr=False: admin_key, llm_api_key) is never echoed into a log.
            got = "a value" if info is not None and not info.repr else repr(err.get("input"))
            lines.append(f"{ENV_PREFIX}{flat.upper()}: {err['msg']} (got {got})")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None
    return {k: getattr(read, k) for k in read.model_fields_set | set(values)}


def _grouped(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = env_names()
    for key, value in flat.items():
        group, name = names[key]
        if group is None:
            out[name] = value
        else:
            out.setdefault(group, {})[name] = value
    return out


@lru_cache
def get_settings() -> Settings:
    return Settings()


def main(argv: list[str] | None = None) -> int:
    """`cace settings`: each setting's variable, its place in `Settings`, and its value now (.env included)."""
    import argparse

    ap = argparse.ArgumentParser(prog="cace settings", description=main.__doc__)
    ap.parse_args(argv)
    try:
        s = Settings()
    except SettingsError as e:
        print(f"cace settings: {e}")
        return 2
    for flat, (group, name) in env_names().items():
        model = GROUPS[group] if group else Settings
        where = f"{group}.{name}" if group else name
        value = getattr(getattr(s, group) if group else s, name)
        shown = "<set>" if value is not None and not model.model_fields[name].repr else value
        print(f"{ENV_PREFIX}{flat.upper():<34} {where:<36} {shown!r}")
    return 0
