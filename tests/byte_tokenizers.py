"""Byte-level BPE tokenizers for tests, laid out like real checkpoints' (special tokens before or
after the 256 byte symbols, no merges), and a ChatML chat template written for the tests
(Qwen2.5-VL-Instruct's has this layout: a default system turn, `<|im_start|>role\\n ...
<|im_end|>\\n` turns, a video item as the vision block)."""
from __future__ import annotations


def chatml(start="<|im_start|>", end="<|im_end|>",
           video="<|vision_start|><|video_pad|><|vision_end|>") -> str:
    """A ChatML template with these turn markers and video placeholder."""
    return (
        "{% for m in messages %}{% if loop.first and m.role != 'system' %}" + start +
        "system\nAnswer briefly." + end + "\n{% endif %}" + start + "{{ m.role }}\n"
        "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
        "{% if c.type == 'video' %}" + video + "{% elif c.type == 'text' %}{{ c.text }}"
        "{% endif %}{% endfor %}{% endif %}" + end + "\n{% endfor %}"
        "{% if add_generation_prompt %}" + start + "assistant\n{% endif %}")


CHATML = chatml()
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                   "<|vision_end|>", "<|video_pad|>")


def byte_tokenizer(first=(), last=(), ends=None, chat_template=None, directory=None,
                   **special):
    """`first` + the 256 byte symbols + `last` (all of them special tokens); `ends` (bos,
    eos or None) written around every text as CLIP's (both) or Llama's (bos only) tokenizer
    does; saved in `directory` when given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*first, *sorted(pre_tokenizers.ByteLevel.alphabet()),
                                         *last])}
    tok = Tokenizer(models.BPE(vocab, [], unk_token=special.get("unk_token")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([*first, *last])
    if ends:
        bos, eos = ends
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A" + (f" {eos}" if eos else ""),
            special_tokens=[(t, vocab[t]) for t in (bos, eos) if t])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **special)
    fast.chat_template = chat_template
    if directory is not None:
        fast.save_pretrained(str(directory))
    return fast


def chatml_tokenizer(template=CHATML, eos="<|im_end|>", directory=None):
    """A Qwen-like tokenizer (no bos; eos `<|im_end|>`) with a chat template."""
    return byte_tokenizer(CHATML_SPECIALS, chat_template=template, directory=directory,
                          eos_token=eos, pad_token="<|endoftext|>")
