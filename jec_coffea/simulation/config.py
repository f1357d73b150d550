"""Validated configuration of the simulated sample: generator, pile-up and detector.

The detector is one documented YAML file (``detector.yaml`` next to this module, every value
with its source); generator and pile-up settings have their defaults here and are set from
the command line. All three are written into every output file together with the SHA-256 of
the canonical detector JSON (:func:`detector_hash`), so a file always says how it was made.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    model_validator,
)

from ..errors import ConfigError

__all__ = [
    "CaloRegion",
    "Calorimeter",
    "ChannelConfig",
    "DetectorConfig",
    "GeneratorConfig",
    "PileupConfig",
    "SimulationConfig",
    "default_detector",
    "detector_hash",
    "load_detector",
    "parse_pileup",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChannelConfig(_Model):
    """One Pythia hard-process channel and the fraction of events drawn from it."""

    name: str = Field(description="label of the channel")
    fraction: float = Field(gt=0, description="fraction of hard-scatter events")
    settings: list[str] = Field(
        description="Pythia readString lines enabling the process"
    )


class GeneratorConfig(_Model):
    """Pythia 8 hard-scatter settings (13.6 TeV, hard QCD with a pT-hat bias)."""

    sqrt_s_gev: float = Field(13600.0, gt=0, description="centre-of-mass energy [GeV]")
    pthat_min_gev: float = Field(
        15.0, gt=0, le=15.0, description="PhaseSpace:pTHatMin [GeV]"
    )
    bias_power: float = Field(
        4.0,
        ge=0,
        description="PhaseSpace:bias2SelectionPow: events sampled ~ (pTHat/ref)^power, "
        "weight = inverse; 4 flattens the QCD spectrum to cover 20 GeV-2 TeV",
    )
    bias_ref_gev: float = Field(15.0, gt=0, description="PhaseSpace:bias2SelectionRef")
    channels: list[ChannelConfig] = Field(
        default_factory=lambda: [
            ChannelConfig(name="qcd", fraction=0.62, settings=["HardQCD:all = on"]),
            ChannelConfig(
                name="bbbar", fraction=0.19, settings=["HardQCD:hardbbbar = on"]
            ),
            ChannelConfig(
                name="ccbar", fraction=0.19, settings=["HardQCD:hardccbar = on"]
            ),
        ],
        description="hard-process channels; fractions tuned for b:c:uds:g ~ 1:1:2:2 "
        "among selected jets",
    )
    decay_xy_max_mm: float = Field(
        1100.0,
        gt=0,
        description="decays only inside the tracker volume (ParticleDecays:limitCylinder): "
        "K0S, Lambda, pi/K decaying there give the tracker their products, as GEANT would",
    )
    decay_z_max_mm: float = Field(
        2800.0, gt=0, description="half length of that cylinder"
    )
    extra_settings: list[str] = Field(default_factory=list)


class PileupConfig(_Model):
    """In-time pile-up: mu per event and a re-used minimum-bias library."""

    profile: Literal["flat", "fixed", "none"] = Field(
        "flat", description="flat mu in [mu_min, mu_max] (CMS L1 samples), fixed, none"
    )
    mu_min: float = Field(0.0, ge=0)
    mu_max: float = Field(70.0, ge=0)
    mu: float = Field(35.0, ge=0, description="mean for profile 'fixed'")
    library_size: int = Field(
        20000, ge=1, description="SoftQCD:inelastic events in the library"
    )
    beamspot_sigma_z_cm: float = Field(
        3.5, gt=0, description="luminous region length (CMS 2018: ~3.5 cm)"
    )
    beamspot_x_cm: float = Field(
        0.0,
        description="beam-spot x [cm] in the detector frame (the simulated frame is centred "
        "on the beam line; CMS's beam spot sits ~1 mm off the detector axis)",
    )
    beamspot_y_cm: float = Field(0.0, description="beam-spot y [cm]")
    beamspot_sigma_xy_cm: float = Field(
        0.0010, ge=0, description="transverse luminous-region width (CMS 2018: ~10 um)"
    )

    @model_validator(mode="after")
    def _check_range(self) -> PileupConfig:
        if self.mu_max < self.mu_min:
            msg = f"pileup: mu_max={self.mu_max} < mu_min={self.mu_min}"
            raise ValueError(msg)
        return self

    @property
    def mean_mu(self) -> float:
        """Mean number of pile-up interactions."""
        if self.profile == "none":
            return 0.0
        if self.profile == "fixed":
            return self.mu
        return 0.5 * (self.mu_min + self.mu_max)


class CaloRegion(_Model):
    """A |eta| band of a calorimeter with uniform eta x phi cells."""

    eta_max: float = Field(gt=0, description="upper |eta| edge of the band")
    deta: float = Field(gt=0, description="cell size in eta")
    nphi: int = Field(gt=0, description="cells in phi")
    noise_gev: float | None = Field(
        None,
        ge=0,
        description="noise per cell in this band (default: the calorimeter's)",
    )
    threshold_gev: float | None = Field(
        None,
        ge=0,
        description="cell threshold in this band (default: the calorimeter's)",
    )
    stochastic: float | None = Field(
        None,
        ge=0,
        description="stochastic term of particles hitting this band (default: the "
        "calorimeter's)",
    )
    constant: float | None = Field(
        None,
        ge=0,
        description="constant term of particles hitting this band (default: the "
        "calorimeter's)",
    )


class Calorimeter(_Model):
    """Granularity, response, resolution, noise and thresholds of one calorimeter."""

    regions: list[CaloRegion]
    eta_min: float = Field(0.0, ge=0)
    stochastic: float = Field(
        description="a in sigma/E = a/sqrt(E) + b + c/E (quadrature)"
    )
    constant: float = Field(description="b")
    noise_gev: float = Field(ge=0, description="c: electronic noise per cell [GeV]")
    threshold_gev: float = Field(ge=0, description="cell energy threshold [GeV]")
    lateral_sigma_cm: float = Field(
        0.0,
        ge=0,
        description="lateral shower width (Gaussian sigma) [cm]: showers share energy with "
        "neighbouring cells; 0 = all energy in the impact cell",
    )
    shower_radius_m: float = Field(
        2.0, gt=0, description="barrel: radius of the shower maximum [m]"
    )
    shower_z_m: float = Field(
        4.2, gt=0, description="endcap: |z| of the shower maximum [m]"
    )
    clustering: Literal["cell", "local_maximum"] = Field(
        "cell",
        description="PF compares tracks and calorimeter energy per cell, or per PF cluster "
        "(cells above threshold grouped around local energy maxima)",
    )


class HadronResponse(_Model):
    """Non-compensation: pi/e = 1 - (1 - h/e) (E/E0)^(m-1) (Groom, NIM A572 (2007) 633)."""

    h_over_e: float = Field(gt=0, le=1)
    e0_gev: float = Field(gt=0)
    m: float = Field(gt=0, lt=1)


class Tracking(_Model):
    """Charged-particle tracking and the tracker material in front of the calorimeters."""

    material_eta: list[float] = Field(description="|eta| points of the material budget")
    material_x0: list[float] = Field(
        description="tracker thickness in radiation lengths there"
    )
    eta_max: float
    pt_min_gev: float
    efficiency_barrel: float = Field(ge=0, le=1)
    efficiency_endcap: float = Field(ge=0, le=1)
    barrel_eta: float
    pt_res_a: float = Field(description="sigma(pT)/pT = a + b*pT (quadrature), barrel")
    pt_res_b_per_gev: float
    endcap_res_scale: float = Field(gt=0)
    d0_res_a_cm: float
    d0_res_b_cm_gev: float
    dz_res_a_cm: float
    dz_res_b_cm_gev: float
    low_pt_turn_on_gev: float = Field(
        ge=0, description="efficiency x (1 - 0.5 exp(-(pT - pt_min)/turn_on)) at low pT"
    )
    core_cell: float = Field(
        gt=0, description="(eta, phi) size within which two tracks share pixel hits"
    )
    core_merge_loss: float = Field(
        ge=0,
        le=1,
        description="probability to lose a track sharing its cell (jet cores)",
    )
    core_pt_min_gev: float = Field(ge=0, description="only tracks above this merge")
    max_prod_radius_cm: float = Field(
        gt=0, description="tracks produced beyond this radius are not reconstructed"
    )
    bfield_t: float
    calo_radius_m: float


class Vertexing(_Model):
    """Primary-vertex reconstruction and charged-hadron subtraction (CHS)."""

    pu_vertex_efficiency: float = Field(ge=0, le=1)
    min_tracks: int = Field(ge=1)
    z_resolution_cm: float = Field(gt=0)
    xy_resolution_cm: float = Field(gt=0)
    assoc_nsigma: float = Field(gt=0)


class Leptons(_Model):
    """Muon and electron identification inside particle flow."""

    muon_eta_max: float
    muon_p_min_gev: float
    muon_efficiency: float = Field(ge=0, le=1)
    electron_pt_min_gev: float
    electron_efficiency: float = Field(ge=0, le=1)


class ParticleFlow(_Model):
    """Track-cluster linking and neutral-candidate creation."""

    neutral_excess_nsigma: float = Field(ge=0)
    hadron_calibration: Literal["full", "linear", "none"] = Field(
        description="full: inverse mean pi/e(E) of each PF cluster's measured energy (cells "
        "calibrated as 'linear' for clustering); linear: one factor 1/(pi/e) at "
        "calibration_ref_gev (low-energy clusters stay under-corrected); none: raw energy"
    )
    calibration_ref_gev: float = Field(gt=0, description="reference energy of 'linear'")
    photon_min_gev: float = Field(ge=0)
    neutral_hadron_min_gev: float = Field(ge=0)
    photons_in_hadron_blocks: bool | None = Field(
        None,
        description="ECAL clusters inside an HCAL cluster with tracks join its PF block: "
        "the block's excess goes to photons first, then to a neutral hadron",
    )
    neutral_excess_nsigma_scale_gev: tuple[PositiveFloat, PositiveFloat] | None = Field(
        None,
        description="HCAL clusters with tracks of total momentum p need an excess above "
        "neutral_excess_nsigma x (1 + exp(-p / E0)) sigma, E0 = the first value for "
        "|eta| < 1.48, the second beyond (None: neutral_excess_nsigma at every p)",
    )


class SecondaryVertexing(_Model):
    """Inclusive secondary-vertex finding."""

    track_pt_min_gev: float
    min_tracks: int = Field(ge=2)
    min_dxy_sig: float
    efficiency: float = Field(ge=0, le=1)
    position_res_cm: float = Field(gt=0)
    fake_rate_per_jet: float = Field(ge=0, le=1)
    fake_dxy_cm: float = Field(gt=0)


class Jets(_Model):
    """Jet algorithm, areas and rho."""

    radius: float = Field(gt=0)
    pt_min_gev: float = Field(ge=0)
    genjet_pt_min_gev: float = Field(ge=0)
    ghost_area: float = Field(gt=0)
    ghost_maxrap: float = Field(gt=0)
    rho_cell: float = Field(gt=0)
    rho_eta_max: float = Field(gt=0)


class NuclearInteractions(_Model):
    """Hadrons interacting in the tracker material (see :mod:`.material`)."""

    material_eta: list[float] = Field(description="|eta| points of the material budget")
    material_lambda: list[float] = Field(
        description="tracker thickness in nuclear interaction lengths there"
    )
    tracker_radius_m: float = Field(gt=0, description="outer radius of the tracker")
    tracker_half_length_m: float = Field(gt=0, description="|z| of the tracker end")
    em_fraction: float = Field(
        ge=0, le=1, description="mean energy share of pi0 (photon) secondaries"
    )
    multiplicity_log_slope: float = Field(
        ge=0, description="secondaries: 2 + Poisson(slope * ln(E / 1 GeV))"
    )
    pt_rel_mean_gev: float = Field(
        gt=0, description="mean momentum of a secondary transverse to its parent"
    )
    invisible_gev: float = Field(
        ge=0, description="mean energy left in the nucleus (binding, slow nucleons)"
    )
    track_loss_fraction: float = Field(
        ge=0,
        le=1,
        description="an interaction within this fraction of the path loses the track",
    )

    @model_validator(mode="after")
    def _material_table(self) -> NuclearInteractions:
        eta, lam = self.material_eta, self.material_lambda
        if len(eta) != len(lam) or len(eta) < 2:
            msg = (
                f"material_eta ({len(eta)} points) and material_lambda ({len(lam)}) "
                "need the same length, at least 2"
            )
            raise ValueError(msg)
        if any(b <= a for a, b in itertools.pairwise(eta)) or min(lam) < 0:
            msg = "material_eta must increase and material_lambda be >= 0"
            raise ValueError(msg)
        return self


class PhotonConversions(_Model):
    """Photons converting to e+e- pairs in the tracker material (see :mod:`.material`)."""

    tracker_radius_m: float = Field(gt=0, description="outer radius of the tracker")
    tracker_half_length_m: float = Field(gt=0, description="|z| of the tracker end")


class DetectorConfig(_Model):
    """The whole parametrised detector (see detector.yaml for values and sources)."""

    name: str
    tracking: Tracking
    vertexing: Vertexing
    ecal: Calorimeter
    hcal: Calorimeter
    hf_em: Calorimeter
    hf_had: Calorimeter
    em_response: float = Field(gt=0)
    hadron_response: HadronResponse
    hf_hadron_response: HadronResponse
    leptons: Leptons
    particle_flow: ParticleFlow
    secondary_vertices: SecondaryVertexing
    jets: Jets
    nuclear_interactions: NuclearInteractions | None = None
    photon_conversions: PhotonConversions | None = None

    @model_validator(mode="after")
    def _one_tracker_volume(self) -> DetectorConfig:
        ni, conv = self.nuclear_interactions, self.photon_conversions
        if ni is None or conv is None:
            return self
        for key in ("tracker_radius_m", "tracker_half_length_m"):
            if getattr(ni, key) != getattr(conv, key):
                msg = (
                    f"photon_conversions.{key} ({getattr(conv, key)}) differs from "
                    f"nuclear_interactions.{key} ({getattr(ni, key)}): one tracker volume"
                )
                raise ValueError(msg)
        return self


class SimulationConfig(_Model):
    """Everything that defines a simulated sample besides the seed and size."""

    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    pileup: PileupConfig = Field(default_factory=PileupConfig)
    detector: DetectorConfig


def load_detector(path: str | Path | None = None) -> DetectorConfig:
    """Load and validate a detector YAML (``None``: the packaged default).

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or a key/value is invalid (names the key).
    """
    if path is None:
        text = resources.files(__package__).joinpath("detector.yaml").read_text()
        where = "detector.yaml (packaged)"
    else:
        try:
            text = Path(path).read_text()
        except OSError as err:
            msg = f"detector config {path}: {err.strerror or err}"
            raise ConfigError(msg) from err
        where = str(path)
    try:
        raw = yaml.safe_load(text)
        return DetectorConfig.model_validate(raw)
    except yaml.YAMLError as err:
        msg = f"{where}: not valid YAML: {err}"
        raise ConfigError(msg) from err
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(x) for x in first["loc"])
        msg = f"{where}: key {key!r}: {first['msg']} (got {first.get('input')!r})"
        raise ConfigError(msg) from err


def default_detector() -> DetectorConfig:
    """The packaged, documented default detector."""
    return load_detector(None)


_OPTIONAL_KEYS = frozenset(
    {
        "nuclear_interactions",
        "noise_gev",
        "threshold_gev",
        "photons_in_hadron_blocks",
        "neutral_excess_nsigma_scale_gev",
        "photon_conversions",
        "stochastic",  # of a calorimeter band (a calorimeter's own is required)
        "constant",
    }
)
"""Keys added after v1: while unset (None) they are left out, so v1 hashes as before."""


def _drop_unset_options(node):
    if isinstance(node, dict):
        return {
            k: _drop_unset_options(v)
            for k, v in node.items()
            if not (k in _OPTIONAL_KEYS and v is None)
        }
    if isinstance(node, list):
        return [_drop_unset_options(v) for v in node]
    return node


def detector_hash(detector: DetectorConfig) -> str:
    """SHA-256 (hex) of the canonical JSON of a detector config."""
    raw = _drop_unset_options(detector.model_dump(mode="json"))
    text = json.dumps(raw, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def parse_pileup(spec: str | None, *, library_size: int | None = None) -> PileupConfig:
    """Parse the ``--pileup`` option: ``flat:MIN-MAX`` (default flat:0-70), ``fixed:MU``, ``none``.

    Raises
    ------
    ConfigError
        For any other spelling (quotes the value and the accepted forms).
    """
    extra = {} if library_size is None else {"library_size": library_size}
    spec = (spec or "flat:0-70").strip().lower()
    try:
        if spec == "none":
            return PileupConfig(profile="none", **extra)
        kind, _, value = spec.partition(":")
        if kind == "flat":
            lo, _, hi = value.partition("-")
            return PileupConfig(
                profile="flat", mu_min=float(lo), mu_max=float(hi), **extra
            )
        if kind == "fixed":
            return PileupConfig(profile="fixed", mu=float(value), **extra)
    except (ValueError, ValidationError) as err:
        msg = f"--pileup {spec!r}: {err}"
        raise ConfigError(msg) from err
    msg = f"--pileup {spec!r}: expected 'flat:MIN-MAX', 'fixed:MU' or 'none'"
    raise ConfigError(msg)
