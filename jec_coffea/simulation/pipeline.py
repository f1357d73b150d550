"""One batch of events through the whole chain: generation, pile-up, detector, jets, PFNano arrays.

:class:`EventSimulator` holds the Pythia instances, the pile-up library and the random
generator of one shard; :meth:`EventSimulator.run` turns ``n`` events into the PFNano
collections (awkward arrays keyed by collection name, as the writer expects) and times every
stage in CPU seconds (``time.process_time``: meaningful on a shared machine), which the
benchmark reports.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections import defaultdict
from contextlib import contextmanager

import awkward as ak
import numpy as np

from .config import SimulationConfig
from .detector import DETECTOR_STAGES, simulate_detector
from .generator import HardScatterGenerator, MinBiasLibrary, _offsets
from .reconstruction import (
    FLAVOUR_SCALE,
    GHOST_PT,
    cluster,
    flavour_from_ghosts,
    gen_sources,
    ghost_grid,
    ghosts_near_jets,
    greedy_match,
    grid_rho,
    p4_sources,
)
from .vertices import add_fakes_and_associate

__all__ = ["STAGES", "TIMED", "EventSimulator"]

STAGES = (
    "generation",
    "pileup",
    "detector",
    "clustering",
    "rho",
    "assembly",
    "writing",
)
"""Stages timed per batch (``writing`` is filled by the shard loop); ``timing`` also holds
the detector's sections (:data:`~.detector.DETECTOR_STAGES`), which add up to ``detector``."""
TIMED = (*STAGES, *DETECTOR_STAGES)
"""Every name :attr:`EventSimulator.timing` fills: the stages, then the detector's sections."""

PRUNE_MAX_MU = 20.0  # prune area ghosts only below this mean pile-up
PRUNE_MARGIN = 0.3  # ghosts kept within R + this of a pre-clustered jet
PRUNE_PT_FRACTION = 0.8  # pre-clustered jets considered: pT > this x the jet threshold
MATCH_DR = 0.2  # DESIGN.md: matched = genJetIdx AND dR < R/2
TARGET_PT_GEN = 20.0


def _jagged(values: np.ndarray, counts: np.ndarray, dtype) -> ak.Array:
    return ak.unflatten(np.asarray(values, dtype=dtype), counts)


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return pt, np.arcsinh(pz / np.maximum(pt, 1e-300)), np.arctan2(py, px)


def _wrap(x):
    return (x + np.pi) % (2 * np.pi) - np.pi


@contextmanager
def no_hugepage_advice():
    """Keep NumPy from advising transparent huge pages for its large arrays meanwhile.

    The detector allocates and frees many short-lived arrays of 10-30 MB per batch. With
    huge-page advice every fresh one is faulted in as 2 MB pages, and where the kernel has to
    compact memory for them (virtual machines, ``defrag = madvise``) a 30 MB concatenation
    takes 80 ms instead of 3 ms: on the reference VM the detector stage of a 400-event batch
    ran 1.6 times faster without it (docs/performance.md). Outputs are unchanged; NumPy's
    setting is restored on exit.
    """
    toggle = getattr(np._core.multiarray, "_set_madvise_hugepage", None)
    if toggle is None:
        yield
        return
    before = toggle(False)
    try:
        yield
    finally:
        toggle(before)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit
_HEAP_KEPT = 2 * 1024**3


def _glibc():
    """glibc's C library (for ``mallopt``), or None elsewhere (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def heap_reuse():
    """Let glibc's malloc keep freed memory for the next arrays meanwhile.

    glibc serves allocations above its mmap threshold (128 kB, rising with the frees to at
    most 32 MB) with a fresh ``mmap`` and gives the heap's top back to the system beyond
    twice that, so the hundreds of 1-80 MB temporary arrays of a batch are faulted in page by
    page again and again: 1.4M page faults and 2.4 s of system time per 800 events with two
    shards on the reference VM's two cores. Inside, arrays up to 32 MB come from the heap and
    up to 2 GB of freed heap is kept for the next, across batches: wrap a loop over batches
    (a shard), not one batch. On exit the heap is trimmed and the thresholds stay where
    glibc's own rule takes them after large frees (32 MB, trim above 64 MB); glibc has no call
    that hands the choice back to that rule. Outputs are unchanged (allocation only).
    """
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
    libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_KEPT)
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
        libc.malloc_trim(0)


class EventSimulator:
    """Simulate batches of events for one shard.

    Parameters
    ----------
    config
        Generator, pile-up and detector settings.
    seed, shard
        The run seed and the shard number (the shard's random streams derive from both).
    library
        The minimum-bias library (``None`` without pile-up).
    """

    def __init__(
        self,
        config: SimulationConfig,
        seed: int,
        shard: int,
        library: MinBiasLibrary | None,
    ) -> None:
        self.config = config
        self.seed, self.shard = seed, shard
        self.rng = np.random.default_rng([seed, shard, 0xD37])
        self.hard = HardScatterGenerator(config.generator, seed * 1000 + shard)
        self.library = library
        self.timing: dict[str, float] = defaultdict(float)
        # Pruning ghosts far from pre-clustered jets pays off only when few jets pass the
        # threshold; at flat mu 0-70 (~70 jets/event above 8 GeV) it costs more than it saves
        # (bench: clustering 15.8 vs 13.5 ms/event CPU), so it is on for low pile-up only.
        self.prune_ghosts = config.pileup.mean_mu < PRUNE_MAX_MU
        self.n_events = 0

    @contextmanager
    def _timer(self, stage: str):
        t0 = time.process_time()
        yield
        self.timing[stage] += time.process_time() - t0

    def _pileup_counts(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pu = self.config.pileup
        if pu.profile == "none" or self.library is None:
            return np.zeros(n), np.zeros(n, np.int64)
        mu = (
            np.full(n, pu.mu)
            if pu.profile == "fixed"
            else self.rng.uniform(pu.mu_min, pu.mu_max, n)
        )
        return mu, self.rng.poisson(mu)

    def run(self, n: int) -> tuple[dict[str, ak.Array], np.ndarray]:
        """Simulate ``n`` events.

        Returns
        -------
        arrays, n_target
            PFNano branches (collections as awkward records, plus flat event branches) and,
            per event, the number of jets gen-matched with pT_gen >= 20 GeV.
        """
        with no_hugepage_advice():
            return self._run(n)

    def _run(self, n: int) -> tuple[dict[str, ak.Array], np.ndarray]:
        det = self.config.detector
        rng = self.rng
        with self._timer("generation"):
            gen = self.hard.generate(n)
        n = gen.stable.n_events
        with self._timer("pileup"):
            mu, n_pu = self._pileup_counts(n)
            if n_pu.sum() > 0:
                pu, inter, vz = self.library.overlay(
                    n_pu, rng, self.config.pileup.beamspot_sigma_z_cm
                )
            else:
                pu, inter, vz = None, None, None
        with self._timer("detector"):
            out = simulate_detector(
                gen.stable,
                pu,
                inter,
                vz,
                n_pu,
                det,
                rng,
                self.config.pileup.beamspot_sigma_z_cm,
                (
                    self.config.pileup.beamspot_x_cm,
                    self.config.pileup.beamspot_y_cm,
                    self.config.pileup.beamspot_sigma_xy_cm,
                ),
                timing=self.timing,
            )
        cand = out.candidates
        c = cand.data
        cev = cand.event
        with self._timer("rho"):
            rho = grid_rho(cev, c["pt"], c["eta"], c["phi"], n, det.jets)
        with self._timer("clustering"):
            chs = np.flatnonzero(c["chs"])
            cand_src = p4_sources(
                cev[chs], c["pt"][chs], c["eta"][chs], c["phi"][chs], c["mass"][chs]
            )
            gy, gphi, garea = ghost_grid(n, det.jets, rng)
            ghosts_src = self._ghosts(cand_src, gy, gphi, n)
            fg = gen.ghosts
            s = FLAVOUR_SCALE
            flav_src = (fg.event, fg.px * s, fg.py * s, fg.pz * s, fg.e * s)
            reco = cluster(
                [cand_src, ghosts_src, flav_src],
                n,
                det.jets.radius,
                det.jets.pt_min_gev,
                explicit_ghosts=True,
            )
            g_sources, nu = gen_sources(gen.stable, fg)
            genj = cluster(g_sources, n, det.jets.radius, det.jets.genjet_pt_min_gev)
        with self._timer("assembly"):
            arrays, n_target = self._assemble(
                gen, out, chs, reco, genj, nu, garea, rho, mu, n_pu
            )
        self.n_events += n
        return arrays, n_target

    def _ghosts(self, cand_src, gy, gphi, n):
        """Area ghosts of every event, restricted to those that can join a stored jet."""
        cfg = self.config.detector.jets
        n_per = gy.shape[1]
        gy, gphi = gy.ravel(), gphi.ravel()
        if self.prune_ghosts:
            pre = cluster([cand_src], n, cfg.radius, PRUNE_PT_FRACTION * cfg.pt_min_gev)
            jpt = np.hypot(pre["jet_px"], pre["jet_py"])
            jy = 0.5 * np.log(
                (pre["jet_E"] + pre["jet_pz"]) / (pre["jet_E"] - pre["jet_pz"])
            )
            jphi = np.arctan2(pre["jet_py"], pre["jet_px"])
            del jpt
            keep = ghosts_near_jets(
                np.arange(n + 1) * n_per, gy, gphi, _offsets(pre["jet_counts"]), jy, jphi,
                cfg.radius + PRUNE_MARGIN,
            )  # fmt: skip
        else:
            keep = np.ones(len(gy), bool)
        gev = np.repeat(np.arange(n), n_per)[keep]
        gy, gphi = gy[keep], gphi[keep]
        gpt = np.full(len(gy), GHOST_PT)
        return (
            gev,
            gpt * np.cos(gphi),
            gpt * np.sin(gphi),
            gpt * np.sinh(gy),
            gpt * np.cosh(gy),
        )

    def _assemble(self, gen, out, chs, reco, genj, nu, garea, rho, mu, n_pu):
        """Build the PFNano collections of a batch from the clustering outputs."""
        det = self.config.detector
        rng = self.rng
        n = gen.stable.n_events
        c = out.candidates.data
        fg = gen.ghosts
        # ---- reco jets ----
        nj = len(reco["jet_event"])
        jpt, jeta, jphi = _eta_phi(reco["jet_px"], reco["jet_py"], reco["jet_pz"])
        je = reco["jet_E"]
        jmass = np.sqrt(np.maximum(je**2 - jpt**2 - reco["jet_pz"] ** 2, 0.0))
        src, cidx, cjet = reco["c_source"], reco["c_index"], reco["c_jet"]
        area = np.bincount(cjet[src == 1], minlength=nj) * garea
        fsel = src == 2
        fpt = np.hypot(fg.px, fg.py)[cidx[fsel]]
        had, par = flavour_from_ghosts(
            cjet[fsel], gen.ghost_kind[cidx[fsel]], fg.pdg[cidx[fsel]], fpt, nj
        )
        csel = src == 0
        cj = cjet[csel]
        cand_idx = chs[cidx[csel]]
        # order constituents by jet, then decreasing pT
        order = np.lexsort((-c["pt"][cand_idx], cj))
        cj, cand_idx = cj[order], cand_idx[order]
        ncons = np.bincount(cj, minlength=nj)
        # pile-up offset truth: sum over constituents of pT x pile-up share (detector.py)
        pt_offset = np.bincount(
            cj, weights=c["pt"][cand_idx] * c["pu_frac"][cand_idx], minlength=nj
        )
        pid = np.abs(c["pdgId"][cand_idx])
        ce = np.sqrt(
            (c["pt"][cand_idx] * np.cosh(c["eta"][cand_idx])) ** 2
            + c["mass"][cand_idx] ** 2
        )

        def frac(ids):
            return np.bincount(
                cj, weights=np.where(np.isin(pid, ids), ce, 0.0), minlength=nj
            ) / np.maximum(je, 1e-9)

        chHEF, neHEF, chEmEF, neEmEF, muEF = (
            frac((211,)),
            frac((130, 1)),
            frac((11,)),
            frac((22, 2)),
            frac((13,)),
        )
        n_ele = np.bincount(cj, weights=(pid == 11), minlength=nj).astype(np.int32)
        n_mu = np.bincount(cj, weights=(pid == 13), minlength=nj).astype(np.int32)
        n_ch = np.bincount(cj, weights=(c["charge"][cand_idx] != 0), minlength=nj)
        n_neu = ncons - n_ch
        jet_id = _jet_id(
            np.abs(jeta), neHEF, neEmEF, chHEF, chEmEF, muEF, ncons, n_ch, n_neu
        )
        # ---- gen jets ----
        ng = len(genj["jet_event"])
        gpt, geta, gphi = _eta_phi(genj["jet_px"], genj["jet_py"], genj["jet_pz"])
        gmass = np.sqrt(
            np.maximum(genj["jet_E"] ** 2 - gpt**2 - genj["jet_pz"] ** 2, 0.0)
        )
        gsrc, gidx = genj["c_source"], genj["c_index"]
        gjet = genj["c_jet"]
        gf = gsrc == 1
        g_had, g_par = flavour_from_ghosts(
            gjet[gf],
            gen.ghost_kind[gidx[gf]],
            fg.pdg[gidx[gf]],
            np.hypot(fg.px, fg.py)[gidx[gf]],
            ng,
        )
        gn = gsrc == 2
        nupx = np.bincount(gjet[gn], weights=nu["px"][gidx[gn]], minlength=ng)
        nupy = np.bincount(gjet[gn], weights=nu["py"][gidx[gn]], minlength=ng)
        g_nu = np.hypot(nupx, nupy)
        # ---- matching ----
        r_off = _offsets(reco["jet_counts"])
        g_off = _offsets(genj["jet_counts"])
        gidx_match = greedy_match(r_off, jeta, jphi, g_off, geta, gphi, 2 * MATCH_DR)
        ok = gidx_match >= 0
        gglob = np.where(ok, g_off[reco["jet_event"]] + np.maximum(gidx_match, 0), 0)
        dr = np.hypot(
            jeta - geta[gglob] if ng else 0.0, _wrap(jphi - gphi[gglob]) if ng else 0.0
        )
        target = (
            ok & (dr < MATCH_DR) & (gpt[gglob] >= TARGET_PT_GEN)
            if ng
            else np.zeros(nj, bool)
        )
        n_target = np.bincount(reco["jet_event"][target], minlength=n)
        # ---- secondary vertices: true + fakes, association to jets ----
        sv = add_fakes_and_associate(
            det.secondary_vertices, det.jets.radius, rng, out.svs, reco,
            jpt, jeta, jphi, cj, cand_idx, c, n, (out.pv_x, out.pv_y, out.pv_z),
        )  # fmt: skip
        # ---- PFCands = constituents of stored jets, in jet order ----
        jcount = reco["jet_counts"]
        cand_counts = np.bincount(reco["jet_event"], weights=ncons, minlength=n).astype(
            np.int64
        )
        cand_off = _offsets(cand_counts)
        cand_event = np.repeat(np.arange(n), cand_counts)
        local_jet = cj - r_off[reco["jet_event"][cj]]
        f32 = np.float32
        pf = {
            k: _jagged(
                c[k][cand_idx],
                cand_counts,
                c[k].dtype if c[k].dtype != np.float64 else f32,
            )
            for k in (
                "pt",
                "eta",
                "phi",
                "mass",
                "charge",
                "pdgId",
                "d0",
                "d0Err",
                "dz",
                "dzErr",
                "puppiWeight",
                "pvAssocQuality",
                "lostInnerHits",
                "trkChi2",
            )
        }
        jpf = {
            "jetIdx": _jagged(local_jet, cand_counts, np.int32),
            "pFCandsIdx": _jagged(
                np.arange(len(cand_idx)) - cand_off[cand_event], cand_counts, np.int32
            ),
        }
        jets = {
            "pt": (jpt, f32),
            "eta": (jeta, f32),
            "phi": (jphi, f32),
            "mass": (jmass, f32),
            "area": (area, f32),
            "rawFactor": (np.zeros(nj), f32),
            "nConstituents": (ncons, np.int32),
            "chHEF": (chHEF, f32),
            "neHEF": (neHEF, f32),
            "chEmEF": (chEmEF, f32),
            "neEmEF": (neEmEF, f32),
            "muEF": (muEF, f32),
            "nElectrons": (n_ele, np.int32),
            "nMuons": (n_mu, np.int32),
            "jetId": (jet_id, np.int32),
            "ptOffsetTruth": (pt_offset, f32),
            "genJetIdx": (gidx_match, np.int32),
            "hadronFlavour": (had, np.int32),
            "partonFlavour": (par, np.int32),
        }
        genjets = {
            "pt": (gpt, f32),
            "eta": (geta, f32),
            "phi": (gphi, f32),
            "mass": (gmass, f32),
            "hadronFlavour": (g_had, np.uint8),
            "partonFlavour": (g_par, np.int16),
            "neutrinoPt": (g_nu, f32),
        }
        hard = gen.hard
        hpt, heta, hphi = _eta_phi(hard.px, hard.py, hard.pz)
        hmass = np.sqrt(np.maximum(hard.e**2 - hpt**2 - hard.pz**2, 0.0))
        hcount = np.diff(hard.offsets)
        genpart = {
            "pt": (hpt, f32),
            "eta": (heta, f32),
            "phi": (hphi, f32),
            "mass": (hmass, f32),
            "pdgId": (hard.pdg, np.int32),
            "status": (np.full(len(hpt), 23), np.int32),
            "statusFlags": (np.full(len(hpt), 1 | 128 | 256), np.int32),
            "genPartIdxMother": (np.full(len(hpt), -1), np.int32),
        }
        ev_ids = self._event_ids(n)
        arrays = {
            "run": np.full(n, 1, np.uint32),
            "luminosityBlock": np.full(n, self.shard + 1, np.uint32),
            "event": ev_ids,
            "genWeight": gen.weight.astype(f32),
            "fixedGridRhoFastjetAll": rho.astype(f32),
            "PV_npvs": out.npvs.astype(np.int32),
            "PV_npvsGood": out.npvs.astype(np.int32),
            "PV_x": out.pv_x.astype(f32),
            "PV_y": out.pv_y.astype(f32),
            "PV_z": out.pv_z.astype(f32),
            "Pileup_nTrueInt": np.asarray(mu, f32),
            "Pileup_nPU": np.asarray(n_pu, np.int32),
            "Jet": ak.zip({k: _jagged(v, jcount, t) for k, (v, t) in jets.items()}),
            "GenJet": ak.zip(
                {k: _jagged(v, genj["jet_counts"], t) for k, (v, t) in genjets.items()}
            ),
            "GenPart": ak.zip(
                {k: _jagged(v, hcount, t) for k, (v, t) in genpart.items()}
            ),
            "PFCands": ak.zip(pf),
            "JetPFCands": ak.zip(jpf),
            "SV": sv["SV"],
            "JetSVs": sv["JetSVs"],
        }
        return arrays, n_target

    def _event_ids(self, n: int) -> np.ndarray:
        """Unique event numbers: seed in the high 32 bits, shard in the next 8, counter below."""
        base = (np.uint64(self.seed % 2**31) << np.uint64(32)) | (
            np.uint64(self.shard % 256) << np.uint64(24)
        )
        return base + np.arange(
            self.n_events + 1, self.n_events + n + 1, dtype=np.uint64
        )


def _jet_id(aeta, nhf, nemf, chf, cemf, muf, ncons, nch, nneu):
    """NanoAOD Jet_jetId for UL 2018 AK4 CHS: bit 1 tight, bit 2 tight lepton veto."""
    c1 = aeta <= 2.6
    c2 = (aeta > 2.6) & (aeta <= 2.7)
    c3 = (aeta > 2.7) & (aeta <= 3.0)
    c4 = aeta > 3.0
    tight = (
        (c1 & (nhf < 0.90) & (nemf < 0.90) & (ncons > 1) & (chf > 0) & (nch > 0))
        | (c2 & (nhf < 0.90) & (nemf < 0.99) & (nch > 0))
        | (c3 & (nemf > 0.01) & (nemf < 0.99) & (nneu > 1))
        | (c4 & (nhf > 0.2) & (nemf < 0.90) & (nneu > 10))
    )
    lepveto = tight & (~(c1 | c2) | ((muf < 0.8) & (cemf < 0.8)))
    return (tight * 2 + lepveto * 4).astype(np.int32)
