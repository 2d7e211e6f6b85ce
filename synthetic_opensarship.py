"""The synthetic OpenSARShip scene archives: each acquisition that synthetic.plan_opensarship() plans, rendered
chip by chip with the physics of simulator.py and written as one zip per product in its version's layout
(docs/data-formats.md):

    1.0  <scene>/ top folder, Metedata.xml, ReadMe.pdf, Ship.xml
    2.0  flat, <scene>.xml, Ship.xml (the GRD one closed by a malformed <\\ShipList>)
    both Patch/, Patch_Cal/, Patch_Uint8/, Patch_RGB/; GRD 1SDV, GRD 1SSV and SLC twins

and one mask per chip beside the archives. Byte-identical for the same seed: every chip draws from its own
random stream, and the archives have fixed timestamps.
"""

import io
import math
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import tifffile
from PIL import Image, ImageDraw

from simulator import (FLAGS, GRD_SIZE, S1_GRD, SLC_SPACING, Vessel, gamma_texture, incidence, local_wind, rng_for,
                       s1_slc, sar_intensity, sea_sigma0, ship_returns)

# Chip side in pixels = SIDE_PER_LENGTH x AIS length / azimuth pixel spacing, measured on the real sample scenes
# (shared/data/opensarship): 25 GRD chips side / (L / 10 m) = 3.87 at the median, 10th-90th percentile 3.3-4.4,
# correlation with L 0.90; 9 SLC chips 2.80 = 3.9 x 10 / 13.9, so SLC chips too span ~3.9 L along azimuth.
SIDE_PER_LENGTH = 3.9
SIDE_JITTER = 0.11  # sd of log(side / median side): ln(4.4 / 3.3) / 2.56, the measured 10th-90th percentile spread
SIDE_RANGE = (17, 185)  # chip sides seen in the real archives: small ships sit at the 17 px floor
ZIP_TIME = (2017, 9, 7, 21, 40, 0)  # fixed archive timestamps: same seed, same bytes
FIGURE_SIZE = (560, 420)  # Patch_RGB figures (real: 875x656 or 1200x900; smaller is faster to write)
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")  # SNAP dates
# ship class -> the class in OpenSARShip chip names (from the AIS code)
OSS_NAME = {"Cargo": "Cargo", "Tanker": "Tanker", "Fishing": "Fishing", "Tug": "Tug",
            "Passenger": "Passenger", "Other": "Other Type"}


# -------------------------------------------------------------------------------- file encoders
def _tiff_float(bands):
    # Patch / Patch_Cal: float32, bands interleaved (contig), uncompressed, "MATLAB" as on the real files
    buf = io.BytesIO()
    a = bands[0] if len(bands) == 1 else np.stack(bands, axis=-1)
    tifffile.imwrite(buf, a.astype(np.float32), metadata=None, software="MATLAB", photometric="minisblack")
    return buf.getvalue()


def _tiff_uint8_packbits(a):
    # Patch_Uint8: PackBits at 72 dpi, the real files' tags (tifffile needs imagecodecs to write PackBits)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="TIFF", compression="packbits", dpi=(72, 72))
    return buf.getvalue()


def png_bytes(a):
    """PNG bytes of a 2-D uint8 array: the ship masks of both datasets."""
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _jet(x):
    """MATLAB's jet colour map: x in [0, 1] -> uint8 RGB."""
    rgb = np.clip(1.5 - np.abs(4 * np.asarray(x)[..., None] - np.array([3.0, 2.0, 1.0])), 0, 1)
    return (rgb * 255).round().astype(np.uint8)


# Patch_RGB palette: 254 jet colours, the axes grey, the white background. A palette PNG encodes ~3x faster
# than an RGB one and opens the same in any reader.
_FIGURE_PALETTE = np.concatenate([_jet(np.linspace(0, 1, 254)), [[38, 38, 38], [255, 255, 255]]])
_FIGURE_PALETTE = _FIGURE_PALETTE.astype(np.uint8)


def render_figure(values):
    """Patch_RGB: a rendered figure (imagesc with the jet map, axes, colour bar), not a chip, as in the real
    archives."""
    W, H = FIGURE_SIZE
    # axes and colour bar boxes as fractions of the figure, measured on a real 875 x 656 Patch_RGB figure
    x0, x1, b0, b1 = (round(f * W) for f in (0.1143, 0.7977, 0.8206, 0.8674))
    y0, y1 = round(0.0732 * H), round(0.8918 * H)
    canvas = np.full((H, W), 255, np.uint8)
    vmax = float(values.max()) or 1.0
    rows = np.arange(y1 - y0) * values.shape[0] // (y1 - y0)
    cols = np.arange(x1 - x0) * values.shape[1] // (x1 - x0)
    canvas[y0:y1, x0:x1] = np.round(values / vmax * 253).astype(np.uint8)[rows][:, cols]
    canvas[y0:y1, b0:b1] = np.round(np.linspace(253, 0, y1 - y0)).astype(np.uint8)[:, None]
    im = Image.fromarray(canvas, mode="P")
    im.putpalette(_FIGURE_PALETTE.tobytes())
    draw = ImageDraw.Draw(im)
    for box in ((x0, y0, x1, y1), (b0, y0, b1, y1)):
        draw.rectangle(box, outline=254)
    step = 10 ** math.floor(math.log10(vmax / 4))
    step *= 5 if vmax / step > 20 else 2 if vmax / step > 8 else 1
    for t in np.arange(step, vmax, step):
        y = round(y1 - t / vmax * (y1 - y0))
        draw.line([(b1 - 3, y), (b1, y)], fill=254)
        draw.text((b1 + 6, y - 5), f"{t:g}", fill=254)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _readme_pdf(scene):
    """A one-page PDF in place of the 1.0 archives' ReadMe.pdf."""
    text = f"Synthetic OpenSARShip scene {scene}, written by synthetic.py."
    stream = f"BT /F1 9 Tf 40 800 Td ({text}) Tj ET".encode()
    page = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font "
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            page + b"<< /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (i, o)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def write_zip(path, entries):
    """Deterministic zip: sorted names (the real archives' order), folder entries, fixed time, FAT flags."""
    dirs = {"/".join(n.split("/")[: i + 1]) + "/" for n in entries for i in range(n.count("/"))}
    with zipfile.ZipFile(path, "w") as zf:
        for name in sorted(set(entries) | dirs):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 0  # FAT, as the real archives: also the same bytes on every platform
            if name.endswith("/"):
                info.external_attr = 0x10
                zf.writestr(info, b"")
            else:
                info.external_attr = 0x20
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, entries[name], compresslevel=1)  # fast; float noise barely compresses


# -------------------------------------------------------------------------------- scenes
@dataclass
class Sighting:
    """One ship in one acquisition: a chip in the GRD product, and in its SLC twin if there is one."""

    vessel: Vessel
    x: int  # GRD scene sample (range) of the chip centre
    y: int  # GRD scene line (azimuth)
    heading: float  # bow direction, rad on the ground


@dataclass
class Acquisition:
    """One Sentinel-1 IW acquisition: its GRD product (and SLC twin), sea state, calibration, sightings."""

    index: int
    version: str  # "1.0" or "2.0"
    pol: str  # "1SDV" or "1SSV"
    start: datetime
    orbit: int
    datatake: int
    grd_id: int
    slc_id: int | None  # product id of the SLC twin, None without one
    ascending: bool
    wind: float  # m/s, the scene's 10 m wind (each chip's varies about it: simulator.local_wind)
    wind_dir: float  # deg, relative to the radar look direction
    nesz_db: float  # the sensor's noise floor
    nu: float
    corr_px: float
    k_grd: float  # calibration: sigma0 = k DN^2
    k_slc: float
    sightings: list = field(default_factory=list)

    def name(self, product):
        start, stop = self.start, self.start + timedelta(seconds=25)
        if product == "GRD":
            kind, pid = "GRDH", self.grd_id
        else:
            kind, pid, start = "SLC_", self.slc_id, start - timedelta(seconds=2)
        return (f"S1A_IW_{kind}_{self.pol}_{start:%Y%m%dT%H%M%S}_{stop:%Y%m%dT%H%M%S}_{self.orbit:06d}_"
                f"{self.datatake:06X}_{pid:04X}")


def render_oss_chip(seed, acq, s, k, product):
    """Sighting k of an acquisition as a GRD or SLC chip: products per polarisation, mask, geometry."""
    # three streams: the sea (texture, speckle, SLC phase), the ship, and what a GRD chip and its SLC twin share
    # (chip extent, position, the local wind): the sea's pixels do not depend on which ship is in the chip
    rng, ship_rng = (rng_for(seed, 1, i, acq.index, k, product == "SLC") for i in (1, 4))
    side_rng = rng_for(seed, 1, 2, acq.index, k)
    v, inc = s.vessel, incidence(s.x)
    sensor = s1_slc(inc) if product == "SLC" else S1_GRD
    half = 0.5 * SIDE_PER_LENGTH * v.length / sensor.spacing[0] * math.exp(SIDE_JITTER * side_rng.normal())
    # ... never smaller than the ship: SLC range pixels are ~3.5 m on the ground, long ships along range
    extent = max(abs(v.length * math.cos(s.heading)) / sensor.spacing[1],
                 abs(v.length * math.sin(s.heading)) / sensor.spacing[0])
    half = int(np.clip(max(round(half), math.ceil(0.6 * extent) + 2), SIDE_RANGE[0] // 2, SIDE_RANGE[1] // 2))
    side = 2 * half + 1  # odd: the centre pixel is the named (x, y)
    if product == "SLC":  # the SLC raster counts slant-range samples and 13.9 m lines
        x, y = round(s.x * 10 / sensor.spacing[1]), round(s.y * 10 / sensor.spacing[0])
    else:
        x, y = s.x, s.y
    centre = (half + side_rng.uniform(-1, 1), half + side_rng.uniform(-1, 1))
    pols = ("vv",) if acq.pol == "1SSV" else ("vh", "vv")  # Patch band order: VH, VV
    wind, phi = local_wind(side_rng, acq.wind, acq.wind_dir)
    texture = gamma_texture(rng, (side, side), acq.nu, acq.corr_px * 10 / sensor.spacing[1])
    maps, mask = ship_returns(ship_rng, v, s.heading, centre, (side, side), sensor, pols, q=4, pad=side)
    k_cal = acq.k_slc if product == "SLC" else acq.k_grd
    patch, cal, uint8 = [], [], {}
    for pol in pols:
        mu = sea_sigma0(pol, wind, phi, inc, acq.nesz_db)  # the same physics whatever the ship's class
        inten = sar_intensity(rng, mu, texture, *maps[pol], sensor.looks, ship_rng)
        if product == "SLC":  # complex samples: integer Re, Im with a random phase
            phase = rng.uniform(0, 2 * np.pi, (side, side))
            re, im = (np.round(np.sqrt(inten / k_cal) * f(phase)) for f in (np.cos, np.sin))
            patch += [re, im]
            dn2 = re**2 + im**2
        else:  # detected amplitude: integer DN
            dn = np.minimum(np.round(np.sqrt(inten / k_cal)), 65535)
            patch.append(dn)
            dn2 = dn**2
        cal.append(k_cal * dn2)
        amp = np.sqrt(dn2)
        uint8[pol] = np.round(255 * amp / max(amp.max(), 1e-9)).astype(np.uint8)
    dy, dx = sensor.spacing
    dr, dc = 0.5 * v.length * math.sin(s.heading) / dy, 0.5 * v.length * math.cos(s.heading) / dx
    return {"x": x, "y": y, "half": half, "patch": patch, "cal": cal, "uint8": uint8, "mask": mask,
            "pols": pols, "head": (centre[0] + dr, centre[1] + dc), "tail": (centre[0] - dr, centre[1] - dc),
            "spacing": sensor.spacing, "incidence": inc}


def ship_record(acq, s, product, chip, name, rng):
    """One <ship> record with the real element names, order and nesting (1.0: Slant_Range_Time; 2.0:
    SlantRangeTime and ChipNoise)."""
    v, inc = s.vessel, chip["incidence"]
    look = math.degrees(math.asin(math.sin(math.radians(inc)) * 6371.0 / (6371.0 + 693.0)))  # 693 km orbit
    when = acq.start + timedelta(seconds=s.y * 0.0015)  # ~1.5 ms per GRD line
    lat0, lon0 = (22.0, 114.0) if acq.index % 2 else (38.9, 118.5)
    lon = lon0 + s.x * 10 / 111e3 / math.cos(math.radians(lat0))
    lat = lat0 + (GRD_SIZE[0] - s.y) * 10 / 111e3
    ox, oy, half = chip["x"] - chip["half"], chip["y"] - chip["half"], chip["half"]
    head_x, head_y = ox + round(chip["head"][1]), oy + round(chip["head"][0])
    tail_x, tail_y = ox + round(chip["tail"][1]), oy + round(chip["tail"][0])
    dy, dx = chip["spacing"]
    manual = round(math.hypot((head_x - tail_x) * dx, (head_y - tail_y) * dy))  # as measured on the image
    heading_deg = (90 - math.degrees(s.heading)) % 360
    e = "{:e}".format  # Ship.xml's scientific format, e.g. 1.191583e+02
    sar = [("Time_UTC", f"{when.year}/{when.month}/{when.day}.{when:%H:%M:%S}"),
           ("Head_x", head_x), ("Head_y", head_y), ("Tail_x", tail_x), ("Tail_y", tail_y),
           ("UpperLeft_x", chip["x"] + half), ("UpperLeft_y", chip["y"] + half),  # sic: as the real files
           ("LowerRight_x", chip["x"] - half), ("LowerRight_y", chip["y"] - half),
           ("Center_x", chip["x"]), ("Center_y", chip["y"]), ("Center_longitude", e(lon)),
           ("Center_latitude", e(lat)), ("Manual_Length", manual),
           ("North_Direction", e(rng.uniform(0, 360))),
           ("Chip_Direction", e(math.degrees(math.atan2(head_y - tail_y, head_x - tail_x)) % 180 - 90)),
           ("Incidence", f"{inc:.6f}"), ("Elevation", "NaN" if product == "SLC" else f"{look:.6f}"),
           ("Slant_Range_Time" if acq.version == "1.0" else "SlantRangeTime",
            f"{2 * 693e3 / math.cos(math.radians(inc)) / 299792458.0 * 1e9:.6f}")]
    ais = [("Time", int(when.replace(tzinfo=timezone.utc).timestamp()) + int(rng.integers(-600, 600))),
           ("MMSI", v.mmsi), ("Nav_Status", int(rng.choice([0, 1, 5]))), ("Rot", 0),
           ("Sog", int(rng.integers(0, 150))), ("Pos_Acc", 0),
           ("Longitude", f"{lon + rng.normal(0, 1e-3):.6f}"),
           ("Latitude", f"{lat + rng.normal(0, 1e-3):.6f}"), ("Projected_Longitude", f"{lon:.6f}"),
           ("Projected_Latitude", f"{lat:.6f}"), ("Cog", f"{heading_deg * 10:.2f}"),
           ("True_Head", f"{round(heading_deg):.2f}"), ("Name", name), ("Ship_Type", v.ais_type),
           ("IMO", v.imo),
           ("Callsign", v.callsign), ("Length", v.length), ("Width", v.width), ("Draught", v.draught),
           ("Msgid", 1)]
    err = abs(manual - v.length)
    match = [("Length_error", f"{err:.6f}"), ("Length_error_rate", f"{err / v.length:.6f}"),
             ("Distance_error", f"{rng.uniform(20, 300):.6f}")]
    traffic = [("Length_overall", f"{v.length:.6f}"), ("Breadth_extreme", f"{v.width:.6f}"),
               ("Elaborated_type", v.elaborated), ("Gross_tonnage", v.gross), ("Deadweight", v.deadweight),
               ("Flag", FLAGS[v.mmsi // 1_000_000]), ("Year_built", v.year)]
    groups = [("SARShipInformation", sar), ("AISShipInformation", ais), ("MatchInformation", match),
              ("MarineTrafficInformation", traffic)]
    if acq.version == "2.0":
        groups.append(("ChipNoise", [("Interference", int(rng.random() < 0.1))]))
    lines = ["\t<ship>"]
    for tag, items in groups:
        lines += [f"\t\t<{tag}>", *(f"\t\t\t<{k}>{val}</{k}>" for k, val in items), f"\t\t</{tag}>"]
    return lines + ["\t</ship>"]


def _attr(name, value, typ, unit="", desc=""):
    return f'<attrib name="{name}" value="{value}" type="{typ}" unit="{unit}" desc="{desc}" />'


def _snap_time(t):
    return f"{t:%d}-{MONTHS[t.month - 1]}-{t:%Y %H:%M:%S}.{t.microsecond:06d}"


def scene_metadata(acq, product, name):
    """Metedata.xml (1.0) / <scene>.xml (2.0): SNAP abstracted metadata, the fields a reader may look at."""
    slc = product == "SLC"
    t0, t1 = _snap_time(acq.start), _snap_time(acq.start + timedelta(seconds=25))
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<Metadata>", "  <Abstracted_Metadata>",
             "    <Orbit_State_Vectors>"]
    for i in range(1, 4):
        when = _snap_time(acq.start + timedelta(seconds=i - 1))
        lines += [f"      <orbit_vector{i}>", f'        <attrib name="time" value="{when}" type="51" />',
                  f"      </orbit_vector{i}>"]
    lines += ["    </Orbit_State_Vectors>", "    <SRGR_Coefficients />",
              "    <Doppler_Centroid_Coefficients />"]
    for sw in ("IW1", "IW2", "IW3") if slc else ("IW",):
        for p in ("VV",) if acq.pol == "1SSV" else ("VH", "VV"):
            band = f"i_{sw}_{p} q_{sw}_{p}" if slc else f"Amplitude_{p}"
            lines += [f"    <Band_{sw}_{p}>", "      " + _attr("swath", sw, 41, desc="Swath name"),
                      "      " + _attr("polarization", p, 41, desc="Polarization"),
                      "      " + _attr("band_names", band, 41, desc="corresponding bands"),
                      "      " + _attr("first_line_time", t0, 51, "utc", "First zero doppler azimuth time"),
                      f"    </Band_{sw}_{p}>"]
    rg, az = (SLC_SPACING[1], SLC_SPACING[0]) if slc else (10.0, 10.0)
    height, width = (13600, 71685) if slc else GRD_SIZE
    for args in (("PRODUCT", name, 41, "", "Product name"), ("PRODUCT_TYPE", product, 41, "", "Product type"),
                 ("SPH_DESCRIPTOR", f"Sentinel-1 IW Level-1 {product} Product", 41, "", "Description"),
                 ("MISSION", "SENTINEL-1A", 41, "", "Satellite mission"),
                 ("ACQUISITION_MODE", "IW", 41, "", "Acquisition mode"),
                 ("antenna_pointing", "right", 41, "", "Right or left facing"),
                 ("ABS_ORBIT", acq.orbit, 12, "", "Orbit"),
                 ("data_take_id", acq.datatake, 12, "", "Data take identifier"),
                 ("first_line_time", t0, 51, "utc", "First zero doppler azimuth time"),
                 ("last_line_time", t1, 51, "utc", "Last zero doppler azimuth time"),
                 ("PASS", "ASCENDING" if acq.ascending else "DESCENDING", 41, "", "ASCENDING or DESCENDING"),
                 ("SAMPLE_TYPE", "COMPLEX" if slc else "DETECTED", 41, "", "DETECTED or COMPLEX"),
                 ("azimuth_looks", "1.0", 31), ("range_looks", "1.0" if slc else "5.0", 31),
                 ("range_spacing", rg, 31, "m", "Range sample spacing"),
                 ("azimuth_spacing", az, 31, "m", "Azimuth sample spacing"),
                 ("radar_frequency", "5405.000454334349", 31, "MHz", "Radar frequency"),
                 ("num_output_lines", height, 22, "lines", "Raster height"),
                 ("num_samples_per_line", width, 22, "samples", "Raster width"),
                 ("incidence_near", "30.6", 31, "deg"), ("incidence_far", "46.0", 31, "deg"),
                 ("metadata_version", "6.0", 41, "", "AbsMetadata version")):
        lines.append("    " + _attr(*args))
    row = ",".join(f"{incidence(x):.6f}" for x in np.linspace(0, GRD_SIZE[1], 6))
    lines += ["  </Abstracted_Metadata>", "  <tie-point-grids>", '    <incident_angle unit="deg" desc="">',
              f'      <row value="{row}" />', f'      <row value="{row}" />', "    </incident_angle>",
              "  </tie-point-grids>", "</Metadata>"]
    return "\r\n".join(lines) + "\r\n"


def write_oss_scene(seed, acq, product, out_dir, mask_dir, bar):
    """One scene archive in its version's layout, and its masks."""
    name = acq.name(product)
    rng = rng_for(seed, 1, 3, acq.index, product == "SLC")
    top = f"{name}/" if acq.version == "1.0" else ""
    entries, records = {}, []
    (mask_dir / name).mkdir(parents=True, exist_ok=True)
    for k, s in enumerate(acq.sightings):
        chip = render_oss_chip(seed, acq, s, k, product)
        base = f"{OSS_NAME[s.vessel.cls]}_x{chip['x']}_y{chip['y']}"
        entries[f"{top}Patch/{base}.tif"] = _tiff_float(chip["patch"])
        entries[f"{top}Patch_Cal/{base}.tif"] = _tiff_float(chip["cal"])
        for pol, cal in zip(chip["pols"], chip["cal"]):
            suffix = "" if acq.pol == "1SSV" else f"_{pol}"
            entries[f"{top}Patch_Uint8/Visual_{base}{suffix}.tif"] = _tiff_uint8_packbits(chip["uint8"][pol])
            ext = ".tif" if acq.version == "1.0" else ".png"  # 1.0: PNG bytes behind a .tif name
            entries[f"{top}Patch_RGB/{base}{suffix}{ext}"] = render_figure(cal)
        (mask_dir / name / f"{base}.png").write_bytes(png_bytes(chip["mask"].astype(np.uint8) * 255))
        ship_name = s.vessel.name
        # an unescaped "<" in a name, as in real 2.0 files (at least once: in the first 2.0 scene)
        if acq.version == "2.0" and (rng.random() < 0.03 or (acq.index == 1 and k == 0)):
            ship_name += f" <{int(rng.integers(1, 9))}>"
        records += ship_record(acq, s, product, chip, ship_name, rng)
        bar.update(1)
    close = "<\\ShipList>" if acq.version == "2.0" and product == "GRD" else "</ShipList>"  # sic, as real
    entries[f"{top}Ship.xml"] = "\r\n".join(['<?xml version="1.0" encoding="UTF-8"?>', "<ShipList>", *records,
                                             close]).encode("utf-8")
    meta = scene_metadata(acq, product, name).encode()
    if acq.version == "1.0":
        entries[f"{top}Metedata.xml"], entries[f"{top}ReadMe.pdf"] = meta, _readme_pdf(name)
    else:
        entries[f"{name}.xml"] = meta
    write_zip(out_dir / f"{name}.zip", entries)
