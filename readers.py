"""The interface between dataset_prep.py and the dataset readers, the chip record they produce, and the registry.

    import readers
    for reader in readers.READERS:                          # opensarship.READER, fusar.READER, in listing order
        for source in reader.find_sources(trees, forced):   # scenes, dataset folders... (see Reader)
            listing = reader.list_chips(source, args)       # Listing: Chips, skipped chips, notes
            with reader.open(source) as handle:
                image = reader.load_chip(handle, listing.chips[0])   # (H, W) uint8

Adding a dataset is one new module defining a Reader subclass and `READER = ThatReader()`, and one line in
REGISTRY below. dataset_prep.py and splits.py (which runs the readers) take everything dataset-specific from
the reader: its flag (--<name>), where its data comes from, what its files look like, its class names, its notes.
"""

import abc
import importlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(eq=False)
class Chip:
    """One chip: what its reader knows before decoding, then what preparing it adds (size, hash, split...).

    Text fields are '' where unknown, as the manifest writes them; numbers known only after decoding are None
    until then. A chip is also read by manifest column: chip["class"] is chip.cls, chip["mmsi"] chip.mmsi.
    """
    dataset: str  # the reader's name: the manifest's dataset column, the prefix of the chip's file name
    cls: str  # class name, in the dataset's spelling (the manifest's class column)
    name: str = ""  # file stem in the prepared set (after the dataset prefix), unique within the dataset
    source: str = ""  # where the chip was read, for people ("scene.zip!Patch_Uint8/x.tif")
    member: str = ""  # its name in the reader's tree (what load_chip reads)
    scene: str = ""
    mmsi: str = ""
    pol: str = ""
    product: str = ""
    ship_length_m: str = ""  # positive numbers as text ('190', '32.26')
    ship_width_m: str = ""
    spacing_row_m: str = ""
    spacing_col_m: str = ""
    incidence_deg: str = ""  # OpenSARShip: the ship's incidence angle (Ship.xml Incidence), for SLC slant -> ground
    # Grouping (splits.assign_groups): chips of one acquisition (--group-by scene), the place of a chip
    # without MMSI ("<scene>:<where in it>"), and its position on Earth (links one ship across products).
    acquisition: str = ""
    position: str = ""
    latlon: tuple | None = None  # (latitude, longitude) in degrees
    has_record: bool = False  # the dataset's metadata has a record of this chip
    mask_key: str | None = None  # its exact mask's path under the dataset's masks folder (synthetic data)
    # Reader-specific: what load_chip and chip_coords need beyond `member`.
    band: str | None = None  # OpenSARShip Patch_Cal: "co" or "cross"; "stack" for a stacked twin
    co_member: str = ""  # OpenSARShip stacked twin of product uint8: its Patch_Uint8 co chip (the scale it takes)
    geometry: object = None  # OpenSARShip: where the chip lies in its scene
    # --pol stack (stacking.py): the 2-channel (co, cross) version of a co chip, decoded and written to the stacked
    # set in its co chip's split; or why the chip has none (a single-pol scene)
    twin: "Chip | None" = None
    twin_reason: str = ""
    # Set while preparing (splits.py, dataset_prep.py).
    sha1: str = ""  # of the chip's PNG
    source_sha1: str = ""  # of the chip's file as the raw data stores it (splits.source_sha1; split files publish it)
    chip_h: int | None = None
    chip_w: int | None = None
    head_row: int | None = None  # bow and stern in chip pixels
    head_col: int | None = None
    tail_row: int | None = None
    tail_col: int | None = None
    group: str = ""
    split: str = ""
    file: str = ""  # <dataset>_<name>[_<sha1 prefix>].png
    staged: Path | None = None  # its PNG (and mask) written to the staging folder
    staged_mask: Path | None = None

    def __getitem__(self, column):
        return getattr(self, "cls" if column == "class" else column)


@dataclass
class Listing:
    """What a reader lists in one source: chips, skipped chips as (source, reason, detail), notes for the
    summary, and tallies it sums over its sources (Reader.summary_notes)."""
    chips: list = field(default_factory=list)
    skips: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    tallies: dict = field(default_factory=dict)


class Reader(abc.ABC):
    """A dataset reader. Subclasses set the attributes and implement find_sources, list_chips and load_chip (abstract:
    a reader without them cannot be built)."""

    name = ""  # the flag (--<name>), the prepared set's folder, the manifest's dataset column
    title = ""  # for people: "OpenSARShip"
    inputs = ""  # what --<name> takes (its help)
    expected = ""  # what the reader recognises, for the message when nothing is found
    where_to_get = ""  # where to download the dataset and where to put it (indented lines)
    classes = ()  # the dataset's class names: --classes accepts them even when the data found has none

    @abc.abstractmethod
    def find_sources(self, trees, forced):
        """The sources (scenes, dataset folders...) in `trees` (archives.open_tree trees), in the order they are
        listed; each has a `label` (where it is, for people). `forced`: the user named the trees with --<name>,
        so unusual names count. A source found twice may be listed as a duplicate: its list_chips gives a note
        and no chips. An archive that cannot be read (an archives.BrokenTree, in `trees` or inside one) is a
        source whose list_chips gives one skip with its reason and no chips, listed by the first reader that
        claims it (BrokenTree.claim), so that it is reported once and the other sources are still read."""

    @abc.abstractmethod
    def list_chips(self, source, options):
        """The Listing of one source (nothing decoded). `options`: the parsed command line."""

    def open(self, source):
        """Context manager: the handle load_chip reads a source's chips from (the source itself by default)."""
        return nullcontext(source)

    @abc.abstractmethod
    def load_chip(self, handle, chip):
        """The chip as an (H, W) uint8 array; ValueError (or another of archives.READ_ERRORS) with the reason when it
        cannot be decoded. A reader whose chips have stacked twins (Chip.twin) gives a twin as (H, W, 2) and is also
        called load_chip(handle, twin, co=<the co chip as decoded>), so it need not decode that again."""

    def chip_coords(self, chip, h, w):
        """{head_row, head_col, tail_row, tail_col} of a decoded (h, w) chip, where known; {} by default."""
        return {}

    def summary_notes(self, tallies):
        """Notes from the tallies of all its listings, summed."""
        return []

    def option_warnings(self, options):
        """Warnings about the options, printed when the reader's data is prepared."""
        return []


# ---------------------------------------------------------------------------------------------- the registry
# Every dataset dataset_prep.py prepares: one line per reader module (it defines READER), in listing order.
# The order matters: chips are listed reader by reader in this order and that order feeds the split, so a new
# dataset goes at the end.
REGISTRY = (
    "opensarship",
    "fusar",
)


def __getattr__(name):
    # READERS (the registry's readers) is built on first use, not on import: the reader modules import this one.
    if name != "READERS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["READERS"] = tuple(importlib.import_module(module).READER for module in REGISTRY)
    return globals()["READERS"]
