"""Pythia 8 hard-scatter events and the minimum-bias pile-up library, as flat numpy arrays.

Pythia's ``nextBatch`` returns a whole batch of events as one awkward array, so no Python
loops over particles are needed: everything downstream works on flat arrays plus per-event
offsets (:class:`Particles`). The hard scatter mixes channels (inclusive hard QCD, hard
b-bbar, hard c-cbar) with configurable fractions, each with a pT-hat bias whose inverse is
the event weight. Pile-up events come from a library of ``SoftQCD:inelastic`` events that is
generated once, cached on disk keyed by its settings and seed, and re-used with a random phi
rotation, an eta flip and a new vertex z (the reuse factor is reported).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, fields
from pathlib import Path

import awkward as ak
import numpy as np

from .. import extras
from .config import GeneratorConfig, PileupConfig

__all__ = [
    "GenBatch",
    "HardScatterGenerator",
    "MinBiasLibrary",
    "Particles",
    "cache_dir",
]

log = logging.getLogger(__name__)

MM_TO_CM = 0.1
NEUTRINOS = (12, 14, 16)


@dataclass
class Particles:
    """Flat particle arrays of a batch of events.

    ``offsets`` has length n_events + 1; particle ``i`` belongs to the event ``e`` with
    ``offsets[e] <= i < offsets[e+1]``. Momenta in GeV, production vertex (``vx, vy, vz``) in
    cm relative to the nominal interaction point of the event (0, 0, 0).
    """

    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pdg: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray
    offsets: np.ndarray

    @property
    def n_events(self) -> int:
        """Number of events."""
        return len(self.offsets) - 1

    @property
    def event(self) -> np.ndarray:
        """Event index of every particle (int64)."""
        return np.repeat(np.arange(self.n_events), np.diff(self.offsets))

    def select(self, mask: np.ndarray) -> Particles:
        """Keep the particles where ``mask`` is true (offsets recomputed)."""
        counts = np.bincount(self.event[mask], minlength=self.n_events)
        arrays = {
            f.name: getattr(self, f.name)[mask]
            for f in fields(self)
            if f.name != "offsets"
        }
        return Particles(**arrays, offsets=_offsets(counts))

    def take_events(self, idx: np.ndarray) -> Particles:
        """Particles of the events ``idx`` (in that order; repeats allowed)."""
        starts = self.offsets[idx]
        counts = self.offsets[idx + 1] - starts
        flat = _ranges(starts, counts)
        arrays = {
            f.name: getattr(self, f.name)[flat]
            for f in fields(self)
            if f.name != "offsets"
        }
        return Particles(**arrays, offsets=_offsets(counts))


@dataclass
class GenBatch:
    """One batch of hard-scatter events.

    ``stable`` are the final-state particles (neutrinos included), ``ghosts`` the flavour
    ghosts (weakly decaying b and c hadrons and end-of-shower partons; ``pdg`` holds the
    particle id and ``ghost_kind`` 5 = b hadron, 4 = c hadron, 0 = parton), ``hard`` the
    outgoing partons of the hard process (Pythia status 23) for the minimal GenPart.
    """

    stable: Particles
    ghosts: Particles
    ghost_kind: np.ndarray
    hard: Particles
    weight: np.ndarray
    channel: np.ndarray
    pthat: np.ndarray


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for all pairs, without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    off = _offsets(counts)
    return np.repeat(np.asarray(starts, dtype=np.int64) - off[:-1], counts) + np.arange(
        total
    )


def _heavy_quark(pdg: np.ndarray) -> np.ndarray:
    """Heaviest quark content of hadrons: 5 for b hadrons, 4 for c hadrons, else 0."""
    a = np.abs(pdg)
    q1, q2, q3 = (a // 1000) % 10, (a // 100) % 10, (a // 10) % 10
    is_hadron = (a > 100) & (a < 10000)
    meson = is_hadron & (q1 == 0)
    heavy = np.where(meson, np.maximum(q2, q3), np.maximum(np.maximum(q1, q2), q3))
    heavy = np.where(is_hadron, heavy, 0)
    return np.where(heavy >= 5, 5, np.where(heavy == 4, 4, 0))


def _particles_from(prt: ak.Array, mask: ak.Array) -> Particles:
    sel = prt[mask]
    counts = ak.to_numpy(ak.num(sel))
    p = sel.p
    v = sel.vProd

    def flat(x, fill=0.0):
        return ak.to_numpy(ak.fill_none(ak.flatten(x), fill)).astype(np.float64)

    return Particles(
        px=flat(p.px),
        py=flat(p.py),
        pz=flat(p.pz),
        e=flat(p.e),
        pdg=ak.to_numpy(ak.flatten(sel.id)).astype(np.int32),
        vx=flat(v.px) * MM_TO_CM,
        vy=flat(v.py) * MM_TO_CM,
        vz=flat(v.pz) * MM_TO_CM,
        offsets=_offsets(counts),
    )


def _make_pythia(lines: list[str], seed: int):
    pythia8 = extras.pythia8()
    py = pythia8.Pythia("", False)
    for line in [
        "Print:quiet = on",
        "Next:numberCount = 0",
        "Next:numberShowEvent = 0",
        "Random:setSeed = on",
        f"Random:seed = {int(seed) % 900_000_000 + 1}",
        *lines,
    ]:
        if not py.readString(line):
            msg = f"Pythia rejected the setting {line!r}"
            raise ValueError(msg)
    if not py.init():
        msg = f"Pythia initialisation failed with settings {lines}"
        raise RuntimeError(msg)
    return py


class HardScatterGenerator:
    """Hard-QCD events from several Pythia channels, mixed by their configured fractions.

    Parameters
    ----------
    config
        Generator settings.
    seed
        Seed of this generator (each channel gets a derived Pythia seed).
    """

    def __init__(self, config: GeneratorConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng([seed, 0x6E6])
        common = [
            f"Beams:eCM = {config.sqrt_s_gev}",
            f"PhaseSpace:pTHatMin = {config.pthat_min_gev}",
            "ParticleDecays:limitCylinder = on",
            f"ParticleDecays:xyMax = {config.decay_xy_max_mm}",
            f"ParticleDecays:zMax = {config.decay_z_max_mm}",
            *config.extra_settings,
        ]
        if config.bias_power > 0:
            common += [
                "PhaseSpace:bias2Selection = on",
                f"PhaseSpace:bias2SelectionPow = {config.bias_power}",
                f"PhaseSpace:bias2SelectionRef = {config.bias_ref_gev}",
            ]
        fr = np.array([c.fraction for c in config.channels], dtype=float)
        self.fractions = fr / fr.sum()
        self.pythias = [
            _make_pythia(common + ch.settings, seed * 7919 + 101 * i)
            for i, ch in enumerate(config.channels)
        ]

    def generate(self, n: int) -> GenBatch:
        """Generate ``n`` events (channels drawn per event, order shuffled)."""
        n_per = self.rng.multinomial(n, self.fractions)
        parts = []
        for ich, (py, k) in enumerate(zip(self.pythias, n_per, strict=True)):
            if k == 0:
                continue
            batch = py.nextBatch(int(k), "skip")
            parts.append((ich, batch))
        channel = np.concatenate([np.full(len(b), i, np.int8) for i, b in parts])
        batch = ak.concatenate([b for _, b in parts])
        order = self.rng.permutation(len(batch))
        return self._convert(batch[order], channel[order])

    @staticmethod
    def _convert(batch: ak.Array, channel: np.ndarray) -> GenBatch:
        prt = batch.prt
        status = prt.status
        pid = prt.id
        stable = _particles_from(prt, status > 0)
        # flavour ghosts: weakly decaying heavy hadrons (no heavy hadron of the same flavour
        # among the daughters) and end-of-shower partons (quarks/gluons whose first
        # daughter is not a parton), as CMS's HadronAndPartonSelector does for Pythia 8.
        counts = ak.to_numpy(ak.num(pid))
        off = _offsets(counts)
        flat_id = ak.to_numpy(ak.flatten(pid))
        heavy = _heavy_quark(flat_id)
        base = np.repeat(off[:-1], counts)
        n = len(flat_id)
        d1 = ak.to_numpy(ak.flatten(prt.daughter1)).astype(np.int64)
        d2 = ak.to_numpy(ak.flatten(prt.daughter2)).astype(np.int64)
        d1g = np.clip(np.where(d1 > 0, base + d1, -1), -1, n - 1)
        d2g = np.clip(np.where(d2 > 0, base + d2, -1), -1, n - 1)
        heavy_d1 = np.where(d1g >= 0, heavy[d1g], 0)
        heavy_d2 = np.where(d2g >= 0, heavy[d2g], 0)
        last_heavy = (heavy > 0) & (heavy_d1 != heavy) & (heavy_d2 != heavy)
        apid = np.abs(flat_id)
        is_parton = ((apid >= 1) & (apid <= 5)) | (apid == 21)
        d1_parton = np.where(
            d1g >= 0,
            np.isin(np.abs(flat_id[np.maximum(d1g, 0)]), (1, 2, 3, 4, 5, 21)),
            False,
        )
        flat_status = ak.to_numpy(ak.flatten(status))
        end_parton = is_parton & ~d1_parton & (flat_status < 0) & (d1g >= 0)
        ghost_mask = ak.unflatten(last_heavy | end_parton, counts)
        ghosts = _particles_from(prt, ghost_mask)
        kind_flat = np.where(last_heavy, heavy, 0)[last_heavy | end_parton].astype(
            np.int8
        )
        hard = _particles_from(prt, abs(status) == 23)
        info = batch.info
        weights = ak.to_numpy(ak.firsts(info.weights))
        weight = np.where(np.isfinite(weights), weights, 1.0)
        pthat = np.sqrt(ak.to_numpy(info.pT2Hat))
        return GenBatch(stable, ghosts, kind_flat, hard, weight, channel, pthat)


def cache_dir(kind: str = "minbias") -> Path:
    """Folder for cached files of one kind: minimum-bias libraries, built native code.

    Under ``JEC_COFFEA_CACHE``, or ~/.cache/jec-coffea.
    """
    root = os.environ.get("JEC_COFFEA_CACHE") or Path.home() / ".cache" / "jec-coffea"
    return Path(root) / kind


class MinBiasLibrary:
    """A library of SoftQCD:inelastic events, cached on disk, re-used for pile-up.

    Parameters
    ----------
    particles
        Stable particles of the library events (neutrinos included).
    """

    def __init__(self, particles: Particles) -> None:
        self.particles = particles
        self.n_drawn = 0

    @staticmethod
    def key(gen: GeneratorConfig, pileup: PileupConfig, seed: int) -> str:
        """Cache key: hash of the settings that change the library, and the seed."""
        text = json.dumps(
            {
                "sqrt_s": gen.sqrt_s_gev,
                "decay_xy": gen.decay_xy_max_mm,
                "decay_z": gen.decay_z_max_mm,
                "n": pileup.library_size,
                "seed": seed,
                "version": 2,
            },
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def load_or_generate(
        cls, gen: GeneratorConfig, pileup: PileupConfig, seed: int
    ) -> MinBiasLibrary:
        """Load the cached library for these settings or generate and cache it."""
        path = cache_dir() / f"minbias_{cls.key(gen, pileup, seed)}.npz"
        if path.is_file():
            try:
                with np.load(path) as data:
                    return cls(Particles(**{k: data[k] for k in data.files}))
            except (OSError, ValueError, KeyError):
                log.warning("cached min-bias library %s unreadable; regenerating", path)
        log.info(
            "generating %d minimum-bias events for the pile-up library",
            pileup.library_size,
        )
        py = _make_pythia(
            [
                f"Beams:eCM = {gen.sqrt_s_gev}",
                "SoftQCD:inelastic = on",
                "ParticleDecays:limitCylinder = on",
                f"ParticleDecays:xyMax = {gen.decay_xy_max_mm}",
                f"ParticleDecays:zMax = {gen.decay_z_max_mm}",
            ],
            seed * 31 + 17,
        )
        chunks = []
        left = pileup.library_size
        while left > 0:
            k = min(left, 2000)
            b = py.nextBatch(k, "skip")
            prt = b.prt
            chunks.append(_particles_from(prt, prt.status > 0))
            left -= len(b)
        lib = cls(_concat(chunks))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(
            tmp, **{f.name: getattr(lib.particles, f.name) for f in fields(Particles)}
        )
        Path(tmp).replace(path)
        return lib

    @property
    def size(self) -> int:
        """Number of events in the library."""
        return self.particles.n_events

    def overlay(
        self, n_pu: np.ndarray, rng: np.random.Generator, sigma_z_cm: float
    ) -> tuple[Particles, np.ndarray, np.ndarray]:
        """Pile-up particles for events with ``n_pu`` interactions each.

        Each interaction is a random library event, rotated in phi, flipped in eta with
        probability 1/2 and shifted to a vertex z drawn from the luminous region.

        Returns
        -------
        particles, interaction, vertex_z
            Particles per *hard-scatter event* (offsets by event), positions relative to the
            nominal interaction point; per particle the index of its pile-up interaction in
            the flat list of interactions; per interaction its vertex z [cm].
        """
        n_int = int(n_pu.sum())
        self.n_drawn += n_int
        idx = rng.integers(0, self.size, n_int)
        lib = self.particles.take_events(idx)
        per_int = np.diff(lib.offsets)
        inter = np.repeat(np.arange(n_int), per_int)
        rot = rng.uniform(-np.pi, np.pi, n_int)[inter]
        flip = np.where(rng.random(n_int) < 0.5, -1.0, 1.0)[inter]
        z0 = rng.normal(0.0, sigma_z_cm, n_int)
        c, s = np.cos(rot), np.sin(rot)
        px = c * lib.px - s * lib.py
        py = s * lib.px + c * lib.py
        vx = c * lib.vx - s * lib.vy
        vy = s * lib.vx + c * lib.vy
        event_of_int = np.repeat(np.arange(len(n_pu)), n_pu)
        counts = np.bincount(event_of_int[inter], minlength=len(n_pu))
        out = Particles(
            px=px,
            py=py,
            pz=lib.pz * flip,
            e=lib.e,
            pdg=lib.pdg,
            vx=vx,
            vy=vy,
            vz=lib.vz * flip + z0[inter],
            offsets=_offsets(counts),
        )
        return out, inter, z0

    def reuse_factor(self) -> float:
        """Mean number of times each library event has been used so far."""
        return self.n_drawn / max(self.size, 1)


def _concat(chunks: list[Particles]) -> Particles:
    arrays = {}
    for f in fields(Particles):
        if f.name == "offsets":
            continue
        arrays[f.name] = np.concatenate([getattr(c, f.name) for c in chunks])
    counts = np.concatenate([np.diff(c.offsets) for c in chunks])
    return Particles(**arrays, offsets=_offsets(counts))
