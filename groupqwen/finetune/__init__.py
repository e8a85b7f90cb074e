"""The fine-tuning data pipeline: import chat exports → curate → build training sets.

Each stage is a plain function over iterables of :class:`~groupqwen.finetune.records.Conversation` and
JSONL files sit between the stages, so each stage reruns on its own::

    importers.import_paths(...)   ChatGPT / Claude / Perplexity exports → conversations.jsonl
    curate.curate(...)            quality filters, duplicates, PII      → curated.jsonl
    review.ReviewStore            accept / reject / edit decisions      → decisions.jsonl
    dataset.build_dataset(...)    OpenAI messages, ShareGPT, Qwen ChatML → train/validation + manifest
"""
