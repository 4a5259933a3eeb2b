"""TESS (simplex diffusion on RoBERTa) on the current Hugging Face stack.

    args.py          one JSON config -> model, data, diffusion, run and TrainingArguments (+ syncd keys)
    schedule.py      the cosine noise schedule                      (pure)
    simplex.py       ids <-> +-k simplex, forward noising           (pure)
    sampling.py      reverse diffusion, entity exact match          (pure, given a model)
    model.py         TessRobertaModel: softmax(x_t) @ E input, timestep embedding, self-conditioning
    data.py          line-by-line text -> input_ids, attention_mask, span_mask per conditional mode
    tess_trainer.py  Trainer subclass (loss, eval samples) and callbacks (time saves, markers, loss log)
    resume.py        where ``resume_from_checkpoint: auto`` resumes from
    build.py         config -> tokenizer, datasets, model, trainer
    __main__.py      ``python -m trainer CONFIG [--key value ...]``: parse, build, train, save
"""
