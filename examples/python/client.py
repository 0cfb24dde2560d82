"""The Shared Ollama Service through its own Python client, ``shared_ollama_client`` (the service API, ``/api/v1``).

Chat, streamed chat, embeddings and health; refusals that say when to come back (429, 503) are retried by the
client, honouring ``Retry-After``. Run: ``python examples/python/client.py`` (needs ``pip install ./clients/python``).
"""

import os

from shared_ollama_client import Client, SharedOllamaError

URL = os.environ.get("SHARED_OLLAMA_URL", "http://127.0.0.1:8000")
MODEL = os.environ.get("SHARED_OLLAMA_MODEL", "smollm2:135m")
EMBED_MODEL = os.environ.get("SHARED_OLLAMA_EMBED_MODEL", "all-minilm")
PROJECT = os.environ.get("SHARED_OLLAMA_PROJECT", "examples")

options = {"temperature": 0, "num_predict": 16}  # greedy and short

# project names your tenant; with auth on, pass api_key=... too.
with Client(URL, project=PROJECT) as client:
    try:
        answer = client.chat(MODEL, [{"role": "user", "content": "Describe the sea in one sentence."}], options=options)
    except SharedOllamaError as exc:  # one class per error code (TenantBusy, ModelNotFound...), retries done
        raise SystemExit(f"refused: {exc.code}: {exc.message} (request {exc.request_id})") from exc
    print(f"reply: {answer['message']['content']}")
    print(f"tokens: {answer['eval_count']}")

    chunks = 0
    print("stream: ", end="", flush=True)
    sky = [{"role": "user", "content": "Describe the sky in one sentence."}]
    with client.chat(MODEL, sky, options=options, stream=True) as stream:
        for chunk in stream:
            print(chunk["message"]["content"], end="", flush=True)
            chunks += 1
    print(f"\nchunks: {chunks}")

    vectors = client.embeddings(EMBED_MODEL, ["The sky is blue.", "Grass is green."])["embeddings"]
    print(f"embeddings: {len(vectors)} x {len(vectors[0])}")
    print(f"health: {client.health()['status']}")
