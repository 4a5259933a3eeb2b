"""TESS on RoBERTa: a denoiser from noisy vocabulary logits to clean-token logits.

Only the positions being generated carry a simplex. They are handled *packed*: for a
batch with ``span_mask`` (B, L) holding n True entries, the noisy simplex, the
previous prediction and the returned logits are (n, V) rows in row-major order of
``span_mask``. Context and padding positions never get a vocabulary-sized row, so no
(B, L, V) tensor exists unless every position is generated.

Inputs of RoBERTa (through ``inputs_embeds``, so position embeddings and LayerNorm
still apply):

    generated position:  softmax(x_t) @ E  (+ self-conditioning)  + Linear(1, H)(t / N)
    context position:    E[input_id]                               (clean, no timestep)

E is the word-embedding matrix itself (tied with the LM head), not a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import RobertaConfig
from transformers.activations import ACT2FN
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roberta.modeling_roberta import (
    RobertaForMaskedLM,
    RobertaLMHead,
    RobertaModel,
    RobertaPreTrainedModel,
)

from .args import SELF_CONDITION_CHOICES as SELF_CONDITION_MODES
from .simplex import ids_to_simplex

# Modes whose previous prediction is re-projected to the +-k simplex before it is fed back.
PROJECTED_PREVIOUS_MODES = ("logits_with_projection", "logits_with_projection_addition")
# Modes that combine through project_to_hidden_size rather than an elementwise mix.
CONCAT_MODES = ("logits", "logits_with_projection")
# Modes for which the original builds project_to_hidden_size (every mode but these four);
# logits_multiply builds it without ever using it.
_NO_PROJECTION_MODES = ("logits_addition", "logits_with_projection_addition", "logits_max", "logits_mean")
CLASSIFIER_FREE_UNCOND_INPUTS = ("empty_token", "noisy_simplex")
# The original converts the empty tokens to a simplex with a literal 5.0, whatever simplex_value is.
UNCOND_SIMPLEX_VALUE = 5.0


def mix_self_condition(mode: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The elementwise combination of the current and previous inputs; b may broadcast against a."""
    if mode in ("logits_addition", "logits_with_projection_addition"):
        return a + b
    if mode == "logits_mean":
        return (a + b) / 2
    if mode == "logits_max":
        return torch.maximum(a, b)
    if mode == "logits_multiply":
        return a * b
    raise ValueError(f"self_condition {mode!r} has no elementwise combination")


def check_self_condition(config) -> None:
    """The combinations the original can run; the others crash there, so they are refused here."""
    mode = getattr(config, "self_condition", None)
    if mode is None:
        return
    if mode not in SELF_CONDITION_MODES:
        raise ValueError(f"self_condition must be one of {', '.join(SELF_CONDITION_MODES)}, not {mode!r}")
    before_probs = getattr(config, "self_condition_mix_before_weights", False)
    before_logits = getattr(config, "self_condition_mix_logits_before_weights", False)
    if (before_probs or before_logits) and mode in CONCAT_MODES:
        raise ValueError(f"self_condition {mode} concatenates; self_condition_mix_before_weights and "
                         "self_condition_mix_logits_before_weights need an elementwise mode")
    if before_logits and getattr(config, "self_condition_zeros_after_softmax", False):
        raise ValueError("self_condition_mix_logits_before_weights mixes logits, so "
                         "self_condition_zeros_after_softmax (zero probabilities) cannot apply")


# simplex_embedding: which matrix turns softmax(x_t) into the input embedding.
#   tied               E itself, one Adam update of E per step (ours; see docs/tess.md)
#   original_shared    the original's vocab_to_hidden_dim_embed, a second parameter on E's
#                      storage: E gets two Adam updates per step, as the original as written
#   original_separate  vocab_to_hidden_dim_embed as a matrix of its own, started as a copy of
#                      E: the original as it runs on a GPU, where model.to(device) copies the
#                      transposed view apart from E
SIMPLEX_EMBEDDINGS = ("tied", "original_shared", "original_separate")


def _drop_shared_view(module, state_dict, prefix, local_metadata) -> None:
    state_dict.pop(prefix + "weight", None)


def _keep_shared_view(module, state_dict, prefix, *args) -> None:
    state_dict.setdefault(prefix + "weight", module.weight.detach())  # E's values, loaded just before


class TessRobertaModel(RobertaPreTrainedModel):
    """RoBERTa encoder + LM head with TESS's simplex input and self-conditioning.

    Parameter names match ``RobertaForMaskedLM`` (``roberta.*``, ``lm_head.*``) so a
    pretrained masked-LM checkpoint such as roberta-base loads straight into it; the
    timestep embedding and the self-conditioning projection start fresh, under the
    original's names (``timestep_embed``, ``project_to_hidden_size``) and shapes.
    """

    _tied_weights_keys = getattr(RobertaForMaskedLM, "_tied_weights_keys", None)
    # Tied to E and lm_head.bias, so never written twice; naming them lets Trainer's
    # resume re-tie them instead of warning that they are missing.
    _keys_to_ignore_on_save = ["lm_head.decoder.weight", "lm_head.decoder.bias"]

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        check_self_condition(config)
        mode = getattr(config, "self_condition", None)
        self.roberta = RobertaModel(config, add_pooling_layer=False)
        self.lm_head = RobertaLMHead(config)
        self.timestep_embed = nn.Linear(1, config.hidden_size)
        if self.simplex_embedding != "tied":
            self.vocab_to_hidden_dim_embed = nn.Linear(config.vocab_size, config.hidden_size, bias=False)
            if self.simplex_embedding == "original_shared":
                # E under a second name: never written (safetensors cannot hold a view), and
                # taken from E again when a state dict lacks it.
                self.vocab_to_hidden_dim_embed.register_state_dict_post_hook(_drop_shared_view)
                self.vocab_to_hidden_dim_embed.register_load_state_dict_pre_hook(_keep_shared_view)
        if mode is not None and mode not in _NO_PROJECTION_MODES:
            H = config.hidden_size
            if getattr(config, "self_condition_mlp_projection", False):
                # The original's names: project_to_hidden_size.0 and .2 (.1 is the activation).
                self.project_to_hidden_size = nn.Sequential(
                    nn.Linear(2 * H, H, bias=False), ACT2FN[config.hidden_act], nn.Linear(H, H, bias=False))
            else:
                self.project_to_hidden_size = nn.Linear(2 * H, H, bias=False)
        self._freeze_unused()
        self.post_init()
        self._link_simplex_embedding(copy=True)

    def _freeze_unused(self) -> None:
        """logits_multiply's projection exists for the original's parameter layout but is never
        used: frozen, so that no optimizer step or DDP reduction waits for a gradient that cannot come."""
        if hasattr(self, "project_to_hidden_size") and (
                self.self_condition not in CONCAT_MODES or self._mixes_before_weights):
            self.project_to_hidden_size.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        out = super().from_pretrained(*args, **kwargs)
        (out[0] if isinstance(out, tuple) else out)._freeze_unused()  # loading makes fresh, trainable parameters
        return out

    # The LM head shares E with the input (the usual RoBERTa tying).
    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings
        self.lm_head.bias = new_embeddings.bias

    @property
    def self_condition(self) -> str | None:
        return getattr(self.config, "self_condition", None)

    @property
    def _mixes_before_weights(self) -> bool:
        return bool(getattr(self.config, "self_condition_mix_before_weights", False)
                    or getattr(self.config, "self_condition_mix_logits_before_weights", False))

    @property
    def word_embeddings(self) -> torch.Tensor:
        """E as the simplex input reads it: (V, H); the original's vocab_to_hidden_dim_embed when kept."""
        copy = getattr(self, "vocab_to_hidden_dim_embed", None)
        if copy is not None:
            return copy.weight.T
        return self.roberta.embeddings.word_embeddings.weight

    @property
    def simplex_embedding(self) -> str:
        return getattr(self.config, "simplex_embedding", "tied") or "tied"

    def _link_simplex_embedding(self, copy: bool = False) -> None:
        """original_shared: vocab_to_hidden_dim_embed views E's storage (after every move or
        re-tie, which would otherwise copy it apart); original_separate: a copy of E when
        ``copy`` (a fresh model) or when E was resized."""
        linear = getattr(self, "vocab_to_hidden_dim_embed", None)
        if linear is None:
            return
        E = self.roberta.embeddings.word_embeddings.weight
        if self.simplex_embedding == "original_shared":
            if linear.weight.data_ptr() == E.data_ptr() and linear.weight.shape == E.T.shape:
                return
            value = E.data.T
        elif copy or linear.weight.shape != E.T.shape:
            value = E.data.T.clone()
        else:
            return
        try:
            linear.weight.data = value  # the same Parameter: an optimizer holding it keeps it
        except RuntimeError:  # still on the meta device while loading: no optimizer yet
            linear.weight = nn.Parameter(value, requires_grad=E.requires_grad)

    def tie_weights(self, *args, **kwargs):
        out = super().tie_weights(*args, **kwargs)
        self._link_simplex_embedding()
        return out

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._link_simplex_embedding()
        return out

    def embed_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """softmax(logits) @ E.  (n, V) -> (n, H)"""
        E = self.word_embeddings
        return torch.softmax(logits.to(E.dtype), dim=-1) @ E

    def _previous_probs(self, previous_pred: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """softmax(previous logits); with none, softmax(0) = uniform, or zeros with zeros_after_softmax.

        (n, V) or None -> (n, V) or a broadcastable (V,): no (n, V) tensor for "nothing yet".
        """
        if previous_pred is not None:
            return torch.softmax(previous_pred.to(like.dtype), dim=-1)
        if getattr(self.config, "self_condition_zeros_after_softmax", False):
            return like.new_zeros(like.shape[-1])
        return like.new_full((like.shape[-1],), 1.0 / like.shape[-1])

    def simplex_embeds(self, simplex: torch.Tensor, previous_pred: torch.Tensor | None) -> torch.Tensor:
        """The input embedding of the generated rows, self-conditioning included.  (n, V) -> (n, H)

        As the original's forward (modeling_roberta.py, 63f039b) for each mode and mixing variant.
        """
        E = self.word_embeddings
        simplex = simplex.to(E.dtype)
        probs = torch.softmax(simplex, dim=-1)  # (n, V)
        mode = self.self_condition
        if mode is None:
            return probs @ E
        cfg = self.config
        if getattr(cfg, "self_condition_mix_logits_before_weights", False):
            prev_logits = previous_pred.to(E.dtype) if previous_pred is not None else simplex.new_zeros(simplex.shape[-1])
            return torch.softmax(mix_self_condition(mode, simplex, prev_logits), dim=-1) @ E
        prev_probs = self._previous_probs(previous_pred, probs)  # (n, V) or (V,)
        if getattr(cfg, "self_condition_mix_before_weights", False):
            return mix_self_condition(mode, probs, prev_probs) @ E
        embeds = probs @ E  # (n, H)
        prev = prev_probs @ E  # (n, H) or (H,)
        if mode in CONCAT_MODES:
            return self.project_to_hidden_size(torch.cat([embeds, prev.expand_as(embeds)], dim=-1))
        return mix_self_condition(mode, embeds, prev)

    def unconditional_embeds(self, input_ids: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Classifier-free guidance's "no condition": empty tokens in place of the input.  (B, L) -> (B, L, H)

        <s> first, </s> last, pad (or <mask> with empty_token_be_mask) between; as embeddings,
        or with classifier_free_simplex_inputs as softmax of their 5.0-simplex (empty_token) or of
        5.0 * N(0, I) (noisy_simplex), through E.
        """
        cfg = self.config
        E = self.word_embeddings
        B, L = input_ids.shape
        fill = cfg.mask_token_id if getattr(cfg, "empty_token_be_mask", False) else cfg.pad_token_id
        ids = torch.full((B, L), fill, dtype=torch.long, device=input_ids.device)
        ids[:, 0] = cfg.bos_token_id
        ids[:, -1] = cfg.eos_token_id
        if not getattr(cfg, "classifier_free_simplex_inputs", False):
            return self.roberta.embeddings.word_embeddings(ids)
        kind = getattr(cfg, "classifier_free_uncond_input", "empty_token")
        if kind == "noisy_simplex":
            noise = torch.randn((B, L, cfg.vocab_size), generator=generator, device=input_ids.device)
            return torch.softmax((UNCOND_SIMPLEX_VALUE * noise).to(E.dtype), dim=-1) @ E
        # empty_token: at most three distinct rows, each softmax(+-5 one-hot) @ E
        distinct, where = ids.unique(return_inverse=True)
        rows = ids_to_simplex(distinct, cfg.vocab_size, UNCOND_SIMPLEX_VALUE, E.dtype)  # (u, V)
        return (torch.softmax(rows, dim=-1) @ E)[where]

    def forward(
        self,
        input_ids: torch.Tensor,
        simplex: torch.Tensor,
        timesteps: torch.Tensor,
        span_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        previous_pred: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        drop_condition: bool = False,
        generator: torch.Generator | None = None,
    ) -> MaskedLMOutput:
        """Predict clean-token logits at the generated positions.

        input_ids (B, L): clean ids (only context positions are read);
        simplex (n, V): noisy logits x_t at the n positions where span_mask (B, L) is True;
        timesteps (B,): t / N in [0, 1); previous_pred (n, V): last prediction or None;
        labels (n,): clean ids at the generated positions; drop_condition: the context
        positions get classifier-free guidance's empty tokens instead of the clean ones
        (the training dropout of the condition; ``generator`` draws noisy_simplex's noise).
        Returns logits (n, V) and, with labels, the mean cross-entropy.
        """
        embeds = self.simplex_embeds(simplex, previous_pred)  # (n, H)
        batch_index = span_mask.nonzero(as_tuple=True)[0]  # (n,): the example of each generated row
        t_embed = self.timestep_embed(timesteps.to(embeds.dtype).unsqueeze(-1))  # (B, H)
        embeds = embeds + t_embed[batch_index]
        if drop_condition:
            clean = self.unconditional_embeds(input_ids, generator)  # (B, L, H)
        else:
            clean = self.roberta.embeddings.word_embeddings(input_ids)  # (B, L, H)
        inputs_embeds = clean.index_put((span_mask,), embeds.to(clean.dtype))  # (B, L, H)
        hidden = self.roberta(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        logits = self.lm_head(hidden[span_mask])  # (n, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
        return MaskedLMOutput(loss=loss, logits=logits)

    def unconditional_logits(self, input_ids: torch.Tensor, span_mask: torch.Tensor,
                             attention_mask: torch.Tensor | None = None,
                             generator: torch.Generator | None = None) -> torch.Tensor:
        """The unconditional half of classifier-free guidance: empty tokens everywhere, no x_t,
        no timestep, as the original's guided pass.  -> (n, V) at the span_mask rows"""
        inputs_embeds = self.unconditional_embeds(input_ids, generator)
        hidden = self.roberta(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        return self.lm_head(hidden[span_mask])


def build_model(config: RobertaConfig, model_name_or_path: str | None = None, cache_dir: str | None = None,
                **hub_kwargs) -> TessRobertaModel:
    """Pretrained weights when ``model_name_or_path`` is given, else a fresh model from ``config``."""
    if model_name_or_path:
        model, info = TessRobertaModel.from_pretrained(model_name_or_path, config=config, cache_dir=cache_dir,
                                                       output_loading_info=True, **hub_kwargs)
        if "vocab_to_hidden_dim_embed.weight" in info["missing_keys"]:
            model._link_simplex_embedding(copy=True)  # as the original: the copy starts as E
        return model
    return TessRobertaModel(config)
