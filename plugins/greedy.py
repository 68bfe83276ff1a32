"""Greedy decoding: the most likely token at every step."""

from __future__ import annotations

from typing import Any

import torch

from decodekit.hookspecs import hookimpl
from decodekit.strategy import DecodeContext, TokenByToken


class Greedy(TokenByToken):
    """Pick the arg-max of the processed logits (ties go to the lowest token id).

    Token-identical to transformers ``generate(do_sample=False)`` on the same model, inputs
    and processors.
    """

    name = "greedy"
    description = "the most likely token at every step"

    def choose(self, logits: torch.Tensor, ctx: DecodeContext) -> torch.Tensor:
        return torch.argmax(logits, dim=-1)


@hookimpl
def decodekit_register_strategies(register: Any) -> None:
    register(Greedy)
