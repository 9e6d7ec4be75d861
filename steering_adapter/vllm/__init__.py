"""vLLM integration: sampling backend and steered generation with steering adapters."""
