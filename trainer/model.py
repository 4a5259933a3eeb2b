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
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.roberta.modeling_roberta import (
    RobertaForMaskedLM,
    RobertaLMHead,
    RobertaModel,
    RobertaPreTrainedModel,
)

SELF_CONDITION_MODES = ("logits_addition", "logits_mean", "logits_with_projection", "logits")


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
    timestep embedding and the self-conditioning projection start fresh.
    """

    _tied_weights_keys = getattr(RobertaForMaskedLM, "_tied_weights_keys", None)
    # Tied to E and lm_head.bias, so never written twice; naming them lets Trainer's
    # resume re-tie them instead of warning that they are missing.
    _keys_to_ignore_on_save = ["lm_head.decoder.weight", "lm_head.decoder.bias"]

    def __init__(self, config: RobertaConfig):
        super().__init__(config)
        mode = getattr(config, "self_condition", None)
        if mode is not None and mode not in SELF_CONDITION_MODES:
            raise ValueError(f"self_condition must be one of {', '.join(SELF_CONDITION_MODES)}, not {mode!r}")
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
        if mode in ("logits_with_projection", "logits"):
            # The original's name and shape (Linear(2H, H), no bias), so its checkpoints load.
            self.project_to_hidden_size = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.post_init()
        self._link_simplex_embedding(copy=True)

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

    def _previous_embeds(self, previous_pred: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """The self-conditioning input.  (n, V) or None -> (n, H) or a broadcastable (H,)"""
        if previous_pred is not None:
            return self.embed_logits(previous_pred)
        if getattr(self.config, "self_condition_zeros_after_softmax", False):
            return like.new_zeros(like.shape[-1])
        # softmax of all-zero logits is uniform, and uniform @ E is the mean row of E
        return self.word_embeddings.mean(dim=0).to(like.dtype)

    def forward(
        self,
        input_ids: torch.Tensor,
        simplex: torch.Tensor,
        timesteps: torch.Tensor,
        span_mask: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        previous_pred: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> MaskedLMOutput:
        """Predict clean-token logits at the generated positions.

        input_ids (B, L): clean ids (only context positions are read);
        simplex (n, V): noisy logits x_t at the n positions where span_mask (B, L) is True;
        timesteps (B,): t / N in [0, 1); previous_pred (n, V): last prediction or None;
        labels (n,): clean ids at the generated positions.
        Returns logits (n, V) and, with labels, the mean cross-entropy.
        """
        embeds = self.embed_logits(simplex)  # (n, H)
        mode = self.self_condition
        if mode is not None:
            prev = self._previous_embeds(previous_pred, embeds)
            if mode == "logits_addition":
                embeds = embeds + prev
            elif mode == "logits_mean":
                embeds = (embeds + prev) / 2
            else:  # logits_with_projection / logits
                embeds = self.project_to_hidden_size(torch.cat([embeds, prev.expand_as(embeds)], dim=-1))
        batch_index = span_mask.nonzero(as_tuple=True)[0]  # (n,): the example of each generated row
        t_embed = self.timestep_embed(timesteps.to(embeds.dtype).unsqueeze(-1))  # (B, H)
        embeds = embeds + t_embed[batch_index]
        clean = self.roberta.embeddings.word_embeddings(input_ids)  # (B, L, H)
        inputs_embeds = clean.index_put((span_mask,), embeds.to(clean.dtype))  # (B, L, H)
        hidden = self.roberta(inputs_embeds=inputs_embeds, attention_mask=attention_mask).last_hidden_state
        logits = self.lm_head(hidden[span_mask])  # (n, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
        return MaskedLMOutput(loss=loss, logits=logits)


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
