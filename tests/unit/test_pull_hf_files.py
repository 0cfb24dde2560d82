"""Which files of a Hugging Face repository a pull takes: quantisation by name, the closest one, splits, projectors."""

from __future__ import annotations

import pytest

from shared_ollama.engine.pull.hf_files import FileChoiceError, RemoteFile, choose, closest, quant_of


def files(*paths: str) -> list[RemoteFile]:
    return [RemoteFile(path, 100, "ab" * 32) for path in paths]


@pytest.mark.parametrize(
    ("path", "quant"),
    [
        ("SmolLM2-135M-Instruct-Q4_K_M.gguf", "Q4_K_M"),
        ("qwen2.5-0.5b-instruct-q4_k_m.gguf", "Q4_K_M"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"),
        ("Model-IQ4_XS.gguf", "IQ4_XS"),
        ("model-f16.gguf", "F16"),
        ("Model-BF16.gguf", "BF16"),
        ("Model-UD-Q4_K_XL.gguf", "Q4_K_XL"),
        ("Q8_0/Big-Model-Q8_0-00001-of-00003.gguf", "Q8_0"),
        ("model.gguf", ""),
    ],
)
def test_the_quantisation_is_read_from_the_file_name(path: str, quant: str) -> None:
    assert quant_of(path) == quant


def test_no_tag_takes_q4_k_m_when_there_is_one() -> None:
    choice = choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q2_K.gguf", "README.md"), None, "o/r")
    assert (choice.quant, [p.path for p in choice.parts]) == ("Q4_K_M", ["m-Q4_K_M.gguf"])
    assert "the default" in choice.note


@pytest.mark.parametrize(
    ("available", "chosen"),
    [
        (("m-Q8_0.gguf", "m-Q4_1.gguf"), "Q4_1"),  # 5.0 bits per weight: 0.15 from Q4_K_M's 4.85; Q8_0 is 3.65
        (("m-Q5_K_M.gguf", "m-Q3_K_M.gguf"), "Q5_K_M"),  # 0.84 away, against 0.94
        (("m-Q4_K_S.gguf", "m-Q5_0.gguf"), "Q4_K_S"),  # 0.27 away, against 0.65
        (("m-IQ4_XS.gguf", "m-Q5_K_M.gguf"), "IQ4_XS"),  # 0.60 away, against 0.84: nearer wins, smaller or not
        (("m-F16.gguf", "m-BF16.gguf", "m-Q8_0.gguf"), "Q8_0"),
        (("model.gguf",), ""),  # one file naming no quantisation
    ],
)
def test_without_q4_k_m_the_closest_is_chosen_and_said(available: tuple[str, ...], chosen: str) -> None:
    choice = choose(files(*available), None, "o/r")
    assert choice.quant == chosen
    assert "the closest to Q4_K_M" in choice.note and f"using {choice.parts[0].path}" in choice.note


def test_equally_close_quantisations_go_to_the_larger() -> None:
    assert closest(["Q4_0", "Q5_0"], "Q4_1") == "Q5_0"  # 4.5 and 5.5 bits, both 0.5 from 5.0
    assert closest(["Q5_0", "Q4_0"], "Q4_1") == "Q5_0"


def test_a_tag_names_the_quantisation_case_insensitively() -> None:
    choice = choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "q8_0", "o/r")
    assert (choice.quant, choice.parts[0].path) == ("Q8_0", "m-Q8_0.gguf")


def test_a_missing_tag_is_a_404_listing_what_there_is() -> None:
    with pytest.raises(FileChoiceError, match=r"'Q3_K_S' not found in 'o/r' \(it has: Q4_K_M, Q8_0\)") as caught:
        choose(files("m-Q8_0.gguf", "m-Q4_K_M.gguf"), "Q3_K_S", "o/r")
    assert caught.value.status == 404


def test_a_repository_without_a_model_gguf_is_a_404() -> None:
    with pytest.raises(FileChoiceError) as caught:
        choose(files("README.md", "mmproj-model-f16.gguf", "model.safetensors"), None, "o/r")
    assert caught.value.status == 404


def test_a_split_gguf_is_all_its_parts_in_order_and_only_when_complete() -> None:
    listed = files(
        "Q4_K_M/M-Q4_K_M-00002-of-00003.gguf",
        "Q4_K_M/M-Q4_K_M-00001-of-00003.gguf",
        "Q4_K_M/M-Q4_K_M-00003-of-00003.gguf",
        "M-Q8_0-00001-of-00002.gguf",  # its second part is missing
    )
    choice = choose(listed, None, "o/r")
    assert [p.path.rsplit("/", 1)[1] for p in choice.parts] == [
        "M-Q4_K_M-00001-of-00003.gguf",
        "M-Q4_K_M-00002-of-00003.gguf",
        "M-Q4_K_M-00003-of-00003.gguf",
    ]
    assert "a split GGUF in 3 parts" in choice.note
    with pytest.raises(FileChoiceError, match="'Q8_0' not found"):
        choose(listed, "Q8_0", "o/r")


def test_a_projector_is_never_the_model_and_f16_is_preferred() -> None:
    choice = choose(files("m-Q4_K_M.gguf", "mmproj-m-f32.gguf", "mmproj-m-f16.gguf"), None, "o/r")
    assert choice.parts[0].path == "m-Q4_K_M.gguf"
    assert choice.projector is not None and choice.projector.path == "mmproj-m-f16.gguf"
    assert "projector mmproj-m-f16.gguf" in choice.note
    assert choose(files("m-Q4_K_M.gguf"), None, "o/r").projector is None
