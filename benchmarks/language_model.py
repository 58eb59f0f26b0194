"""Language-model speed, side by side in one run, same model, batch and sequence length:

* training tokens/s: our loop (``training.train``) against the Hugging Face ``Trainer``;
* synthetic-corpus tokens/s: our KV-cache sampler (``sampling.generate``) against ``model.generate``;
* model FLOP utilisation of our loop against this machine's measured matmul peak.

    pip install -e ".[lm,bench]"
    python benchmarks/language_model.py [--model gpt2-tiny] [--steps 60] [--batch 16] [--block 128]
        [--device cpu|cuda] [--precision fp32|bf16]

On a GPU (``--device cuda --precision bf16``) both trainers train in bf16 autocast, and the utilisation
is taken against the measured bf16 matmul peak; ``benchmarks/gpu_check.sh`` runs the paper's sizes.

Both trainers see the same packed blocks of the bundled corpus. Both samplers start from the same
prompts with the same number of stories in flight, and are measured twice: on an untrained model, which
almost never emits EOS, so every story runs to the length limit (the speed of a decoding step), and on
the model our loop just trained, whose stories end at EOS at their own lengths, as a chain's synthetic
corpus does (where continuous batching pays). Only story tokens count, not padding. Each measurement is
taken twice, alternating, and the faster run of each side is reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from transformers import Trainer, TrainingArguments

from model_collapse.settings.language_model.config import TrainingSection
from model_collapse.settings.language_model.corpus import load_documents
from model_collapse.settings.language_model.models import build_model
from model_collapse.settings.language_model.packing import TokenCorpus, pack
from model_collapse.settings.language_model.sampling import generate, story_prompts
from model_collapse.settings.language_model.tokenizer import train_tokenizer
from model_collapse.settings.language_model.training import train


class Blocks(torch.utils.data.Dataset):
    def __init__(self, inputs: np.ndarray):
        self.inputs = torch.from_numpy(inputs)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return {"input_ids": self.inputs[index], "labels": self.inputs[index]}


def fresh_model(name, vocab, eos):
    torch.manual_seed(0)
    return build_model(name, vocab, eos)


def synchronise(device: torch.device) -> None:
    """Wait for the GPU's queued work, so that a clock read after it times the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ours(name, vocab, eos, blocks, validation, batch, device, precision):
    model = fresh_model(name, vocab, eos)
    options = TrainingSection(batch_size=batch, learning_rate=1e-3, evaluations_per_epoch=1, precision=precision)
    synchronise(device)
    start = time.perf_counter()
    train(model, blocks, validation, options, np.random.default_rng(0), device)
    synchronise(device)
    return time.perf_counter() - start, model


def time_trainer(name, vocab, eos, blocks, batch, steps, device, precision):
    model = fresh_model(name, vocab, eos)
    with tempfile.TemporaryDirectory() as directory:
        arguments = TrainingArguments(
            output_dir=directory,
            per_device_train_batch_size=batch,
            max_steps=steps,
            learning_rate=1e-3,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, round(0.02 * steps)),
            weight_decay=0.1,
            max_grad_norm=1.0,
            save_strategy="no",
            report_to=[],
            logging_steps=10**9,
            use_cpu=device.type == "cpu",
            bf16=precision == "bf16",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=Blocks(blocks.inputs))
        synchronise(device)
        start = time.perf_counter()
        trainer.train()
        synchronise(device)
        return time.perf_counter() - start


def time_sampling(model, prompts, new_tokens, batch, eos, label):
    """Story tokens per second of our sampler and of ``model.generate``, same prompts and batch size."""
    ours, theirs, produced = [], [], []
    device = prompts.device
    for _ in range(2):
        synchronise(device)
        start = time.perf_counter()
        generator = torch.Generator(device).manual_seed(0)
        stories = generate(model, prompts, new_tokens, eos, generator, batch_size=batch)
        ours.append(time.perf_counter() - start)
        produced.append(sum(len(s) - prompts.shape[1] for s in stories))
        torch.manual_seed(0)
        synchronise(device)
        start, count = time.perf_counter(), 0
        for first in range(0, len(prompts), batch):
            chunk = prompts[first : first + batch]
            with torch.no_grad():
                output = model.generate(
                    chunk,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    max_new_tokens=new_tokens,
                    eos_token_id=eos,
                    pad_token_id=eos,
                    attention_mask=torch.ones_like(chunk),
                )
            new = output[:, chunk.shape[1] :]
            # tokens before each row's first EOS (rows that ended are padded with EOS to the batch's end)
            count += int((torch.cumsum(new == eos, dim=1) == 0).sum())
        synchronise(device)
        theirs.append(time.perf_counter() - start)
        produced.append(count)
    ours_rate, generate_rate = produced[0] / min(ours), produced[1] / min(theirs)
    print(
        f"sampling, {label:9s} ours {ours_rate:9.0f} tok/s   generate {generate_rate:9.0f} tok/s   "
        f"ratio {ours_rate / generate_rate:.2f}x   (mean story {produced[0] / len(prompts):.0f} and "
        f"{produced[1] / len(prompts):.0f} new tokens)"
    )


def matmul_peak(device: torch.device, dtype: torch.dtype, size=2048, repeats=10) -> float:
    """FLOP/s of square matrix products on ``device`` in ``dtype``: this machine's attainable peak."""
    if device.type == "cuda":
        size, repeats = 8192, 50
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronise(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="gpt2-tiny")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--stories", type=int, default=256)
    parser.add_argument("--generation-batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, on a GPU")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no GPU here")
    if args.precision == "bf16" and device.type != "cuda":
        parser.error("--precision bf16 needs --device cuda (the training loop autocasts on GPUs only)")

    documents = load_documents("moby-dick", "train")
    tokenizer = train_tokenizer(documents, 8000)
    eos, vocab = tokenizer.eos_token_id, len(tokenizer)
    corpus = TokenCorpus.from_documents(tokenizer(documents, add_special_tokens=False)["input_ids"])
    packed = pack(corpus, args.block, eos, eos)
    blocks = packed.limited(args.steps * args.batch)
    validation = packed.limited(1)
    tokens = args.steps * args.batch * args.block
    parameters = fresh_model(args.model, vocab, eos).num_parameters()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(
        f"{args.model} ({parameters:,} parameters), {args.steps} steps of {args.batch} x {args.block} tokens, "
        f"on {where}, {args.precision}"
    )

    ours, theirs = [], []
    for _ in range(2):
        seconds, trained = time_ours(args.model, vocab, eos, blocks, validation, args.batch, device, args.precision)
        ours.append(seconds)
        theirs.append(time_trainer(args.model, vocab, eos, blocks, args.batch, args.steps, device, args.precision))
    training_rate, trainer_rate = tokens / min(ours), tokens / min(theirs)
    print(
        f"training   ours {training_rate:9.0f} tok/s   Trainer {trainer_rate:9.0f} tok/s   "
        f"ratio {training_rate / trainer_rate:.2f}x"
    )

    first_tokens = [int(corpus.document(i)[0]) for i in range(len(corpus)) if len(corpus.document(i))][: args.stories]
    prompts = story_prompts(first_tokens, args.stories, eos).to(device)
    model = fresh_model(args.model, vocab, eos).to(device).eval()
    time_sampling(model, prompts, args.new_tokens, args.generation_batch, eos, "untrained")
    time_sampling(trained.eval(), prompts, args.new_tokens, args.generation_batch, eos, "trained")

    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_peak(device, dtype)
    # 6 N per token for the weights (forward and backward), plus 12 L T d for attention (PaLM's count)
    config = model.config
    flops_per_token = 6 * parameters + 12 * config.num_hidden_layers * args.block * config.hidden_size
    achieved = training_rate * flops_per_token
    print(
        f"model FLOP utilisation: {achieved / 1e9:.2f} GFLOP/s of a measured {args.precision} matmul peak of "
        f"{peak / 1e9:.1f} GFLOP/s = {100 * achieved / peak:.1f}%"
    )


if __name__ == "__main__":
    main()
