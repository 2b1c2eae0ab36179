"""The lab kernel's config fragment and its verification after olddefconfig."""

from __future__ import annotations

from qmpgmem.lab import kconfig


def test_fragment_asks_for_sw_protected_vms_and_its_dependency() -> None:
    text = kconfig.fragment_text()
    assert "CONFIG_KVM_SW_PROTECTED_VM=y" in text.splitlines()
    assert "CONFIG_EXPERT=y" in text.splitlines()  # KVM_SW_PROTECTED_VM depends on it
    assert "# CONFIG_KVM_INTEL is not set" in text.splitlines()


def test_required_and_disabled_do_not_overlap() -> None:
    assert not set(kconfig.REQUIRED) & set(kconfig.DISABLED)


def test_parse_config_reads_values_and_not_set_lines() -> None:
    values = kconfig.parse_config(
        'CONFIG_KVM=y\n# CONFIG_DRM is not set\nCONFIG_LOCALVERSION="-x"\n'
    )
    assert values == {"KVM": "y", "DRM": "n", "LOCALVERSION": '"-x"'}


def test_missing_required_names_what_olddefconfig_dropped() -> None:
    """Kconfig drops KVM_SW_PROTECTED_VM silently when EXPERT is off: that must be caught."""
    complete = "\n".join(f"CONFIG_{name}=y" for name in kconfig.REQUIRED)
    assert kconfig.missing_required(complete) == []
    dropped = complete.replace("CONFIG_KVM_SW_PROTECTED_VM=y", "")
    assert kconfig.missing_required(dropped) == ["KVM_SW_PROTECTED_VM"]
    as_module = complete.replace("CONFIG_KVM_AMD=y", "CONFIG_KVM_AMD=m")
    assert kconfig.missing_required(as_module) == ["KVM_AMD"]


def test_digest_changes_with_the_fragment(monkeypatch: object) -> None:
    import pytest

    before = kconfig.config_digest()
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(kconfig, "REQUIRED", (*kconfig.REQUIRED, "KVM_XEN"))
        assert kconfig.config_digest() != before
    finally:
        mp.undo()
    assert kconfig.config_digest() == before
