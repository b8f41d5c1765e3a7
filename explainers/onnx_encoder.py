"""ONNX Runtime backend for the sentence encoder: the same MiniLM, exported once, offline.

Why: embedding the query is most of a `match` explanation and caps job throughput; ONNX
Runtime runs the same graph with fused kernels, and dynamic int8 quantisation of the
weights roughly halves the work again. The graph is exported from the local model folder
(no hub access) with mean pooling and L2 normalisation inside, so its output is the
sentence embedding sentence-transformers would give. Exports are cached on disk under
`cache_dir()/onnx`, keyed by the model's content fingerprint and the variant.

Variants: "onnx" (fp32, numerically equal to torch within ~1e-6) and "onnx-int8"
(dynamic int8 weights; benchmarks/encoder_onnx.py measures what it costs in quality).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from explainers import env

VARIANTS = ("onnx", "onnx-int8")
_export_lock = threading.Lock()


def onnx_path(model_path: str, variant: str = "onnx") -> Path:
    """The exported (and for onnx-int8, quantised) graph for a local model folder, built on first use."""
    from explainers.artifacts import cache_dir, model_fingerprint

    if variant not in VARIANTS:
        raise ValueError(f"unknown ONNX variant {variant!r}; choose one of {VARIANTS}")
    if not Path(model_path).is_dir():
        raise ValueError(f"the ONNX backend needs a local model folder, got {model_path!r}")
    folder = cache_dir() / "onnx"
    fp32 = folder / f"{model_fingerprint(model_path)}-fp32.onnx"
    out = fp32 if variant == "onnx" else fp32.with_name(fp32.name.replace("-fp32", "-int8"))
    with _export_lock:
        if not fp32.exists():
            _export(model_path, fp32)
        if not out.exists():
            _quantize(fp32, out)
    return out


def _export(model_path: str, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Embed(torch.nn.Module):
        """Transformer + mean pooling over real tokens + L2 normalisation (the model's modules.json)."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
            hidden = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    model = Embed(AutoModel.from_pretrained(model_path).eval())
    tok = AutoTokenizer.from_pretrained(model_path)
    sample = tok(
        ["a short text", "a somewhat longer sample text to trace"], padding=True, return_tensors="pt"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            (sample["input_ids"], sample["attention_mask"], sample["token_type_ids"]),
            str(tmp),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["embedding"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "embedding": {0: "batch"},
            },
            opset_version=17,
            dynamo=False,
        )
    os.replace(tmp, out)


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    # MatMul weights only, per output channel: quantising everything (embeddings, per-tensor scales)
    # costs MiniLM ~0.04 cosine to its own fp32 vectors; this keeps ~0.99 at most of the speed-up.
    quantize_dynamic(
        str(fp32),
        str(tmp),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=True,
    )
    os.replace(tmp, out)


class OnnxSentenceModel:
    """What `Encoder` needs of a model (`encode`, the dimension), on ONNX Runtime."""

    def __init__(self, model_path: str, variant: str = "onnx", *, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.variant = variant
        self.path = onnx_path(model_path, variant)
        opts = ort.SessionOptions()
        n = threads if threads is not None else env.omp_threads()
        opts.intra_op_num_threads = max(0, n)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.max_length = _max_length(model_path)
        self.tokenizer = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.dim = int(self.session.get_outputs()[0].shape[-1] or 384)

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, **_: object) -> np.ndarray:
        """(n, d) unit vectors; texts are batched by length so little padding is computed."""
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        encs = self.tokenizer.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.full((len(idx), width), self.pad_id, np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            types = np.zeros((len(idx), width), np.int64)
            for row, i in enumerate(idx):
                e = encs[i]
                ids[row, : len(e.ids)] = e.ids
                mask[row, : len(e.ids)] = 1
                types[row, : len(e.ids)] = e.type_ids
            out[idx] = self.session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )[0]
        return out


def _max_length(model_path: str) -> int:
    cfg = Path(model_path) / "sentence_bert_config.json"
    if cfg.exists():
        return int(json.loads(cfg.read_text()).get("max_seq_length", 256))
    return 256
