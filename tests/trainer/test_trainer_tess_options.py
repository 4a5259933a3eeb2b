"""The original TESS's model and sampling options (issue 9, item 2), on a very small RoBERTa.

Each self-conditioning mode is checked against an independent transcription of the
original's forward (allenai/tess-diffusion 63f039b, sdlm/models/modeling_roberta.py and
sdlm/utils.py): full (B, L, V) tensors, ``torch.where`` over the span mask, as it is
written there, against our packed rows. Every other key gets a test that it changes
what it should.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import RobertaConfig

from trainer.args import DiffusionArguments
from trainer.data import SpanMasking
from trainer.model import TessRobertaModel
from trainer.sampling import SamplingOptions, generate, guide, previous_prediction
from trainer.schedule import alpha_bars
from trainer.simplex import ids_to_simplex, sample_ids
from trainer.tess_trainer import tess_loss

VOCAB, H, K = 40, 16, 5.0
PAD, BOS, EOS, MASK = 1, 0, 2, 3


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: a second thread only adds contention on the shared cores."""

# (self_condition, extra config): every mode, and each mixing variant where the original can run it.
SC_CASES = [
    ("logits", {}),
    ("logits", {"self_condition_mlp_projection": True}),
    ("logits_with_projection", {}),
    ("logits_with_projection", {"self_condition_zeros_after_softmax": True}),
    ("logits_addition", {}),
    ("logits_addition", {"self_condition_zeros_after_softmax": True}),
    ("logits_with_projection_addition", {}),
    ("logits_mean", {}),
    ("logits_max", {}),
    ("logits_multiply", {}),
    ("logits_addition", {"self_condition_mix_before_weights": True}),
    ("logits_max", {"self_condition_mix_before_weights": True, "self_condition_zeros_after_softmax": True}),
    ("logits_multiply", {"self_condition_mix_before_weights": True}),
    ("logits_mean", {"self_condition_mix_logits_before_weights": True}),
    ("logits_max", {"self_condition_mix_logits_before_weights": True}),
]


def case_id(case) -> str:
    mode, extra = case
    return "-".join([mode, *(k.removeprefix("self_condition_") for k in extra)])


# The original's RobertaDiffusionConfig defaults (sdlm/models/configuration_roberta.py).
ORIGINAL_CONFIG_DEFAULTS = dict(self_condition_zeros_after_softmax=False, self_condition_mix_before_weights=False,
                                self_condition_mix_logits_before_weights=False, self_condition_mlp_projection=False,
                                classifier_free_simplex_inputs=False, classifier_free_uncond_input="empty_token",
                                empty_token_be_mask=False)


def tiny(mode=None, seed=0, **extra) -> TessRobertaModel:
    torch.manual_seed(seed)
    extra = {**ORIGINAL_CONFIG_DEFAULTS, **extra}
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, pad_token_id=PAD, bos_token_id=BOS,
                        eos_token_id=EOS, self_condition=mode, **extra)
    cfg.mask_token_id = MASK
    return TessRobertaModel(cfg).eval()


def fixed_batch(B=3, L=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (B, L), generator=g)
    span = torch.rand((B, L), generator=g) < 0.5
    span[:, 1] = True
    return ids, span


# ---- the original's forward, transcribed independently -------------------------------------

def _mix(mode, a, b):  # sdlm/utils.py mix_values_based_on_self_condition
    return {"logits_addition": lambda: a + b, "logits_with_projection_addition": lambda: a + b,
            "logits_mean": lambda: (a + b) / 2.0, "logits_max": lambda: torch.max(a, b),
            "logits_multiply": lambda: a * b}[mode]()


def original_forward(model, ids, span, simplex_full, t_scaled, previous_full):
    """RobertaForDiffusionLM.forward without guidance, in (B, L, V); vocab_to_hidden_dim_embed
    is a Linear(V, H) whose weight is E transposed (its post_init)."""
    cfg = model.config
    E = model.roberta.embeddings.word_embeddings.weight
    vocab_to_hidden = lambda p: F.linear(p, E.T)  # noqa: E731
    inputs_probs = F.softmax(simplex_full, dim=-1)
    inputs_embeds = vocab_to_hidden(inputs_probs)
    previous_pred = previous_full
    if cfg.self_condition is not None:
        if cfg.self_condition_zeros_after_softmax and previous_pred is None:
            previous_pred_probs = torch.zeros_like(simplex_full)
        else:
            if previous_pred is None:
                previous_pred = torch.zeros_like(simplex_full)
            previous_pred_probs = F.softmax(previous_pred, dim=-1)
        if not cfg.self_condition_mix_logits_before_weights:
            previous_pred = vocab_to_hidden(previous_pred_probs)
        if cfg.self_condition_mix_logits_before_weights:
            inputs_embeds = vocab_to_hidden(F.softmax(_mix(cfg.self_condition, simplex_full, previous_pred), dim=-1))
        elif cfg.self_condition_mix_before_weights:
            inputs_embeds = vocab_to_hidden(_mix(cfg.self_condition, inputs_probs, previous_pred_probs))
        elif cfg.self_condition in ("logits", "logits_with_projection"):
            proj = model.project_to_hidden_size
            inputs_embeds = proj(torch.cat([inputs_embeds, previous_pred], axis=-1))
        else:
            inputs_embeds = _mix(cfg.self_condition, inputs_embeds, previous_pred)
    word = model.roberta.embeddings.word_embeddings(ids)
    L = ids.shape[1]
    inputs_embeds = inputs_embeds + model.timestep_embed(t_scaled.view(-1, 1).to(E.dtype)).unsqueeze(1).repeat(1, L, 1)
    inputs_embeds = torch.where(span.unsqueeze(-1), inputs_embeds, word)
    hidden = model.roberta(inputs_embeds=inputs_embeds, attention_mask=None).last_hidden_state
    return model.lm_head(hidden)  # (B, L, V)


def full_of(rows, span, fill=0.0):
    """Packed (n, V) rows back into (B, L, V), ``fill`` elsewhere (those positions are never read)."""
    out = torch.full((*span.shape, rows.shape[-1]), fill, dtype=rows.dtype)
    out[span] = rows
    return out


@pytest.mark.parametrize("case", SC_CASES, ids=case_id)
def test_self_conditioning_forward_matches_the_original_formula(case):
    mode, extra = case
    model = tiny(mode, **extra).double()
    for p in model.parameters():  # a trained-looking projection, not the init's near-zero one
        p.data.add_(torch.randn_like(p) * 0.05)
    ids, span = fixed_batch()
    g = torch.Generator().manual_seed(3)
    simplex_full = torch.randn((*span.shape, VOCAB), generator=g, dtype=torch.float64) * K
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    logits_prev = torch.randn((*span.shape, VOCAB), generator=g, dtype=torch.float64) * 3
    fed_prev = previous_prediction(mode, logits_prev[span], K, "argmax", 1.0, None)
    if mode in ("logits_with_projection", "logits_with_projection_addition"):  # the simplex corner of the argmax
        assert torch.equal(fed_prev, ids_to_simplex(logits_prev[span].argmax(-1), VOCAB, K, torch.float64))
    else:
        assert torch.equal(fed_prev, logits_prev[span])
    with torch.no_grad():
        for prev_rows in (None, fed_prev):
            ours = model(input_ids=ids, simplex=simplex_full[span], timesteps=t, span_mask=span,
                         previous_pred=prev_rows).logits
            ref = original_forward(model, ids, span, simplex_full, t,
                                   None if prev_rows is None else full_of(prev_rows, span))[span]
            assert torch.allclose(ours, ref, rtol=0, atol=1e-6), (ours - ref).abs().max()
        # the zeros tensor the original's sampler passes at its first step
        zeros = torch.zeros_like(fed_prev)
        ours = model(input_ids=ids, simplex=simplex_full[span], timesteps=t, span_mask=span,
                     previous_pred=zeros).logits
        ref = original_forward(model, ids, span, simplex_full, t, full_of(zeros, span))[span]
        assert torch.allclose(ours, ref, rtol=0, atol=1e-6)


# The original's self-conditioning parameters (modeling_roberta.py __init__), by mode and variant.
PARAMETER_LAYOUT = [
    ("logits", {}, {"project_to_hidden_size.weight": (H, 2 * H)}),
    ("logits_with_projection", {}, {"project_to_hidden_size.weight": (H, 2 * H)}),
    ("logits", {"self_condition_mlp_projection": True},
     {"project_to_hidden_size.0.weight": (H, 2 * H), "project_to_hidden_size.2.weight": (H, H)}),
    ("logits_multiply", {}, {"project_to_hidden_size.weight": (H, 2 * H)}),  # built, never used
    ("logits_addition", {}, {}),
    ("logits_with_projection_addition", {}, {}),
    ("logits_mean", {}, {}),
    ("logits_max", {}, {}),
]


@pytest.mark.parametrize("mode,extra,expected", PARAMETER_LAYOUT, ids=lambda v: v if isinstance(v, str) else None)
def test_self_conditioning_parameters_have_the_original_names_and_shapes(mode, extra, expected):
    model = tiny(mode, **extra)
    state = model.state_dict()
    found = {k: tuple(v.shape) for k, v in state.items() if k.startswith("project_to_hidden_size")}
    assert found == expected
    assert tuple(state["timestep_embed.weight"].shape) == (H, 1) and "timestep_embed.bias" in state
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    used = mode in ("logits", "logits_with_projection")
    assert all((n in trainable) == used for n in expected)  # the unused one is frozen


def _train_steps(model, opt, batch, diffusion, steps):
    losses = []
    a = alpha_bars(diffusion.beta_schedule, diffusion.num_diffusion_steps)
    for _ in range(steps):
        loss = tess_loss(model, batch, a, diffusion, VOCAB).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("case", SC_CASES, ids=case_id)
def test_each_self_conditioning_mode_resumes_exactly(case, tmp_path):
    """Two steps, save (weights through save_pretrained, optimizer, RNG), two more; a fresh
    model loaded from the save repeats the last two steps."""
    mode, extra = case
    ids, span = fixed_batch(B=4, L=8)
    batch = {"input_ids": ids, "span_mask": span, "attention_mask": torch.ones_like(ids)}
    diffusion = DiffusionArguments(num_diffusion_steps=50, self_condition=mode, sampling_type="top_p", top_p=0.9,
                                   **extra)
    model = tiny(mode, seed=1, **extra).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(11)
    _train_steps(model, opt, batch, diffusion, 2)
    model.save_pretrained(tmp_path)
    torch.save(opt.state_dict(), tmp_path / "optimizer.pt")
    rng = torch.get_rng_state()
    expected = _train_steps(model, opt, batch, diffusion, 4)  # 4 so that both coin sides are likely hit
    resumed = TessRobertaModel.from_pretrained(tmp_path).train()
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-2)
    opt2.load_state_dict(torch.load(tmp_path / "optimizer.pt"))
    torch.set_rng_state(rng)
    got = _train_steps(resumed, opt2, batch, diffusion, 4)
    assert got == pytest.approx(expected, abs=1e-5)
    for (name, p), q in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(p, q, atol=1e-5), name


# ---- schedules ------------------------------------------------------------------------------

def _original_betas(schedule, n):
    """sdlm/schedulers/scheduling_simplex_ddpm.py, beta_start 1e-4, beta_end 0.02."""
    if schedule == "linear":
        return torch.linspace(0.0001, 0.02, n, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(0.0001 ** 0.5, 0.02 ** 0.5, n, dtype=torch.float32) ** 2
    if schedule == "sigmoid":
        return torch.sigmoid(torch.linspace(-6, 6, n)) * (0.02 - 0.0001) + 0.0001
    bar = lambda s: math.cos((s + 1e-4) / (1 + 1e-4) * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - bar((i + 1) / n) / bar(i / n), 0.999) for i in range(n)], dtype=torch.float32)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_beta_schedules_are_the_originals(schedule):
    expected = torch.cumprod(1.0 - _original_betas(schedule, 200), dim=0).double()
    got = alpha_bars(schedule, 200)
    assert torch.equal(got, expected)
    assert not torch.allclose(got, alpha_bars("squaredcos_improved_ddpm", 200))


def test_beta_schedule_changes_the_training_loss():
    model = tiny("logits_addition")
    ids, span = fixed_batch()
    batch = {"input_ids": ids, "span_mask": span, "attention_mask": torch.ones_like(ids)}
    losses = {}
    for schedule in ("squaredcos_improved_ddpm", "linear"):
        d = DiffusionArguments(num_diffusion_steps=100, beta_schedule=schedule)
        torch.manual_seed(0)
        losses[schedule] = tess_loss(model, batch, alpha_bars(schedule, 100), d, VOCAB).loss.item()
    assert losses["linear"] != losses["squaredcos_improved_ddpm"]


# ---- sampling -------------------------------------------------------------------------------

def _sample(model, **opts):
    ids, span = fixed_batch(B=4, L=10, seed=5)
    options = SamplingOptions(simplex_value=K, num_steps=6, conditional=True, **opts)
    return generate(model, ids, span, torch.ones_like(ids), options, torch.Generator().manual_seed(0))


SAMPLING_CHANGES = [  # (options that must change the samples, relative to the same without them)
    ({"beta_schedule": "linear"}, {}),
    ({"clip_sample": True}, {}),
    ({"sampling_type": "top_p", "top_p": 0.9}, {"sampling_type": "argmax"}),
    ({"sampling_type": "sample", "temperature": 0.05}, {"sampling_type": "sample"}),
    ({"guidance_scale": 3.0}, {}),
    ({"guidance_scale": 3.0, "guidance_softmax_combination": False}, {"guidance_scale": 3.0}),
]


@pytest.mark.parametrize("changed,base", SAMPLING_CHANGES, ids=lambda v: ",".join(v) or "default")
def test_sampling_option_changes_the_samples(changed, base):
    model = tiny("logits_addition", seed=2)
    assert not torch.equal(_sample(model, **{**base, **changed}), _sample(model, **base))


def test_top_p_without_a_nucleus_is_argmax():
    model = tiny("logits_addition", seed=2)
    assert torch.equal(_sample(model, sampling_type="top_p"), _sample(model, sampling_type="argmax"))
    logits = torch.randn(6, VOCAB)
    assert torch.equal(sample_ids(logits, "top_p", top_p=None), logits.argmax(-1))


@pytest.mark.parametrize("clip", [False, True])
def test_sampling_step_is_the_originals_with_and_without_clip_sample(clip):
    """x_{t-1} = sqrt(a_{t-1}) * s0 + sqrt(1 - a_{t-1}) * k * eps, s0 clamped to [-1, 1] with clip_sample."""
    model = tiny("logits_addition", seed=2)
    inputs, outputs = [], []
    model.register_forward_pre_hook(lambda m, a, kw: inputs.append(kw["simplex"].clone()), with_kwargs=True)
    model.register_forward_hook(lambda m, a, out: outputs.append(out.logits.clone()))
    _sample(model, clip_sample=clip)
    g = torch.Generator().manual_seed(0)  # generate's draws, in order: x_T, then one eps per step
    x_T = torch.randn(inputs[0].shape, generator=g) * K
    eps = torch.randn(inputs[0].shape, generator=g)
    assert torch.equal(inputs[0], x_T)
    s0 = ids_to_simplex(outputs[0].argmax(-1), VOCAB, K)
    if clip:
        s0 = s0.clamp(-1, 1)
    a = float(alpha_bars("squaredcos_improved_ddpm", 6)[4])  # a_{t-1} for t = M - 1 = 5
    assert torch.allclose(inputs[1], math.sqrt(a) * s0 + math.sqrt(1 - a) * K * eps, atol=1e-5)


def test_first_sampling_step_sees_a_zeros_previous_prediction():
    model = tiny("logits_addition", self_condition_zeros_after_softmax=True)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["previous_pred"]), with_kwargs=True)
    _sample(model)
    assert seen[0] is not None and not seen[0].any()  # zeros logits (uniform after softmax), not None
    assert seen[1] is not None and seen[1].abs().sum() > 0


def test_guidance_combines_with_the_empty_token_pass():
    cond, uncond = torch.randn(5, VOCAB), torch.randn(5, VOCAB)
    pu, pc = uncond.softmax(-1), cond.softmax(-1)
    assert torch.allclose(guide(cond, uncond, 2.0, True), pu + 2.0 * (pc - pu))
    assert torch.allclose(guide(cond, uncond, 2.0, False), uncond + 2.0 * (cond - uncond))
    ids, _ = fixed_batch()
    E = None
    for extra, expected in (({}, "embeds"), ({"empty_token_be_mask": True}, "embeds-mask"),
                            ({"classifier_free_simplex_inputs": True}, "simplex")):
        model = tiny("logits_addition", **extra)
        E = model.roberta.embeddings.word_embeddings.weight
        fill = MASK if extra.get("empty_token_be_mask") else PAD
        empty = torch.full(ids.shape, fill)
        empty[:, 0], empty[:, -1] = BOS, EOS
        got = model.unconditional_embeds(ids)
        if expected == "simplex":
            want = F.softmax(2 * 5.0 * F.one_hot(empty, VOCAB) - 5.0, dim=-1) @ E
        else:
            want = E[empty]
        assert torch.allclose(got, want, atol=1e-6), extra
    model = tiny("logits_addition", classifier_free_simplex_inputs=True, classifier_free_uncond_input="noisy_simplex")
    a = model.unconditional_embeds(ids, torch.Generator().manual_seed(0))
    b = model.unconditional_embeds(ids, torch.Generator().manual_seed(1))
    assert a.shape == (*ids.shape, H) and not torch.allclose(a, b)


def test_guidance_drops_the_condition_in_a_tenth_of_training_batches():
    model = tiny(None)  # eval mode: no dropout, so only the condition can make two losses differ
    ids, span = fixed_batch()
    batch = {"input_ids": ids, "span_mask": span, "attention_mask": torch.ones_like(ids)}
    a = alpha_bars("squaredcos_improved_ddpm", 100)
    plain = DiffusionArguments(num_diffusion_steps=100)
    guided = DiffusionArguments(num_diffusion_steps=100, guidance_scale=2.0)

    def loss(d, masking, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            return tess_loss(model, batch, a, d, VOCAB, masking=masking).loss

    kg = SpanMasking("kg_quad")
    differ = sum(not torch.equal(loss(plain, kg, s), loss(guided, kg, s)) for s in range(40))
    assert 1 <= differ <= 10  # about 10% of 40
    unconditional = SpanMasking(None)  # nothing to drop without a condition
    assert all(torch.equal(loss(plain, unconditional, s), loss(guided, unconditional, s)) for s in range(10))


# ---- masks, truncation, pads ----------------------------------------------------------------

def _padded_batch(width=12, real=9):
    ids = torch.randint(4, VOCAB, (4, width), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[:, real:] = 0
    ids[:, real:] = PAD
    return {"input_ids": ids, "attention_mask": attn, "span_mask": attn.bool(),
            "lengths": torch.full((4,), width)}


@pytest.mark.parametrize("mode", ["prefix_lm", "span_infilling"])
def test_masks_are_drawn_every_batch_and_fixed_at_evaluation(mode):
    batch = _padded_batch(60, 50)  # 50 tokens: span_infilling draws 7 of them in 2 spans
    masking = SpanMasking(mode)
    g = torch.Generator().manual_seed(0)
    draws = {tuple(masking.apply(batch, g)["span_mask"].flatten().tolist()) for _ in range(8)}
    assert len(draws) > 1  # the same lines, new masks
    for d in draws:
        assert not any(torch.tensor(d).view(4, 60)[:, 50:].flatten())  # pads never generated
    if mode == "prefix_lm":
        first = masking.apply(batch, torch.Generator().manual_seed(1), evaluating=True)["span_mask"]
        again = masking.apply(batch, torch.Generator().manual_seed(2), evaluating=True)["span_mask"]
        assert torch.equal(first, again) and first[0].tolist().index(True) == 1 + (50 - 1) // 2


PAD_AND_TRUNCATION = [  # (masking, attention mask kept, generated width, pads generated)
    (SpanMasking(None), True, 12, False),
    (SpanMasking(None, mask_padding=False), False, 12, True),
    (SpanMasking("prefix_lm", mask_padding=False), False, 12, True),
    (SpanMasking(None, truncation_length=3), True, 9, False),
]


@pytest.mark.parametrize("masking,attends,width,pads", PAD_AND_TRUNCATION)
def test_pads_and_truncation_length(masking, attends, width, pads):
    batch = _padded_batch()
    out = masking.apply(batch, torch.Generator().manual_seed(0))
    assert (out["attention_mask"] is not None) == attends
    assert out["input_ids"].shape == (4, width) and out["span_mask"].shape == (4, width)
    assert bool(out["span_mask"][:, 9:].any()) == pads


def test_with_projection_previous_prediction_follows_the_sampler():
    logits = torch.randn(50, VOCAB)
    g = torch.Generator().manual_seed(0)
    drawn = previous_prediction("logits_with_projection", logits, K, "top_p", 1.0, 0.95, g)
    assert set(drawn.unique().tolist()) == {-K, K} and (drawn == K).sum() == 50
    assert not torch.equal(drawn.argmax(-1), logits.argmax(-1))  # drawn, not the argmax
    assert torch.equal(previous_prediction("logits_mean", logits, K, "top_p", 1.0, 0.95, g), logits)


@pytest.mark.parametrize("seeded", [True, False])
def test_generate_with_seed_repeats_the_evaluation_samples(seeded, tmp_path):
    from trainer_testlib import REPO
    from transformers import AutoTokenizer, TrainingArguments

    from trainer.data import Collator
    from trainer.tess_trainer import TessTrainer

    tok = AutoTokenizer.from_pretrained(REPO / "data" / "tokenizer")
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=H, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, pad_token_id=tok.pad_token_id)
    enc = tok(["Xi Jinping\tConsult\tShinzo Abe\t2014-01-03", "a line of text to fill"])
    rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "span_mask": [0] + [1] * (len(ids) - 2) + [0]}
            for ids in enc["input_ids"]]
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", seed=3)
    diffusion = DiffusionArguments(num_inference_diffusion_steps=3, sampling_type="sample",
                                   generate_with_seed=seeded)
    trainer = TessTrainer(model=TessRobertaModel(cfg), args=args, data_collator=Collator(tok.pad_token_id),
                          processing_class=tok, diffusion=diffusion, sample_dataset=rows, conditional="kg_quad")
    texts = []
    for _ in range(2):
        trainer.write_samples()
        texts.append((tmp_path / "samples" / "step-0.txt").read_text())
    assert (texts[0] == texts[1]) == seeded


# ---- the keys reach the run ----------------------------------------------------------------

BAD_OPTIONS = [
    ({"beta_schedule": "cosine"}, "config key beta_schedule must be one of"),
    ({"sampling_type": "nucleus"}, "config key sampling_type must be one of"),
    ({"classifier_free_uncond_input": "blank"}, "config key classifier_free_uncond_input must be one of"),
    ({"self_condition": "logits", "self_condition_mix_before_weights": True}, "cannot mix before the weights"),
    ({"self_condition": "logits_mean", "self_condition_mix_logits_before_weights": True,
      "self_condition_zeros_after_softmax": True}, "self_condition_zeros_after_softmax cannot apply"),
    ({"guidance_scale": 0.5}, "config key guidance_scale must be at least 1"),
    ({"truncation_length": -1}, "config key truncation_length must be between"),
    ({"eval_context_size": 0}, "config key eval_context_size must be at least 1"),
]


@pytest.mark.parametrize("overrides,message", BAD_OPTIONS, ids=[next(iter(o)) for o, _ in BAD_OPTIONS])
def test_bad_option_is_one_clear_line(tmp_path, overrides, message):
    from trainer_testlib import write_config

    from syncd.errors import ConfigError
    from trainer.args import parse_config

    with pytest.raises(ConfigError, match=message) as info:
        parse_config([str(write_config(tmp_path, **overrides))])
    assert "\n" not in str(info.value)


def test_options_reach_the_model_the_schedule_and_the_masks(tmp_path):
    from trainer_testlib import write_config

    from trainer.args import parse_config
    from trainer.build import build_trainer

    cfg = parse_config([str(write_config(
        tmp_path, conditional_generation="prefix_lm", self_condition="logits_max",
        self_condition_mix_before_weights=True, beta_schedule="sigmoid", truncation_length=2, eval_context_size=3,
        mask_padding=False, guidance_scale=2.0, empty_token_be_mask=True, classifier_free_simplex_inputs=True,
        max_train_samples=8, max_eval_samples=4))])
    trainer = build_trainer(cfg).trainer
    assert trainer.masking == SpanMasking("prefix_lm", 0.15, 3.0, 3, False, 2)
    assert torch.equal(trainer.alpha_bars, alpha_bars("sigmoid", 100))
    c = trainer.model.config
    assert (c.self_condition, c.self_condition_mix_before_weights, c.empty_token_be_mask,
            c.classifier_free_simplex_inputs, c.beta_schedule) == ("logits_max", True, True, True, "sigmoid")
    assert c.mask_token_id == trainer.processing_class.mask_token_id
    options = trainer.sampling_options()
    assert (options.beta_schedule, options.guidance_scale, options.guided) == ("sigmoid", 2.0, True)
