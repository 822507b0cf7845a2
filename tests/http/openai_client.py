"""Drives `halo serve --http-listen` with the official OpenAI Python client.

Run by tests/serve_http_openai.rs (which starts the server on a copy of tiny-qwen2 with a ChatML
chat template, and a bearer token):

    python openai_client.py BASE_URL TOKEN GOLDEN_JSON

Completions and chat, unary and streamed, must give the golden continuation text (completions)
and the same text unary and streamed (chat), with usage counts; logprobs come back in the
client's types; bad requests, a wrong key and an unknown model raise the client's own errors.
Any failed check raises, so the exit status is non-zero.
"""

import json
import sys

import openai

base_url, token, golden_path = sys.argv[1:4]
golden = json.load(open(golden_path))
client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=60)

models = client.models.list().data
assert len(models) == 1, models
model = models[0].id
checks = 0

for case in golden["cases"]:
    want = case["continuation_text"]
    n = len(case["greedy_ids"])
    common = dict(model=model, prompt=case["prompt"], max_tokens=n, temperature=0,
                  extra_body={"ignore_eos": True})
    unary = client.completions.create(**common)
    assert unary.choices[0].text == want, (unary.choices[0].text, want)
    assert unary.choices[0].finish_reason == "length"
    assert unary.usage.completion_tokens == n
    assert unary.usage.prompt_tokens == len(case["prompt_ids"])
    assert unary.usage.total_tokens == n + len(case["prompt_ids"])

    text, usage, finish = "", None, None
    for chunk in client.completions.create(stream=True, stream_options={"include_usage": True},
                                           **common):
        if chunk.choices:
            text += chunk.choices[0].text
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == want, (text, want)
    assert finish == "length"
    assert usage is not None and usage.completion_tokens == n
    checks += 2

    messages = [{"role": "system", "content": "Be terse."},
                {"role": "user", "content": case["prompt"]}]
    chat = dict(model=model, messages=messages, max_completion_tokens=10, temperature=0,
                extra_body={"ignore_eos": True})
    unary = client.chat.completions.create(**chat)
    content = unary.choices[0].message.content
    assert unary.choices[0].message.role == "assistant"
    assert unary.choices[0].finish_reason == "length"
    assert unary.usage.completion_tokens == 10

    text, usage, roles = "", None, []
    for chunk in client.chat.completions.create(stream=True,
                                                stream_options={"include_usage": True}, **chat):
        if chunk.choices:
            delta = chunk.choices[0].delta
            roles += [delta.role] if delta.role else []
            text += delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert roles == ["assistant"], roles
    assert text == content, (text, content)
    assert usage.completion_tokens == 10 and usage.prompt_tokens == unary.usage.prompt_tokens
    checks += 2

# Logprobs in the client's types.
r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=4, temperature=0, logprobs=True, top_logprobs=2,
                                   extra_body={"ignore_eos": True})
lp = r.choices[0].logprobs.content
assert len(lp) == 4
for entry in lp:
    assert len(entry.top_logprobs) == 2
    assert entry.logprob == max(t.logprob for t in entry.top_logprobs)
r = client.completions.create(model=model, prompt="hi", max_tokens=3, temperature=0, logprobs=2,
                              extra_body={"ignore_eos": True})
assert len(r.choices[0].logprobs.token_logprobs) == 3
assert len(r.choices[0].logprobs.tokens) == 3
checks += 2

# Errors surface as the client's exceptions, with OpenAI's error body.
try:
    client.completions.create(model=model, prompt="hi", max_tokens=3, temperature=-1)
    raise AssertionError("temperature -1 accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400
    assert e.body["param"] == "temperature", e.body
try:
    client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}], n=2)
    raise AssertionError("n = 2 accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "n", e.body
try:
    client.completions.create(model="another-model", prompt="hi", max_tokens=3)
    raise AssertionError("an unknown model accepted")
except openai.NotFoundError as e:
    assert e.body["code"] == "model_not_found", e.body
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    raise AssertionError("a wrong key accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
checks += 4

print(f"openai {openai.__version__}: {checks} checks passed against {model}")
