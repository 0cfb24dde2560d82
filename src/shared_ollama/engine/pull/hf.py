"""Hugging Face, through ``huggingface_hub``: a repository's files (with the sizes and LFS sha256 the hub
states) and resumable downloads of them.

- The endpoint is the ``hf_endpoint`` setting, else huggingface_hub's default (which honours ``HF_ENDPOINT``, so a
  mirror works either way); the token is ``hf_token``, else huggingface_hub's own lookup (``HF_TOKEN``, its login).
- Files are fetched at the commit the listing was made at, with ``huggingface_hub``'s ``http_get`` (its headers,
  redirects, retries, and resuming from the partial file's size by a range request). Its progress bar is off:
  the partial file reports the bytes as they are written.

Every function here blocks; the pull runs them in worker threads.
"""

from __future__ import annotations

from typing import Any

from shared_ollama.engine.pull.download import DownloadCancelled, PartialFile
from shared_ollama.engine.pull.hf_files import RemoteFile
from shared_ollama.engine.pull.names import HfName
from shared_ollama.errors import BackendError, ModelNotFound, SharedOllamaError
from shared_ollama.settings import Settings

LIBRARY = "shared-ollama"


class _NoBar:
    """A progress bar that shows nothing (``http_get`` takes any callable that makes one)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = 0

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        return None


def _token(settings: Settings) -> str | None:
    return settings.hf_token or None


def _endpoint(settings: Settings) -> str:
    from huggingface_hub import constants

    return settings.hf_endpoint or constants.ENDPOINT


def translate(exc: Exception, name: HfName, settings: Settings) -> SharedOllamaError:
    """A huggingface_hub (or transport) error as one of ours, saying what to do about it."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _endpoint(settings)
    if isinstance(exc, GatedRepoError):
        return BackendError(
            f"'{name.repo_id}' on {where} is gated: accept its terms on the hub with your account, then set "
            "SHARED_OLLAMA_HF_TOKEN (or HF_TOKEN) to a token of that account"
        )
    if isinstance(exc, RepositoryNotFoundError | RevisionNotFoundError):
        return ModelNotFound(
            f"pull model manifest: file does not exist: '{name.repo_id}' is not on {where} (or is private: set "
            "SHARED_OLLAMA_HF_TOKEN)"
        )
    if isinstance(exc, EntryNotFoundError):
        return ModelNotFound(f"a file of '{name.repo_id}' does not exist on {where}: {exc}")
    if isinstance(exc, HfHubHTTPError):
        return BackendError(f"the Hugging Face hub at {where} refused: {exc}")
    return BackendError(f"cannot reach the Hugging Face hub at {where}: {exc.__class__.__name__}: {exc}")


def list_files(settings: Settings, name: HfName) -> tuple[str, list[RemoteFile]]:
    """The commit of the repository's main branch and its files, with the sizes and digests the hub states."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=settings.hf_endpoint, token=_token(settings), library_name=LIBRARY)
    try:
        info = api.model_info(name.repo_id, files_metadata=True)
    except Exception as exc:
        raise translate(exc, name, settings) from exc
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        size = lfs.size if lfs is not None else sibling.size
        if size is None:
            continue
        files.append(RemoteFile(sibling.rfilename, int(size), lfs.sha256 if lfs is not None else None, sibling.blob_id))
    if not info.sha:
        raise BackendError(f"the hub at {_endpoint(settings)} stated no commit for '{name.repo_id}'")
    return info.sha, files


def download(settings: Settings, name: HfName, commit: str, file: RemoteFile, partial: PartialFile) -> None:
    """Fetch ``file`` into ``partial``, resuming from what it holds; DownloadCancelled when its pull is."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(name.repo_id, file.path, revision=commit, endpoint=settings.hf_endpoint)
    headers = build_hf_headers(token=_token(settings), library_name=LIBRARY)
    offset = partial.open()
    try:
        http_get(
            url,
            partial,  # type: ignore[arg-type]  # file-like: write, tell, seek, truncate
            resume_size=offset,
            headers=headers,
            expected_size=file.size,
            displayed_filename=file.path,
            tqdm_class=_NoBar,  # type: ignore[arg-type]
        )
    except (SharedOllamaError, DownloadCancelled):
        raise
    except Exception as exc:
        raise translate(exc, name, settings) from exc
    finally:
        partial.flush()
