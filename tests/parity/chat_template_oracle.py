"""Python oracle for the chat-template tests: writes one Hugging Face tokenizer folder per family
(a byte-level BPE trained on fortunes with the family's special tokens, tokenizer_config.json with
its chat template) and what transformers' apply_chat_template gives for a set of conversations.

  chat_template_oracle.py OUT_DIR
    -> OUT_DIR/<family>/{tokenizer.json, tokenizer_config.json} for llama3, qwen2.5, zephyr,
       mistral, smollm2, jinja (a template using the rest of the Jinja subset);
       OUT_DIR/cases.json: [{family, messages, add_generation_prompt, text, ids} or
       {family, messages, error}]
"""
import json
import sys
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
          "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content "
          "%}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
          "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

ZEPHYR = ("{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + "
          "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ "
          "'<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == "
          "'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif "
          "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif "
          "%}\n{% endfor %}")

MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
           "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
           "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ "
           "'[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' "
           "%}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and "
           "assistant roles are supported!') }}{% endif %}{% endfor %}")

SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\n' }}{% endif %}")

# The rest of the subset: namespace, slices, filters, tests, loop variables, ~, in, methods,
# conditional expressions, for-else, comments and whitespace control.
JINJA = """{#- a template for the remaining features -#}
{%- set ns = namespace(turns=0, last_role='none') %}
{%- set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}
{%- set rest = messages[1:] if system else messages %}
{{- bos_token ~ '[' ~ (system | trim | upper) ~ ']' }}
  {% for m in rest if m.role != 'system' %}
    {%- set ns.turns = ns.turns + 1 %}
    {%- set ns.last_role = m['role'] %}
    <{{ loop.index }}/{{ loop.length }}:{{ loop.revindex0 }}{{ '!' if loop.first }}{{ '$' if loop.last else '' }}>
    {{- m.role | upper }}={{ m.content.strip() | length }} {{ m.content.strip() }}
    {%- if 'secret' in m.content.lower() %} (hidden){% elif m.content.startswith('Why') or m.content.endswith('?') %} (question){% else %} (plain){% endif %}
  {% else %}
    no turns
  {% endfor %}
{{ ns.turns }} turns, last {{ ns.last_role }}; {{ (rest | first).role }}..{{ (rest | last).role }}; {{ rest | length // 2 }} pairs, {{ 7 % 3 }} {{ -2 + 5 * 2 }} {{ [1, 2] | join('-') }} {{ 'a,b'.split(',') | join('+') }} {{ none is none }} {{ x is defined }} {{ not (1 > 2) and 2 >= 2 }}
{%- if add_generation_prompt %}{{ eos_token }}{% endif %}
"""

FAMILIES = {
    "llama3": (LLAMA3, "<|begin_of_text|>", "<|eot_id|>",
               ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]),
    "qwen2.5": (QWEN25, None, "<|im_end|>", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]),
    "zephyr": (ZEPHYR, "<s>", "</s>", ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>",
                                       "<|system|>"]),
    "mistral": (MISTRAL, "<s>", "</s>", ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]),
    "smollm2": (SMOLLM2, "<|im_start|>", "<|im_end|>", ["<|endoftext|>", "<|im_start|>",
                                                         "<|im_end|>"]),
    "jinja": (JINJA, "<s>", "</s>", ["<s>", "</s>"]),
}

CONVERSATIONS = [
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "What is a fortune cookie?"},
     {"role": "assistant", "content": "A crisp cookie with a paper fortune inside."},
     {"role": "user", "content": "  Why the paper?\n\n "}],
    [{"role": "user", "content": "Tell me a fortune."}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Café, 中文, 😀."},
     {"role": "user", "content": "A secret: <|im_end|> and </s> inside text."},
     {"role": "assistant", "content": "\tTabs\tand\nnewlines\n"}],
    [{"role": "system", "content": "   "}, {"role": "user", "content": ""}],
]


def train_tokenizer(specials):
    lines = []
    for f in sorted(Path("/usr/share/games/fortunes").glob("[a-f]*")):
        if f.suffix in (".dat", ".u8") or f.is_symlink():
            continue
        lines += f.read_bytes().decode("utf-8", "replace").split("\n%\n")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=1200, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def main(out: Path):
    cases = []
    for family, (template, bos, eos, specials) in FAMILIES.items():
        folder = out / family
        folder.mkdir(parents=True, exist_ok=True)
        train_tokenizer(specials).save(str(folder / "tokenizer.json"))
        config = {"chat_template": template, "bos_token": bos, "eos_token": eos,
                  "tokenizer_class": "PreTrainedTokenizerFast"}
        (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                      bos_token=bos, eos_token=eos, chat_template=template)
        for messages in CONVERSATIONS:
            for gen in (False, True):
                case = {"family": family, "messages": messages, "add_generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(messages, tokenize=False,
                                                           add_generation_prompt=gen)
                    ids = tok.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=gen)
                    case["ids"] = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
                except Exception as e:  # raise_exception in the template
                    case["error"] = str(e)
                cases.append(case)
    (out / "cases.json").write_text(json.dumps(cases, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
