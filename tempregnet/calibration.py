"""How well a detection's confidence (tempregnet.labels.decode_detail) finds its errors.

On labelled per-sequence records (n_frames, ed_true, es_true, ed_pred, es_pred, confidence):
the detections sorted by confidence (least first, ties in record order) are cut into deciles of
equal count; each decile's errors are given, and the share of all "errors" (a detection whose ED
or ES is more than labels.CONFIDENCE_FRAMES frames off, as Eq. 5 counts frames) that fall in the
least confident 10 % and 20 % of detections, beside the most any ordering could put there
(min(k, errors) / errors: where errors outnumber the detections counted, no confidence reaches
all of them). Used by tools.evaluate_afd (confidence.md / .json /
.png beside afd.md) on the out-of-fold predictions of a cross-validation.
"""
from __future__ import annotations

import math

import numpy as np

from tempregnet.evaluation import cyclic_differences, frame_differences
from tempregnet.labels import CONFIDENCE_FRAMES

N_BINS = 10
LEAST_CONFIDENT = (0.1, 0.2)          # shares of the detections whose errors are counted


def detection_errors(records: list[dict]) -> dict:
    """Per record: |ED error|, |ES error| (Eq. 5 frames), their cyclic forms, and whether the
    detection is an error (ED or ES more than CONFIDENCE_FRAMES off)."""
    n = [r["n_frames"] for r in records]
    out = {}
    for phase in ("ed", "es"):
        t = [r[f"{phase}_true"] for r in records]
        p = [r[f"{phase}_pred"] for r in records]
        out[phase] = frame_differences(t, p)
        out[f"{phase}_cyclic"] = cyclic_differences(t, p, n)
    out["error"] = np.maximum(out["ed"], out["es"]) > CONFIDENCE_FRAMES
    out["error_cyclic"] = np.maximum(out["ed_cyclic"], out["es_cyclic"]) > CONFIDENCE_FRAMES
    out["error_ed"] = out["ed"] > CONFIDENCE_FRAMES
    out["error_es"] = out["es"] > CONFIDENCE_FRAMES
    return out


ERROR_KINDS = {"error": "errors > 1 frame (ED or ES, Eq. 5 frames)",
               "error_ed": "ED errors > 1 frame",
               "error_es": "ES errors > 1 frame",
               "error_cyclic": "cyclic errors > 1 frame* (ED or ES; not the paper's metric)"}


def least_confident_order(confidence) -> np.ndarray:
    """Indices from the least to the most confident (a stable sort: ties keep record order)."""
    return np.argsort(np.asarray(confidence, dtype=np.float64), kind="stable")


def ranking_auc(confidence, is_error) -> float | None:
    """P(an error's confidence < a correct detection's), ties counting half (the area under the
    ROC curve of 1 - confidence as an error detector; 0.5 = no better than chance)."""
    conf = np.asarray(confidence, dtype=np.float64)
    bad, good = conf[np.asarray(is_error, bool)], conf[~np.asarray(is_error, bool)]
    if bad.size == 0 or good.size == 0:
        return None
    below = (bad[:, None] < good[None, :]).sum() + 0.5 * (bad[:, None] == good[None, :]).sum()
    return float(below / (bad.size * good.size))


def calibration(records: list[dict], n_bins: int = N_BINS) -> dict:
    """The decile table and the shares of errors among the least confident detections."""
    if not records:
        raise ValueError("no records to calibrate")
    missing = sum(r.get("confidence") is None for r in records)
    if missing:
        raise ValueError(f"{missing} of {len(records)} records have no confidence")
    conf = np.array([r["confidence"] for r in records], dtype=np.float64)
    err = detection_errors(records)
    order = least_confident_order(conf)
    bins = []
    for k, idx in enumerate(np.array_split(order, n_bins)):
        if idx.size == 0:
            continue
        bins.append({
            "decile": k + 1, "n": int(idx.size),
            "confidence_min": float(conf[idx].min()), "confidence_max": float(conf[idx].max()),
            "confidence_mean": float(conf[idx].mean()),
            "afd_ed": float(err["ed"][idx].mean()), "afd_es": float(err["es"][idx].mean()),
            "n_errors": int(err["error"][idx].sum()),
            "error_rate": float(err["error"][idx].mean()),
            "n_errors_cyclic": int(err["error_cyclic"][idx].sum())})
    shares = {}
    for kind in ERROR_KINDS:
        total = int(err[kind].sum())
        shares[kind] = {"n_errors": total, "n_detections": len(records),
                        "auc": ranking_auc(conf, err[kind])}
        for frac in LEAST_CONFIDENT:
            k = int(math.ceil(frac * len(records)))
            caught = int(err[kind][order[:k]].sum())
            shares[kind][f"least_{round(frac * 100)}pct"] = {
                "n_detections": k, "n_errors": caught,
                "share_of_errors": caught / total if total else None,
                "best_possible_share": min(k, total) / total if total else None}
    return {"error": f"ED or ES more than {CONFIDENCE_FRAMES} frame(s) off (Eq. 5 frames); "
                     "error_cyclic: the same with cyclic differences (not the paper's)",
            "order": "least confident first; ties keep record order",
            "n_detections": len(records), "n_distinct_confidences": int(np.unique(conf).size),
            "deciles": bins, "shares": shares}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def markdown(cal: dict, title: str | None = None) -> str:
    """The calibration as a markdown table and two lines of shares."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| decile (least confident first) | detections | confidence | aFD ED | aFD ES "
              "| errors > 1 frame | error rate | cyclic errors* |",
              "|---:|---:|---|---:|---:|---:|---:|---:|"]
    for b in cal["deciles"]:
        lines.append(f"| {b['decile']} | {b['n']} | {b['confidence_min']:.3f}-"
                     f"{b['confidence_max']:.3f} | {b['afd_ed']:.2f} | {b['afd_es']:.2f} "
                     f"| {b['n_errors']} | {_pct(b['error_rate'])} | {b['n_errors_cyclic']} |")
    lines.append("")
    for kind, what in ERROR_KINDS.items():
        s = cal["shares"][kind]
        parts = [f"least confident {p[len('least_'):-len('pct')]} % "
                 f"({s[p]['n_detections']} detections): {s[p]['n_errors']} "
                 f"({_pct(s[p]['share_of_errors'])}; at most {_pct(s[p]['best_possible_share'])})"
                 for p in s if p.startswith("least_")]
        auc = "-" if s["auc"] is None else f"{s['auc']:.2f}"
        lines.append(f"- {what}: {s['n_errors']} of {s['n_detections']} detections; "
                     + "; ".join(parts) + f"; AUC {auc}")
    lines += ["", f"{cal['n_distinct_confidences']} distinct confidence values; \"at most\": "
              "the share the best possible ordering would reach; AUC: the chance that an error "
              "has a lower confidence than a correct detection (0.5: none better than chance); "
              "\\* cyclic difference min(|d|, T - |d|).", ""]
    return "\n".join(lines)


def plot(cal: dict, path, title: str = "") -> None:
    """PNG: error rate and aFD per confidence decile, least confident on the left."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tempregnet.outputs import save_figure_atomic
    bins = cal["deciles"]
    x = np.array([b["decile"] for b in bins])
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.bar(x, [100 * b["error_rate"] for b in bins], color="tab:red")
    a1.set_xlabel("confidence decile (1 = least confident)")
    a1.set_ylabel("detections with an error > 1 frame (%)")
    a1.set_xticks(x)
    a2.plot(x, [b["afd_ed"] for b in bins], "o-", label="aFD ED")
    a2.plot(x, [b["afd_es"] for b in bins], "s-", label="aFD ES")
    a2.set_xlabel("confidence decile (1 = least confident)")
    a2.set_ylabel("frames")
    a2.set_xticks(x)
    a2.legend(fontsize=8)
    for a, b in zip(x, bins):
        a1.text(a, 100 * b["error_rate"], f"{b['confidence_mean']:.2f}", ha="center",
                va="bottom", fontsize=6)
    a1.set_title("error rate (labels: mean confidence)", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=90)
    plt.close(fig)
