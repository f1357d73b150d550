"""What the tracker material does to particles: nuclear interactions and photon conversions.

The CMS tracker is 0.1-0.55 nuclear interaction lengths thick (most around |eta| ~ 1.5, where
its services cross to the endcap), so 10-40% of the hadrons of a jet interact before they
reach the calorimeters. An interaction replaces the hadron by a spray of softer secondaries
starting at the interaction point: soft charged secondaries curl up in the 3.8 T field and
never reach the calorimeter, the others arrive displaced, and part of the energy stays in
the nucleus. It is one reason why the pion tracking efficiency and the jet resolution are
worst where the tracker is thickest (CMS, JINST 9 (2014) P10009; JINST 12 (2017) P10003);
on the simulated sample it narrows, but does not close, the gap to CMS's endcap JER (README).

Columnar: one call handles a whole batch of events; secondaries are new particles whose
production vertex is the interaction point, so the tracking, calorimeter and particle-flow
steps treat them as they treat any other displaced particle.

Photons convert to e+e- pairs in the same material (1 - exp(-7/9 x/X0): 27% at |eta| = 0,
75% at |eta| ~ 1.6 where the tracker is 1.8 X0 thick). The legs bend in the field from the
conversion point: soft legs curl up and never reach the ECAL, the others arrive displaced in
phi, partly outside the jet. This moves photon energy out of jets where the material is
thickest (CMS PF reconstructs conversions, but measures their energy in the ECAL clusters the
legs reach, JINST 12 (2017) P10003 sec. 3.4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import NuclearInteractions, PhotonConversions

__all__ = ["Secondaries", "nuclear_interactions", "photon_conversions"]

ELECTRON = 11
PION_MASS = 0.13957
PI0 = 22  # a pi0 decays at once: its energy reaches the ECAL as photons


@dataclass
class Secondaries:
    """Secondaries of the hadrons that interacted, and which hadrons did."""

    interacted: (
        np.ndarray
    )  # indices (into the input particles) of the interacting hadrons
    early: np.ndarray  # per interacting hadron: too early for its track to be found
    parent: np.ndarray  # per secondary, the index of its parent in the input particles
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    pdg: np.ndarray
    vx: np.ndarray  # production vertex = interaction point [cm]
    vy: np.ndarray
    vz: np.ndarray
    r_m: np.ndarray  # transverse distance of the interaction point from the beam [m]


def interaction_probability(
    ni: NuclearInteractions, aeta: np.ndarray, r0_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Probability to interact before leaving the tracker, and the exit radius [m].

    The material lambda(|eta|) of the whole tracker is spread evenly in radius between the
    beam and the exit (the barrel radius, or the endcap at ``tracker_half_length_m``); a
    particle produced at r0 crosses the part beyond r0.
    """
    r_exit = _exit_radius(ni.tracker_radius_m, ni.tracker_half_length_m, aeta)
    lam = np.interp(aeta, ni.material_eta, ni.material_lambda, right=0.0)
    crossed = np.clip((r_exit - r0_m) / r_exit, 0.0, 1.0)
    return 1.0 - np.exp(-lam * crossed), r_exit


def _exit_radius(radius_m: float, half_length_m: float, aeta: np.ndarray) -> np.ndarray:
    """Transverse radius [m] where a straight line from the beam leaves the tracker."""
    return np.minimum(radius_m, half_length_m / np.maximum(np.sinh(aeta), 1e-6))


@dataclass
class _Points:
    """Particles that interact in the tracker material, and where."""

    idx: np.ndarray  # indices into the input particles
    # fraction of the crossed path before the point, uniform in [0, 1)
    depth: np.ndarray
    r_m: np.ndarray  # transverse distance of the point from the beam [m]
    x: np.ndarray  # the point [cm]
    y: np.ndarray
    z: np.ndarray
    direction: np.ndarray  # (N, 3) unit momentum vectors


def _points_in_material(
    probability, rng: np.random.Generator, momentum, vertex, mask, beam_xy
) -> _Points:
    """Draw which particles of ``mask`` interact and where: ``probability(aeta, r0_m)``
    gives (probability, exit radius); the point is uniform in radius over the part of the
    path crossed, on the particle's straight line."""
    px, py, pz, _ = momentum
    vx, vy, vz = vertex
    # kinematics of the candidates only: a batch with pile-up holds millions of particles
    cand = np.flatnonzero(mask)
    pt = np.hypot(px[cand], py[cand])
    moving = pt > 0
    cand, pt = cand[moving], pt[moving]
    aeta = np.abs(np.arcsinh(pz[cand] / np.maximum(pt, 1e-12)))
    r0 = np.hypot(vx[cand] - beam_xy[0], vy[cand] - beam_xy[1]) / 100.0
    prob, r_exit = probability(aeta, r0)
    hit = rng.random(len(cand)) < prob
    idx, r_exit, pt, r0 = cand[hit], r_exit[hit], pt[hit], r0[hit]
    depth = rng.random(len(idx))
    r_m = r0 + depth * np.maximum(r_exit - r0, 0.0)
    p = np.sqrt(pt**2 + pz[idx] ** 2)
    d = np.stack([px[idx], py[idx], pz[idx]], axis=1) / p[:, None]
    path_cm = 100.0 * (r_m - r0) * p / np.maximum(pt, 1e-12)
    x, y, z = (v[idx] + d[:, k] * path_cm for k, v in enumerate((vx, vy, vz)))
    return _Points(idx, depth, r_m, x, y, z, d)


def nuclear_interactions(
    ni: NuclearInteractions,
    rng: np.random.Generator,
    momentum: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    vertex: tuple[np.ndarray, np.ndarray, np.ndarray],
    hadron: np.ndarray,
    beam_xy: tuple[float, float] = (0.0, 0.0),
) -> Secondaries:
    """Let hadrons interact in the tracker material and return their secondaries.

    Parameters
    ----------
    momentum
        px, py, pz, E [GeV] of all particles of the batch.
    vertex
        Production vertex x, y, z [cm].
    hadron
        Mask of the particles that can interact (visible hadrons).
    beam_xy
        Beam-line position [cm]: radii are measured from it.

    Notes
    -----
    Each interaction point is uniform in radius over the material the hadron crosses. The
    nucleus keeps an exponentially distributed energy of mean ``invisible_gev`` (at most half
    of the hadron's); the rest goes to 2 + Poisson(slope ln(E/GeV)) secondaries sharing it
    uniformly (flat Dirichlet), each a pi0 (seen as one photon) with probability
    ``em_fraction``, else a charged pion of random sign, with an exponential momentum
    transverse to the parent of mean ``pt_rel_mean_gev``.
    """
    pts = _points_in_material(
        lambda aeta, r0: interaction_probability(ni, aeta, r0),
        rng, momentum, vertex, hadron, beam_xy,
    )  # fmt: skip
    idx, d = pts.idx, pts.direction
    n_par = len(idx)
    e_par = momentum[3][idx]
    invisible = np.minimum(rng.exponential(ni.invisible_gev, n_par), 0.5 * e_par)
    e_avail = e_par - invisible
    mult = 2 + rng.poisson(ni.multiplicity_log_slope * np.log(np.maximum(e_avail, 1.0)))
    parent_of = np.repeat(np.arange(n_par), mult)
    share = rng.exponential(1.0, len(parent_of))
    share /= np.bincount(parent_of, share, minlength=n_par)[parent_of]
    e_sec = share * e_avail[parent_of]
    is_pi0 = rng.random(len(parent_of)) < ni.em_fraction
    mass = np.where(is_pi0, 0.0, PION_MASS)
    keep = e_sec > mass + 1e-3  # a share below the pion mass stays in the nucleus
    parent_of, e_sec, is_pi0, mass = (
        parent_of[keep],
        e_sec[keep],
        is_pi0[keep],
        mass[keep],
    )
    p_sec = np.sqrt(e_sec**2 - mass**2)
    pt_rel = np.minimum(rng.exponential(ni.pt_rel_mean_gev, len(p_sec)), 0.9 * p_sec)
    p_long = np.sqrt(p_sec**2 - pt_rel**2)
    # orthonormal frame around the parent direction d: u = d x z (or x), w = d x u
    ref = np.where((np.abs(d[:, 2]) > 0.99)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    u = np.cross(d, ref)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(d, u)
    az = rng.uniform(-np.pi, np.pi, len(p_sec))
    dp, up, wp = d[parent_of], u[parent_of], w[parent_of]
    mom = (
        p_long[:, None] * dp
        + (pt_rel * np.cos(az))[:, None] * up
        + (pt_rel * np.sin(az))[:, None] * wp
    )
    sign = np.where(rng.random(len(p_sec)) < 0.5, 1, -1)
    pdg = np.where(is_pi0, PI0, 211 * sign).astype(np.int64)
    return Secondaries(
        interacted=idx,
        early=pts.depth < ni.track_loss_fraction,
        parent=idx[parent_of],
        px=mom[:, 0],
        py=mom[:, 1],
        pz=mom[:, 2],
        e=e_sec,
        pdg=pdg,
        vx=pts.x[parent_of],
        vy=pts.y[parent_of],
        vz=pts.z[parent_of],
        r_m=pts.r_m[parent_of],
    )


def conversion_probability(
    material: tuple[list[float], list[float]],
    conv: PhotonConversions,
    aeta: np.ndarray,
    r0_m: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Probability that a photon converts before leaving the tracker, and the exit radius.

    ``material`` is the tracker's (|eta| points, x/X0) table; pair production has a mean
    free path of 9/7 X0, and the material is spread evenly in radius as for
    :func:`interaction_probability`.
    """
    r_exit = _exit_radius(conv.tracker_radius_m, conv.tracker_half_length_m, aeta)
    x0 = np.interp(aeta, material[0], material[1], right=0.0)
    crossed = np.clip((r_exit - r0_m) / r_exit, 0.0, 1.0)
    return 1.0 - np.exp(-7.0 / 9.0 * x0 * crossed), r_exit


def bethe_heitler_fraction(rng: np.random.Generator, n: int) -> np.ndarray:
    """Energy fraction of the electron in a pair: dsigma/dx ~ 1 - 4/3 x (1 - x).

    The complete-screening limit of the Bethe-Heitler spectrum [PDG, "Passage of particles
    through matter", eq. 34.31], flat within a factor 3/2; sampled by rejection.
    """
    x = rng.random(n)
    todo = np.flatnonzero(rng.random(n) > 1.0 - 4.0 / 3.0 * x * (1.0 - x))
    while len(todo):
        x[todo] = rng.random(len(todo))
        todo = todo[rng.random(len(todo)) > 1.0 - 4.0 / 3.0 * x[todo] * (1.0 - x[todo])]
    return x


def photon_conversions(
    conv: PhotonConversions,
    material: tuple[list[float], list[float]],
    rng: np.random.Generator,
    momentum: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    vertex: tuple[np.ndarray, np.ndarray, np.ndarray],
    photon: np.ndarray,
    beam_xy: tuple[float, float] = (0.0, 0.0),
) -> Secondaries:
    """Convert photons in the tracker material and return their e+e- legs.

    Parameters are those of :func:`nuclear_interactions`; ``photon`` masks the particles
    that can convert. The conversion point is uniform in radius over the material crossed;
    the legs share the photon's momentum by :func:`bethe_heitler_fraction` and keep its
    direction (opening angle ~ m_e/E). ``interacted`` lists the converted photons, ``early``
    is all true (a photon has no track to lose).
    """
    pts = _points_in_material(
        lambda aeta, r0: conversion_probability(material, conv, aeta, r0),
        rng, momentum, vertex, photon, beam_xy,
    )  # fmt: skip
    idx, n = pts.idx, len(pts.idx)
    x = bethe_heitler_fraction(rng, n)
    share = np.concatenate([x, 1.0 - x])  # electrons first, then positrons
    two = np.concatenate([np.arange(n), np.arange(n)])
    return Secondaries(
        interacted=idx,
        early=np.ones(n, bool),
        parent=idx[two],
        px=share * momentum[0][idx][two],
        py=share * momentum[1][idx][two],
        pz=share * momentum[2][idx][two],
        e=share * momentum[3][idx][two],
        pdg=np.repeat(np.array([ELECTRON, -ELECTRON], np.int64), n),
        vx=pts.x[two],
        vy=pts.y[two],
        vz=pts.z[two],
        r_m=pts.r_m[two],
    )
