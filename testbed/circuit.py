"""A hand-initialised copy (induction) circuit for the tiny Qwen2 models.

A ReSearch model copies names: from the question into its search query, from a
result block into its next query and into ``\\boxed{}``. Transformers copy with an
*induction circuit* (Olsson et al., 2022): a previous-token head in one layer
writes "the token before me" into the residual stream, and an induction head in
a later layer attends to the position whose previous token equals the current
token and copies what stands there. Trained from scratch on two CPU cores, a
2-layer model never found that circuit within our budget (exact match 0 on
held-out questions), so :func:`wire_copy_circuit` writes it into the initial
weights, and training adapts it like any other weights. Only ordinary Qwen2
parameters are set (biases, projections), so vLLM and transformers load the
checkpoint as they load any Qwen2.

Residual stream layout at initialisation (``COPY_WIDTH`` dims each): the token's
identity (the embedding), the previous token's (written by layer 0 head 0), the
one before that (layer 0 head 1). :func:`wire_pointer_head` adds four flag dims
after them and the trigger tokens' identities after those.

The induction head copies a name where the words before it match the words
before an earlier mention ("made by X" from a passage's "made by X"). A search
query or a boxed answer has no such words before it: there
:func:`wire_pointer_head` copies the first piece of the entity named last.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

COPY_WIDTH = 32
"""Residual dims for a token's identity (and as many for each of the two tokens before it)."""
NAME, CONTINUES, AFTER_CONTINUES, TRIGGER = range(3 * COPY_WIDTH, 3 * COPY_WIDTH + 4)
"""Flag dims: the token starts a word of a name; it continues a word (or starts a name's);
the previous token did (written by layer 0 head 0); the token is a pointer trigger."""


def wire_copy_circuit(
    model: Any,
    *,
    sharpness: float = 12.0,
    match: float = 8.0,
    copy: float = 8.0,
    bigram: float = 0.7,
) -> None:
    """Make layer 0 heads previous-token heads and layer 1 head 0 an induction head.

    Head 0 of layer 0 looks one token back, head 1 two tokens back; the induction
    head matches on both (the second with weight ``bigram``), so a name piece that
    occurs in several names is continued the way it was after the same piece before.

    Needs ``heads == kv_heads``, ``head_dim >= 2 * COPY_WIDTH`` and a RoPE base of
    about 1e6, so that the slowest half of the rotary pairs barely turns over a
    context of a few thousand tokens (the induction head matches content, not position).
    """
    import torch

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    half, width = head_dim // 2, COPY_WIDTH
    if cfg.num_key_value_heads != cfg.num_attention_heads or cfg.num_attention_heads < 2 or cfg.num_hidden_layers < 2:
        raise ValueError("the copy circuit needs kv_heads == heads >= 2 and at least 2 layers")
    if not cfg.tie_word_embeddings:
        raise ValueError("the copy circuit needs tie_word_embeddings (it writes into the output embedding)")
    if head_dim < 2 * width or cfg.hidden_size < 3 * width:
        raise ValueError(f"the copy circuit needs head_dim >= {2 * width} and hidden_size >= {3 * width}")
    theta = cfg.rope_parameters["rope_theta"] ** (-torch.arange(half, dtype=torch.float64) * 2 / head_dim)
    token, previous, before = slice(0, width), slice(width, 2 * width), slice(2 * width, 3 * width)
    eye = torch.eye(width)
    mix = torch.linalg.qr(torch.randn(width, width))[0]  # keeps the two matches apart in one space
    prev_head = model.model.layers[0].self_attn
    induction = model.model.layers[1].self_attn
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        embedding.zero_()
        embedding[:, token] = torch.randn(embedding.shape[0], width)
        heads = [(prev_head, 0, 1, previous), (prev_head, head_dim, 2, before), (induction, 0, 0, token)]
        for attn, at, _, _ in heads:
            rows = slice(at, at + head_dim)
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                proj.weight[rows].zero_()
                proj.bias[rows].zero_()
            attn.o_proj.weight[:, rows].zero_()
            attn.v_proj.weight[at : at + width, token] = eye  # every circuit head moves token identities
        # Look-back heads: constant queries and keys (biases only) whose rotary phases
        # differ by `back` positions in the fastest pairs, so position i attends to i - back.
        for attn, at, back, into in heads[:2]:
            for i in range(6):
                attn.q_proj.bias[at + i] = sharpness
                attn.k_proj.bias[at + i] = sharpness * math.cos(back * theta[i])
                attn.k_proj.bias[at + i + half] = sharpness * math.sin(back * theta[i])
            attn.o_proj.weight[into, at : at + width] = eye
        # Induction head: query = (my token, the one before me), key = (the token before
        # you, the one before that), in the slowest rotary pairs; the value it copies is
        # the attended token itself.
        slow = [i for i in range(half // 2, half)] + [i + half for i in range(half // 2, half)]
        q, k = induction.q_proj.weight, induction.k_proj.weight
        q[slow, token] = match * eye
        q[slow, previous] = match * bigram * mix
        k[slow, previous] = eye
        k[slow, before] = bigram * mix
        induction.o_proj.weight[token, :width] = copy * eye


def wire_pointer_head(
    model: Any,
    *,
    triggers: Collection[int],
    name_starts: Collection[int],
    continuations: Collection[int],
    recency: float = 40.0,
    penalty: float = 2.0,
    copy: float = 16.0,
) -> None:
    """Make layer 1 head 1 copy, at a trigger token, the first piece of the most recent name.

    ``triggers`` are the tokens after which a name follows with no words to match
    (`` <search>``, `` \\boxed{``); ``name_starts`` the pieces that begin a word of a
    name (``" Mara"``); ``continuations`` the pieces that continue a word. The head
    attends from a trigger to name starts whose previous token does not continue a
    word (so to "Mara", not to "Quessel" in "Mara Quessel"), the most recent first:
    its query and key sit in rotary pairs 6-14, whose summed cosines fall with
    distance over the first hundred tokens and stay below half after. Call after
    :func:`wire_copy_circuit`; the triggers' identities move out of the induction
    head's reach (it would copy what followed the trigger last time) into dims of
    their own.
    """
    import torch

    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    width = COPY_WIDTH
    if cfg.num_attention_heads < 3 or cfg.hidden_size < TRIGGER + 1 + width:
        raise ValueError(f"the pointer head needs heads >= 3 and hidden_size >= {TRIGGER + 1 + width}")
    at, token, pairs = head_dim, slice(0, width), range(6, 15)
    pointer, look_back = model.model.layers[1].self_attn, model.model.layers[0].self_attn
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        triggers, name_starts, continuations = list(triggers), list(name_starts), list(continuations)
        embedding[name_starts, NAME] = 1.0
        embedding[continuations, CONTINUES] = 1.0
        mark_triggers(model, triggers)
        look_back.v_proj.weight[width, CONTINUES] = 1.0  # head 0's spare value dim carries the flag forward
        look_back.o_proj.weight[AFTER_CONTINUES, width] = 1.0
        rows = slice(at, at + head_dim)
        for proj in (pointer.q_proj, pointer.k_proj, pointer.v_proj):
            proj.weight[rows].zero_()
            proj.bias[rows].zero_()
        pointer.o_proj.weight[:, rows].zero_()
        for i in pairs:
            pointer.q_proj.weight[at + i, TRIGGER] = recency
            pointer.k_proj.weight[at + i, NAME] = 1.0
            pointer.k_proj.weight[at + i, AFTER_CONTINUES] = -penalty
        pointer.v_proj.weight[at : at + width, token] = torch.eye(width)
        pointer.o_proj.weight[token, at : at + width] = copy * torch.eye(width)


def mark_triggers(model: Any, triggers: Collection[int]) -> None:
    """Give ``triggers`` the pointer head's trigger flag and identities of their own (no token identity).

    :func:`wire_pointer_head` calls it; call it alone to teach a wired (or trained) model new
    triggers: their embedding rows are reset to the flag and a fresh random identity.
    """
    import torch

    triggers = list(triggers)
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        embedding[triggers, : TRIGGER + 1] = 0.0
        embedding[triggers, TRIGGER] = 1.0
        embedding[triggers, TRIGGER + 1 : TRIGGER + 1 + COPY_WIDTH] = torch.randn(len(triggers), COPY_WIDTH)
