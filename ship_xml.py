"""OpenSARShip's Ship.xml: a tolerant parser, and the checked reading of the numbers one record gives a chip.

    import ship_xml
    problems = []
    records = ship_xml.parse_ship_xml(text, problems)   # {(Center_x, Center_y): {tag: text}}; records left out
    values, notes = ship_xml.record_values(records[(x, y)], x, y)   # chip fields, and the values left out

The file (docs/data-formats.md): <ShipList><ship> records whose sections (SARShipInformation, AISShipInformation,
MatchInformation, MarineTrafficInformation) hold leaf tags; version 2.0 closes the list with the malformed
`<\\ShipList>` and leaves `<` unescaped in ship names, which ElementTree rejects, hence the tolerant parser.

A number is used only when it is finite and in range. An infinite value ('inf', 'Infinity', '1e309', which Python
reads as infinity), a latitude or longitude off the globe, a head or tail outside the chip or the scene, or corners
that do not hold the centre are left out, each with a note naming the tag and its text; the chip keeps what else
its record gives. A record whose centre is not a finite number joins no chip: it is left out with a note. Missing
values and the fill texts of the real files ('NA', or 0 for an MMSI or a length) are unknown, not malformed: they
are left empty without a note, as before.
"""

import math
import re
from html import unescape
from typing import NamedTuple

from archives import positive_number, valid_mmsi

_PAIR_RE = re.compile(r"<([A-Za-z_][\w.\-]*)>(.*?)</\1\s*>", re.DOTALL)


def _fields(text, out):
    # A tolerant XML reader for Ship.xml: an element whose content holds a complete <tag>...</tag> pair is a
    # container (recurse); anything else is a leaf value. Unescaped "<" inside a name, or the malformed
    # "<\ShipList>" closing tag of version 2.0, do not disturb it (ElementTree rejects both).
    for m in _PAIR_RE.finditer(text):
        tag, content = m.group(1), m.group(2)
        if _PAIR_RE.search(content):
            _fields(content, out)
        else:
            out.setdefault(tag, unescape(content.strip()))
    return out


def number(rec, tag):
    """(value, problem) of a numeric tag: (None, None) when missing or not a number (a fill such as 'NA'),
    (None, "<tag> '<text>' is not finite") when infinite."""
    text = rec.get(tag)
    try:
        v = float(text)
    except (TypeError, ValueError):
        return None, None
    if math.isnan(v):
        return None, None
    if math.isinf(v):
        return None, f"{tag} {text!r} is not finite"
    return v, None


def parse_ship_xml(text, problems=None):
    """Ship.xml text -> {(Center_x, Center_y): {tag: value}} (leaf tags of all sections, first occurrence).
    A record whose centre is infinite is left out, with a note appended to `problems` (a list) when given."""
    records = {}
    for i, m in enumerate(re.finditer(r"<ship>(.*?)</ship\s*>", text, re.DOTALL | re.IGNORECASE), start=1):
        rec = _fields(m.group(1), {})
        (cx, px), (cy, py) = number(rec, "Center_x"), number(rec, "Center_y")
        if cx is None or cy is None:
            if (px or py) and problems is not None:
                problems.append(f"record {i}: {px or py} (record left out)")
            continue
        records.setdefault((round(cx), round(cy)), rec)
    return records


class Placement(NamedTuple):
    """A chip in its scene (pixels): centre, corner (None: centred), the ship's head and tail as [x, y]."""
    cx: int
    cy: int
    x0: int | None
    y0: int | None
    head: list
    tail: list


def record_values(rec, x, y, figure=False):
    """The chip fields a record gives ({mmsi, ship_length_m, ship_width_m, incidence_deg, latlon, geometry}) for
    the chip centred on (x, y), and the problems (text) of the values left out. `figure`: a Patch_RGB figure, which
    has no geometry in chip pixels (its head and tail are not read)."""
    problems = []

    def checked(tag, low=-math.inf, high=math.inf):
        v, problem = number(rec, tag)
        if v is not None and not low <= v <= high:
            v, problem = None, f"{tag} {rec[tag]!r} is outside {low:g}..{high:g}"
        if problem:
            problems.append(problem)
        return v

    for tag in ("MMSI", "Length", "Width", "Length_overall", "Breadth_extreme"):
        checked(tag)  # notes an infinite value; the helpers below leave it out with the fill values
    values = {"mmsi": valid_mmsi(rec.get("MMSI")),
              "ship_length_m": positive_number(rec.get("Length")) or positive_number(rec.get("Length_overall")),
              "ship_width_m": positive_number(rec.get("Width")) or positive_number(rec.get("Breadth_extreme"))}
    incidence = checked("Incidence", 0, 90)  # degrees; converts an SLC chip's slant-range spacing to ground range
    values["incidence_deg"] = "" if incidence is None or incidence <= 0 else f"{incidence:g}"
    lat, lon = checked("Center_latitude", -90, 90), checked("Center_longitude", -180, 180)
    values["latlon"] = (lat, lon) if lat is not None and lon is not None else None
    values["geometry"] = None if figure else _placement(rec, x, y, checked, problems)
    return values, problems


def _placement(rec, x, y, checked, problems):
    # Where the chip lies in its scene. Head and tail must lie in the chip, when its corners say where it is, and
    # in the scene (pixel coordinates are never negative); otherwise they are left out, with the reason.
    ends = [checked(t) for t in ("Head_x", "Head_y", "Tail_x", "Tail_y")]
    corners = [checked(t) for t in ("UpperLeft_x", "UpperLeft_y", "LowerRight_x", "LowerRight_y")]
    x0 = y0 = None
    if None not in corners:
        xs = sorted(round(corners[i]) for i in (0, 2))  # "UpperLeft" holds the larger coordinates
        ys = sorted(round(corners[i]) for i in (1, 3))
        if xs[0] <= x <= xs[1] and ys[0] <= y <= ys[1]:
            x0, y0 = xs[0], ys[0]
        else:
            problems.append(f"UpperLeft/LowerRight x {xs[0]}..{xs[1]}, y {ys[0]}..{ys[1]} do not hold the centre "
                            f"({x}, {y})")
    if None in ends:
        return None
    head, tail = [round(v) for v in ends[:2]], [round(v) for v in ends[2:]]
    bad = []
    for end, (ex, ey) in (("Head", head), ("Tail", tail)):
        if x0 is not None and not (xs[0] <= ex <= xs[1] and ys[0] <= ey <= ys[1]):
            bad.append(f"{end}_x/{end}_y ({ex}, {ey}) outside the chip (x {xs[0]}..{xs[1]}, y {ys[0]}..{ys[1]})")
        elif ex < 0 or ey < 0:
            bad.append(f"{end}_x/{end}_y ({ex}, {ey}) outside the scene")
    problems += bad
    return None if bad else Placement(x, y, x0, y0, head, tail)
