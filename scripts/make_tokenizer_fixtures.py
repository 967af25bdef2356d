#!/usr/bin/env python3
"""Expected ids for our tokenizer.json reader and chat templates (tests/test_hf_tokenizer.cpp, test_chat_template.cpp).

    python3 scripts/make_tokenizer_fixtures.py [--assets ../shared/assets/tokenizers] [--out tests/fixtures/tokenizers]

Needs the Hugging Face ``tokenizers`` library (the reference: our ids must be identical to it), ``transformers`` and
``jinja2`` (its ``apply_chat_template`` renders the chat fixtures). Reads the four shipped tokenizer.json files of the
shared assets (never committed to the project) and writes, small enough to commit:

  corpus.json           the varied corpus below (several scripts and languages, code with tabs and runs of spaces,
                        CRLF, emoji with joiners, decomposed accents, long repeats, digits, special-token strings
                        inside text, whitespace oddities, invalid UTF-8 given as bytes)
  <name>.json           per tokenizer, for every corpus entry in order:
                          ids                 text stays text: special-token strings are ordinary text (the project's
                                              default; tokenizers with ``encode_special_tokens = True``)
                          ids_parse_special   only when it differs: tokenizers' default, where a literal special-token
                                              string becomes its id
                          decoded             decode(ids_parse_special or ids, skip_special_tokens=True)
                          decoded_with_special  only when it differs: skip_special_tokens=False
                        plus ``post_prefix`` / ``post_suffix``: what ``add_special_tokens=True`` (the file's
                        post-processor) puts around every entry's ids (checked here for each entry)
  chat_templates.json   conversations rendered by transformers' apply_chat_template (string and ids), per template
  synthetic-*.tokenizer.json + synthetic-*.json   three small tokenizers built here with the library (see
                        synthetic_tokenizers()) and their fixtures: the features the shipped files do not use, and
                        tests that run without the shared assets (the library's BPE training is not
                        deterministic: a rerun retrains them, and their ids are recomputed with them)

Invalid UTF-8: Python strings cannot hold it, so such entries are given as bytes (``bytes_hex``) and their expected
ids are those of the text with every invalid byte replaced by U+FFFD, one per byte — the project's documented rule
(sentencepiece's), applied before tokenizing.

Chat templates, where each comes from:
  chatml    the shipped qwen2.5/tokenizer_config.json's own ``chat_template`` (Qwen2.5-Instruct's), applied by
            transformers to the qwen2.5 tokenizer
  llama3    Meta-Llama-3-8B-Instruct's tokenizer_config.json ``chat_template`` (quoted below from the model card's
            repository: bos_token, then per message '<|start_header_id|>' role '<|end_header_id|>\\n\\n' content|trim
            '<|eot_id|>'; generation prompt '<|start_header_id|>assistant<|end_header_id|>\\n\\n')
  mistral   Mistral-7B-Instruct-v0.1's tokenizer_config.json ``chat_template`` (quoted below: bos_token, '[INST] '
            user ' [/INST]', assistant + eos_token + ' ', strictly alternating user/assistant)
  llama2    LongLoRA's prompt format (the project's Llama-2 template, not Meta's Llama-2-chat one): LongLoRA's
            supervised-fine-tune.py ``[INST]{instruction}[/INST]`` and, with a system prompt, its demo.py /
            with-input form ``[INST] <<SYS>>\\n{system}\\n<</SYS>> \\n\\n {instruction} [/INST]``; written here as a
            Jinja template so transformers renders it the same way as the others.
"""
import argparse
import hashlib
import json
import os
import sys

import tokenizers
from tokenizers import Tokenizer

FAMILIES = ["gpt-neox", "llama3", "qwen2.5", "mistral-7b-v0.1"]

# --- the corpus -------------------------------------------------------------------------------------------------
CORPUS = [
    "Hello world",
    "It's a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of "
    "a wife. DON'T panic; I'LL see, she'd go, they'RE here, we've WON'T it's 'ſ 'S \"quoted\" (parens) [brackets].",
    "def f(x):\n\tif x  >  1:\n\t\treturn x**2   # square   \n    return {'a': [1, 2, 3], \"b\": None}\n\n\n",
    "int main(void) {\n        for (int i = 0; i < 10; ++i) {\n                printf(\"%d\\n\", i);\n        }\n}\n",
    "line one\r\nline two\r\n\r\nline four\r\n\r\r\n",
    "👨‍👩‍👧‍👦 family, 👍🏽 thumbs, 🏳️‍🌈 flag, ❤️ heart, 🇫🇷🇯🇵 flags, 🦙🦙🦙",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m Vie\u0323\u0302t Nam \u1100\u1161\u11a8 "
    "\u0041\u0308\u0301 e\u0301\u0301",
    "a" * 300,
    "ab" * 150 + " " + "ha" * 80,
    "=" * 100 + "\n" + "-" * 64 + "\n" + "\n" * 20 + " " * 50 + "x",
    "3.14159265358979 1234567890 12,345,678 0x1F 1e-10 ٣٤٥ ١٢٣ ⅫⅣ ²³ 42nd 7/8 100% $9.99",
    "我们在这里测试中文分词效果，包括标点符号。",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 문장을 토큰화합니다.",
    "مرحبا بالعالم، هذا اختبار.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "สวัสดีชาวโลก",
    "שלום עולם",
    "tab\tnbsp\u00a0ideographic\u3000nel\u0085ls\u2028ps\u2029end \u200b zero width\u200bjoin \t\t  \n  \t "
    "mvs\u180e \u180e x\u000b\u000cy \u1680 \u205f\u202f",
    "   leading",
    "trailing   ",
    " single",
    "  two  spaces  between  ",
    "<|endoftext|>",
    "a<|endoftext|>b <|endoftext|> c",
    "<s>Hi</s> <unk>",
    "<|im_start|>user\nhi<|im_end|>\n",
    "<|begin_of_text|>x<|eot_id|> <|start_header_id|>",
    "[INST] q [/INST]",
    "▁▁x ▁y ▁",
    "<0x41><0xFF> <0x0A>",
    "\x00\x01\x07\x1b[31mred\x1b[0m\x7f",
    "\ue000\U000f0000 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
    "",
    " ",
    "\n",
    "Supercalifragilisticexpialidocious" * 3 + " https://example.com/path?query=1&x=y#frag",
    '{"key": "va\\"lue", "n": [1, 2.5e3, null], "nested": {"k": true}}',
    "| a | b |\n|---|---|\n| $x^2$ | ∑ᵢ xᵢ |",
    "Hello世界123abcДом",
    "don’t can’t I’m",
    "a\n\n\nb a \n b x  \n\n  y \n",
    "a [MASK] b  [MASK]\tc[MASK]d <|special|>x hello world sayhello hello, ＡＢ AB ``quoted`` 12-34-56 a,b;;c",
    {"bytes_hex": bytes(b"ok \xff\xfe bad \xc3( \xe2\x82 end \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\x80 fin").hex()},
    {"bytes_hex": bytes("abc\u00e9".encode() + b"\xc3").hex()},
]


def per_byte_replace(data):
    """Each invalid byte becomes U+FFFD (sentencepiece's rule, the project's): decode with a handler that skips 1 byte."""
    return data.decode("utf-8", errors="ll_per_byte")


def _per_byte_handler(err):
    return ("\ufffd", err.start + 1)


import codecs  # noqa: E402

codecs.register_error("ll_per_byte", _per_byte_handler)


def corpus_texts():
    out = []
    for entry in CORPUS:
        if isinstance(entry, dict):
            out.append(per_byte_replace(bytes.fromhex(entry["bytes_hex"])))
        else:
            out.append(entry)
    return out


def corpus_json():
    cases = []
    for entry in CORPUS:
        cases.append(dict(entry) if isinstance(entry, dict) else {"text": entry})
    return {"about": "scripts/make_tokenizer_fixtures.py: the corpus every tokenizer fixture is made from",
            "cases": cases}


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def tokenizer_fixture(path):
    text_tok = Tokenizer.from_file(path)
    text_tok.encode_special_tokens = True  # specials are text
    parse_tok = Tokenizer.from_file(path)  # tokenizers' default
    cases = []
    prefix = suffix = None
    for text in corpus_texts():
        ids = text_tok.encode(text, add_special_tokens=False).ids
        parsed = parse_tok.encode(text, add_special_tokens=False).ids
        with_special = parse_tok.encode(text, add_special_tokens=True).ids
        # The post-processor's additions, the same around every entry (the first entry is not empty).
        if prefix is None:
            n = len(parsed)
            start = next(i for i in range(len(with_special) - n + 1) if with_special[i:i + n] == parsed)
            prefix, suffix = with_special[:start], with_special[start + n:]
        assert with_special == prefix + parsed + suffix, (text, with_special)
        case = {"ids": ids}
        if parsed != ids:
            case["ids_parse_special"] = parsed
        case["decoded"] = parse_tok.decode(parsed, skip_special_tokens=True)
        with_sp = parse_tok.decode(parsed, skip_special_tokens=False)
        if with_sp != case["decoded"]:
            case["decoded_with_special"] = with_sp
        # The text-mode ids decode as tokenizers decodes them too (no special id among them unless parsed).
        if parsed != ids:
            case["decoded_text_mode"] = parse_tok.decode(ids, skip_special_tokens=True)
        cases.append(case)
    return {"tokenizers_version": tokenizers.__version__, "tokenizer_sha256": sha256(path),
            "vocab_size_with_added": parse_tok.get_vocab_size(with_added_tokens=True),
            "post_prefix": prefix, "post_suffix": suffix, "cases": cases}


# --- synthetic tokenizers: small files made here with the tokenizers library, committed with their ids ---------
# They exercise what the four shipped files do not: added tokens with lstrip / rstrip / single_word / normalized,
# merges in the pair form, Split behaviours other than Isolated and invert, Metaspace with split and "always",
# NFKC / NFD, Replace and Prepend normalizers, unk with fuse_unk, continuing_subword_prefix, byte fallback without a
# pre-tokenizer (Llama-2's tokenizer.json layout), TemplateProcessing around the text, Strip / Fuse decoders.
def training_text():
    texts = [t for t in corpus_texts() if t]
    english = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
               "foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 20
    return texts * 3 + [english]


def synthetic_tokenizers():
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

    out = {}
    # 1. byte-level BPE with NFKC, added tokens with every flag, a [CLS] ... [SEP] template.
    t = Tokenizer(models.BPE())
    t.normalizer = normalizers.NFKC()
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    t.decoder = decoders.ByteLevel()
    t.train_from_iterator(training_text(), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["[CLS]", "[SEP]"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.add_special_tokens([AddedToken("<|special|>", normalized=False)])
    t.add_tokens([AddedToken("[MASK]", lstrip=True, rstrip=True, normalized=False),
                  AddedToken("hello", single_word=True, normalized=True),
                  AddedToken("ＡＢ", normalized=True)])
    t.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", t.token_to_id("[CLS]")), ("[SEP]", t.token_to_id("[SEP]"))])
    out["synthetic-bytelevel"] = t

    # 2. Metaspace (always, split) after Split pre-tokenizers of every behaviour; NFD + Replace; unk fused;
    #    continuing_subword_prefix.
    t = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, continuing_subword_prefix="##"))
    t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Replace("``", '"'),
                                         normalizers.Replace(Regex(" {2,}"), " ")])
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\d+"), behavior="merged_with_next"),
        pre_tokenizers.Split("-", behavior="removed"),
        pre_tokenizers.Split(Regex("[,;]+"), behavior="contiguous", invert=True),
        pre_tokenizers.Split(Regex(r"\."), behavior="merged_with_previous"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)])
    t.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.Metaspace(prepend_scheme="always")])
    t.train_from_iterator(training_text(), trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<unk>"], limit_alphabet=70, continuing_subword_prefix="##"))
    out["synthetic-metaspace"] = t

    # 3. Llama-2's tokenizer.json layout: Prepend + Replace normalizer, no pre-tokenizer, byte fallback, BOS template.
    base = Tokenizer(models.BPE())
    base.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    base.train_from_iterator(training_text(), trainers.BpeTrainer(vocab_size=420, limit_alphabet=80))
    model = json.loads(base.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for tok, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    t = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    t.normalizer = base.normalizer
    t.add_special_tokens([AddedToken(x, normalized=False) for x in ("<unk>", "<s>", "</s>")])
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    out["synthetic-llama2"] = t
    return out


# --- chat templates ---------------------------------------------------------------------------------------------
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")
LONGLORA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set loop_messages = messages[1:] %}{% else %}{% set system = none %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{% if loop.first and system is not none %}{{ '[INST] <<SYS>>\n' + system + '\n<</SYS>> \n\n ' + "
    "message['content'] + ' [/INST]' }}{% else %}{{ '[INST]' + message['content'] + '[/INST]' }}{% endif %}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")

CONVERSATIONS = [
    {"messages": [{"role": "user", "content": "Hello"}], "add_generation_prompt": True},
    {"messages": [{"role": "system", "content": "You are a helpful assistant"},
                  {"role": "user", "content": "Hello"},
                  {"role": "assistant", "content": "Hi there"},
                  {"role": "user", "content": "Who are you"}], "add_generation_prompt": True},
    {"messages": [{"role": "user", "content": "  Summarise:\n\tthe text  "},
                  {"role": "assistant", "content": "   I am an assistant   "}], "add_generation_prompt": False},
    {"messages": [{"role": "user", "content": "Qu'est-ce que c'est ? 日本語 🦙"},
                  {"role": "assistant", "content": "Une réponse."},
                  {"role": "user", "content": "Merci\n"}], "add_generation_prompt": True},
]


def chat_fixture(assets):
    from transformers import PreTrainedTokenizerFast

    def fast(name, **kw):
        return PreTrainedTokenizerFast(tokenizer_file=os.path.join(assets, name, "tokenizer.json"), **kw)

    with open(os.path.join(assets, "qwen2.5", "tokenizer_config.json")) as f:
        qwen_config = json.load(f)
    setups = {
        "chatml": (fast("qwen2.5", eos_token="<|im_end|>", pad_token="<|endoftext|>"), qwen_config["chat_template"],
                   "qwen2.5"),
        "llama3": (fast("llama3", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>"), LLAMA3_TEMPLATE, "llama3"),
        "mistral": (fast("mistral-7b-v0.1", bos_token="<s>", eos_token="</s>", unk_token="<unk>"), MISTRAL_TEMPLATE,
                    "mistral-7b-v0.1"),
        "llama2": (fast("mistral-7b-v0.1", bos_token="<s>", eos_token="</s>", unk_token="<unk>"), LONGLORA_TEMPLATE,
                   "mistral-7b-v0.1"),
    }
    out = {}
    for name, (tok, template, tokenizer_dir) in setups.items():
        cases = []
        for conv in CONVERSATIONS:
            messages = conv["messages"]
            if name == "mistral" and messages[0]["role"] == "system":
                messages = messages[1:]  # the template refuses a system message (tested as an error on our side)
            text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=conv["add_generation_prompt"])
            ids = tok.apply_chat_template(messages, chat_template=template, tokenize=True,
                                          add_generation_prompt=conv["add_generation_prompt"])
            if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
                ids = ids["input_ids"]
            cases.append({"messages": messages, "add_generation_prompt": conv["add_generation_prompt"],
                          "text": text, "ids": list(ids)})
        out[name] = {"tokenizer": tokenizer_dir, "cases": cases}
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    assets = os.environ.get("LONGLORA_ASSETS") or os.path.join(here, "..", "..", "shared", "assets")
    ap.add_argument("--assets", default=os.path.join(assets, "tokenizers"),
                    help="the folder of the four tokenizers ($LONGLORA_ASSETS/tokenizers, else ../shared/assets/tokenizers)")
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "tokenizers"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def write(name, obj):
        path = os.path.join(args.out, name)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
            f.write("\n")
        os.replace(path + ".tmp", path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")

    write("corpus.json", corpus_json())
    for family in FAMILIES:
        path = os.path.join(args.assets, family, "tokenizer.json")
        if not os.path.exists(path):
            sys.exit(f"{path} not found (pass --assets)")
        write(family + ".json", tokenizer_fixture(path))
    for name, tok in synthetic_tokenizers().items():
        path = os.path.join(args.out, name + ".tokenizer.json")
        tok.save(path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")
        write(name + ".json", tokenizer_fixture(path))
    write("chat_templates.json", chat_fixture(args.assets))


if __name__ == "__main__":
    main()
