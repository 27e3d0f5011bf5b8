"""Make a tiny Llama that real vLLM serves on a CPU in seconds, for protocol tests (no hub, no download).

Run it with the python of a venv that has vLLM (it needs `torch`, `transformers` and `tokenizers`):

    $(python3 tests/engines/vllm_cpu/venv.py) tests/engines/vllm_cpu/make_tiny_model.py /tmp/tiny-llama

What it writes to the directory:
- a byte-level BPE tokenizer trained on this file's own text, with `<|im_start|>`, `<|im_end|>` (the end of
  a turn and EOS) and `<|endoftext|>` as special tokens, and `<think>` / `</think>` as single, non-special
  added tokens (vLLM's `deepseek_r1` and `qwen3` reasoning parsers look them up in the vocabulary, and
  `thinking_token_budget` needs them; non-special so that they stay in the generated text);
- a ChatML chat template whose generation prompt opens the reasoning (`<|im_start|>assistant\\n<think>\\n`,
  as DeepSeek-R1's does) and which renders every message's content verbatim, `<think>` included. That is
  what `continue_final_message` needs: transformers (which vLLM calls to render) appends a tag to the
  final message's content, renders the whole chat and cuts the text at the tag, so the final assistant
  message ends the prompt without its `<|im_end|>`; it refuses (HTTP 400 from vLLM) when the rendered chat
  does not hold the final message verbatim, so a template that rewrites reasoning in assistant turns (as
  some reasoning models' own templates do) can break budget forcing;
- a random 2-layer Llama (hidden size 64; head size 32, the least vLLM's CPU attention takes) whose
  next-token distribution is steered by one reserved hidden dimension: every embedding carries a constant
  there, no layer writes to it, and the LM head reads it as a per-token logit bias. So, whatever the
  context, about 1 token in `--mean-span` is `</think>` and about 1 in `2 * --mean-span` is `<|im_end|>`,
  and `<think>` never comes: the model "reasons" a few dozen tokens, usually closes its reasoning,
  "answers" and stops - short enough that budget forcing has something to extend, random enough that
  several samples differ.

Takes a few seconds; the result is about 1 MB.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

# only the vLLM venv has these; the gateway's type check runs without them
import torch  # type: ignore[import-not-found, unused-ignore]
from tokenizers import (  # type: ignore[import-not-found, unused-ignore]
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import (  # type: ignore[import-not-found, unused-ignore]
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{ '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' }}"
    "{%- else -%}{{ '<|im_start|>assistant\\n<think>\\n' }}{%- endif -%}"
    "{%- endif -%}"
)

EXTRA_TEXT = """
The user asks a question and the assistant thinks before it answers. Wait, let me check that again.
Is 1001 a prime number? 1001 = 7 * 11 * 13, so it is not prime. Hmm, so the answer is no.
Let me think step by step. First, second, third. Wait, that is not right; let me reconsider.
"""


def train_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    corpus = Path(__file__).read_text(encoding="utf-8") + EXTRA_TEXT
    lines = [line for line in corpus.splitlines() if line.strip()] * 4
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.add_tokens([THINK_OPEN, THINK_CLOSE], special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(tokenizer: PreTrainedTokenizerFast, mean_span: float, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    hidden = 64
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,  # vLLM's CPU attention takes head sizes 32, 64, 80, ...: 16 kills the engine
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in [*SPECIAL, THINK_OPEN, THINK_CLOSE]}
    # logit biases that give the wanted rates against `plain` ordinary tokens at logit ~0
    plain = vocab - len(ids)
    close_rate, stop_rate = 1.0 / mean_span, 0.5 / mean_span
    rest = 1.0 - close_rate - stop_rate
    bias = torch.zeros(vocab)
    bias[ids[THINK_CLOSE]] = math.log(close_rate * plain / rest)
    bias[ids["<|im_end|>"]] = math.log(stop_rate * plain / rest)
    for token in ("<|endoftext|>", "<|im_start|>", THINK_OPEN):
        bias[ids[token]] = -30.0
    with torch.no_grad():
        steer = 8.0  # dimension 0 of the residual stream: constant, dominant, written by no layer
        model.model.embed_tokens.weight[:, 0] = steer
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        # after the final RMSNorm dimension 0 is ~sqrt(hidden): the LM head turns it into `bias`
        model.lm_head.weight[:, 0] = bias / math.sqrt(hidden)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,  # no top-k: the ordinary tokens tie, a cut would make </think> far more likely
    )
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary (before added tokens)")
    parser.add_argument("--mean-span", type=float, default=24.0, help="about 1 token in this is </think>")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    tokenizer = train_tokenizer(args.vocab_size)
    model = build_model(tokenizer, args.mean_span, args.seed)
    args.directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.directory)
    model.save_pretrained(args.directory, safe_serialization=True)
    print(f"tiny llama: {len(tokenizer)} tokens, {sum(p.numel() for p in model.parameters())} parameters")
    print(f"written to {args.directory}")


if __name__ == "__main__":
    main()
