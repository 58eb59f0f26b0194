"""Fine-tuning speed, side by side in one run, same model, data and batch:

* fine-tuning tokens/s: the fine-tuning setting's loop (``language_model/training.py`` over
  ``fine_tuning/examples.py``'s batches) against the Hugging Face ``Trainer``;
* beam-search tokens/s: ``fine_tuning/beam_search.py`` against ``model.generate(num_beams=5,
  repetition_penalty=3.0)`` (Shumailov et al.'s generation), checked to give the same tokens.

    pip install -e ".[lm,bench]"
    python benchmarks/fine_tuning.py [--size small|opt-125m] [--steps 40] [--batch 16] [--block 64]
        [--prompts 64] [--generation-batch 16] [--device cpu|cuda] [--precision fp32|bf16] [--lora RANK]

``--size opt-125m`` is a randomly initialised OPT with OPT-125m's shape (12 layers of 768, 50,272 tokens);
``small`` a 4-layer OPT of 256 for a CPU. Both read 64-token blocks of the bundled text, tokenized by a
byte-level BPE trained on it. Each measurement is taken twice, alternating, and the faster run of each
side is reported. ``--lora RANK`` trains low-rank adapters (``peft``, its default layers) on both sides.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from transformers import OPTConfig, OPTForCausalLM, Trainer, TrainingArguments

# the language-model benchmark's pieces (this folder is on the path when a script here runs)
from language_model import Blocks, synchronise
from model_collapse.settings.fine_tuning.beam_search import beam_continuations
from model_collapse.settings.fine_tuning.config import FineTuningTraining
from model_collapse.settings.fine_tuning.data import text_blocks
from model_collapse.settings.fine_tuning.examples import ExampleBatches
from model_collapse.settings.language_model.corpus import load_documents
from model_collapse.settings.language_model.tokenizer import train_tokenizer
from model_collapse.settings.language_model.training import train

SIZES = {
    "small": {"hidden_size": 256, "num_hidden_layers": 4, "ffn_dim": 1024, "num_attention_heads": 4},
    "opt-125m": {"hidden_size": 768, "num_hidden_layers": 12, "ffn_dim": 3072, "num_attention_heads": 12},
}


LORA_RANK = 0  # --lora


def fresh_model(size: str, vocab: int, eos: int, adapters: bool = False):
    """The model, with LoRA adapters when ``--lora`` asks (then a ``peft`` model)."""
    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=vocab, max_position_embeddings=512, word_embed_proj_dim=SIZES[size]["hidden_size"],
        eos_token_id=eos, bos_token_id=eos, pad_token_id=eos, **SIZES[size],
    )  # fmt: skip
    model = OPTForCausalLM(config)
    if adapters and LORA_RANK:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, task_type="CAUSAL_LM"))
    return model


def time_ours(size, vocab, eos, batches, held_out, batch, device, precision) -> float:
    model = fresh_model(size, vocab, eos, adapters=True)
    model = model.get_base_model() if LORA_RANK else model  # the setting trains the adapted model itself
    options = FineTuningTraining(
        batch_size=batch, epochs=1, evaluations_per_epoch=1, precision=precision, checkpoint_minutes=None
    )
    synchronise(device)
    start = time.perf_counter()
    train(model, batches, held_out, options, np.random.default_rng(0), device)
    synchronise(device)
    return time.perf_counter() - start


def time_trainer(size, vocab, eos, inputs, batch, device, precision) -> float:
    model = fresh_model(size, vocab, eos, adapters=True)
    with tempfile.TemporaryDirectory() as directory:
        arguments = TrainingArguments(
            output_dir=directory,
            per_device_train_batch_size=batch,
            num_train_epochs=1,
            learning_rate=2e-5,
            lr_scheduler_type="cosine",
            weight_decay=0.01,
            max_grad_norm=1.0,
            save_strategy="no",
            report_to=[],
            logging_steps=10**9,
            use_cpu=device.type == "cpu",
            bf16=precision == "bf16",
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=arguments, train_dataset=Blocks(inputs))
        synchronise(device)
        start = time.perf_counter()
        trainer.train()
        synchronise(device)
        return time.perf_counter() - start


def time_beam_search(model, prompts, new_tokens, batch, eos) -> None:
    ours, theirs, same = [], [], True
    device = prompts.device
    for _ in range(2):
        synchronise(device)
        start = time.perf_counter()
        mine = [
            beam_continuations(model, prompts[i : i + batch], new_tokens, 5, 3.0, [eos])
            for i in range(0, len(prompts), batch)
        ]
        synchronise(device)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        generated = []
        for i in range(0, len(prompts), batch):
            chunk = prompts[i : i + batch]
            with torch.no_grad():
                output = model.generate(
                    chunk, attention_mask=torch.ones_like(chunk), num_beams=5, min_new_tokens=new_tokens,
                    max_new_tokens=new_tokens, repetition_penalty=3.0, do_sample=False, pad_token_id=eos,
                )  # fmt: skip
            generated.append(output[:, chunk.shape[1] :])
        synchronise(device)
        theirs.append(time.perf_counter() - start)
        same = same and torch.equal(torch.cat(mine), torch.cat(generated))
    tokens = len(prompts) * new_tokens
    ours_rate, generate_rate = tokens / min(ours), tokens / min(theirs)
    print(
        f"beam search   ours {ours_rate:8.0f} tok/s   generate {generate_rate:8.0f} tok/s   "
        f"ratio {ours_rate / generate_rate:.2f}x   (same tokens: {'yes' if same else 'NO'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--generation-batch", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, on a GPU")
    parser.add_argument("--lora", type=int, default=0, metavar="RANK", help="train LoRA adapters of this rank")
    args = parser.parse_args()
    global LORA_RANK
    LORA_RANK = args.lora
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no GPU here")
    if args.precision == "bf16" and device.type != "cuda":
        parser.error("--precision bf16 needs --device cuda (the training loop autocasts on GPUs only)")

    documents = load_documents("moby-dick", "train")
    tokenizer = train_tokenizer(documents, 8000)
    eos = tokenizer.eos_token_id
    vocab = 50272 if args.size == "opt-125m" else len(tokenizer)
    blocks = text_blocks(tokenizer, [line + "\n" for line in documents], args.block)
    blocks = blocks.head(min(len(blocks), args.steps * args.batch))
    batches, held_out = ExampleBatches([blocks], eos), ExampleBatches([blocks.head(args.batch)], eos)
    inputs = np.asarray(blocks.tokens, dtype=np.int64).reshape(-1, args.block)
    parameters = fresh_model(args.size, vocab, eos).num_parameters()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(
        f"OPT {args.size} ({parameters:,} parameters), {len(inputs) // args.batch} steps of {args.batch} x "
        f"{args.block} tokens, on {where}, {args.precision}" + (f", LoRA rank {args.lora}" if args.lora else "")
    )
    ours, theirs = [], []
    for _ in range(2):
        ours.append(time_ours(args.size, vocab, eos, batches, held_out, args.batch, device, args.precision))
        theirs.append(time_trainer(args.size, vocab, eos, inputs, args.batch, device, args.precision))
    tokens = len(inputs) * args.block
    training_rate, trainer_rate = tokens / min(ours), tokens / min(theirs)
    print(
        f"fine-tuning   ours {training_rate:8.0f} tok/s   Trainer  {trainer_rate:8.0f} tok/s   "
        f"ratio {training_rate / trainer_rate:.2f}x"
    )
    model = fresh_model(args.size, vocab, eos).to(device).eval()  # the setting generates in float32
    prompts = torch.from_numpy(inputs[: args.prompts]).to(device)
    time_beam_search(model, prompts, args.block, args.generation_batch, eos)


if __name__ == "__main__":
    main()
