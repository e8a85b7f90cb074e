"""Training a LoRA adapter on a built dataset, and turning it into something llama.cpp serves.

``data`` checks and tokenizes the dataset (loss on the assistant's tokens only, the model's own chat
template); ``base`` makes the cached transformers copy of a bundled GGUF; ``trainer`` runs the loop
(checkpoints, resume, events); ``checkpoints`` writes and prunes them atomically; ``convert`` turns a PEFT
adapter into a GGUF LoRA with llama.cpp's converter; ``gpu`` is the QLoRA path through Unsloth.

torch, transformers and peft (the ``train`` extra) are imported only inside the functions that need them.
"""
