"""Install ``tiny-vision:test`` (SmolLM2 + a tiny random-weight projector) into a model store, by hand.

Dev-only: for trying the embedded engine's image path (``images`` in /api/chat and /api/generate) without a
real vision model. The model sees nothing; each image adds its embeddings to the prompt. Remove it with
``ModelStore(...).remove("tiny-vision:test")`` (the shared SmolLM2 blob stays).

    .venv/bin/python scripts/dev/install_tiny_vision.py [--store ~/.shared-ollama/models]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared_ollama.engine.store import ModelStore
from shared_ollama.engine.tiny_vision import TINY_VISION_NAME, install_tiny_vision
from shared_ollama.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="model store root (default: the configured store)")
    parser.add_argument("--text-model", default="smollm2:135m")
    parser.add_argument("--name", default=TINY_VISION_NAME)
    args = parser.parse_args()
    store = ModelStore(args.store or Settings().store_dir)
    entry = install_tiny_vision(store, args.text_model, args.name)
    print(f"installed {entry.name} in {store.root} (projector {entry.projector})")


if __name__ == "__main__":
    main()
