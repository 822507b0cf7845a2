"""Runs llama.cpp's own convert_hf_to_gguf.py on a halo fixture model.

Our fixtures' byte-level BPE tokenizer is synthetic, so llama.cpp's pre-tokenizer hash table does
not know it and the converter stops; this wrapper only forces the pre-tokenizer name to "gpt-2"
(the plain GPT-2 regex, which is what the fixtures' tokenizer.json uses) and then runs the
converter unchanged:

    python gguf_convert.py LLAMA_CPP_DIR MODEL_DIR --outfile OUT.gguf --outtype f16
"""

import sys
from pathlib import Path

llama_cpp = Path(sys.argv.pop(1)).resolve()
sys.path.insert(0, str(llama_cpp))
sys.path.insert(0, str(llama_cpp / "gguf-py"))

import convert_hf_to_gguf  # noqa: E402
from conversion import base  # noqa: E402

base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
convert_hf_to_gguf.main()
