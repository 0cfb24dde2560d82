"""The Shared Ollama Service through the official ``ollama`` Python SDK: the Ollama drop-in API (``/api/*``).

Chat, streamed chat and embeddings. Run: ``python examples/python/ollama_sdk.py`` (needs ``pip install ollama``).
"""

import os

import ollama

URL = os.environ.get("SHARED_OLLAMA_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("SHARED_OLLAMA_MODEL", "smollm2:135m")
EMBED_MODEL = os.environ.get("SHARED_OLLAMA_EMBED_MODEL", "all-minilm")
PROJECT = os.environ.get("SHARED_OLLAMA_PROJECT", "examples")

# The project header names your tenant (its own in-flight cap and usage); with auth on, send your key instead:
# headers={"Authorization": f"Bearer {key}"}.
client = ollama.Client(host=URL, headers={"X-Shared-Ollama-Project": PROJECT}, timeout=120)
options = {"temperature": 0, "num_predict": 16}  # greedy and short

sea = [{"role": "user", "content": "Describe the sea in one sentence."}]
answer = client.chat(model=MODEL, messages=sea, options=options)
print(f"reply: {answer.message.content}")
print(f"tokens: {answer.eval_count}")

chunks = 0
print("stream: ", end="", flush=True)
sky = [{"role": "user", "content": "Describe the sky in one sentence."}]
for chunk in client.chat(model=MODEL, messages=sky, options=options, stream=True):
    print(chunk.message.content, end="", flush=True)
    chunks += 1
print(f"\nchunks: {chunks}")

vectors = client.embed(model=EMBED_MODEL, input=["The sky is blue.", "Grass is green."]).embeddings
print(f"embeddings: {len(vectors)} x {len(vectors[0])}")
