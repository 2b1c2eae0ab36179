"""``qmpgmem image``: build or locate the built-in micro guest."""

from __future__ import annotations

import click

from qmpgmem.cli.group import cli


@cli.group(short_help="Build or locate the built-in micro guest.")
def image() -> None:
    """The micro guest: a 64 KiB ROM for microvm (-bios) and a PVH ELF for -kernel.

    Images are built with the machine's gcc/ld on first use and cached by a digest of their
    sources; a changed source rebuilds them.
    """


@image.command()
def build() -> None:
    """Build both images and the host's hash helper now (make setup does this), and print
    where they are."""
    from qmpgmem.fasthash.build import load
    from qmpgmem.guest.image import guest_image, image_sources_digest

    for kind in ("rom", "pvh"):
        click.echo(f"{kind}: {guest_image(kind)}")
    click.echo(f"sources digest: {image_sources_digest()}")
    # the host's range-hash helper, built with the same gcc (numpy stands in without it)
    click.echo(f"hash helper: {load().reason}")


@image.command()
def path() -> None:
    """Print the ROM's path (building it if needed), e.g. for a hand-made QEMU command."""
    from qmpgmem.guest.image import guest_image

    click.echo(str(guest_image("rom")))
