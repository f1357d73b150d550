"""Secondary vertices: inclusive vertex finding, fake vertices, association to jets.

True SVs come from displaced reconstructed tracks of the hard scatter grouped by their common
decay vertex (found with an efficiency, position smeared, significance cut); fake SVs are made
in any jet (no truth used) with a configurable rate from its two leading tracks with a random
small displacement, standing in for V0s, material interactions and random track crossings.
Each SV is associated with the nearest jet within dR < R, as PFNano's ``JetSVs`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import awkward as ak
import numpy as np

from .generator import _offsets

__all__ = [
    "Collection",
    "add_fakes_and_associate",
    "greedy_nearest",
    "secondary_vertices",
]

MASS_PI = 0.13957


@dataclass
class Collection:
    """Flat per-object arrays (``data``) of a batch of events with per-event ``offsets``."""

    data: dict[str, np.ndarray]
    offsets: np.ndarray

    @property
    def event(self) -> np.ndarray:
        """Event index of each object."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def __len__(self) -> int:
        return int(self.offsets[-1])


def secondary_vertices(
    det,
    rng,
    n_ev,
    t_ev,
    t_pt,
    t_eta,
    t_phi,
    tx,
    ty,
    tz,
    t_vtx,
    pv_rel,
    hs_xy,
    veto=None,
) -> Collection:
    """Inclusive SVs: displaced hard-scatter tracks grouped by their decay vertex.

    ``veto`` marks tracks that never enter the vertex finder (secondaries of nuclear
    interactions: the inclusive vertex finder rejects vertices on the tracker material).

    ``tx, ty`` are track production points relative to the true hard-scatter vertex in the
    transverse plane, ``pv_rel`` the reconstructed PV (x, y relative to that vertex, z
    absolute) and ``hs_xy`` the true vertex position, added back to the stored SV x, y.
    """
    cfg = det.secondary_vertices
    pv_x, pv_y, pv_z = pv_rel
    r = np.hypot(tx, ty)
    sel = (t_vtx < 0) & (r > 1e-4) & (t_pt > cfg.track_pt_min_gev)
    if veto is not None:
        sel &= ~veto
    idx = np.flatnonzero(sel)
    if len(idx) == 0:
        return Collection(_empty_sv(), np.zeros(n_ev + 1, np.int64))
    key = np.stack(
        [
            t_ev[idx].astype(np.float64),
            np.round(tx[idx], 7),
            np.round(ty[idx], 7),
            np.round(tz[idx], 7),
        ],
        axis=1,
    )
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    ntrk = np.bincount(inv, minlength=len(uniq))
    px = t_pt[idx] * np.cos(t_phi[idx])
    py = t_pt[idx] * np.sin(t_phi[idx])
    pz = t_pt[idx] * np.sinh(t_eta[idx])
    e = np.sqrt(px**2 + py**2 + pz**2 + MASS_PI**2)
    spx, spy, spz, se = (
        np.bincount(inv, weights=w, minlength=len(uniq)) for w in (px, py, pz, e)
    )
    ev = uniq[:, 0].astype(np.int64)
    res = cfg.position_res_cm
    x = uniq[:, 1] + res * rng.standard_normal(len(uniq))
    y = uniq[:, 2] + res * rng.standard_normal(len(uniq))
    z = uniq[:, 3] + 1.5 * res * rng.standard_normal(len(uniq))
    dxy = np.hypot(x - pv_x[ev], y - pv_y[ev])
    dz = z - pv_z[ev]
    dlen = np.sqrt(dxy**2 + dz**2)
    ok = (
        (ntrk >= cfg.min_tracks)
        & (dxy / res > cfg.min_dxy_sig)
        & (rng.random(len(uniq)) < cfg.efficiency)
    )
    spt = np.hypot(spx, spy)
    pmag = np.sqrt(spt**2 + spz**2)
    cosang = ((x - pv_x[ev]) * spx + (y - pv_y[ev]) * spy + dz * spz) / np.maximum(
        dlen * pmag, 1e-12
    )
    ndof = 2.0 * ntrk - 3.0
    data = {
        "pt": spt,
        "eta": np.arcsinh(spz / np.maximum(spt, 1e-9)),
        "phi": np.arctan2(spy, spx),
        "mass": np.sqrt(np.maximum(se**2 - pmag**2, 0.0)),
        "x": x + hs_xy[0][ev],
        "y": y + hs_xy[1][ev],
        "z": z,
        "ntracks": ntrk.astype(np.float64),
        "chi2": rng.chisquare(np.maximum(ndof, 1.0)) / np.maximum(ndof, 1.0),
        "ndof": ndof,
        "dxy": dxy,
        "dxySig": dxy / res,
        "dlen": dlen,
        "dlenSig": dlen / (res * 1.2),
        "pAngle": np.arccos(np.clip(cosang, -1.0, 1.0)),
    }
    data = {k: v[ok] for k, v in data.items()}
    return Collection(data, _offsets(np.bincount(ev[ok], minlength=n_ev)))


def _empty_sv() -> dict[str, np.ndarray]:
    names = (
        "pt",
        "eta",
        "phi",
        "mass",
        "x",
        "y",
        "z",
        "ntracks",
        "chi2",
        "ndof",
        "dxy",
        "dxySig",
        "dlen",
        "dlenSig",
        "pAngle",
    )
    return {n: np.zeros(0) for n in names}


def add_fakes_and_associate(
    cfg, radius, rng, svs, reco, jpt, jeta, jphi, cj, cand_idx, c, n, pv
):
    """Add fake SVs (two leading tracks of a jet, random displacement) and associate to jets.

    ``pv`` is the (x, y, z) of the reconstructed primary vertex per event [cm].
    """
    pv_x, pv_y, pv_z = pv
    nj = len(jpt)
    charged = c["charge"][cand_idx] != 0
    # two leading charged constituents per jet (constituents are pT-ordered within jets)
    ccj = cj[charged]
    ci = cand_idx[charged]
    first = np.r_[True, ccj[1:] != ccj[:-1]] if len(ccj) else np.zeros(0, bool)
    rank = np.arange(len(ccj)) - np.maximum.accumulate(
        np.where(first, np.arange(len(ccj)), 0)
    )
    n_ch = np.bincount(ccj, minlength=nj)
    fake_jets = np.flatnonzero((n_ch >= 2) & (rng.random(nj) < cfg.fake_rate_per_jet))
    is_fake_jet = np.zeros(nj, bool)
    is_fake_jet[fake_jets] = True
    pick = is_fake_jet[ccj] & (rank < 2)
    pj, pidx = ccj[pick], ci[pick]
    px, py, pz, e = _p4(c["pt"][pidx], c["eta"][pidx], c["phi"][pidx], c["mass"][pidx])
    sums = [
        np.bincount(pj, weights=w, minlength=nj)[fake_jets] for w in (px, py, pz, e)
    ]
    fpx, fpy, fpz, fe = sums
    fpt = np.hypot(fpx, fpy)
    fp = np.sqrt(fpt**2 + fpz**2)
    flen = rng.exponential(cfg.fake_dxy_cm, len(fake_jets))
    res = cfg.position_res_cm
    ev = reco["jet_event"][fake_jets]
    x, y = flen * fpx / np.maximum(fpt, 1e-9), flen * fpy / np.maximum(fpt, 1e-9)
    dz = flen * fpz / np.maximum(fpt, 1e-9)
    dxy, dlen = np.hypot(x, y), np.sqrt(x**2 + y**2 + dz**2)
    fake = {
        "pt": fpt,
        "eta": np.arcsinh(fpz / np.maximum(fpt, 1e-9)),
        "phi": np.arctan2(fpy, fpx),
        "mass": np.sqrt(np.maximum(fe**2 - fp**2, 0.0)),
        "x": pv_x[ev] + x,
        "y": pv_y[ev] + y,
        "z": pv_z[ev] + dz,
        "ntracks": np.full(len(ev), 2.0),
        "chi2": rng.chisquare(1, len(ev)),
        "ndof": np.ones(len(ev)),
        "dxy": dxy,
        "dxySig": dxy / res,
        "dlen": dlen,
        "dlenSig": dlen / (1.2 * res),
        "pAngle": np.abs(rng.normal(0, 0.05, len(ev))),
    }
    keep = fake["dxySig"] > cfg.min_dxy_sig
    sv_ev = np.concatenate([svs.event, ev[keep]])
    data = {k: np.concatenate([svs.data[k], fake[k][keep]]) for k in svs.data}
    order = np.argsort(sv_ev, kind="stable")
    sv_ev = sv_ev[order]
    data = {k: v[order] for k, v in data.items()}
    counts = np.bincount(sv_ev, minlength=n)
    # association: nearest jet within dR < R of the SV flight direction
    r_off = _offsets(np.bincount(reco["jet_event"], minlength=n))
    jet_of_sv = greedy_nearest(
        r_off,
        jeta,
        jphi,
        _offsets(counts),
        data["eta"],
        data["phi"],
        radius,
    )
    has = jet_of_sv >= 0
    sv_local = np.arange(len(sv_ev)) - _offsets(counts)[sv_ev]
    a_ev, a_jet, a_sv = sv_ev[has], jet_of_sv[has], sv_local[has]
    o = np.lexsort((a_sv, a_jet, a_ev))
    a_ev, a_jet, a_sv = a_ev[o], a_jet[o], a_sv[o]
    a_counts = np.bincount(a_ev, minlength=n)
    f32 = np.float32
    return {
        "SV": ak.zip({k: _jagged(v, counts, f32) for k, v in data.items()}),
        "JetSVs": ak.zip(
            {
                "jetIdx": _jagged(a_jet, a_counts, np.int32),
                "sVIdx": _jagged(a_sv, a_counts, np.int32),
            }
        ),
    }


def greedy_nearest(j_off, j_eta, j_phi, s_off, s_eta, s_phi, max_dr):
    """Per object of the second collection the index (in event) of the nearest jet within max_dr."""
    ev = np.repeat(np.arange(len(s_off) - 1), np.diff(s_off))
    nj = np.diff(j_off)[ev]
    rep = np.repeat(np.arange(len(ev)), nj)
    jj = np.repeat(j_off[ev], nj) + (
        np.arange(len(rep)) - np.repeat(_offsets(nj)[:-1], nj)
    )
    dr = np.hypot(s_eta[rep] - j_eta[jj], _wrap(s_phi[rep] - j_phi[jj]))
    best = np.full(len(ev), -1, np.int64)
    best_dr = np.full(len(ev), np.inf)
    np.minimum.at(best_dr, rep, dr)
    hit = (dr == best_dr[rep]) & (dr < max_dr)
    best[rep[hit]] = (jj - j_off[ev][rep])[hit]
    return best


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


def _jagged(values, counts, dtype) -> ak.Array:
    return ak.unflatten(np.asarray(values, dtype=dtype), counts)


def _p4(pt, eta, phi, mass):
    px, py = pt * np.cos(phi), pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + mass**2)
