"""SAM's two-way transformer: prompt tokens and image embedding attend to each other."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import is_traceable_wrapper_subclass
from torch import nn

from .common import MLPBlock


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; when it is trained in bf16 on the CPU (autocast or
    bf16 activations) it runs in fp32: the CPU flash kernel's bf16 backward is ~10x slower than
    its fp32 one (torch 2.13, measured with ``benchmarks/train_step.py``)."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (
        q.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu")
    ):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v)


#: (bias B x T, T): added to the attention logits of every :class:`Attention` call whose keys
#: are T tokens (see :func:`key_token_bias`)
_KEY_BIAS: contextvars.ContextVar[Optional[tuple[torch.Tensor, int]]] = contextvars.ContextVar("key_bias", default=None)


@contextlib.contextmanager
def key_token_bias(bias: torch.Tensor, num_tokens: int) -> Iterator[None]:
    """Within the block, attention whose keys are ``num_tokens`` tokens adds ``bias`` (B x
    num_tokens; e.g. -1e4 on padding slots, so that no query sees them) to its logits, on both
    paths. Used by the fixed-slot TFLite decoder (export.tflite_export.SlotDecoderWrapper)."""
    token = _KEY_BIAS.set((bias, int(num_tokens)))
    try:
        yield
    finally:
        _KEY_BIAS.reset(token)


def _key_bias(num_keys) -> Optional[torch.Tensor]:
    kb = _KEY_BIAS.get()
    return kb[0] if kb is not None and num_keys == kb[1] else None


#: how :class:`Attention` computes: "auto" (the cheaper of the two, from the shapes; where
#: sizes are symbolic, as in an export with a dynamic number of points: "factorised"),
#: "direct", "factorised"
ATTENTION_MODES = ("auto", "direct", "factorised")


@contextlib.contextmanager
def attention_mode(module: nn.Module, mode: str) -> Iterator[None]:
    """Every :class:`Attention` under ``module`` computes in ``mode`` within the block (restored
    after), e.g. ``direct`` while converting a graph whose runtime runs it faster."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode: expected one of {ATTENTION_MODES}, got {mode!r}")
    mods = [m for m in module.modules() if isinstance(m, Attention)]
    old = [m.mode for m in mods]
    for m in mods:
        m.mode = mode
    try:
        yield
    finally:
        for m, o in zip(mods, old):
            m.mode = o


#: PyTorch's CPU softmax over the last dimension is vectorised from 16 elements on; below that it
#: runs a scalar loop (torch 2.13, fp32, 63k rows: 7.7 ms over 15 elements, 0.54 ms over 16; the
#: backward 3.1 vs 0.23 ms). SAM's image -> token attention has 6-15 keys (the prompt tokens).
SOFTMAX_MIN_KEYS = 16


def _softmax_lastdim(x: torch.Tensor) -> torch.Tensor:
    """``x.softmax(-1)``; in eager CPU calls with fewer than :data:`SOFTMAX_MIN_KEYS` elements per
    row, computed on the row padded with -inf up to that size (the padding gets weight 0) and
    sliced back: the same values (to float rounding), 3-4x faster forward + backward. Traced /
    exported graphs keep the plain softmax (symbolic sizes; converters see SAM's ops)."""
    n = x.shape[-1]
    if x.device.type != "cpu" or type(n) is not int or n >= SOFTMAX_MIN_KEYS or _in_graph_capture():
        return x.softmax(dim=-1)
    return F.pad(x, (0, SOFTMAX_MIN_KEYS - n), value=float("-inf")).softmax(dim=-1)[..., :n]


def _in_graph_capture() -> bool:
    if torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return True
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


class Attention(nn.Module):
    """Multi-head attention whose q/k/v projections may downscale the embedding size.

    Two ways to compute the same function (they differ by float rounding only):

    * ``direct``: project q, k and v, attend, project out (SAM's code);
    * ``factorised``: when one side has few tokens (SAM's decoder: a handful of prompt tokens
      against 4096 image tokens), fold the projections of the *large* side into the small side
      by associativity, so the large side is never projected: with few queries,
      ``(q Wk_h) k_in^T`` instead of ``q_h (k_in Wk_h^T)^T`` and ``(a_h v_in) Wv_h^T`` instead of
      ``a_h (v_in Wv_h^T)``; with few keys, ``q_in (k_h Wq_h)^T`` and
      ``sum_h a_h (v_h Wo_h^T)`` (the key bias adds a constant per softmax row). Per large
      token this costs ``2 * heads * n_small * C`` multiply-adds instead of
      ``2 * C * internal_dim``: a gain while ``n_small < head_dim`` (16 in SAM's decoder, i.e.
      up to 10 points with the 5 output tokens and the padding point), a loss beyond it.

    ``mode`` (a plain attribute, see :data:`ATTENTION_MODES`): "auto" picks the cheaper path from
    the shapes (training included: both paths have the same gradients; a fixed-size export such
    as TFLite's decides at conversion) and the factorised one where the number of tokens is
    symbolic (ONNX / ExecuTorch / Core ML decoders take 1..64 points: they are meant for
    interactive prompts; a 64-point prompt then costs ~3x the direct path in these layers)."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide {self.internal_dim}")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)
        self.mode = "auto"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _plain_weights(self) -> bool:
        """The factorised path reshapes the projection weights: only plain tensors (a torchao
        int8 weight is a tensor subclass that takes only its linear kernel)."""
        # (not "type is Tensor or Parameter": under torch.export the weights are fake / functional
        # tensors, and that test sent every exported decoder down the direct path)
        return not any(is_traceable_wrapper_subclass(m.weight)
                       for m in (self.q_proj, self.k_proj, self.v_proj, self.out_proj))

    def _head_weights(self, lin: nn.Linear) -> torch.Tensor:
        """Linear weight (internal x C) as heads x head_dim x C."""
        return lin.weight.reshape(self.num_heads, self.internal_dim // self.num_heads, lin.in_features)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: B x Nq x C, k and v: B x Nk x C (B may be 1 on one side: broadcast) -> B x Nq x C."""
        path = self._path(q, k, v)
        if path == "few_queries":
            return self._few_queries(q, k, v)
        if path == "few_keys":
            return self._few_keys(q, k, v)
        bias = _key_bias(k.shape[1])
        q, k, v = self._heads(self.q_proj(q)), self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        if bias is None:
            out = sdpa(q, k, v)
        else:  # math form (converters take it everywhere), logits + bias over the keys
            attn = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1) + bias[:, None, None, :]
            out = attn.softmax(dim=-1) @ v
        b, h, n, c = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * c))

    def _path(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
        if self.mode == "direct" or q.shape[1] == k.shape[1] or k is not v and k.shape != v.shape \
                or not self._plain_weights():
            return "direct"
        small = "few_queries" if q.shape[1] < k.shape[1] else "few_keys"
        bq, nq, bk, nk = q.shape[0], q.shape[1], k.shape[0], k.shape[1]
        if self.mode == "factorised" or not all(type(x) is int for x in (bq, nq, bk, nk)):
            return small  # symbolic sizes: an export with a dynamic number of points
        h, c, ci = self.num_heads, self.embedding_dim, self.internal_dim
        b = max(bq, bk)
        direct = bq * nq * c * ci + 2 * bk * nk * c * ci + 2 * b * nq * nk * ci + bq * nq * ci * c
        if small == "few_queries":
            fact = bq * nq * c * ci + 2 * b * h * nq * nk * c + 2 * b * nq * ci * c
        else:
            fact = 2 * bk * nk * c * ci + 2 * b * h * nq * nk * c + 2 * b * nk * ci * c
        return small if fact < direct else "direct"

    def _few_queries(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        d = self.internal_dim // h
        q = self._heads(self.q_proj(q_in)) * d ** -0.5                     # B h Nq d
        b, _, nq, _ = q.shape
        qk = torch.matmul(q, self._head_weights(self.k_proj))              # B h Nq C
        qk = qk.reshape(b, h * nq, qk.shape[-1])
        scores = torch.matmul(qk, k_in.transpose(1, 2))                    # B (h Nq) Nk
        if torch.is_grad_enabled() and self.k_proj.bias.requires_grad:
            # q . key bias is the same for every key, so softmax cancels it (inference and the
            # exported graphs skip it); while training it is added so that the key bias takes part
            # in the graph, as in SAM's form (DDP requires every parameter to receive a gradient)
            scores = scores + torch.matmul(q, self.k_proj.bias.reshape(h, d, 1)).reshape(b, h * nq, 1)
        bias = _key_bias(k_in.shape[1])
        if bias is not None:
            scores = scores + bias[:, None, :]
        attn = scores.softmax(dim=-1)
        av = torch.matmul(attn, v_in).reshape(b, h, nq, -1)                # B h Nq C
        out = torch.matmul(av, self._head_weights(self.v_proj).transpose(1, 2))
        out = out + self.v_proj.bias.reshape(h, 1, d)                      # B h Nq d (rows of attn sum to 1)
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, h * d))

    def _few_keys(self, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor) -> torch.Tensor:
        h = self.num_heads
        d = self.internal_dim // h
        k = self._heads(self.k_proj(k_in)) * d ** -0.5                     # B h Nk d
        v = self._heads(self.v_proj(v_in))                                 # B h Nk d
        b, _, nk, _ = k.shape
        kq = torch.matmul(k, self._head_weights(self.q_proj))              # B h Nk C
        kb = torch.matmul(k, self.q_proj.bias.reshape(h, d, 1))            # B h Nk 1: q bias . k
        kq_t, kb = kq.reshape(b, h * nk, -1).transpose(1, 2), kb.reshape(b, 1, h * nk)
        wo = self.out_proj.weight.reshape(self.embedding_dim, h, d).permute(1, 2, 0)  # h d C
        vo = torch.matmul(v, wo).reshape(b, h * nk, self.embedding_dim)    # B (h Nk) C
        # eager, same batch on both sides: the bias adds fused into the GEMMs (baddbmm: one pass
        # less over the B x Nq x (h Nk) scores and the B x Nq x C output, forward and backward)
        fused = q_in.dim() == 3 and q_in.shape[0] == b and not _in_graph_capture()
        scores = torch.baddbmm(kb, q_in, kq_t) if fused else torch.matmul(q_in, kq_t) + kb
        nq = scores.shape[1]
        scores = scores.reshape(scores.shape[0], nq, h, nk)
        bias = _key_bias(nk)
        if bias is not None:
            scores = scores + bias[:, None, None, :]
        attn = _softmax_lastdim(scores).reshape(scores.shape[0], nq, h * nk)
        return torch.baddbmm(self.out_proj.bias, attn, vo) if fused else torch.matmul(attn, vo) + self.out_proj.bias


class TwoWayAttentionBlock(nn.Module):
    """Token self-attention, token->image cross-attention, MLP on tokens, image->token
    cross-attention; post-norm after each."""

    def __init__(
        self,
        *,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, activation)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        q = queries + query_pe
        k = keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q, k, keys))
        queries = self.norm3(queries + self.mlp(queries))

        q = queries + query_pe  # (keys are unchanged since k was formed: SAM recomputes k here)
        keys = self.norm4(keys + self.cross_attn_image_to_token(k, q, queries))
        return queries, keys


class TwoWayTransformer(nn.Module):
    """image_embedding B x C x H x W, image_pe B (or 1, broadcast) x C x H x W; point_embedding B x N x C.
    Returns (tokens B x N x C, image B x HW x C)."""

    def __init__(
        self,
        *,
        depth: int = 2,
        embedding_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        activation: type[nn.Module] = nn.ReLU,
        attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim,
                num_heads=num_heads,
                mlp_dim=mlp_dim,
                activation=activation,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=(i == 0),
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(embedding_dim, num_heads, attention_downsample_rate)
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = image_embedding.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        q = queries + point_embedding
        k = keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q, k, keys))
        return queries, keys
