"""The Axial Transformer of Ho, Kalchbrenner, Weissenborn and Salimans (2019, arXiv:1912.12180), over
any number of axes: sequences (C, L), images (C, H, W), videos (C, T, H, W), volumes over time...

An exact autoregressive model of discrete tensors. The order is raster over the axes (the first
slowest) and, inside a position, channel by channel (PixelCNN's order). The last axis and the
channels form one sequence of `a_n * channels` tokens, so the model works on the token grid
(a_1, ..., a_{n-1}, a_n * channels) with one decoder level per axis, the paper's construction
generalised:

- level k < n (the "outer" level for a_1, "middle" levels for a_2 .. a_{n-1}): over the embedded
  input plus the contexts of the levels above it, unmasked attention along the axes after a_k and
  masked (causal) attention along a_k; then a shift by one along a_k, so that the context a slice
  receives comes from the slices before it only. (Masked *before* the shift: unmasked attention
  along a_k would let a slice see the ones after it through its neighbours.)
- the inner level: the input shifted right by one token, plus every context, plus positional
  (every axis and channel) and class embeddings, then masked attention along the last axis: a
  token sees the tokens before it in its row and, through the contexts, every earlier slice.

For images this is the paper's two-decoder stack on a (height, width * channels) grid, with the
same parameter names as before the generalisation (`outer`, `outer_norm`, `inner`). The paper
orders channels channel-major with a separate channel encoder; the channel-minor order used here is
another exact order and needs no third stack. Sampling with `use_cache=True` keeps one cache per
level: level k advances one slice of a_k at a time (its masked attention keeps the keys/values of
the earlier slices), the inner level one token at a time; see `sampling.py`.
"""
from __future__ import annotations

import inspect
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..layers.neighbourhood import PastNeighbourhoodAttention
from ..layers.positional import AxialPositionalEmbedding
from ..validation import (
    check_choice,
    check_generator,
    check_int,
    check_levels,
    check_odd,
    check_positive_number,
    check_probability,
    check_shape,
)
from .decoder import OUT_PROJ_INIT_STD, DecoderBlock
from .pretrained import PretrainedMixin
from .sampling import complete_cached, complete_reference

# How positions enter: a learned embedding per axis and channel (the paper's), or rotary positions in every
# attention (relative, no table: any size), with a learned embedding of the channel only.
POSITION_SCHEMES = ("learned", "rotary")
AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("frames", "height", "width")}


def shift_forward(t: Tensor, axis: int) -> Tensor:
    """Move t one step along `axis` (zeros first, the last slice dropped): position i gets i - 1."""
    first = t.new_zeros(t.shape[:axis] + (1,) + t.shape[axis + 1 :])
    return torch.cat([first, t.narrow(axis, 0, t.shape[axis] - 1)], dim=axis)


class AutoregressiveAxialTransformer(PretrainedMixin, nn.Module):
    """Axial Transformer over discrete tensors with exact likelihood, cached sampling and completion.

    image_shape = (channels, *axes): (C, L) a sequence, (C, H, W) an image, (C, T, H, W) a video, or
    more axes. Inputs are integer tensors (batch, *image_shape) with values in [0, num_levels).
    One decoder level per axis: `depth` layers for every level but the last (each layer: unmasked
    attention along every later axis and masked attention along the level's own, with a
    feed-forward after each) and `inner_depth` (default `depth`) masked inner layers; or
    `level_depths`, one count per axis, outermost first. `dropout`: residual dropout after every
    attention and feed-forward; `attn_dropout`: on the attention weights (opt-in: it makes SDPA
    materialise them). num_classes: class-conditional, labels (batch,) in [0, num_classes) are then
    required everywhere.
    past_window (odd, default None = off): attention from every position into a past_window-wide
    neighbourhood (along the later axes) of the `past_slices` slices of the first axis before it, with
    a causal query: how a video model follows motion from frame to frame (neighbourhood.py). Needs at
    least two axes; its output joins every level's input.
    pos_emb: "learned" (default: a learned embedding per axis and channel, for one image_shape) or "rotary"
    (rotary positions in every attention, relative: no table tied to a size; a learned channel embedding).
    Set `model.activation_checkpointing = True` to recompute each decoder block in backward instead of
    keeping its activations (less memory, about a quarter more time, the same gradients).

    forward(x, labels) -> logits (batch, num_levels, *image_shape): the logits at a position depend
    only on the positions before it in the order (raster over the axes, channels innermost).
    log_prob(x, labels) -> (batch,) exact log-likelihood in nats; bits_per_dim(x, labels) -> (batch,).
    sample(batch_size, labels, temperature, generator, use_cache) -> long (batch, *image_shape).
    complete(x, keep, labels, temperature, generator, use_cache) -> x with its first `keep` slices of
    the first axis kept (rows of an image, frames of a video) and the rest sampled.
    save_pretrained(folder) / from_pretrained(folder or Hub repo id) / push_to_hub(repo_id): config.json +
    model.safetensors (models/hub.py for the Hub).
    """

    pos_emb_kind = "learned"  # class-level default: models pickled before the option existed

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
        level_depths: Optional[Sequence[int]] = None,
        past_window: Optional[int] = None,
        past_slices: int = 1,
        pos_emb: str = "learned",
    ) -> None:
        super().__init__()
        self.image_shape = check_shape("image_shape", image_shape, what="sizes (channels, *axes)")
        if len(self.image_shape) < 2:
            raise ValueError(f"image_shape must be (channels, *axes) with at least one axis, e.g. (1, 64) or "
                             f"(3, 32, 32), got {tuple(image_shape)!r}")
        check_int("dim", dim)
        check_int("heads", heads)  # AxisAttention checks dim_heads and divisibility
        self.num_levels = check_int("num_levels", num_levels, minimum=2)
        check_int("depth", depth)
        inner_depth = depth if inner_depth is None else check_int("inner_depth", inner_depth)
        check_int("ff_mult", ff_mult)
        check_probability("dropout", dropout)
        check_probability("attn_dropout", attn_dropout)
        self.num_classes = None if num_classes is None else check_int("num_classes", num_classes)
        channels, *axes = self.image_shape
        n = self.num_axes = len(axes)
        if past_window is not None:
            check_odd("past_window", past_window)
            if n < 2:
                raise ValueError(f"past_window needs at least two axes (slices of the first axis with positions "
                                 f"to look around), got image_shape {tuple(image_shape)!r}; pass past_window=None")
        check_int("past_slices", past_slices)
        self.pos_emb_kind = check_choice("pos_emb", pos_emb, POSITION_SCHEMES)
        if level_depths is None:
            depths = (depth,) * (n - 1) + (inner_depth,)
        else:
            depths = check_shape("level_depths", level_depths, n, what="layer counts, one per axis (outermost first)")
        # The constructor arguments, as JSON values: what save_pretrained writes to config.json.
        self.config = {"image_shape": list(self.image_shape), "num_levels": num_levels, "dim": dim, "heads": heads,
                       "depth": depth, "dim_heads": dim_heads, "inner_depth": inner_depth, "ff_mult": ff_mult,
                       "dropout": dropout, "num_classes": num_classes, "attn_dropout": attn_dropout,
                       "level_depths": None if level_depths is None else list(depths),
                       "past_window": past_window, "past_slices": past_slices, "pos_emb": pos_emb}

        def block(axis: int, causal: bool) -> DecoderBlock:
            return DecoderBlock(dim, axis, heads, dim_heads, causal, ff_mult, dropout, attn_dropout,
                                rotary=pos_emb == "rotary")

        def level(k: int, layers: int) -> nn.ModuleList:
            """Level of token-grid axis k: per layer, unmasked blocks along axes k+1..n, then masked along k."""
            return nn.ModuleList(
                nn.ModuleList([*(block(j, False) for j in range(k + 1, n + 1)), block(k, True)]) for _ in range(layers)
            )

        self.token_emb = nn.Embedding(num_levels, dim)
        # Rotary positions are relative, so only which channel a token is stays learned (none for one channel).
        self.pos_emb = (AxialPositionalEmbedding(dim, (*axes, channels), emb_dim_index=-1) if pos_emb == "learned"
                        else nn.Embedding(channels, dim) if channels > 1 else None)
        self.class_emb = None if num_classes is None else nn.Embedding(num_classes, dim)
        # Level 1 keeps the image model's names (`outer`, `outer_norm`), so its checkpoints load as they are.
        self.outer = level(1, depths[0]) if n > 1 else nn.ModuleList()
        self.outer_norm = nn.LayerNorm(dim) if n > 1 else None
        self.middle = nn.ModuleList(level(k, depths[k - 1]) for k in range(2, n))
        self.middle_norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(2, n))
        self.inner = nn.ModuleList(block(n, True) for _ in range(depths[-1]))
        self.final_norm = nn.LayerNorm(dim)
        self.to_logits = nn.Linear(dim, num_levels)
        # Not part of the model (its config and weights): how training trades time for memory.
        self.activation_checkpointing = False
        # Opt-in: attention from each position into a window of the slices before it (neighbourhood.py),
        # what a video model needs to follow motion. Its output joins every level's input.
        self.past = None
        if past_window is not None:
            self.past_pixels = nn.Linear(channels * dim, dim)  # a pixel's channel embeddings -> one vector
            self.past = PastNeighbourhoodAttention(dim, n, past_window, past_slices, heads)
            nn.init.normal_(self.past.to_out.weight, std=OUT_PROJ_INIT_STD)
            nn.init.zeros_(self.past.to_out.bias)

    def extra_repr(self) -> str:
        """image_shape and num_levels, then the constructor arguments that differ from their defaults."""
        shown = {"image_shape": self.image_shape, "num_levels": self.num_levels}
        defaults = {name: p.default for name, p in inspect.signature(type(self).__init__).parameters.items()}
        defaults["inner_depth"] = self.config["depth"]  # its default, None, means "as depth"
        shown.update((name, value) for name, value in self.config.items()
                     if name not in shown and value != defaults[name])
        return ", ".join(f"{name}={value!r}" for name, value in shown.items())

    @property
    def device(self) -> torch.device:
        return self.token_emb.weight.device

    @property
    def axis_names(self) -> tuple[str, ...]:
        return AXIS_NAMES.get(self.num_axes, tuple(f"axis {i + 1}" for i in range(self.num_axes)))

    # -- layout -------------------------------------------------------------------------------
    def to_tokens(self, x: Tensor) -> Tensor:
        """(batch, channels, *axes) -> the token grid (batch, a_1, ..., a_{n-1}, a_n * channels)."""
        # long: nn.Embedding takes no uint8, the usual dtype of images
        return rearrange(x.long(), "b c ... w -> b ... (w c)")

    def to_image(self, tokens: Tensor) -> Tensor:
        """The inverse of `to_tokens`: (batch, a_1, ..., a_n * channels) -> (batch, channels, *axes)."""
        return rearrange(tokens, "b ... (w c) -> b c ... w", c=self.image_shape[0]).contiguous()

    def _conditioning(self, labels: Optional[Tensor]) -> Tensor:
        """Positional (+ class) embedding, (1 or batch, *token grid, dim)."""
        channels, *axes = self.image_shape
        if self.pos_emb_kind == "learned":
            pos = rearrange(self.pos_emb.embedding((*axes, channels)), "1 ... w c d -> 1 ... (w c) d")
        elif self.pos_emb is not None:  # rotary: the channel's embedding at each of its tokens
            pos = self.pos_emb.weight.repeat(axes[-1], 1).reshape(1, *(1,) * (len(axes) - 1), -1, self.config["dim"])
        else:
            pos = self.token_emb.weight.new_zeros(1, *(1,) * len(axes), self.config["dim"])
        if labels is None:
            return pos
        return pos + self.class_emb(labels).reshape(-1, *(1,) * self.num_axes, pos.shape[-1])

    def pixel_embeddings(self, emb: Tensor) -> Tensor:
        """Token embeddings (batch, *grid, dim) -> one vector per position of the axes, (batch, *axes, dim),
        from all its channels: what the past-slice attention looks at."""
        return self.past_pixels(rearrange(emb, "... (w c) d -> ... w (c d)", c=self.image_shape[0]))

    def on_grid(self, per_position: Tensor) -> Tensor:
        """(batch, *axes, dim) -> (batch, *grid, dim), each position's vector repeated for its channels."""
        return repeat(per_position, "... w d -> ... (w c) d", c=self.image_shape[0])

    def past_context(self, emb: Tensor) -> Union[Tensor, int]:
        """The past-slice attention's output on the token grid (0 when the model has none). At a position it
        depends on the earlier slices and on the positions of its own slice before it only, so every level
        may take it as input."""
        if self.past is None:
            return 0
        return self.on_grid(self.past(self.pixel_embeddings(emb)))

    def _check(self, x: Optional[Tensor], labels: Optional[Tensor], batch: Optional[int] = None) -> None:
        if x is not None:
            layout = ", ".join(("channels", *self.axis_names))
            check_levels(x, "x", self.image_shape, layout, self.num_levels, self)
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
        check_levels(labels, "labels", (), "", self.num_classes, self)

    # -- the decoder levels --------------------------------------------------------------------
    def level_layers(self, k: int, u: Tensor, caches: Optional[list] = None, index: int = 0) -> Tensor:
        """Level k (1 .. num_axes - 1) on u (batch, *grid, dim), not yet shifted. With `caches` (one per
        layer), u holds the slices of axis k from `index` on, and the masked attention attends over
        the cached earlier slices too (and causally among the new ones)."""
        layers, norm = (self.outer, self.outer_norm) if k == 1 else (self.middle[k - 2], self.middle_norms[k - 2])
        for i, (*unmasked, masked) in enumerate(layers):
            for block in unmasked:
                u = self._run(block, u)
            u = self._run(masked, u) if caches is None else masked(u, caches[i], index)
        return norm(u)

    def _run(self, block: DecoderBlock, x: Tensor) -> Tensor:
        """block(x), recomputed in backward instead of keeping its activations when
        `activation_checkpointing` is on (same gradients: dropout replays its random state)."""
        if self.activation_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def inner_layers(self, h: Tensor, caches: Optional[list] = None, index: int = 0) -> Tensor:
        """Inner level on h (batch, *grid, dim) -> logits (batch, *grid, num_levels). With `caches`,
        h holds the tokens from `index` on of a single row."""
        for i, block in enumerate(self.inner):
            h = self._run(block, h) if caches is None else block(h, caches[i], index)
        return self.to_logits(self.final_norm(h))

    def token_logits(self, tokens: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Logits on the token grid: long (batch, *grid) -> (batch, *grid, num_levels).
        Unchecked: `forward` is the public entry."""
        emb = self.token_emb(tokens)  # (batch, *grid, dim)
        cond = self._conditioning(labels) + self.past_context(emb)
        context: Union[Tensor, int] = 0  # the contexts of the levels above, each already shifted
        for k in range(1, self.num_axes):
            context = context + shift_forward(self.level_layers(k, emb + cond + context), k)
        # Token j of a row sees tokens < j of its row, and every earlier slice through the contexts.
        return self.inner_layers(shift_forward(emb, self.num_axes) + cond + context)

    def forward(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        self._check(x, labels)
        logits = self.token_logits(self.to_tokens(x), labels)
        return rearrange(logits, "b ... (w c) levels -> b levels c ... w", c=self.image_shape[0])

    def log_prob(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Exact log-likelihood of each image in nats, (batch,)."""
        self._check(x, labels)
        return self.log_prob_tokens(self.to_tokens(x), labels)

    def log_prob_tokens(self, tokens: Tensor, labels: Optional[Tensor] = None, per_slice: bool = False) -> Tensor:
        """`log_prob` on the token grid (batch, *grid), unchecked (see `token_logits`); with `per_slice`,
        (batch, a_1): the log-likelihood of each slice of the first axis given the slices before it."""
        # Scored with the levels last and contiguous: cross-entropy over forward's levels-first view
        # would copy the logits and normalise along a strided axis (a tenth of a training step at 32x32x3).
        logits = self.token_logits(tokens, labels)
        nats = F.cross_entropy(logits.flatten(0, -2), tokens.flatten(), reduction="none")
        if per_slice:  # a sequence's grid is (length * channels,): a slice is a position's channels
            per_position = math.prod(self.image_shape) // self.image_shape[1]
            return -nats.reshape(tokens.shape[0], self.image_shape[1], per_position).sum(-1)
        return -nats.reshape(tokens.shape).flatten(1).sum(1)

    def bits_per_dim(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood per sub-pixel in bits, (batch,)."""
        return -self.log_prob(x, labels) / (math.prod(self.image_shape) * math.log(2))

    def bits_per_slice(self, x: Tensor, labels: Optional[Tensor] = None) -> Tensor:
        """Negative log-likelihood of each slice of the first axis given the slices before it, in bits:
        (batch, a_1), e.g. the bits each frame of a video costs. Sums to bits_per_dim times the size of x."""
        self._check(x, labels)
        return -self.log_prob_tokens(self.to_tokens(x), labels, per_slice=True) / math.log(2)

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
        """Draw tensors (batch_size, *image_shape), long, in the model's order: `complete` with
        nothing kept."""
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
        """Keep the first `keep` slices along the first axis of x (batch, *image_shape) — rows of an
        image, frames of a video — and sample the rest in the model's order; returns a new long
        tensor of x's shape (x's later slices are ignored).

        temperature divides the logits. `generator` (on the model's device) makes draws
        reproducible; both paths consume it identically, so `use_cache=True` and `use_cache=False`
        return the same tensors for the same generator state. The cached path runs the kept slices
        through the decoder levels once, filling their caches, and never samples them. Dropout is
        off while sampling.
        """
        self._check(x, labels)
        first = self.image_shape[1]
        check_int("keep", keep, minimum=0)
        if keep > first:
            raise ValueError(f"keep must be in [0, {first}] (the size of the first axis, {self.axis_names[0]}), "
                             f"got {keep}")
        temperature = check_positive_number("temperature", temperature)
        check_generator(generator, self.device)
        tokens = self.to_tokens(x.to(self.device))
        was_training = self.training
        self.eval()
        try:
            run = complete_cached if use_cache else complete_reference
            tokens = run(self, tokens, keep, labels, temperature, generator)
        finally:
            self.train(was_training)
        return self.to_image(tokens)
