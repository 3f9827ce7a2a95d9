"""The Axial Transformer of Ho, Kalchbrenner, Weissenborn and Salimans (2019, arXiv:1912.12180).

An exact autoregressive model of discrete images. The pixels are ordered row by row (raster order)
and, inside a pixel, channel by channel (PixelCNN's order). Every row of the image is therefore
treated as one sequence of `width * channels` tokens, `(w0 c0, w0 c1, ..., w1 c0, ...)`, and the
model is the paper's two-decoder Axial Transformer on the `(height, width * channels)` token grid:

- outer decoder: unmasked row attention + masked (causal) column attention over the embedded image,
  then shift down by one row, so the context of row i is computed from rows < i only. The column
  attention must be masked *before* the shift: unmasked column attention would let row i's context
  see rows >= i through the rows below it.
- inner decoder: the embedded image shifted right by one token, plus the outer context, plus
  positional (row, column, channel) and class embeddings, then masked row attention: a token sees
  the tokens before it in its row and, through the outer context, every row above.

The paper orders channels channel-major with a separate channel encoder; the channel-minor order
used here is another exact order (every conditional sees exactly the tokens before it) and needs no
third stack. Sampling with `use_cache=True` advances the outer decoder one row at a time (the masked
column attention keeps the keys/values of the rows above) and the inner decoder one token at a time
(keys/values cached along the row), through the same attention primitive; see `sampling.py`.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import AxisAttention
from .positional import AxialPositionalEmbedding
from .pretrained import PretrainedMixin
from .sampling import complete_cached, complete_reference
from .validation import check_int, check_probability, check_shape

# Residual branches start close to the identity, as in the official code (zero-ish output
# projections): the untrained model is a per-position unigram model and depth is added gradually.
OUT_PROJ_INIT_STD = 1e-3

ROWS_AXIS, ROW_AXIS = 1, 2  # attended axes of the (batch, height, width * channels, dim) token grid


class _Block(nn.Module):
    """Pre-norm residual attention along one axis, then a pre-norm residual feed-forward.

    `dropout` is residual dropout (on each branch's output, as in the official code); `attn_dropout`
    drops attention weights, which forces SDPA off its fused kernels onto the materialised path, so
    it is a separate opt-in."""

    def __init__(self, dim: int, axis: int, heads: int, dim_heads: Optional[int], causal: bool,
                 ff_mult: int, dropout: float, attn_dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = AxisAttention(dim, axis, heads, dim_heads, causal=causal, dropout=attn_dropout)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim * ff_mult), nn.GELU(), nn.Linear(dim * ff_mult, dim))
        self.drop = _ResidualDropout(dropout)
        for proj in (self.attn.to_out, self.ff[-1]):
            nn.init.normal_(proj.weight, std=OUT_PROJ_INIT_STD)
            nn.init.zeros_(proj.bias)

    def forward(self, x: Tensor, cache: Optional[tuple[Tensor, Tensor]] = None, index: int = 0) -> Tensor:
        """x: (batch, height, length, dim). With `cache` (key and value buffers spanning the whole
        attended axis), x holds the positions at `index` along the axis: their keys/values are
        written there and they attend over the buffers up to and including `index`."""
        h = self.attn_norm(x)
        kv = None
        if cache is not None:
            new = x.shape[self.attn.axis]
            for buf, t in zip(cache, self.attn.project_kv(h)):
                buf.narrow(self.attn.axis, index, new).copy_(t)
            kv = tuple(buf.narrow(self.attn.axis, 0, index + new) for buf in cache)
        x = x + self.drop(self.attn(h, kv=kv))
        return x + self.drop(self.ff(self.ff_norm(x)))

    def new_cache(self, like: Tensor, length: int) -> tuple[Tensor, Tensor]:
        """Empty key/value buffers for a (batch, height, width, dim) input `like` whose attended axis
        will grow to `length`."""
        shape = list(like.shape)
        shape[self.attn.axis] = length
        shape[-1] = self.attn.heads * self.attn.dim_heads
        return like.new_empty(shape), like.new_empty(shape)


class _ResidualDropout(nn.Module):
    """nn.Dropout with a cheaper mask on the CPU: one uniform draw and a comparison per element.

    torch's CPU `bernoulli_` (what nn.Dropout uses) took 11 ms for a (8, 32, 96, 64) float tensor
    where `rand_like(x) >= p` took 3.4 ms (2 threads, AVX-512 EPYC): with 12 residual dropouts per step
    of the default model, a sixth of a training step. The mask has the same law (P(keep) = 1 - p)
    and autograd keeps it as bools. Other devices keep the fused kernel."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _check_levels(x: Any, name: str, shape: tuple[int, ...], layout: str, num_levels: int, owner: str) -> None:
    """An integer tensor of the given shape (after the batch axis) with values in [0, num_levels)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of integers, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must have an integer dtype (e.g. torch.long), got {x.dtype}")
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"{name} must have shape (batch, {layout}) = (batch, {', '.join(map(str, shape))}) "
                         f"for {owner}, got {tuple(x.shape)}")
    if x.numel():
        low, high = torch.aminmax(x)  # one pass, and one device sync for both bounds
        low, high = int(low), int(high)
        if low < 0 or high >= num_levels:
            raise ValueError(f"{name} values must be in [0, {num_levels}) for {owner}, got values in [{low}, {high}]")


class AutoregressiveAxialTransformer(PretrainedMixin, nn.Module):
    """Axial Transformer over discrete images with exact likelihood and cached sampling.

    image_shape = (channels, height, width); images are integer tensors (batch, channels, height,
    width) with values in [0, num_levels). `depth` outer-decoder layers (each: row attention, masked
    column attention, with a feed-forward after each) and `inner_depth` (default `depth`)
    inner-decoder layers (masked row attention + feed-forward). `dropout`: residual dropout after
    every attention and feed-forward; `attn_dropout`: on the attention weights (opt-in: it makes
    SDPA materialise them). num_classes: class-conditional, labels (batch,) in [0, num_classes) are
    then required everywhere.

    forward(x, labels) -> logits (batch, num_levels, channels, height, width): the logits at a
    position depend only on the positions before it in raster order (channels innermost).
    log_prob(x, labels) -> (batch,) exact log-likelihood in nats; bits_per_dim(x, labels) -> (batch,).
    sample(batch_size, labels, temperature, generator, use_cache) -> long (batch, channels, height, width).
    complete(x, keep, labels, temperature, generator, use_cache) -> x with rows >= keep sampled.
    save_pretrained(folder) / from_pretrained(folder): config.json + model.safetensors.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        num_levels: int = 256,
        dim: int = 128,
        heads: int = 4,
        depth: int = 4,
        dim_heads: Optional[int] = None,
        inner_depth: Optional[int] = None,
        ff_mult: int = 4,
        dropout: float = 0.0,
        num_classes: Optional[int] = None,
        attn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.image_shape = check_shape("image_shape", image_shape, 3, what="sizes (channels, height, width)")
        check_int("dim", dim)
        check_int("heads", heads)  # AxisAttention checks dim_heads and divisibility
        self.num_levels = check_int("num_levels", num_levels, minimum=2)
        check_int("depth", depth)
        inner_depth = depth if inner_depth is None else check_int("inner_depth", inner_depth)
        check_int("ff_mult", ff_mult)
        check_probability("dropout", dropout)
        check_probability("attn_dropout", attn_dropout)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        # The constructor arguments, as JSON values: what save_pretrained writes to config.json.
        self.config = {"image_shape": list(self.image_shape), "num_levels": num_levels, "dim": dim, "heads": heads,
                       "depth": depth, "dim_heads": dim_heads, "inner_depth": inner_depth, "ff_mult": ff_mult,
                       "dropout": dropout, "num_classes": num_classes, "attn_dropout": attn_dropout}
        channels, height, width = self.image_shape

        def block(axis: int, causal: bool) -> _Block:
            return _Block(dim, axis, heads, dim_heads, causal, ff_mult, dropout, attn_dropout)

        self.token_emb = nn.Embedding(num_levels, dim)
        self.pos_emb = AxialPositionalEmbedding(dim, (height, width, channels), emb_dim_index=-1)
        self.class_emb = None if num_classes is None else nn.Embedding(num_classes, dim)
        self.outer = nn.ModuleList(
            nn.ModuleList([block(ROW_AXIS, False), block(ROWS_AXIS, True)]) for _ in range(depth)
        )
        self.outer_norm = nn.LayerNorm(dim)
        self.inner = nn.ModuleList(block(ROW_AXIS, True) for _ in range(inner_depth))
        self.final_norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, num_levels)

    @property
    def device(self) -> torch.device:
        return self.token_emb.weight.device

    # -- layout -------------------------------------------------------------------------------
    def to_tokens(self, x: Tensor) -> Tensor:
        """(batch, channels, height, width) -> (batch, height, width * channels), channels innermost."""
        channels, height, width = self.image_shape
        # long: nn.Embedding takes no uint8, the usual dtype of images
        return x.long().permute(0, 2, 3, 1).reshape(x.shape[0], height, width * channels)

    def to_image(self, tokens: Tensor) -> Tensor:
        """The inverse of `to_tokens`: (batch, height, width * channels) -> (batch, channels, height, width)."""
        channels, height, width = self.image_shape
        return tokens.reshape(tokens.shape[0], height, width, channels).permute(0, 3, 1, 2).contiguous()

    def _conditioning(self, labels: Optional[Tensor]) -> Tensor:
        """Positional (+ class) embedding, (1 or batch, height, width * channels, dim)."""
        channels, height, width = self.image_shape
        pos = self.pos_emb.embedding((height, width, channels)).reshape(1, height, width * channels, -1)
        if labels is None:
            return pos
        return pos + self.class_emb(labels)[:, None, None, :]

    def _check(self, x: Optional[Tensor], labels: Optional[Tensor], batch: Optional[int] = None) -> None:
        owner = f"AutoregressiveAxialTransformer(image_shape={self.image_shape}, num_levels={self.num_levels})"
        if x is not None:
            _check_levels(x, "x", self.image_shape, "channels, height, width", self.num_levels, owner)
            batch = x.shape[0]
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given but the model was built with num_classes=None; "
                                 "build it with num_classes=... for class-conditional modelling")
            return
        if labels is None:
            raise ValueError(f"labels are required: the model was built with num_classes={self.num_classes}")
        if isinstance(labels, torch.Tensor) and (labels.ndim != 1 or labels.shape[0] != batch):
            raise ValueError(f"labels must have one label per image, shape ({batch},), got {tuple(labels.shape)}")
        _check_levels(labels, "labels", (), "", self.num_classes, f"num_classes={self.num_classes}")

    # -- the two decoders ----------------------------------------------------------------------
    def outer_layers(self, u: Tensor, caches: Optional[list] = None, row: int = 0) -> Tensor:
        """Outer decoder on embedded rows u (batch, rows, width * channels, dim), not yet shifted.
        With `caches` (one per layer), u holds the rows starting at `row` and the masked column
        attention attends over the cached rows above them (and causally among them)."""
        for i, (row_block, column_block) in enumerate(self.outer):
            u = row_block(u)
            u = column_block(u) if caches is None else column_block(u, caches[i], row)
        return self.outer_norm(u)

    def inner_layers(self, h: Tensor, caches: Optional[list] = None, index: int = 0) -> Tensor:
        """Inner decoder on h (batch, rows, tokens, dim) -> logits (batch, rows, tokens, num_levels).
        With `caches`, h holds the tokens at `index` of a single row."""
        for i, block in enumerate(self.inner):
            h = block(h) if caches is None else block(h, caches[i], index)
        return self.to_logits(self.final_norm(h))

    def token_logits(self, tokens: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Logits on the token grid: long (batch, height, width * channels) -> (batch, height, width *
        channels, num_levels). Unchecked: `forward` is the public entry."""
        emb = self.token_emb(tokens)  # (batch, height, length, dim)
        cond = self._conditioning(labels)
        context = self.outer_layers(emb + cond)
        # Row i's context comes from rows < i only; token j of a row sees tokens < j of its row.
        context = F.pad(context, (0, 0, 0, 0, 1, 0))[:, :-1]
        shifted = F.pad(emb, (0, 0, 1, 0))[:, :, :-1]
        return self.inner_layers(shifted + cond + context)

    def forward(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        self._check(x, labels)
        logits = self.token_logits(self.to_tokens(x), labels)
        channels, height, width = self.image_shape
        return logits.reshape(x.shape[0], height, width, channels, self.num_levels).permute(0, 4, 3, 1, 2)

    def log_prob(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Exact log-likelihood of each image in nats, (batch,)."""
        self._check(x, labels)
        return self.log_prob_tokens(self.to_tokens(x), labels)

    def log_prob_tokens(self, tokens: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """`log_prob` on the token grid (batch, height, width * channels), unchecked (see `token_logits`)."""
        # Scored with the levels last and contiguous: cross-entropy over forward's levels-first view
        # would copy the logits and normalise along a strided axis (a tenth of a training step at 32x32x3).
        logits = self.token_logits(tokens, labels)
        nats = F.cross_entropy(logits.flatten(0, -2), tokens.flatten(), reduction="none")
        return -nats.reshape(tokens.shape).sum((1, 2))

    def bits_per_dim(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood per sub-pixel in bits, (batch,)."""
        return -self.log_prob(x, labels) / (math.prod(self.image_shape) * math.log(2))

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        batch_size: int,
        labels: Optional[Tensor] = None,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Draw images (batch_size, channels, height, width), long, in the model's order: `complete`
        with nothing kept."""
        check_int("batch_size", batch_size)
        blank = torch.zeros(batch_size, *self.image_shape, dtype=torch.long, device=self.device)
        return self.complete(blank, 0, labels, temperature, generator, use_cache)

    @torch.no_grad()
    def complete(
        self,
        x: Tensor,
        keep: int,
        labels: Optional[Tensor] = None,
        temperature: float = 1.0,
        generator: Optional[torch.Generator] = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Keep the first `keep` rows of the images x (batch, channels, height, width) and sample the
        rest in the model's order; returns a new long tensor of x's shape (x's later rows are ignored).

        temperature divides the logits. `generator` (on the model's device) makes draws
        reproducible; both paths consume it identically, so `use_cache=True` and `use_cache=False`
        return the same images for the same generator state. The cached path runs the kept rows
        through the outer decoder once, filling its caches, and never samples them. Dropout is off
        while sampling.
        """
        self._check(x, labels)
        height = self.image_shape[1]
        check_int("keep", keep, minimum=0)
        if keep > height:
            raise ValueError(f"keep must be in [0, {height}] (the image height), got {keep}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a positive float, got {type(temperature).__name__}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
            if generator.device.type != self.device.type:
                raise ValueError(f"generator is on {generator.device}, the model on {self.device}: "
                                 f"create it with torch.Generator(device={str(self.device.type)!r})")
        tokens = self.to_tokens(x.to(self.device))
        was_training = self.training
        self.eval()
        try:
            run = complete_cached if use_cache else complete_reference
            tokens = run(self, tokens, keep, labels, float(temperature), generator)
        finally:
            self.train(was_training)
        return self.to_image(tokens)
