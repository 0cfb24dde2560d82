"""The Shared Ollama Service through the official ``openai`` Python SDK: the OpenAI drop-in API (``/v1/*``).

Chat completion, streamed chat completion and embeddings. Run: ``python examples/python/openai_sdk.py`` (needs
``pip install openai``).
"""

import os

from openai import OpenAI

URL = os.environ.get("SHARED_OLLAMA_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("SHARED_OLLAMA_MODEL", "smollm2:135m")
EMBED_MODEL = os.environ.get("SHARED_OLLAMA_EMBED_MODEL", "all-minilm")
PROJECT = os.environ.get("SHARED_OLLAMA_PROJECT", "examples")

# The project header names your tenant while auth is off; the SDK still wants a key then (any string does).
# With auth on, pass your key as api_key.
client = OpenAI(
    base_url=f"{URL}/v1",
    api_key="unused",
    default_headers={"X-Shared-Ollama-Project": PROJECT},
    timeout=120,
)
# temperature 0: greedy; max_tokens: a short answer.
sea = [{"role": "user", "content": "Describe the sea in one sentence."}]
answer = client.chat.completions.create(model=MODEL, messages=sea, temperature=0, max_tokens=16)
print(f"reply: {answer.choices[0].message.content}")
print(f"tokens: {answer.usage.completion_tokens if answer.usage else None}")

chunks = 0
print("stream: ", end="", flush=True)
sky = [{"role": "user", "content": "Describe the sky in one sentence."}]
stream = client.chat.completions.create(model=MODEL, messages=sky, temperature=0, max_tokens=16, stream=True)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
        chunks += 1
print(f"\nchunks: {chunks}")

vectors = client.embeddings.create(model=EMBED_MODEL, input=["The sky is blue.", "Grass is green."]).data
print(f"embeddings: {len(vectors)} x {len(vectors[0].embedding)}")
