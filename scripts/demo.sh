#!/usr/bin/env bash
# make demo: train the tiny TESS config on CPU with syncd mirroring its checkpoints,
# then play a lost machine: restore the newest checkpoint into a fresh folder and
# resume training there. Takes a few minutes on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=.venv/bin
CONFIG=configs/tess_tiny_cpu.json
OUT=output/tess_tiny      # output_dir in $CONFIG
REMOTE=backups/tess_tiny  # gdrive_backup_dir/run_name in $CONFIG
STEPS=$("$BIN/python" -c "import json; print(json.load(open('$CONFIG'))['max_steps'])" 2>/dev/null || echo 1200)
MORE_STEPS=$((STEPS + 50))  # the resumed run goes on 50 steps past the config's max_steps

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if [ ! -x "$BIN/tess-train" ] || [ ! -x "$BIN/syncd" ]; then
    echo "demo: run 'make setup' first (or simply 'make demo')" >&2
    exit 2
fi

if [ -e "$OUT" ] || [ -e "$REMOTE" ]; then
    say "Clearing the previous demo's $OUT and $REMOTE"
    "$BIN/syncd" stop "$CONFIG" >/dev/null 2>&1 || true
    rm -rf "$OUT" "$REMOTE"
fi
tmp=$(mktemp -d "$PWD/demo-restore-XXXXXX")

stop_daemon() { "$BIN/syncd" stop "$CONFIG" >/dev/null 2>&1 || true; }
trap stop_daemon EXIT

say "1/6 Starting syncd in the background: it watches $OUT and mirrors every complete checkpoint to ./$REMOTE"
"$BIN/syncd" start "$CONFIG"

say "2/6 Training the tiny TESS model ($STEPS steps, about two minutes; a checkpoint every 50 steps and every 30 s)"
echo "    config: $CONFIG  (launch command in its _comment)"
echo "    watch:  $OUT/loss_log.jsonl (loss per step), $OUT/samples/ (generated quads at each evaluation)"
"$BIN/tess-train" "$CONFIG"

say "3/6 Waiting until syncd has committed the newest checkpoint and the final model"
"$BIN/syncd" wait "$CONFIG" --timeout 120
echo "    committed on the remote:"
ls -1 "$REMOTE" | sed 's/^/      /'

say "4/6 Pretending the machine is gone: restoring the newest committed checkpoint into a fresh folder"
echo "    fresh folder: $tmp"
"$BIN/syncd" restore "$CONFIG" --to "$tmp"
ls -1 "$tmp" | sed 's/^/      /'

say "5/6 Resuming training from the restored checkpoint for $((MORE_STEPS - STEPS)) more steps"
echo "    (resume_from_checkpoint is 'auto': the newest complete checkpoint in the output folder)"
"$BIN/tess-train" "$CONFIG" --output_dir "$tmp" --max_steps "$MORE_STEPS"
echo "    losses after the resume:"
tail -n 3 "$tmp/loss_log.jsonl" | sed 's/^/      /'

say "6/6 syncd status, then stopping the daemon"
"$BIN/syncd" status "$CONFIG"
"$BIN/syncd" stop "$CONFIG"
trap - EXIT

say "Drawing the runs: training and eval loss, eval metrics, where syncd committed and where the run resumed"
"$BIN/tess-train" plot "$OUT"
"$BIN/tess-train" plot "$tmp"

say "Ranking entities with the trained model (tess-eval kg-rank): 200 validation queries, 64 negatives each"
echo "    at the fork's t = 60 of 500 the candidate is barely noised (the loss mostly measures copying);"
echo "    at t = 470 the span is almost pure noise and the score is the model's guess from the quad's context"
for t in 60 470; do
    "$BIN/tess-eval" kg-rank "$CONFIG" --test_file data/kg_quads/validation.txt --mode both \
        --neg_k 64 --max_queries 200 --t_eval "$t" --no_progress 2>/dev/null | sed 's/^/    /'
done

say "Done."
cat <<EOF
    Pictures:             $OUT/loss.png (the run, with syncd's commits), $tmp/loss.png (the resumed run)
    Trained model:        $OUT (final model at its root, checkpoints in checkpoint-N/)
    Remote copies:        ./$REMOTE (each committed by its syncd-manifest.json)
    Resumed run:          $tmp (delete it when done)
    Next: the same two commands with configs/tess_gpu_oneline_sc.json on a GPU (Colab, Drive mounted).
EOF
