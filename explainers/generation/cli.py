"""`cace generate ...`: LLM counterfactuals from the command line, and a local llama.cpp server.

    cace generate counterfactuals --base-url http://127.0.0.1:8080/v1 --model qwen \\
        --text "The food was great." --concept food --target Negative --k 3
    cace generate serve-llama --gguf model.gguf --port 8080     # llama.cpp's OpenAI-compatible server

The LLM defaults come from CACE_LLM_BASE_URL / CACE_LLM_MODEL / CACE_LLM_API_KEY.
"""

from __future__ import annotations

import argparse
import json
import signal
from dataclasses import asdict
from pathlib import Path

from explainers import env
from explainers.concepts import CEBAB_SCHEMA, ConceptSchema, Intervention
from explainers.generation.backends import BackendSpec, LLMError, build_backend
from explainers.generation.cache import GenerationCache
from explainers.generation.explainer import GenerationExplainer
from explainers.generation.prompts import PromptBuilder, fewshot_from_cebab
from explainers.generation.server import LlamaServer


def _counterfactuals(args: argparse.Namespace) -> int:
    schema = (
        ConceptSchema.from_dict(json.loads(Path(args.schema).read_text())) if args.schema else CEBAB_SCHEMA
    )
    if args.gguf:
        spec = BackendSpec(
            kind="llamacpp", model=Path(args.gguf).name, model_path=str(args.gguf), n_threads=2
        )
    else:
        if not args.base_url or not args.model:
            print("need --base-url and --model (or CACE_LLM_BASE_URL / CACE_LLM_MODEL), or --gguf")
            return 2
        spec = BackendSpec(
            kind="openai",
            base_url=args.base_url,
            model=args.model,
            api_key_env="CACE_LLM_API_KEY",
            timeout_s=args.timeout,
        )
    taggers = None
    if args.taggers:
        from explainers.taggers import TaggerSet

        taggers = TaggerSet.load(Path(args.taggers))
    fewshot = fewshot_from_cebab(args.fewshot, schema) if args.fewshot else ()
    labels = json.loads(args.labels) if args.labels else None
    explainer = GenerationExplainer(
        build_backend(spec), schema, prompts=PromptBuilder(schema, fewshot), taggers=taggers,
        cache=GenerationCache(args.cache) if args.cache else None, temperature=args.temperature,
        max_tokens=args.max_tokens, max_concurrency=args.concurrency,
    )  # fmt: skip
    try:
        cfs, details = explainer.counterfactuals(
            args.text, Intervention(args.concept, args.target, args.source), args.k, base_labels=labels
        )
    except (LLMError, ValueError) as e:
        print(f"error: {e}")
        return 1
    finally:
        explainer.close()
    details["cost"] = asdict(details["cost"])
    print(json.dumps({"counterfactuals": [asdict(c) for c in cfs], "details": details}, indent=2))
    return 0


def _serve(args: argparse.Namespace) -> int:
    srv = LlamaServer(args.gguf, port=args.port, n_ctx=args.n_ctx, n_threads=args.threads, log=args.log)
    with srv:
        print(f"llama.cpp server for {args.gguf} at {srv.base_url} (Ctrl-C stops it)", flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cace generate", description="LLM-generated counterfactuals.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("counterfactuals", help="generate and verify K counterfactuals of one text")
    c.add_argument("--text", required=True)
    c.add_argument("--concept", required=True)
    c.add_argument("--target", required=True)
    c.add_argument("--source", default=None)
    c.add_argument(
        "--labels", default=None, help='the text\'s concept labels as JSON, e.g. \'{"service": "Positive"}\''
    )
    c.add_argument("--k", type=int, default=3)
    c.add_argument("--base-url", default=env.llm_base_url())
    c.add_argument("--model", default=env.llm_model())
    c.add_argument("--gguf", default=None, help="in-process llama.cpp instead of a server")
    c.add_argument("--timeout", type=float, default=120.0)
    c.add_argument("--temperature", type=float, default=0.8)
    c.add_argument("--max-tokens", type=int, default=160)
    c.add_argument("--concurrency", type=int, default=2)
    c.add_argument("--taggers", default=None, help="a saved TaggerSet folder (e.g. var/taggers/cebab)")
    c.add_argument("--fewshot", default=None, help="a CEBaB train split file to take few-shot examples from")
    c.add_argument("--schema", default=None, help="a concept schema JSON (default: CEBaB)")
    c.add_argument("--cache", default=None, help="SQLite generation cache file")
    s = sub.add_parser("serve-llama", help="run llama.cpp's OpenAI-compatible server for a GGUF file")
    s.add_argument("--gguf", required=True)
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--n-ctx", type=int, default=2048)
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--log", default=None)
    args = ap.parse_args(argv)
    return _counterfactuals(args) if args.cmd == "counterfactuals" else _serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
