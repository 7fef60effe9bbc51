"""The picture of one detection: what the decoder read the answer from, and the frames it chose.

Top: the net's curve on the original frames (its 20 step values as dots), the Eq. 4 curve the
decoder fitted (labels.TemplateFit, evaluated between frames too) and the ED / ES it reported;
where fit_rwave moved ED off the fitted peak to the frame after the R wave, both are marked. For
a stack decoding, every slice's standardised curve, their mean (the curve decoded) and the fit to
the mean. Right: the mean frame with the crop square the net saw; the part of the square outside
the image is padding and is drawn as such. Bottom: the frames before, at and after ED and ES, as
the crop shows them, at their true aspect ratio (pixel spacing), padding in blue.

Written as a full-size PNG and a thumbnail (the same picture, THUMB_WIDTH px wide) for the
review page (tempregnet.report). No identifier is drawn beyond the anonymous sequence key.
"""
from __future__ import annotations

import io

import numpy as np

from tempregnet.labels import step_positions, steps_to_frames, written_confidence

FIG_INCHES = (11.0, 6.6)
DPI = 80
THUMB_WIDTH = 480          # px, the review page's row picture
THUMB_HEIGHT = round(THUMB_WIDTH * FIG_INCHES[1] / FIG_INCHES[0])
PADDING_COLOUR = "#3b5b92"
NEIGHBOURS = (-1, 0, 1)    # frames shown around ED and ES


def render_detection(seq, result: dict, contract) -> tuple[bytes, bytes]:
    """(full-size PNG, thumbnail PNG) of one detection (result: inference.predict_sequence's,
    with decode_input_stacks' stack fields for a stack decoding)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    n = seq.n_frames
    ed, es = int(result["ed"]), int(result["es"])
    decoded = result["decoded"]
    fig = plt.figure(figsize=FIG_INCHES)
    ax = fig.add_axes([0.06, 0.47, 0.54, 0.45])
    fine = np.linspace(0, n - 1, 20 * n)
    if "stack_curve" in result:
        for k, z in enumerate(result["stack_curves"]):
            ax.plot(np.arange(n), steps_to_frames(z, n), "-", color="0.7", lw=0.8,
                    label="slices of the stack (standardised)" if k == 0 else None)
        own = np.asarray(result["curve"], dtype=np.float64)
        own = (own - own.mean()) / (own.std() or 1.0)
        ax.plot(np.arange(n), steps_to_frames(own, n), "-", color="tab:purple", lw=1.2,
                label="this slice (standardised)")
        decoded_curve = np.asarray(result["stack_curve"], dtype=np.float64)
        what = f"mean of {result['stack_size']} slices (decoded)"
    else:
        decoded_curve = np.asarray(result["curve"], dtype=np.float64)
        what = "net's curve on the frames"
    ax.plot(np.arange(n), steps_to_frames(decoded_curve, n), "-", color="tab:blue", lw=1.8,
            label=what)
    ax.plot(step_positions(n, decoded_curve.size), decoded_curve, ".", color="tab:blue",
            alpha=0.6, label="net's 20 steps")
    fit = decoded.fit
    if fit is not None:
        p = fit.best
        ax.plot(fine, fit.curve_at(fine), "--", color="tab:orange", lw=1.6,
                label=f"fitted Eq. 4 curve (ED {int(fit.eds[p])}, ES {int(fit.ess[p])})")
        if int(fit.eds[p]) != ed:
            ax.axvline(int(fit.eds[p]), color="tab:red", ls=":", lw=1,
                       label=f"fitted ED {int(fit.eds[p])}, moved to the R wave")
    ax.axvline(ed, color="tab:red", ls="--", lw=1.5, label=f"ED = frame {ed} (0-based)")
    ax.axvline(es, color="tab:green", ls="--", lw=1.5, label=f"ES = frame {es} (0-based)")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xticks(range(0, n, max(1, n // 15)))
    ax.set_xlabel("frame (0-based)")
    ax.set_ylabel("volume-like output")
    ax.set_title(f"sequence {seq.seq_id}: {n} frames, confidence "
                 f"{written_confidence(result['confidence']):.2f}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
              frameon=False)
    frames = np.asarray(seq.frames, dtype=np.float32)
    window, aspect, box = _window(frames, result.get("crop"), contract)
    lo, hi = np.nanpercentile(window[:, ::2, ::2], (1, 99)) if np.isfinite(window).any() \
        else (0.0, 1.0)
    cmap = matplotlib.colormaps["gray"].copy()
    cmap.set_bad(PADDING_COLOUR)
    inset = fig.add_axes([0.815, 0.47, 0.175, 0.45])
    _crop_overview(inset, frames, result.get("crop"), aspect)
    shown = [(name, (k + d) % n, d) for name, k in (("ED", ed), ("ES", es)) for d in NEIGHBOURS]
    width = 0.94 / len(shown)
    for i, (name, frame, d) in enumerate(shown):
        tile = fig.add_axes([0.03 + i * width, 0.03, width * 0.94, 0.33])
        tile.imshow(np.ma.masked_invalid(window[frame]), cmap=cmap, vmin=lo, vmax=hi,
                    aspect=aspect, interpolation="nearest")
        label = name if d == 0 else f"{name}{d:+d}"
        tile.set_title(f"{label}: frame {frame}", fontsize=8,
                       color={"ED": "tab:red", "ES": "tab:green"}[name] if d == 0 else "black",
                       fontweight="bold" if d == 0 else "normal")
        tile.set_xticks([])
        tile.set_yticks([])
    if box is not None and not np.isfinite(window[0]).all():
        fig.legend(handles=[Patch(color=PADDING_COLOUR, label="padding: crop square outside "
                                                               "the image")],
                   loc="lower right", bbox_to_anchor=(0.99, 0.37), fontsize=7, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return buf.getvalue(), _thumbnail(buf.getvalue())


def _window(frames, crop, contract):
    """T x h x w frames as the net saw their field (NaN outside the image) and the pixel aspect
    (row spacing / column spacing) to show them at; box: the crop box, or None."""
    if crop is not None:
        from data_prep.scale import crop_box, crop_padded
        spacing = crop["input_mm_per_px"]
        box = crop_box(crop["centre_px"], crop["side_mm"], spacing)
        return crop_padded(frames, box, np.nan), spacing[0] / spacing[1], box
    from data_prep.preprocess import centre_square
    return centre_square(frames, contract.roi), 1.0, None


def _crop_overview(ax, frames, crop, aspect) -> None:
    """The mean frame with the crop square; the part outside the image dashed, named padding."""
    mean = frames.mean(axis=0)
    h, w = mean.shape
    ax.imshow(mean, cmap="gray", aspect=aspect)
    ax.set_xticks([])
    ax.set_yticks([])
    if crop is None:
        ax.set_title("input frame (mean)", fontsize=8)
        return
    (r, c), (sr, sc) = crop["centre_px"], crop["input_mm_per_px"]
    hr, hc = crop["side_mm"] / sr / 2, crop["side_mm"] / sc / 2
    xs = [c - hc, c + hc, c + hc, c - hc, c - hc]
    ys = [r - hr, r - hr, r + hr, r + hr, r - hr]
    ax.plot(xs, ys, "--", color="yellow", lw=1)
    ax.plot(np.clip(xs, -0.5, w - 0.5), np.clip(ys, -0.5, h - 0.5), "-", color="yellow", lw=1.5)
    ax.set_xlim(min(-0.5, c - hc) - 1, max(w - 0.5, c + hc) + 1)
    ax.set_ylim(max(h - 0.5, r + hr) + 1, min(-0.5, r - hr) - 1)
    outside = c - hc < -0.5 or c + hc > w - 0.5 or r - hr < -0.5 or r + hr > h - 0.5
    ax.set_title(f"{crop['side_mm']:g} mm crop" + (" (dashed: padding)" if outside else ""),
                 fontsize=8)


def _thumbnail(png: bytes) -> bytes:
    from PIL import Image
    image = Image.open(io.BytesIO(png))
    out = io.BytesIO()
    image.convert("RGB").resize((THUMB_WIDTH, THUMB_HEIGHT), Image.LANCZOS).save(out, "PNG",
                                                                        optimize=True)
    return out.getvalue()
