"""Reference renderings of chat templates by transformers' `apply_chat_template`.

The templates are typed in here, modeled on the ones the main families publish (Llama 3, Llama 2
with a system message, Mistral instruct, Qwen2 / ChatML, Gemma, which rejects a system message),
and rendered with the tiny-llama2-spm fixture's tokenizer (bos `<s>`, eos `</s>`). For each case
the output records the rendered prompt and its ids (`add_special_tokens=False`, as transformers
tokenizes a chat), or the error a template raised.

Usage: python chat_templates.py FIXTURE_MODEL_DIR OUT_JSON
"""
import json
import sys

from transformers import AutoTokenizer

TEMPLATES = {
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}"
        "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
        "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
        "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    # multi-line, so trim_blocks / lstrip_blocks matter; .strip() is a Python method
    "llama2-system": """{% if messages[0]['role'] == 'system' %}
    {% set loop_messages = messages[1:] %}
    {% set system_message = messages[0]['content'] %}
{% else %}
    {% set loop_messages = messages %}
    {% set system_message = false %}
{% endif %}
{% for message in loop_messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
    {% endif %}
    {% if loop.index0 == 0 and system_message != false %}
        {% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}
    {% else %}
        {% set content = message['content'] %}
    {% endif %}
    {% if message['role'] == 'user' %}
        {{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}
    {% elif message['role'] == 'assistant' %}
        {{ ' '  + content.strip() + ' ' + eos_token }}
    {% endif %}
{% endfor %}
""",
    "mistral": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
        "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    ),
    "qwen2-chatml": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
    ),
    # whitespace control, namespace(), dot access, loop.last, |length, .upper(), .startswith()
    "chatml-namespace": """{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
    {%- if message.role == 'system' -%}{%- set ns.system = message.content -%}{%- endif -%}
{%- endfor -%}
{%- if ns.system -%}<|system|>{{ ns.system.upper() }}{{ eos_token }}
{% endif -%}
{%- for message in messages if message.role != 'system' -%}
<|{{ message.role }}|>{{ message.content }}{% if message.content.startswith('Hi') %} [greeting]{% endif %}{{ eos_token }}
{% if loop.last and add_generation_prompt %}<|assistant|>{% endif %}
{%- endfor -%}
({{ messages | length }} messages)""",
    # tojson as transformers defines it (ensure_ascii=False, Python separators, indent)
    "tojson": "{{ messages | tojson }}\n{{ messages[-1] | tojson(indent=2) }}\n{{ {'a': [1, 2.5, none, true], 'b': '<&>\\'\"'} | tojson }}",
}

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello, halo"}],
    "system-user": [{"role": "system", "content": "You are terse."},
                    {"role": "user", "content": "Hi there"}],
    "multi-turn": [{"role": "system", "content": "You are terse."},
                   {"role": "user", "content": " What is 2+2? "},
                   {"role": "assistant", "content": " 4 "},
                   {"role": "user", "content": "我很感谢 👍 and naïve café"}],
    "no-system-turns": [{"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"},
                        {"role": "user", "content": "Bye\n"}],
    "not-alternating": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
}


def main(model_dir, out):
    tok = AutoTokenizer.from_pretrained(model_dir)
    result = {"bos_token": tok.bos_token, "eos_token": tok.eos_token, "templates": []}
    for name, template in TEMPLATES.items():
        entry = {"name": name, "template": template, "cases": []}
        for conv, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = {"conversation": conv, "messages": messages, "add_generation_prompt": gen}
                try:
                    text = tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                   add_generation_prompt=gen)
                    case["rendered"] = text
                    case["ids"] = tok(text, add_special_tokens=False)["input_ids"]
                except Exception as e:  # the template raised (raise_exception) or failed
                    case["error"] = str(e)
                entry["cases"].append(case)
        result["templates"].append(entry)
    with open(out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for t in result["templates"]:
        print(t["name"], sum("rendered" in c for c in t["cases"]), "rendered,",
              sum("error" in c for c in t["cases"]), "errors")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
