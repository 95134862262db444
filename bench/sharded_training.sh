#!/usr/bin/env bash
# Sharded fine-tuning of the embedded SmolLM2-135M on CPU processes against one process
# (experiments/sharded_training.md): full fine-tuning on 16 released HotpotQA trajectories, one
# process with batches of 4 against 2 processes with batches of 2 under FSDP2, ZeRO-2 and ZeRO-3;
# each exported model then evaluated on the same 10 questions, and `rescore` says how often their
# trajectories equal the one-process model's. Writes under outputs/sharded_training/; ~11 min on 2 cores.
#   bash bench/sharded_training.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=outputs/sharded_training
COMMON="data.limit=16 data.val_fraction=0 finetune=full finetune.lr=1e-4 trainer.enable_progress_bar=false ~tracker logger=csv"
mkdir -p $OUT

train() {  # name threads overrides...: one training run, its exit code and seconds
    local name=$1 threads=$2; shift 2
    local start=$SECONDS
    OMP_NUM_THREADS=$threads $PY -m fireact.train $COMMON hydra.run.dir=$OUT/$name "$@" > $OUT/$name.log 2>&1
    echo "train $name: exit $?, $((SECONDS - start)) s"
}
train one 2 trainer=cpu data.batch_size=4
train fsdp2 1 trainer=fsdp data.batch_size=2        # 2 processes, a core each
train zero2 1 trainer=deepspeed data.batch_size=2
train zero3 1 trainer=deepspeed trainer.strategy.stage=3 data.batch_size=2

for name in one fsdp2 zero2 zero3; do
    start=$SECONDS
    $PY -m fireact.evaluate model.path=$OUT/$name/model task.n=10 '~tracker' hydra.run.dir=$OUT/eval_$name > $OUT/eval_$name.log 2>&1
    echo "evaluate $name: exit $?, $((SECONDS - start)) s"
done
files=$(printf "$OUT/eval_%s/trajectories.jsonl," one fsdp2 zero2 zero3)
$PY -m fireact.rescore "files=[${files%,}]" task.n=10 '~tracker' hydra.run.dir=$OUT/rescore
