// Multi-event clustering with FastJet for the simulated sample (jec_coffea.simulation.native).
//
// One call clusters every event of a batch and returns, per particle, the index of the
// inclusive jet it belongs to (ClusterSequence::particle_jet_indices). fastjet's Python
// multi-event interface returns the same information through constituent_index(), whose
// loop is O(jets x particles) per event and re-runs inclusive_jets() three times; here the
// ClusterSequence of an event is freed as soon as its jets are read.
//
// The jet definition is FastJet's default for (algorithm, R): Best strategy, E scheme, as
// fastjet.JetDefinition(fastjet.antikt_algorithm, R) builds it. C linkage (ctypes); no
// exception crosses it: errors come back as a null handle and a message.
#include <cstdint>
#include <cstring>
#include <exception>
#include <vector>

#include <fastjet/ClusterSequence.hh>
#include <fastjet/JetDefinition.hh>
#include <fastjet/PseudoJet.hh>

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

// Cluster events [offsets[i], offsets[i+1]) of the flat px, py, pz, E arrays with anti-kT
// of radius `radius`; keep inclusive jets with pT >= pt_min in FastJet's order.
// Fills particle_jet (n = offsets[n_events]; jet index within the event or -1) and
// jet_counts (n_events); returns a handle holding the jets' four-vectors (jcfj_jets), or
// null with `message` filled.
void *jcfj_cluster(int64_t n_events, const int64_t *offsets, const double *px,
                   const double *py, const double *pz, const double *e, double radius,
                   double pt_min, int64_t *particle_jet, int64_t *jet_counts,
                   char *message, int64_t message_size) {
  Batch *batch = nullptr;
  try {
    batch = new Batch();
    const fj::JetDefinition jet_def(fj::antikt_algorithm, radius);
    std::vector<fj::PseudoJet> particles;
    for (int64_t i = 0; i < n_events; ++i) {
      const int64_t start = offsets[i], stop = offsets[i + 1];
      particles.clear();
      particles.reserve(static_cast<size_t>(stop - start));
      for (int64_t j = start; j < stop; ++j) {
        particles.emplace_back(px[j], py[j], pz[j], e[j]);
      }
      const fj::ClusterSequence cs(particles, jet_def);
      const std::vector<fj::PseudoJet> jets = cs.inclusive_jets(pt_min);
      const std::vector<int> index = cs.particle_jet_indices(jets);
      for (int64_t j = start; j < stop; ++j) particle_jet[j] = index[j - start];
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

}  // extern "C"
