"""Other runtimes for steering adapters: :mod:`steering_adapter.runtimes.export` (llama.cpp control vectors, plain
PEFT LoRA, merged checkpoints) and :mod:`steering_adapter.runtimes.vllm` (sampling and serving with vLLM)."""
