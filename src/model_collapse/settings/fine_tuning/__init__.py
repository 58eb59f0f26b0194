"""Fine-tuning a pretrained Hugging Face causal language model, iteration after iteration.

The protocols of Shumailov et al. (*AI models collapse when trained on recursively generated data*,
Nature 2024: OPT-125m on wikitext-2 blocks, beam-search continuations) and of Kazdan et al.'s follow-up
(*Collapse or Thrive?*: supervised fine-tuning on HelpSteer2 conversations, unconditional samples kept
when well formed). Modules: ``config`` (the config sections), ``pretrained`` (reading a local
``save_pretrained`` directory), ``pretraining`` (the small bundled model, pretrained once per run),
``data`` (wikitext-2 and HelpSteer2 files), ``examples`` (the token examples a chain passes on),
``beam_search`` (KV-cache beam search) and ``setting`` (the setting itself).
"""
