"""Convert a transformers checkpoint to an F32 GGUF with llama.cpp's own convert_hf_to_gguf.py.

Run as a script (the tests do, in a subprocess): ``python llamacpp_convert.py LLAMA_CPP_DIR MODEL_DIR OUT.gguf``,
with LLAMA_CPP_DIR the llama.cpp sources vendored in the llama-cpp-python sdist (its gguf-py is used, not the
installed gguf package). Weights, hyper-parameters and tensor names are converted by llama.cpp's code unchanged.

One adjustment for the tokenizer, which llama.cpp does not know: the organism (and the tiny test models, which
borrow it) has a byte-level BPE tokenizer of its own, while convert_hf_to_gguf identifies BPE pre-tokenizers by
hashing the token ids of a test string (refusing unknown hashes) and some architectures first look for a
SentencePiece vocabulary. The vocabulary is therefore written through the converter's own GPT-2 BPE path, with
pre-tokenizer "default" when the hash is unknown. The tests feed token ids to llama.cpp, so llama.cpp's tokenisation
of text never enters the comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(llama_cpp_dir: str, model_dir: str, out: str) -> None:
    root = Path(llama_cpp_dir)
    sys.path[:0] = [str(root), str(root / "gguf-py")]
    import json

    import convert_hf_to_gguf
    from conversion import get_model_class
    from conversion.base import TextModel

    known_pre = TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return known_pre(self, tokenizer)
        except NotImplementedError:
            return "default"

    TextModel.get_vocab_base_pre = get_vocab_base_pre
    architecture = json.loads((Path(model_dir) / "config.json").read_text())["architectures"][0]
    get_model_class(architecture).set_vocab = TextModel._set_vocab_gpt2
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "f32", "--outfile", out]
    convert_hf_to_gguf.main()


if __name__ == "__main__":
    main(*sys.argv[1:4])
