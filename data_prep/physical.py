"""Prepare one patient's cine stack at a fixed pixel size in mm, cropped around the LV (or centre).

The physical path of data_prep.prepare and tools.detect (docs/scale-and-crop.md): every slice's
pixel spacing is resolved (header, else the --input-mm-per-px override, else estimated from the
stack's images: data_prep.pixel_size), the stack's LV crops are found together
(data_prep.heart_crop.find_stack), and each slice becomes steps x S x S uint8 frames covering the
contract's mm square around its crop centre.
"""
from __future__ import annotations

from data_prep.errors import InputError
from data_prep.heart_crop import HeartCrop, find_stack
from data_prep.pixel_size import estimate_stack
from data_prep.scale import PLAUSIBLE_MM, physical_steps, resolve_spacing


def stack_crops(seqs, contract, input_mm_per_px, wheres) -> tuple[list, list]:
    """([(seq, spacing, spacing source, HeartCrop, where)], [InputError]) for loaded sequences
    of one patient, for a physical contract. A sequence's pixel size is its header's, else
    input_mm_per_px (the --input-mm-per-px override), else estimated from the images of the
    stack's sequences that lack one (data_prep.pixel_size; one estimate per frame shape)."""
    ok, unknown, problems = [], {}, []
    for seq, where in zip(seqs, wheres):
        try:
            spacing, how = resolve_spacing(seq, input_mm_per_px, where)
        except InputError as exc:
            problems.append(exc)
            continue
        if spacing is None:
            unknown.setdefault(seq.frames.shape[1:], []).append((seq, where, how))
        else:
            ok.append((seq, spacing, how, where))
    for members in unknown.values():
        size = estimate_stack([seq.frames for seq, _, _ in members], contract.field_mm)
        lo, hi = PLAUSIBLE_MM
        for seq, where, why in members:
            if size is None or not lo <= size.mm_per_px <= hi:
                found = "no outer LV edge found" if size is None else \
                    f"{size.mm_per_px:.3g} mm is implausible"
                problems.append(InputError(where, f"{why}, and none could be estimated from the "
                                                  f"images ({found}); pass --input-mm-per-px "
                                                  f"<its pixel size in mm>"))
            else:
                ok.append((seq, (size.mm_per_px, size.mm_per_px), "estimated", where))
    field = contract.field_mm
    if contract.crop == "lv":
        crops = find_stack([(seq.frames, spacing) for seq, spacing, _, _ in ok], field)
    else:                                    # "image centre": no search (radius 0)
        crops = []
        for seq, spacing, _, _ in ok:
            centre = ((seq.frames.shape[1] - 1) / 2.0, (seq.frames.shape[2] - 1) / 2.0)
            crops.append(HeartCrop(centre, (centre[0] * spacing[0], centre[1] * spacing[1]),
                                   0.0, field, 0.0))
    return [(seq, sp, how, crop, where) for (seq, sp, how, where), crop in zip(ok, crops)], problems


def crop_record(seq_id: str, spacing, how: str, crop: HeartCrop) -> dict:
    """What the outputs say about one sequence's geometry (positions in the image only)."""
    return {"seq_id": seq_id, "input_mm_per_px": [round(v, 5) for v in spacing],
            "spacing_from": how, **crop.as_dict()}


def stack_steps(seqs, contract, input_mm_per_px, wheres):
    """Yield (seq, steps or InputError, crop record or None) for one patient's loaded sequences."""
    placed, problems = stack_crops(seqs, contract, input_mm_per_px, wheres)
    for exc in problems:
        yield None, exc, None
    for seq, spacing, how, crop, where in placed:
        try:
            steps = physical_steps(seq.frames, spacing, crop.centre_px, contract, where)
        except InputError as exc:
            yield seq, exc, None
            continue
        yield seq, steps, crop_record(seq.seq_id, spacing, how, crop)


CROPS_NAME = "crops.json"            # per row: input spacing, where it came from, crop centre/side
CROPS_PLOT = "crops.png"
CROPS_ABOUT = ("crop of each stored row: centre (row, col) in input pixels and in mm from the "
               "top-left pixel centre, LV radius found (0 for crop = centre), side in mm; input "
               "pixel size (row, col) and where it came from: header, override "
               "(--input-mm-per-px) or estimated (from the images, data_prep.pixel_size)")


def crop_summary(crops: list[dict]) -> dict:
    """Counts for the provenance: how big the LV found was, per sequence (no positions)."""
    radii = sorted(c["radius_mm"] for c in crops)
    return {"crops": len(crops),
            "lv_radius_mm_found": {"min": radii[0], "median": radii[len(radii) // 2],
                                   "max": radii[-1]} if radii else {}}


def plot_crops(found, batches, crops: list[dict], contract, path, per_row: int = 10) -> None:
    """A PNG of every written sequence's mean frame with its crop square and LV circle."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tempregnet.outputs import save_figure_atomic
    by_id = {c["seq_id"]: c for c in crops}
    tiles = []
    for batch in batches:
        for k in batch:
            try:
                seq = found[k].load()
            except InputError:
                continue
            if seq.seq_id in by_id:
                tiles.append((seq.frames.mean(axis=0), by_id[seq.seq_id]))
    rows = max(1, -(-len(tiles) // per_row))
    fig, axes = plt.subplots(rows, per_row, figsize=(per_row * 1.6, rows * 1.7), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (image, c) in zip(axes.flat, tiles):
        ax.imshow(image, cmap="gray")
        (r, col), (sr, sc) = c["centre_px"], c["input_mm_per_px"]
        hr, hc = c["side_mm"] / sr / 2, c["side_mm"] / sc / 2
        ax.plot([col - hc, col + hc, col + hc, col - hc, col - hc],
                [r - hr, r - hr, r + hr, r + hr, r - hr], "y-", lw=0.8)
        if c["radius_mm"]:
            ax.add_patch(plt.Circle((col, r), c["radius_mm"] / sc, fill=False, color="r", lw=0.6))
        ax.set_title(f"row {c['row']}", fontsize=6)
    fig.suptitle(f"{contract.crop} crop, {contract.field_mm:g} mm square "
                 f"({contract.mm_per_px:g} mm per stored pixel)", fontsize=8)
    save_figure_atomic(fig, path, dpi=70)
    plt.close(fig)
