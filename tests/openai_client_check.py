#!/usr/bin/env python3
"""Drives build/serve through the official `openai` Python client (ServeHttp.OpenAiPythonClient runs it).

    python3 tests/openai_client_check.py BASE_URL API_KEY OUT.json

Lists the models, asks one greedy completion and one greedy chat answer (whole and streamed), and provokes a
400; writes what the client returned to OUT.json for the C++ test to compare with direct HTTP answers.
Exit status 3 when the package is missing (the test skips).
"""
import json
import sys

try:
    import openai
except ImportError:
    sys.exit(3)

base_url, api_key, out = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=120)
model = client.models.list().data[0].id
completion = client.completions.create(model=model, prompt="hello world", max_tokens=12, temperature=0)
chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello world"}],
                                      max_tokens=12, temperature=0)
streamed = ""
for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello world"}],
                                            max_tokens=12, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        streamed += chunk.choices[0].delta.content
try:
    client.completions.create(model=model, prompt="hello", max_tokens=-1)
    bad = None
except openai.BadRequestError as e:
    bad = {"status": e.status_code, "param": (e.body or {}).get("param")}
try:
    openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0).models.list()
    unauthorized = None
except openai.AuthenticationError as e:
    unauthorized = e.status_code
with open(out, "w") as f:
    json.dump({"openai_version": openai.__version__, "model": model,
               "completion": completion.choices[0].text, "completion_tokens": completion.usage.completion_tokens,
               "chat": chat.choices[0].message.content, "chat_streamed": streamed,
               "bad_request": bad, "unauthorized": unauthorized}, f)
