"""DiffuMIN (Lai et al., RecSys'25, arXiv 2508.15311) in the zoo's two-branch layout.

Long branch: OMIE splits the target into c orthonormal interest channels, routes every real behaviour to
its closest channel and pools the top-p % of each channel into r_j; DMIG regenerates every channel's
interest r*_j with a conditional diffusion model from a noised copy, the other channels and the channel
vector; CMIC ties r_j and r*_j of the same user with an in-batch InfoNCE loss. Short branch: a small
post-LN Transformer over the last ``short_seq_len - 1`` behaviours and the target, read at the target slot.
Loss: BCE + diffusion_loss_weight * L_d + contrastive_loss_weight * L_cl (training only).

Spec: ``shared/docs/DIFFUMIN_SPEC.md``.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from lainctr.layers import LMASettings, prepend_prompts
from lainctr.layers.contrastive import ContrastiveCalibrator
from lainctr.layers.diffusion import DiffusionInterestGenerator
from lainctr.layers.lain import BranchCondition
from lainctr.layers.omie import OrthogonalInterestExtractor, TargetAttentionExtractor
from lainctr.layers.transformer import EncoderBlock
from lainctr.models import BranchInputs, BranchOutput, InterestBranch, SequenceCTRModel
from lainctr.models.branch import recent_window

SHORT_ENCODERS = ("transformer", "attention")
EMPTY_CHANNELS = ("zero", "generate")     # r* of a channel with an empty S_j: 0 (spec) | generated (public code)
INTEREST_EXTRACTORS = {"omie": OrthogonalInterestExtractor, "target_attention": TargetAttentionExtractor}


class MultiInterestBranch(InterestBranch):
    """OMIE + DMIG (+ the weighted L_d and L_cl in training): interest [r_1 .. r_c, r*_1 .. r*_c], (B, 2 c d);
    without DMIG (the "w/o DMIG" ablation) [r_1 .. r_c], (B, c d), and no auxiliary loss.

    r_j is fed raw to the head; DMIG and CMIC work on the unit r_j / ||r_j||. A channel whose set S_j is
    empty has r_j = r*_j = 0 (no generation; ``empty_channel: generate``, the public code's reading D6,
    generates its r* from the noised zero); the losses count only channels whose S_j holds a real behaviour
    (with LAIN, prompts fill every set but do not make a channel count).

    Args:
        extractor: OMIE (or the "w/o OMIE" target attention); generator: DMIG, or None (no r*, no L_d);
        calibrator: CMIC, or None (contrastive_loss_weight 0; always without a generator).
        diffusion_loss_weight / contrastive_loss_weight: lambda_1, lambda_2 (0 = that loss is not computed).
        empty_channel: ``zero`` or ``generate``.
    """

    def __init__(self, extractor: OrthogonalInterestExtractor, generator: Optional[DiffusionInterestGenerator],
                 calibrator: Optional[ContrastiveCalibrator], diffusion_loss_weight: float,
                 contrastive_loss_weight: float, empty_channel: str = "zero"):
        if generator is None and (calibrator is not None or diffusion_loss_weight > 0):
            raise ValueError("without the generator (use_generator: False) there is no r* to denoise or calibrate: "
                             "set diffusion_loss_weight and contrastive_loss_weight to 0")
        if empty_channel not in EMPTY_CHANNELS:
            raise ValueError(f"empty_channel must be one of {EMPTY_CHANNELS}, got '{empty_channel}'")
        width = extractor.output_dim() + (generator.output_dim() if generator is not None else 0)
        super().__init__(width, accepts_prompts=True, accepts_lma=True)
        self.extractor, self.generator, self.calibrator = extractor, generator, calibrator
        self.diffusion_loss_weight, self.contrastive_loss_weight = diffusion_loss_weight, contrastive_loss_weight
        self.empty_channel = empty_channel

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        omie = self.extractor(inputs.target, inputs.history, inputs.mask, condition)
        if self.generator is None:
            return BranchOutput(omie.interests.flatten(1))
        unit = F.normalize(omie.interests, dim=-1)
        rows = self.generator.bank_rows(inputs.user_index, inputs.item_rows[:, -1], inputs.history_length)
        filled = omie.kept_counts > 0 if self.empty_channel == "zero" else torch.ones_like(omie.kept_counts).bool()
        generated = self.generator.generate(unit, omie.channels, filled, rows)
        auxiliary_loss = self.auxiliary_loss(unit, generated, omie.channels, omie.selected.sum(1) > 0,
                                             inputs.user_index) if self.training else None
        interest = torch.cat([omie.interests, generated], dim=1).flatten(1)
        return BranchOutput(interest, auxiliary_loss=auxiliary_loss)

    def auxiliary_loss(self, unit: torch.Tensor, generated: torch.Tensor, channels: torch.Tensor,
                       real: torch.Tensor, user: torch.Tensor) -> Optional[torch.Tensor]:
        """lambda_1 L_d + lambda_2 L_cl over the channels with a real behaviour (None when both weights are 0).
        The denoising loss draws its noise after the generation, so the generation does not depend on it."""
        losses = []
        if self.diffusion_loss_weight > 0:
            losses.append(self.diffusion_loss_weight * self.generator.denoising_loss(unit, channels, real))
        if self.calibrator is not None:
            losses.append(self.contrastive_loss_weight * self.calibrator(unit, generated, real, user))
        return sum(losses) if losses else None


class EncoderShortBranch(InterestBranch):
    """The short-term encoder: H = [P; s_(T-w+1) .. s_T; q] (LAIN's prompts P first, if any) through N_s
    post-LN encoder blocks with a key-padding mask (the target slot is always valid), no position embedding;
    the interest is H at the target slot, (B, d). Its own weights (the public code reuses the denoiser's).

    Args:
        token_dim: d; short_seq_len: S (window w = S - 1); num_layers: N_s; num_heads / ffn_factor: the blocks';
        lma: the blocks' length modulation (query/key conditioning and tau(L) on every self-attention).
    """

    def __init__(self, token_dim: int, short_seq_len: int, num_layers: int, num_heads: int, ffn_factor: int, *,
                 lma: LMASettings):
        super().__init__(token_dim, accepts_prompts=True, accepts_lma=True)
        if short_seq_len < 2:
            raise ValueError(f"short_seq_len must be >= 2 (the window holds short_seq_len - 1 items), got {short_seq_len}")
        if num_layers < 1:
            raise ValueError(f"short_layers must be >= 1, got {num_layers}")
        self.window = short_seq_len - 1
        self.blocks = nn.ModuleList(EncoderBlock(token_dim, num_heads, ffn_factor, lma=lma)
                                    for _ in range(num_layers))

    def token_window(self) -> int:
        return self.window

    def forward(self, inputs: BranchInputs, condition: Optional[BranchCondition]) -> BranchOutput:
        window, window_mask = recent_window(inputs.history, inputs.mask, self.window)
        target_mask = inputs.mask.new_ones(inputs.mask.shape[0], 1)
        tokens, mask = prepend_prompts(torch.cat([window, inputs.target.unsqueeze(1)], dim=1),
                                       torch.cat([window_mask, target_mask], dim=1), condition)
        for block in self.blocks[:-1]:
            tokens = block(tokens, mask, condition)
        return BranchOutput(self.blocks[-1](tokens, mask, condition, query=tokens[:, -1:])[:, 0])


class DiffuMIN(SequenceCTRModel):
    """
    Args:
        interest_extractor: ``omie`` (the paper's) or ``target_attention`` (the "w/o OMIE" ablation: c-head
            target attention, see :class:`~lainctr.layers.omie.TargetAttentionExtractor`).
        num_channels: c, interest channels (<= the token width d).
        keep_ratio: p, the share of each channel's routed behaviours it pools (top-p % by projection; OMIE only).
        use_generator: False = the "w/o DMIG" ablation: no denoiser, no r* in the head, no L_d (needs both
            loss weights 0: CMIC calibrates r* against r).
        diffusion_steps / beta_schedule / beta_start / beta_end: the DDPM's T_d and beta_t (``linear`` or
            ``cosine``).
        sample_steps: S_g, reverse iterations of a generation (the inference cost knob; 0 = the noised start).
        denoiser_layers / num_heads / ffn_factor: the denoiser's blocks (num_heads and ffn_factor also the
            short encoder's).
        diffusion_loss_weight / contrastive_loss_weight: lambda_1, lambda_2 (0 switches a loss off: it is not
            computed and CMIC's heads are not built).
        contrastive_temperature: tau_cl.
        noise_bank_size / noise_bank_seed: the fixed eval noise (see :class:`DiffusionInterestGenerator`).
        keep_mode / keep_count / pooling (OMIE), sample_start / eval_sampling / sample_grad (DMIG),
            empty_channel: the public code's readings of spec section 10 (D1-D6), for ablations; the defaults
            are the spec's (see the model's README).
        use_short_branch: add the short-term branch; short_encoder: ``transformer`` (the paper's encoder over
            [window; target]) or ``attention`` (the zoo's MHTA short branch, attention width d);
        short_layers: N_s of the transformer encoder.
        **kwargs: see :class:`~lainctr.models.SequenceCTRModel`.
    """

    def __init__(self, feature_map, model_id: str = "DiffuMIN", interest_extractor: str = "omie",
                 num_channels: int = 4, keep_ratio: float = 0.2, use_generator: bool = True,
                 diffusion_steps: int = 1000, beta_schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02,
                 sample_steps: int = 10, denoiser_layers: int = 2, num_heads: int = 2, ffn_factor: int = 3,
                 diffusion_loss_weight: float = 0.01, contrastive_loss_weight: float = 0.001,
                 contrastive_temperature: float = 0.05, noise_bank_size: int = 1024, noise_bank_seed: int = 0,
                 use_short_branch: bool = True, short_encoder: str = "transformer", short_layers: int = 2,
                 keep_mode: str = "ratio", keep_count: int = 100, pooling: str = "mean", sample_start: str = "respaced",
                 eval_sampling: str = "bank", sample_grad: str = "full", empty_channel: str = "zero", **kwargs):
        super().__init__(feature_map, model_id=model_id, **kwargs)
        d = self.token_dim
        if d % 2 or d < 4:
            raise ValueError(f"the token width d = {d} must be even and >= 4 (sinusoidal step embedding)")
        if diffusion_loss_weight < 0 or contrastive_loss_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {diffusion_loss_weight}, {contrastive_loss_weight}")
        if short_encoder not in SHORT_ENCODERS:
            raise ValueError(f"short_encoder must be one of {SHORT_ENCODERS}, got '{short_encoder}'")
        if interest_extractor not in INTEREST_EXTRACTORS:
            raise ValueError(f"interest_extractor must be one of {list(INTEREST_EXTRACTORS)}, got '{interest_extractor}'")
        if interest_extractor == "target_attention" and (keep_mode, pooling) != ("ratio", "mean"):
            raise ValueError("keep_mode and pooling are OMIE's: the target_attention extractor pools every real "
                             "behaviour by softmax")
        if not use_generator and (sample_start, eval_sampling, sample_grad, empty_channel) != (
                "respaced", "bank", "full", "zero"):
            raise ValueError("sample_start, eval_sampling, sample_grad and empty_channel are DMIG's: "
                             "use_generator is False")
        extractor = INTEREST_EXTRACTORS[interest_extractor](d, num_channels, keep_ratio, lma=self.lma_settings("long"),
                                                            keep_mode=keep_mode, keep_count=keep_count, pooling=pooling)
        generator = DiffusionInterestGenerator(d, num_channels, diffusion_steps, beta_schedule, beta_start, beta_end,
                                               sample_steps, denoiser_layers, num_heads, ffn_factor,
                                               noise_bank_size, noise_bank_seed, sample_start, eval_sampling,
                                               sample_grad) if use_generator else None
        calibrator = ContrastiveCalibrator(d, contrastive_temperature) if contrastive_loss_weight > 0 else None
        self.add_branch("long", MultiInterestBranch(extractor, generator, calibrator, diffusion_loss_weight,
                                                    contrastive_loss_weight, empty_channel))
        if use_short_branch and short_encoder == "transformer":
            self.add_branch("short", EncoderShortBranch(d, self.short_seq_len, short_layers, num_heads, ffn_factor,
                                                        lma=self.lma_settings("short")))
        elif use_short_branch:
            self.add_short_branch(d, num_heads, 0.0)
