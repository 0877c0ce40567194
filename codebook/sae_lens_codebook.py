"""The codebook kind as a sae-lens SAE class, so `sae_lens.SAE.load_from_disk` reads it.

Registered as architecture "codecut_codebook" by `saefile.register_with_sae_lens()`. sae-lens SAEs return dense feature activations, so the
codes are scattered into an [..., n] tensor; the codes themselves come from codecut.kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from codecut.kernels import topk_encode
from sae_lens.saes.sae import SAE, SAEConfig
from torch import nn


@dataclass
class CodebookSAEConfig(SAEConfig):
    """sae-lens config of a codecut codebook: k active codes, chosen by cosine similarity."""

    k: int = 32
    rescale_acts_by_decoder_norm: bool = False

    @classmethod
    def architecture(cls) -> str:
        return "codecut_codebook"


class CodebookSAE(SAE[CodebookSAEConfig]):
    """Inference-only sae-lens view of a codecut codebook bottleneck."""

    b_enc: nn.Parameter

    def initialize_weights(self) -> None:
        super().initialize_weights()
        self.b_enc = nn.Parameter(torch.zeros(self.cfg.d_sae, dtype=self.dtype, device=self.device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sae_in = self.hook_sae_input(self.reshape_fn_in(x.to(self.dtype)))
        top = topk_encode(sae_in, self.W_enc, None, self.cfg.k, cosine=True)
        acts = torch.zeros(
            *sae_in.shape[:-1], self.cfg.d_sae, dtype=self.dtype, device=sae_in.device
        )
        return self.hook_sae_acts_post(acts.scatter(-1, top.indices, top.values.relu()))

    def decode(self, feature_acts: torch.Tensor) -> torch.Tensor:
        out = self.hook_sae_recons(feature_acts @ self.W_dec + self.b_dec)
        return self.reshape_fn_out(out, self.d_head)
