"""Checkpoints of the original TESS continue on our trainer (issue 9, item 3).

The original-format checkpoints are built here from the original's parameter layout,
as read in its source:

- allenai/tess-diffusion 63f039b, sdlm/models/modeling_roberta.py: RobertaForDiffusionLM
  registers roberta, lm_head, vocab_to_hidden_dim_embed (Linear(V, H, bias=False),
  whose post_init sets weight.data = E.data.T: a second parameter on E's storage),
  timestep_embed (Linear(1, H)) and, for the concatenating self-conditioning modes,
  project_to_hidden_size (Linear(2H, H, bias=False)); _keys_to_ignore_on_save drops
  lm_head.decoder.*.
- transformers 4.25.1, models/roberta/modeling_roberta.py: the module order that
  fixes named_parameters() (embeddings: word, position, token_type, LayerNorm; per layer:
  query, key, value, attention output dense + LayerNorm, intermediate dense, output
  dense + LayerNorm; lm_head: its own bias first, then dense, layer_norm) and the
  persistent position_ids buffer.
- transformers 4.25.1, trainer.py: create_optimizer's two groups (decay: everything
  outside LayerNorm modules without "bias" in its name; no decay: the rest), AdamW
  (adamw_hf: state step as an int, exp_avg, exp_avg_sq; groups with correct_bias and the
  scheduler's initial_lr), _save_checkpoint's optimizer.pt, scheduler.pt, scaler.pt,
  trainer_state.json and rng_state.pth ({"python", "numpy", "cpu"[, "cuda"]}), saved
  by torch 1.12 with numpy 1, whose pickles name numpy.core.multiarray._reconstruct.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import types
from pathlib import Path

import pytest
import torch
from trainer_testlib import read_losses, write_config

from trainer.__main__ import main

E = "roberta.embeddings.word_embeddings.weight"
COPY = "vocab_to_hidden_dim_embed.weight"
TRAINER_STATE_425 = ("epoch", "global_step", "max_steps", "num_train_epochs", "total_flos", "log_history",
                     "best_metric", "best_model_checkpoint", "is_local_process_zero", "is_world_process_zero",
                     "is_hyper_param_search", "trial_name", "trial_params")


# ---- the original's layout, restated from the sources above ------------------------------


def names_425(n_layers: int, projection: bool) -> list[str]:
    out = ["roberta.embeddings.word_embeddings.weight", "roberta.embeddings.position_embeddings.weight",
           "roberta.embeddings.token_type_embeddings.weight", "roberta.embeddings.LayerNorm.weight",
           "roberta.embeddings.LayerNorm.bias"]
    for i in range(n_layers):
        p = f"roberta.encoder.layer.{i}."
        for m in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            out += [p + m + ".weight", p + m + ".bias"]
    out += ["lm_head.bias", "lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
            "lm_head.layer_norm.bias", COPY, "timestep_embed.weight", "timestep_embed.bias"]
    return out + (["project_to_hidden_size.weight"] if projection else [])


def groups_425(names: list[str]) -> list[list[str]]:
    def decays(n):
        in_layer_norm = "LayerNorm" in n.split(".") or n.startswith("lm_head.layer_norm.")
        return not in_layer_norm and "bias" not in n
    return [[n for n in names if decays(n)], [n for n in names if not decays(n)]]


class Numpy1Pickler(pickle.Pickler):
    """Writes what numpy 1 wrote: its array constructor lived in numpy.core, not numpy._core."""

    def __init__(self, file, protocol=None, **kwargs):
        self._out, self._buf = file, io.BytesIO()
        super().__init__(self._buf, protocol, **kwargs)

    def dump(self, obj):
        super().dump(obj)
        data = self._buf.getvalue()
        old = data.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
        assert old != data
        self._out.write(old)


def our_groups(model) -> list[list[str]]:
    """Our optimizer's groups, in the order Trainer.create_optimizer builds them."""
    from transformers import Trainer

    decay = set(Trainer.get_decay_parameter_names(None, model))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return [[n for n in names if n in decay], [n for n in names if n not in decay]]


def to_original(ours: Path, dest: Path, *, copy: torch.Tensor | None = None, copy_state: dict | None = None) -> Path:
    """Our checkpoint-N, rewritten as the original's Trainer would have saved that state."""
    from safetensors.torch import load_file
    from transformers import RobertaConfig
    from transformers.trainer_pt_utils import safe_globals

    from trainer.model import TessRobertaModel

    dest.mkdir(parents=True)
    config = json.loads((ours / "config.json").read_text())
    weights = load_file(str(ours / "model.safetensors"))
    mode = config.get("simplex_embedding", "tied")
    projection = "project_to_hidden_size.weight" in weights
    # weights: 4.25 state dict; the copy is E's transposed view unless given (trained apart)
    sd = {"roberta.embeddings.position_ids": torch.arange(config["max_position_embeddings"]).expand((1, -1))}
    sd.update({k: v for k, v in weights.items() if k != COPY})
    sd[COPY] = sd[E].T if copy is None else copy
    torch.save(sd, dest / "pytorch_model.bin")
    config.update(architectures=["RobertaForDiffusionLM"], transformers_version="4.25.1", deepmind_conditional=False)
    config.pop("simplex_embedding", None)
    (dest / "config.json").write_text(json.dumps(config))
    # optimizer: our state by name, re-indexed into the 4.25 groups, in adamw_hf's format
    model = TessRobertaModel(RobertaConfig.from_dict({**config, "simplex_embedding": mode}))
    ours_opt = torch.load(ours / "optimizer.pt", weights_only=True)
    our_names = [n for g in our_groups(model) for n in g]
    by_name = {our_names[i]: s for i, s in ours_opt["state"].items()}
    if copy_state is not None:
        by_name[COPY] = copy_state
    g0 = ours_opt["param_groups"][0]
    state, groups, index = {}, [], 0
    for names, wd in zip(groups_425(names_425(config["num_hidden_layers"], projection)), (g0["weight_decay"], 0.0),
                         strict=True):
        groups.append({"lr": g0["lr"], "betas": g0["betas"], "eps": g0["eps"], "weight_decay": wd,
                       "correct_bias": True, "initial_lr": g0["initial_lr"], "params": []})
        for name in names:
            if name in by_name:
                s = by_name[name]
                state[index] = {"step": int(s["step"]), "exp_avg": s["exp_avg"], "exp_avg_sq": s["exp_avg_sq"]}
            groups[-1]["params"].append(index)
            index += 1
    torch.save({"state": state, "param_groups": groups}, dest / "optimizer.pt")
    sched = torch.load(ours / "scheduler.pt", weights_only=True)
    torch.save({"base_lrs": sched["base_lrs"], "last_epoch": sched["last_epoch"], "_step_count": sched["_step_count"],
                "verbose": False, "_get_lr_called_within_step": False, "_last_lr": sched["_last_lr"],
                "lr_lambdas": [None, None]}, dest / "scheduler.pt")
    with safe_globals():
        rng = torch.load(ours / "rng_state.pth", weights_only=True)
    torch.save({k: rng[k] for k in ("python", "numpy", "cpu")}, dest / "rng_state.pth",
               pickle_module=types.SimpleNamespace(__name__="numpy1_pickle", Pickler=Numpy1Pickler), pickle_protocol=2)
    torch.save({"scale": 32768.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                "_growth_tracker": 3}, dest / "scaler.pt")
    state_json = json.loads((ours / "trainer_state.json").read_text())
    (dest / "trainer_state.json").write_text(json.dumps({k: state_json.get(k) for k in TRAINER_STATE_425}))
    return dest


# ---- runs --------------------------------------------------------------------------------


def run(cfg: Path, *overrides: str) -> int:
    return main([str(cfg), *overrides])


def error_lines(capsys) -> list[str]:
    """stderr without the trainer's own log lines ("12:00:00 tess-train INFO ...")."""
    lines = capsys.readouterr().err.strip().splitlines()
    return [line for line in lines if not re.match(r"\d\d:\d\d:\d\d tess-train ", line)]


@pytest.fixture(scope="module")
def reference_runs(tmp_path_factory):
    """Two uninterrupted 10-step runs, saving at step 5: ours (tied) and original_shared with logits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    try:
        for name, keys in (("tied", {}), ("shared", {"simplex_embedding": "original_shared",
                                                     "self_condition": "logits"})):
            tmp = tmp_path_factory.mktemp(name)
            cfg = write_config(tmp, max_steps=10, save_steps=5, **keys)
            assert run(cfg) == 0
            out[name] = (tmp, keys, read_losses(tmp / "out"))
    finally:
        torch.set_num_threads(before)
    return out


def continue_from(tmp: Path, ckpt: Path, keys: dict, *extra: str) -> tuple[int, Path]:
    tmp.mkdir()
    cfg = write_config(tmp, max_steps=10, save_steps=5, **keys)
    return run(cfg, "--resume_from_checkpoint", str(ckpt), *extra), tmp / "out"


def test_original_checkpoint_continues_as_the_uninterrupted_run(reference_runs, tmp_path, one_thread, caplog):
    """Tied: E's Adam state kept, the copy's dropped (its made-up state would change the losses)."""
    ref, keys, expected = reference_runs["tied"]
    step = int(torch.load(ref / "out" / "checkpoint-5" / "optimizer.pt", weights_only=True)["state"][0]["step"])
    vocab = json.loads((ref / "out" / "checkpoint-5" / "config.json").read_text())["vocab_size"]
    bogus = {"step": step, "exp_avg": torch.full((32, vocab), 0.5), "exp_avg_sq": torch.full((32, vocab), 1e-6)}
    orig = to_original(ref / "out" / "checkpoint-5", tmp_path / "orig" / "checkpoint-5", copy_state=bogus)
    with caplog.at_level("INFO", logger="tessync.trainer"):
        code, out = continue_from(tmp_path / "run", orig, keys)
    assert code == 0
    got = read_losses(out)
    assert sorted(got) == list(range(6, 11))
    for s in range(6, 11):
        assert got[s] == pytest.approx(expected[s], abs=1e-5), (s, got[s], expected[s])
    assert "Adam state of vocab_to_hidden_dim_embed.weight" in caplog.text
    assert "scaler.pt not used" in caplog.text


def test_original_shared_keeps_both_adam_states(reference_runs, tmp_path, one_thread):
    """original_shared, self_condition logits (project_to_hidden_size): both states continue exactly."""
    ref, keys, expected = reference_runs["shared"]
    ckpt = ref / "out" / "checkpoint-5"
    from transformers import RobertaConfig

    from trainer.model import TessRobertaModel

    config = json.loads((ckpt / "config.json").read_text())
    names = [n for g in our_groups(TessRobertaModel(RobertaConfig.from_dict(config))) for n in g]
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)["state"]
    copy_state = state[names.index(COPY)]
    assert not torch.equal(copy_state["exp_avg"].T, state[names.index(E)]["exp_avg"])  # two different states
    orig = to_original(ckpt, tmp_path / "orig" / "checkpoint-5", copy_state=copy_state)
    code, out = continue_from(tmp_path / "run", orig, keys)
    assert code == 0
    got = read_losses(out)
    for s in range(6, 11):
        assert got[s] == pytest.approx(expected[s], abs=1e-5), (s, got[s], expected[s])
    # Without the copy's state the continuation differs: the second state matters.
    shutil.rmtree(tmp_path / "orig")
    orig = to_original(ckpt, tmp_path / "orig" / "checkpoint-5",
                       copy_state={**copy_state, "exp_avg": torch.zeros_like(copy_state["exp_avg"])})
    code, out = continue_from(tmp_path / "run2", orig, keys)
    assert code == 0 and read_losses(out)[10] != pytest.approx(expected[10], abs=1e-5)


def test_copy_trained_apart_continues_only_with_original_separate(reference_runs, tmp_path, one_thread, capsys):
    ref, keys, _ = reference_runs["tied"]
    ckpt = ref / "out" / "checkpoint-5"
    from safetensors.torch import load_file

    apart = load_file(str(ckpt / "model.safetensors"))[E].T.clone() + 0.01  # as after model.to("cuda")
    orig = to_original(ckpt, tmp_path / "orig" / "checkpoint-5", copy=apart)
    code, out = continue_from(tmp_path / "tied", orig, keys)
    err = error_lines(capsys)
    assert code == 2 and len(err) == 1, err
    assert "vocab_to_hidden_dim_embed.weight differs from the word embeddings" in err[0]
    assert "--simplex_embedding original_separate" in err[0] and "--init_from_checkpoint" in err[0]
    assert not (out / "loss_log.jsonl").exists()
    code, out = continue_from(tmp_path / "separate", orig, {**keys, "simplex_embedding": "original_separate"})
    assert code == 0
    got = read_losses(out)
    assert sorted(got) == list(range(6, 11)) and all(v == v for v in got.values())


def _drop(key):
    def tamper(sd):
        del sd[key]
    return tamper


def _reshape(key):
    def tamper(sd):
        sd[key] = torch.zeros(sd[key].shape[0] + 1, *sd[key].shape[1:])
    return tamper


@pytest.mark.parametrize("tamper, says", [
    (_drop("roberta.encoder.layer.0.attention.self.key.weight"),
     "pytorch_model.bin has no tensor roberta.encoder.layer.0.attention.self.key.weight"),
    (_reshape("timestep_embed.weight"),
     "pytorch_model.bin has timestep_embed.weight of shape (33, 1), this model's is (32, 1)"),
], ids=["missing-tensor", "wrong-shape"])
def test_tampered_original_checkpoint_stops_before_step_one(reference_runs, tmp_path, one_thread, capsys, tamper,
                                                            says):
    """Found by auto-resume in output_dir (no marker, settled): complete to syncd, but not loadable."""
    ref, keys, _ = reference_runs["tied"]
    out = tmp_path / "out"
    orig = to_original(ref / "out" / "checkpoint-5", out / "checkpoint-5")
    sd = torch.load(orig / "pytorch_model.bin", weights_only=True)
    tamper(sd)
    torch.save(sd, orig / "pytorch_model.bin")
    before = sorted(p.name for p in orig.iterdir())
    code = run(write_config(tmp_path, max_steps=10, save_steps=5, **keys))
    err = error_lines(capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("tess-train: error: cannot continue the original TESS checkpoint")
    assert says in err[0] and err[0].endswith("give this run the model shape and self_condition of its config.json, "
                                              "or pass --resume_from_checkpoint false to start over")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-5"]  # no step, no log, no new checkpoint
    assert sorted(p.name for p in orig.iterdir()) == before


def test_init_from_checkpoint_takes_the_weights_alone(reference_runs, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from trainer.args import parse_config
    from trainer.build import build_trainer

    ref, keys, _ = reference_runs["tied"]
    ckpt = ref / "out" / "checkpoint-5"
    orig = to_original(ckpt, tmp_path / "orig" / "checkpoint-5", copy=load_file(str(ckpt / "model.safetensors"))[E].T
                       + 0.01)
    cfg = write_config(tmp_path, **keys)
    built = build_trainer(parse_config([str(cfg), "--init_from_checkpoint", str(orig)]))
    model = built.trainer.model
    weights = load_file(str(ckpt / "model.safetensors"))
    for name, value in model.state_dict().items():
        if name in weights:
            assert torch.equal(value, weights[name]), name
    assert torch.equal(model.lm_head.decoder.weight, weights[E])  # E, still tied to the LM head


def test_init_from_a_checkpoint_of_another_shape_stops_with_one_line(reference_runs, tmp_path, capsys):
    shared, _, _ = reference_runs["shared"]  # self_condition logits: it has project_to_hidden_size
    orig = to_original(shared / "out" / "checkpoint-5", tmp_path / "orig" / "checkpoint-5")
    code = run(write_config(tmp_path, max_steps=10), "--init_from_checkpoint", str(orig))
    err = error_lines(capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0] == (f"tess-train: error: init_from_checkpoint {orig}: pytorch_model.bin holds "
                      "project_to_hidden_size.weight, which this model has no place for (self_condition "
                      "logits_addition)")
    assert not (tmp_path / "out" / "loss_log.jsonl").exists()


def test_original_rng_pickle_needs_the_numpy1_allowance(reference_runs, tmp_path):
    from transformers.trainer_pt_utils import safe_globals

    from trainer.original_format import numpy_safe_globals

    ref, _, _ = reference_runs["tied"]
    orig = to_original(ref / "out" / "checkpoint-5", tmp_path / "checkpoint-5")
    with safe_globals(), pytest.raises(pickle.UnpicklingError, match="numpy.core.multiarray._reconstruct"):
        torch.load(orig / "rng_state.pth", weights_only=True)
    with numpy_safe_globals():
        rng = torch.load(orig / "rng_state.pth", weights_only=True)
    with safe_globals():
        ours = torch.load(ref / "out" / "checkpoint-5" / "rng_state.pth", weights_only=True)
    assert (rng["numpy"][1] == ours["numpy"][1]).all() and torch.equal(rng["cpu"], ours["cpu"])


def test_original_shared_applies_two_adam_updates_to_one_storage(tmp_path):
    """The original's step on E: AdamW with E's gradient, then AdamW with the copy's, in place."""
    from transformers import RobertaConfig, TrainingArguments

    from trainer.model import TessRobertaModel
    from trainer.tess_trainer import TessTrainer

    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=16, max_position_embeddings=20, self_condition="logits_addition",
                           simplex_embedding="original_shared")
    model = TessRobertaModel(config)
    span = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0]], dtype=torch.bool)
    ids = torch.randint(3, 40, span.shape)
    out = model(input_ids=ids, simplex=torch.randn(int(span.sum()), 40) * 5, timesteps=torch.tensor([0.3, 0.7]),
                span_mask=span, labels=ids[span])
    out.loss.backward()
    emb, copy = model.roberta.embeddings.word_embeddings.weight, model.vocab_to_hidden_dim_embed.weight
    g_e, g_copy = emb.grad.clone(), copy.grad.T.clone()  # (V, H) each: two different gradients
    assert g_e.abs().sum() > 0 and g_copy.abs().sum() > 0 and not torch.allclose(g_e, g_copy)
    lr, wd, eps = 0.1, 0.1, 1e-8
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=lr, weight_decay=wd, adam_epsilon=eps,
                             use_cpu=True, report_to="none")
    cls, kwargs = TessTrainer.get_optimizer_cls_and_kwargs(args, model)
    assert kwargs["fused"] is False and kwargs["foreach"] is False
    e0 = emb.detach().clone()
    cls([{"params": list(model.parameters()), "weight_decay": wd}], **kwargs).step()  # as Trainer's decay group

    def adamw_first_step(p, g):  # torch's AdamW at step 1: m_hat = g, v_hat = g^2
        return p * (1 - lr * wd) - lr * g / (g.abs() + eps)

    once = adamw_first_step(e0, g_e)
    twice = adamw_first_step(once, g_copy)
    assert torch.allclose(emb.detach(), twice, atol=1e-6)
    assert not torch.allclose(emb.detach(), once, atol=1e-3)
    assert copy.data_ptr() == emb.data_ptr()  # still one storage
    model.to(torch.float64)  # a move copies each parameter apart (as .to("cuda") does); the model re-links
    assert model.vocab_to_hidden_dim_embed.weight.data_ptr() == model.roberta.embeddings.word_embeddings.weight.data_ptr()


def groups_ssdlm(names: list[str]) -> list[list[str]]:
    """The original's ssdlm_optimizer split (sdlm/trainer.py, create_optimizer)."""
    no_decay = ["bias", "LayerNorm.weight", "timestep_embed.weight", "timestep_embed.bias"]
    return [[n for n in names if not any(nd in n for nd in no_decay)],
            [n for n in names if any(nd in n for nd in no_decay)]]


@pytest.mark.parametrize("layout, grouping", [("Trainer", groups_425), ("ssdlm_optimizer", groups_ssdlm)])
def test_optimizer_layout_is_told_apart_and_mapped_by_name(tmp_path, layout, grouping):
    """Both layouts split the tiny model into groups of equal sizes; the moments' shapes decide."""
    from trainer.checkpoint_check import CheckpointError
    from trainer.original_format import plan_optimizer

    H, V = 4, 10
    names = names_425(1, projection=False)

    def shape(n):
        if n == E:
            return (V, H)
        if n == COPY:
            return (H, V)
        if n == "timestep_embed.weight":
            return (H, 1)
        if n == "lm_head.bias":
            return (V,)
        return (H,) if n.endswith("bias") or "LayerNorm" in n or "layer_norm" in n else (H, H)

    shapes = {n: shape(n) for n in names}
    state, groups, i, where = {}, [], 0, {}
    for group in grouping(names):
        groups.append({"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "correct_bias": True,
                       "initial_lr": 1e-4, "params": []})
        for n in group:
            state[i] = {"step": 7, "exp_avg": torch.full(shapes[n], float(i)), "exp_avg_sq": torch.ones(shapes[n])}
            groups[-1]["params"].append(i)
            where[n] = i
            i += 1
    saved = {"state": state, "param_groups": groups}
    assert [len(g) for g in groups_425(names)] == [len(g) for g in groups_ssdlm(names)]
    ours = [[(n, shapes[n]) for n in names if n != COPY]]
    plan = plan_optimizer(saved, names, shapes, ours, tmp_path, "tied")
    assert plan.layout == layout and plan.dropped == [COPY]
    for (name, _), src in zip(ours[0], plan.sources[0], strict=True):
        assert state[src]["exp_avg"].flatten()[0].item() == where[name], name
    groups[0]["params"].pop()
    with pytest.raises(CheckpointError, match="has groups of"):
        plan_optimizer(saved, names, shapes, ours, tmp_path, "tied")
