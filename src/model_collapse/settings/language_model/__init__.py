"""Causal language models trained from scratch (the paper's §2.1, TinyStories).

Built so far: the real corpora (``corpus``), the 8,000-token byte-level BPE tokenizer (``tokenizer``)
and the paper's model presets (``models``). The training loop, KV-cache sampling and the setting that
plugs them into the chain are still to come (issue "Language models").
"""
