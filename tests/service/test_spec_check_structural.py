"""The spec check where torch is not installed (the slim service image): structure only."""

from __future__ import annotations

from morphtune.service._spec_check import _structural_check


def test_a_mapping_with_a_valid_name_passes() -> None:
    assert _structural_check("name: digits-sweep\ndataset: {name: digits}\n") == {
        "ok": True,
        "name": "digits-sweep",
    }


def test_a_bad_name_is_rejected_naming_the_field_and_value() -> None:
    answer = _structural_check("name: ../escape\n")
    assert answer["ok"] is False
    assert "name" in str(answer["error"]) and "../escape" in str(answer["error"])


def test_not_a_mapping_and_not_yaml_are_rejected() -> None:
    assert _structural_check("- a\n- b\n")["ok"] is False
    answer = _structural_check("name: [unclosed\n")
    assert answer["ok"] is False and "not valid YAML" in str(answer["error"])
