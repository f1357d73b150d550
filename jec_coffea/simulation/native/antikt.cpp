// Multi-event clustering with FastJet for the simulated sample (jec_coffea.simulation.native).
//
// One call clusters every event of a batch, its particles read in place from several
// sources (candidates, area ghosts, flavour ghosts), and returns, per particle, the index of
// the inclusive jet it belongs to (ClusterSequence::particle_jet_indices). fastjet's Python
// multi-event interface returns the same information through constituent_index(), whose
// loop is O(jets x particles) per event and re-runs inclusive_jets() three times; here the
// ClusterSequence of an event is freed as soon as its jets are read.
//
// The jet definition is FastJet's default for (algorithm, R): Best strategy, E scheme, as
// fastjet.JetDefinition(fastjet.antikt_algorithm, R) builds it; with area ghosts, the
// strategy that skips ghost-ghost pairs (same jets, same ghosts in them). C linkage (ctypes); no
// exception crosses it: errors come back as a null handle and a message.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include <fastjet/ClusterSequence.hh>
#include <fastjet/JetDefinition.hh>
#include <fastjet/PseudoJet.hh>
#include <fastjet/internal/LazyTiling9SeparateGhosts.hh>  // its ghost_pt2_threshold

namespace fj = fastjet;

namespace {
struct Batch {
  std::vector<double> jets;  // px, py, pz, E per jet, events in order
};

void copy_message(const char *what, char *message, int64_t size) {
  if (size <= 0) return;
  std::strncpy(message, what, static_cast<size_t>(size - 1));
  message[size - 1] = '\0';
}
}  // namespace

extern "C" {

// Silence FastJet's banner (printed once per process on the first clustering).
void jcfj_silence_banner() { fj::ClusterSequence::set_fastjet_banner_stream(nullptr); }

// Cluster every event of a batch with anti-kT of radius `radius` and keep the inclusive
// jets with pT >= pt_min in FastJet's order. The particles come from n_sources flat sources
// (px[s], py[s], pz[s], e[s]), each grouped by event: event i holds particles
// [offsets[s][i], offsets[s][i+1]) of source s, and FastJet sees those of source 0, then of
// source 1, and so on. Fills particle_jet[s] (jet index within the event, or -1, per
// particle of source s) and jet_counts (n_events); returns a handle holding the jets'
// four-vectors (jcfj_jets), or null with `message` filled.
//
// explicit_ghosts != 0 selects FastJet's N2MHTLazy9AntiKtSeparateGhosts strategy, which
// never pairs two area ghosts (pT < 1e-50): for anti-kT the jets above any pT > 0 and their
// ghosts are those of the Best strategy (N2MHTLazy9 at these sizes), without the
// ghost-ghost distances that are most of its work; an event of ghosts alone (on which that
// strategy crashes) gets no jet. Otherwise the strategy is Best.
void *jcfj_cluster(int64_t n_events, int64_t n_sources, const int64_t *const *offsets,
                   const double *const *px, const double *const *py,
                   const double *const *pz, const double *const *e, double radius,
                   double pt_min, int64_t explicit_ghosts, int64_t *const *particle_jet,
                   int64_t *jet_counts, char *message, int64_t message_size) {
  Batch *batch = nullptr;
  try {
    batch = new Batch();
    const fj::JetDefinition jet_def(
        fj::antikt_algorithm, radius, fj::E_scheme,
        explicit_ghosts ? fj::N2MHTLazy9AntiKtSeparateGhosts : fj::Best);
    std::vector<fj::PseudoJet> particles;
    for (int64_t i = 0; i < n_events; ++i) {
      particles.clear();
      for (int64_t s = 0; s < n_sources; ++s) {
        for (int64_t j = offsets[s][i]; j < offsets[s][i + 1]; ++j) {
          particles.emplace_back(px[s][j], py[s][j], pz[s][j], e[s][j]);
        }
      }
      // the strategy's own rule: lighter than ghost_pt2_threshold (1e-100 GeV^2) is a ghost
      if (explicit_ghosts &&
          std::none_of(particles.begin(), particles.end(), [](const fj::PseudoJet &p) {
            return p.pt2() >= fj::LazyTiling9SeparateGhosts::ghost_pt2_threshold;
          })) {
        // ghosts only: no jet; FastJet's ghost strategy would crash on such an event
        for (int64_t s = 0; s < n_sources; ++s) {
          std::fill(particle_jet[s] + offsets[s][i], particle_jet[s] + offsets[s][i + 1], -1);
        }
        jet_counts[i] = 0;
        continue;
      }
      const fj::ClusterSequence cs(particles, jet_def);
      const std::vector<fj::PseudoJet> jets = cs.inclusive_jets(pt_min);
      const std::vector<int> index = cs.particle_jet_indices(jets);
      size_t k = 0;
      for (int64_t s = 0; s < n_sources; ++s) {
        for (int64_t j = offsets[s][i]; j < offsets[s][i + 1]; ++j) {
          particle_jet[s][j] = index[k++];
        }
      }
      jet_counts[i] = static_cast<int64_t>(jets.size());
      for (const fj::PseudoJet &jet : jets) {
        batch->jets.insert(batch->jets.end(), {jet.px(), jet.py(), jet.pz(), jet.E()});
      }
    }
    return batch;
  } catch (const std::exception &err) {
    copy_message(err.what(), message, message_size);
  } catch (const fj::Error &err) {
    copy_message(err.message().c_str(), message, message_size);
  } catch (...) {
    copy_message("unknown C++ exception in FastJet clustering", message, message_size);
  }
  delete batch;
  return nullptr;
}

// Number of jets held by a handle of jcfj_cluster.
int64_t jcfj_n_jets(const void *handle) {
  return static_cast<int64_t>(static_cast<const Batch *>(handle)->jets.size() / 4);
}

// Copy the jets' four-vectors (n_jets x 4, row-major) and free the handle.
void jcfj_take_jets(void *handle, double *out) {
  Batch *batch = static_cast<Batch *>(handle);
  if (!batch->jets.empty()) {
    std::memcpy(out, batch->jets.data(), batch->jets.size() * sizeof(double));
  }
  delete batch;
}

// PUPPI's local metric (CMS algoId 5) of every target: alpha = log of the sum, over the
// sources j of the same event with 1e-4 <= deltaR^2 < radius^2, of pT_j^2 / deltaR^2; 0 where
// the sum is 0. Targets and sources are grouped by event ([t_off[i], t_off[i+1]) and
// [s_off[i], s_off[i+1])); the sources of an event are binned in cells of radius x radius in
// (eta, phi), so each target visits 3 x 3 cells. Sums run over the cells in (eta, phi) order
// and over the sources of a cell in input order. Returns 0, or -1 on a memory error.
int jcpp_puppi_alpha(int64_t n_events, const int64_t *t_off, const double *t_eta,
                     const double *t_phi, const int64_t *s_off, const double *s_eta,
                     const double *s_phi, const double *s_pt, double radius,
                     double *alpha) {
  const double two_pi = 2.0 * M_PI, r2 = radius * radius;
  try {
    std::vector<int64_t> start, cell, fill;
    std::vector<double> c_eta, c_phi, c_pt2;  // the sources of an event in cell order
    for (int64_t ev = 0; ev < n_events; ++ev) {
      const int64_t s0 = s_off[ev], s1 = s_off[ev + 1], t0 = t_off[ev], t1 = t_off[ev + 1];
      if (s1 <= s0) {
        for (int64_t t = t0; t < t1; ++t) alpha[t] = 0.0;
        continue;
      }
      double lo = s_eta[s0], hi = s_eta[s0];
      for (int64_t j = s0; j < s1; ++j) {
        lo = std::min(lo, s_eta[j]);
        hi = std::max(hi, s_eta[j]);
      }
      const int64_t n_eta = static_cast<int64_t>((hi - lo) / radius) + 1;
      const int64_t n_phi = std::max<int64_t>(1, static_cast<int64_t>(two_pi / radius));
      const double w_phi = two_pi / static_cast<double>(n_phi);
      auto cell_phi = [&](double phi) {
        int64_t c = static_cast<int64_t>(std::floor((phi + M_PI) / w_phi)) % n_phi;
        return c < 0 ? c + n_phi : c;
      };
      // counting sort of the sources into cells, copied contiguously
      const size_t n = static_cast<size_t>(s1 - s0);
      start.assign(static_cast<size_t>(n_eta * n_phi + 1), 0);
      cell.resize(n);
      for (int64_t j = s0; j < s1; ++j) {
        const int64_t ce = std::min<int64_t>(static_cast<int64_t>((s_eta[j] - lo) / radius), n_eta - 1);
        cell[static_cast<size_t>(j - s0)] = ce * n_phi + cell_phi(s_phi[j]);
        ++start[static_cast<size_t>(cell[static_cast<size_t>(j - s0)] + 1)];
      }
      for (size_t c = 1; c < start.size(); ++c) start[c] += start[c - 1];
      fill.assign(start.begin(), start.end() - 1);
      c_eta.resize(n);
      c_phi.resize(n);
      c_pt2.resize(n);
      for (int64_t j = s0; j < s1; ++j) {
        const size_t k = static_cast<size_t>(fill[static_cast<size_t>(cell[static_cast<size_t>(j - s0)])]++);
        c_eta[k] = s_eta[j];
        c_phi[k] = s_phi[j];
        c_pt2[k] = s_pt[j] * s_pt[j];
      }
      const int64_t n_cols = std::min<int64_t>(3, n_phi);  // distinct phi columns to visit
      for (int64_t t = t0; t < t1; ++t) {
        const double eta = t_eta[t], phi = t_phi[t];
        const int64_t ce = static_cast<int64_t>(std::floor((eta - lo) / radius));
        const int64_t cp = cell_phi(phi);
        double sum = 0.0;
        for (int64_t e = std::max<int64_t>(ce - 1, 0); e <= std::min(ce + 1, n_eta - 1); ++e) {
          for (int64_t k = 0; k < n_cols; ++k) {
            const int64_t c = e * n_phi + ((cp - 1 + k) % n_phi + n_phi) % n_phi;
            const int64_t stop = start[static_cast<size_t>(c + 1)];
            for (int64_t i = start[static_cast<size_t>(c)]; i < stop; ++i) {
              const double deta = c_eta[static_cast<size_t>(i)] - eta;
              double dphi = std::fabs(c_phi[static_cast<size_t>(i)] - phi);
              if (dphi > M_PI) dphi = two_pi - dphi;
              const double dr2 = deta * deta + dphi * dphi;
              if (dr2 < r2 && dr2 >= 1e-4) sum += c_pt2[static_cast<size_t>(i)] / dr2;
            }
          }
        }
        alpha[t] = sum > 0.0 ? std::log(sum) : 0.0;
      }
    }
  } catch (...) {
    return -1;
  }
  return 0;
}

}  // extern "C"
