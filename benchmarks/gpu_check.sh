#!/usr/bin/env bash
# The GPU check (issue #12), sized for under ten minutes on one GPU (not yet timed): the CUDA-only code
# paths, the language-model benchmarks at the paper's sizes (batch 32 x 512 tokens, bf16) against the
# Hugging Face Trainer and generate, two iterations of configs/lm_gpt2_9m.yaml on the bundled corpus
# (one trains, one samples and trains), the VAE config on the GPU, and the fine-tuning setting: an
# OPT-125m-sized random model fine-tuned in bf16 against Trainer, its beam search against generate, and
# two iterations of configs/finetune_cpu.yaml on the GPU.
# Targets: training >= 1.3x Trainer, sampling >= 3x generate, llama-126m at >= 35% of the bf16 matmul peak;
# fine-tuning >= 1.3x Trainer, beam search >= 2x generate (same tokens).
#
#   pip install "torch>=2.2" -e ".[test,bench]"      # a CUDA build of PyTorch
#   bash benchmarks/gpu_check.sh [OUT]              # OUT: runs and logs (default: gpu-check/)
#
# Record what it prints in benchmarks/README.md ("GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'PyTorch sees no GPU here')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== CUDA code paths: autocast (bf16, fp16), fork_rng on the GPU, a neural chain resumed on the GPU"
python -m pytest -q tests/test_cuda.py

for model in gpt2-9m llama-126m; do
    echo "== $model: training against Trainer, sampling against generate (bf16, 32 x 512)"
    python benchmarks/language_model.py --model "$model" --device cuda --precision bf16 \
        --batch 32 --block 512 --steps 100 --stories 1024 --generation-batch 512 --new-tokens 256
done

echo "== configs/lm_gpt2_9m.yaml (the paper's gpt2-9m) on the bundled corpus: iteration 1 trains, 2 samples and trains"
time model-collapse run configs/lm_gpt2_9m.yaml iterations=2 setting.corpus=moby-dick setting.samples=2000 \
    setting.device=cuda --out "$out/lm_gpt2_9m" -q
model-collapse table "$out/lm_gpt2_9m"

echo "== the VAE config on the GPU"
time model-collapse run configs/vae_digits_cpu.yaml setting.device=cuda --out "$out/vae" -q
model-collapse table "$out/vae" | head -5

echo "== fine-tuning: an OPT-125m-sized random model, bf16, against Trainer; beam search against generate"
python benchmarks/fine_tuning.py --size opt-125m --device cuda --precision bf16 --steps 200 --prompts 512 \
    --generation-batch 64
echo "== the same with LoRA adapters of rank 8"
python benchmarks/fine_tuning.py --size opt-125m --device cuda --precision bf16 --steps 200 --prompts 64 \
    --generation-batch 64 --lora 8

echo "== configs/finetune_cpu.yaml on the GPU: pretraining once, then two fine-tuning iterations"
time model-collapse run configs/finetune_cpu.yaml iterations=2 setting.device=cuda --out "$out/finetune" -q
model-collapse table "$out/finetune" | head -4
